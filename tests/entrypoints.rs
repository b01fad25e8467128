//! The two ways requests reach the handlers outside the other tests'
//! in-process calls: events shaped exactly as API Gateway's JWT authorizer
//! delivers them on Lambda, and real HTTP through the socket `make run` serves.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

/// A payload 2.0 event as API Gateway sends it to the function, with
/// everything the handlers must ignore (cookies, stage variables, mTLS).
fn aws_event(method: &str, route: &str, path: &str, claims: Value, scopes: Value, body: Option<&str>) -> String {
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": "",
        "cookies": ["session=abc"],
        "headers": { "content-type": "application/json", "idempotency-key": "aws-shaped-1", "x-forwarded-for": "203.0.113.9" },
        "pathParameters": { "org": "acme" },
        "requestContext": {
            "routeKey": format!("{method} {route}"),
            "accountId": "123456789012",
            "stage": "$default",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "authorizer": { "jwt": { "claims": claims, "scopes": scopes } },
            "apiId": "a1b2c3",
            "domainName": "a1b2c3.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "a1b2c3",
            "time": "22/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_341_600_000_i64,
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "product-backend/1.0" }
        },
        "stageVariables": { "env": "prod" },
        "isBase64Encoded": false
    });
    if let Some(b) = body {
        event["body"] = json!(b);
    }
    event.to_string()
}

async fn handle(stack: &Stack, function: &str, event: &str) -> (u16, Value) {
    let request = lambda_http::request::from_str(event).expect("a payload 2.0 event");
    let response = ledger_local::invoke(&stack.ledger(), function, request).await;
    let status = response.status().as_u16();
    let body = match response.into_body() {
        lambda_http::Body::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    (status, body)
}

#[tokio::test]
async fn handlers_read_the_jwt_authorizers_claims_as_aws_delivers_them() {
    let stack = Stack::with_account("starter").await;

    // A user token: every claim a string, numbers included; no scopes.
    let member = json!({ "sub": "bob", "org": "acme", "role": "member", "iss": "https://idp.example", "aud": "client", "exp": "1795345200", "iat": "1795341600" });
    let event = aws_event(
        "GET",
        "/v1/orgs/{org}/balance",
        "/v1/orgs/acme/balance",
        member.clone(),
        Value::Null,
        None,
    );
    let (status, body) = handle(&stack, "balance", &event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meters"]["credits"]["available"], "500");

    let spend = r#"{"action":"ai_email_generation","quantity":2}"#;
    let event = aws_event(
        "POST",
        "/v1/orgs/{org}/spend",
        "/v1/orgs/acme/spend",
        member,
        Value::Null,
        Some(spend),
    );
    let (status, body) = handle(&stack, "spend", &event).await;
    assert_eq!((status, body["charged"].as_str()), (200, Some("2")), "{body}");

    // A service token whose scope arrives only in the authorizer's `scopes`.
    let service = json!({ "sub": "backend-client", "client_id": "backend-client", "iss": "https://idp.example", "exp": "1795345200" });
    let body = r#"{"action":"ai_email_generation","user":"carol"}"#;
    let mut event: Value = serde_json::from_str(&aws_event(
        "POST",
        "/v1/orgs/{org}/spend",
        "/v1/orgs/acme/spend",
        service,
        json!(["ledger/service"]),
        Some(body),
    ))
    .unwrap();
    event["headers"]["idempotency-key"] = json!("aws-shaped-2");
    let (status, reply) = handle(&stack, "spend", &event.to_string()).await;
    assert_eq!((status, reply["charged"].as_str()), (200, Some("1")), "{reply}");
    assert_eq!(available(&stack.gateway(), &stack.member(), "credits").await, "497");

    // No authorizer context at all (a misconfigured route): refused, nothing written.
    let before = stack.snapshot().await;
    let mut event: Value = serde_json::from_str(&aws_event(
        "POST",
        "/v1/orgs/{org}/spend",
        "/v1/orgs/acme/spend",
        json!({}),
        Value::Null,
        Some(spend),
    ))
    .unwrap();
    event["requestContext"].as_object_mut().unwrap().remove("authorizer");
    let (status, reply) = handle(&stack, "spend", &event.to_string()).await;
    assert_eq!(
        (status, reply["type"].as_str()),
        (401, Some("urn:credit-ledger:problem:unauthenticated"))
    );
    assert_eq!(stack.snapshot().await, before);
}

#[tokio::test]
async fn the_local_stack_serves_real_http() {
    let stack = Stack::new().await;
    let addr = stack
        .gateway()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let (service, member) = (stack.service(), stack.member());

    let r = http
        .put(format!("{base}/v1/orgs/acme/subscription"))
        .bearer_auth(&service)
        .header("idempotency-key", "sub-1")
        .json(&json!({ "plan": "starter" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/v1/orgs/acme/spend"))
        .bearer_auth(&member)
        .header("idempotency-key", "spend-1")
        .json(&json!({ "action": "email_verification", "quantity": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["charged"], "1.5");
    let r = http
        .get(format!("{base}/v1/orgs/acme/balance"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["meters"]["credits"]["available"],
        "498.5"
    );

    let r = http.get(format!("{base}/v1/orgs/acme/balance")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token, no entry");
    let r = http
        .get(format!("{base}/v1/nowhere"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = http
        .get(format!("{base}/v1/catalog"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["actions"]["email_verification"]["cost"],
        "0.5"
    );
}
