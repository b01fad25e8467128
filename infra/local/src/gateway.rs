//! A local API Gateway (HTTP API, payload 2.0) in front of the real
//! handlers: it routes as the template's events say, checks the bearer JWT
//! as the JWT authorizer would, and hands each function the event it would
//! get on Lambda, parsed by `lambda_http` exactly as the runtime does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Request};
use ledger_http::DynamoLedger;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::template::Route;
use crate::tokens::DevAuthority;

// Control bytes in header values, which hyper would refuse bare.
mod header_bytes;

/// API Gateway's own payload limit for HTTP APIs.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

pub struct Gateway {
    routes: Vec<Route>,
    authority: DevAuthority,
    ledger: Arc<DynamoLedger>,
    request_ids: AtomicU64,
}

/// What the gateway answers on its own, before any function runs.
struct GatewayReply {
    pub status: u16,
    pub body: String,
}

impl Gateway {
    pub fn new(routes: Vec<Route>, authority: DevAuthority, ledger: Arc<DynamoLedger>) -> Self {
        Gateway {
            routes,
            authority,
            ledger,
            request_ids: AtomicU64::new(1),
        }
    }

    /// The route API Gateway would pick: an exact method before `ANY`,
    /// then `$default`; path parameters by name.
    pub fn match_route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        let mut best: Option<(&Route, BTreeMap<String, String>)> = None;
        for r in self.routes.iter().filter(|r| r.path != "$default") {
            if r.method != method && r.method != "ANY" {
                continue;
            }
            let Some(found) = ledger_http::routes::path_parameters(&r.path, path) else {
                continue;
            };
            // API Gateway hands path parameters over percent-decoded.
            let params: BTreeMap<String, String> = found
                .into_iter()
                .map(|(name, value)| {
                    let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                    (name.to_string(), value.into_owned())
                })
                .collect();
            if best.as_ref().is_none_or(|(b, _)| b.method == "ANY") {
                best = Some((r, params));
            }
        }
        best.or_else(|| {
            self.routes
                .iter()
                .find(|r| r.path == "$default")
                .map(|r| (r, BTreeMap::new()))
        })
    }

    /// Builds the payload-2.0 event, or the authorizer's 401 or 403.
    fn event(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::result::Result<(String, Value), GatewayReply> {
        let Some((route, params)) = self.match_route(method, path) else {
            return Err(GatewayReply {
                status: 404,
                body: json!({"message": "Not Found"}).to_string(),
            });
        };
        let mut header_map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in headers {
            header_map
                .entry(k.to_ascii_lowercase())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(v)
                })
                .or_insert_with(|| v.clone());
        }
        let unauthorized = || GatewayReply {
            status: 401,
            body: json!({"message": "Unauthorized"}).to_string(),
        };
        let token = header_map
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(unauthorized)?;
        let claims = self.authority.verify(token.trim()).map_err(|_| unauthorized())?;
        let scopes = token_scopes(&claims);
        // The JWT authorizer's scope check: a route that lists scopes takes
        // a token carrying one of them, or answers 403 before any function.
        if !route.scopes.is_empty() && !scopes.iter().flatten().any(|s| route.scopes.contains(s)) {
            return Err(GatewayReply {
                status: 403,
                body: json!({"message": "Forbidden"}).to_string(),
            });
        }
        let mut query_params: Map<String, Value> = Map::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let joined = match query_params.get(k.as_ref()).and_then(Value::as_str) {
                Some(prev) => format!("{prev},{v}"),
                None => v.to_string(),
            };
            query_params.insert(k.to_string(), Value::String(joined));
        }
        let request_id = format!("local-{}", self.request_ids.fetch_add(1, Ordering::Relaxed));
        let now = chrono::Utc::now();
        let (body_text, base64) = match std::str::from_utf8(body) {
            Ok(t) => (t.to_string(), false),
            Err(_) => {
                use base64::Engine;
                (base64::engine::general_purpose::STANDARD.encode(body), true)
            }
        };
        let route_key = route.key();
        let mut event = json!({
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query.unwrap_or_default(),
            "headers": header_map,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "local",
                "authorizer": { "jwt": { "claims": claims, "scopes": scopes } },
                "domainName": "localhost",
                "domainPrefix": "localhost",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": header_map.get("user-agent").cloned().unwrap_or_default(),
                },
                "requestId": request_id,
                "routeKey": route_key,
                "stage": "$default",
                "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
                "timeEpoch": now.timestamp_millis(),
            },
            "isBase64Encoded": base64,
        });
        if !body.is_empty() {
            event["body"] = json!(body_text);
        }
        if !query_params.is_empty() {
            event["queryStringParameters"] = Value::Object(query_params);
        }
        if !params.is_empty() {
            event["pathParameters"] = json!(params);
        }
        Ok((route.function.clone(), event))
    }

    /// Runs one request through the function that serves its route.
    async fn invoke(&self, function: &str, event: &Value) -> lambda_http::Response<Body> {
        let request: Request = lambda_http::request::from_str(&event.to_string()).expect("a valid payload 2.0 event");
        crate::invoke(&self.ledger, function, request).await
    }

    /// One request answered as API Gateway would: its own 401, 403 or 404, or
    /// the response of the function that serves the route.
    pub async fn respond(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(String, String)],
        body: &[u8],
    ) -> lambda_http::Response<Body> {
        let (function, event) = match self.event(method, path, query, headers, body) {
            Ok(x) => x,
            Err(reply) => return gateway_reply(reply.status, reply.body),
        };
        let response = self.invoke(&function, &event).await;
        tracing::info!(%method, %path, status = response.status().as_u16(), function, "request");
        response
    }

    async fn serve_one(
        self: Arc<Self>,
        req: hyper::Request<Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            // As API Gateway passes them: every header, its bytes as text
            // (a non-ASCII value reaches the function, which says it is invalid).
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        let response = match Limited::new(req.into_body(), MAX_PAYLOAD).collect().await {
            Ok(body) => {
                self.respond(&method, &path, query.as_deref(), &headers, &body.to_bytes())
                    .await
            }
            Err(_) => gateway_reply(413, json!({"message": "Request Entity Too Large"}).to_string()),
        };
        let (parts, body) = response.into_parts();
        let bytes = match body {
            Body::Empty => Bytes::new(),
            Body::Text(t) => Bytes::from(t),
            Body::Binary(b) => Bytes::from(b),
            _ => Bytes::new(),
        };
        Ok(hyper::Response::from_parts(parts, Full::new(bytes)))
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| gateway.clone().serve_one(req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(header_bytes::HeaderBytes::new(stream)), service)
                    .await;
            });
        }
    }

    /// Binds to `addr` (port 0 picks a free one) and serves in the background.
    pub async fn spawn(self, addr: SocketAddr) -> Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tokio::spawn(Arc::new(self).serve(listener));
        Ok(local)
    }
}

/// The scopes a token carries, as API Gateway reads them: its `scope`
/// claim (space-separated) or its `scp` claim (a list, or space-separated).
fn token_scopes(claims: &Map<String, Value>) -> Option<Vec<String>> {
    let claim = claims.get("scope").or_else(|| claims.get("scp"))?.as_str()?;
    // Claims arrive here as strings: a list is its JSON text.
    Some(match serde_json::from_str::<Vec<String>>(claim) {
        Ok(list) => list,
        Err(_) => claim.split_whitespace().map(str::to_string).collect(),
    })
}

/// What API Gateway itself answers (JSON `{"message": ...}`, before any function).
fn gateway_reply(status: u16, body: String) -> lambda_http::Response<Body> {
    lambda_http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(body))
        .expect("valid response")
}
