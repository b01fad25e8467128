//! The security matrix: every route of template.yaml (read from it, so a
//! new route cannot be left out), called by every caller who may not call
//! it, is refused (by API Gateway's authorizer or by the function, as
//! deployed) and writes nothing; the caller who may call it gets past every
//! guard. Also: the routes only the service may call carry its scope, and
//! the `$default` route answers an unknown method on a known path with 405.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use ledger_local::gateway::Gateway;
use ledger_local::template::{Route, Template};
use ledger_local::tokens::DevAuthority;
use ledger_local::SERVICE_SCOPE;
use serde_json::{json, Value};

/// Who may call a route; the service may call every one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Any valid token, of any organization.
    Anyone,
    /// Any user of the organization.
    Member,
    /// An admin of the organization.
    Admin,
    /// The service alone, by the route's scope (the authorizer refuses
    /// other tokens; the function checks again).
    ServiceScope,
    /// The service alone, checked by the function only: the route is
    /// shared with what users may do (a path parameter tells them apart).
    ServiceInFunction,
}

/// One way to call a route: who may, the path parameters that differ from
/// [`param`]'s, the query and a valid body (`{entry}` is the setup's spend).
struct Row {
    route: &'static str,
    who: Who,
    params: &'static [(&'static str, &'static str)],
    query: &'static str,
    body: Option<&'static str>,
    /// The problem an admin gets where only the service may call, if the
    /// authorizer let the admin through.
    admin_refused_as: &'static str,
}

const fn row(route: &'static str, who: Who, body: Option<&'static str>) -> Row {
    Row {
        route,
        who,
        params: &[],
        query: "",
        body,
        admin_refused_as: "forbidden",
    }
}

/// Who may call what: SPEC §5 and the handlers' guards, one row per route
/// key of template.yaml (a route two kinds of caller share has a row each).
const ROWS: &[Row] = &[
    row("GET /v1/catalog", Who::Anyone, None),
    row("ANY $default", Who::Anyone, None),
    row("GET /v1/orgs/{org}/balance", Who::Member, None),
    row("GET /v1/orgs/{org}/ledger", Who::Member, None),
    row("GET /v1/orgs/{org}/notifications", Who::Member, None),
    row("GET /v1/orgs/{org}/alerts", Who::Member, None),
    row("POST /v1/orgs/{org}/exports", Who::Member, None),
    row("GET /v1/orgs/{org}/exports/{export}", Who::Member, None),
    row(
        "POST /v1/orgs/{org}/spend",
        Who::Member,
        Some(r#"{"action":"ai_email_generation"}"#),
    ),
    row(
        "POST /v1/orgs/{org}/contacts",
        Who::Member,
        Some(r#"{"contacts":["jane@example.com"]}"#),
    ),
    row(
        "POST /v1/orgs/{org}/contacts/removals",
        Who::Member,
        Some(r#"{"contacts":["jane@example.com"]}"#),
    ),
    row(
        "POST /v1/orgs/{org}/reservations",
        Who::Member,
        Some(r#"{"action":"sequence_email","campaign":"spring","contacts":["joe@example.com"]}"#),
    ),
    row(
        "POST /v1/orgs/{org}/reservations/{transition}",
        Who::Member,
        Some(r#"{"campaign":"spring","contacts":["joe@example.com"]}"#),
    ),
    Row {
        params: &[("transition", "refund")],
        ..row(
            "POST /v1/orgs/{org}/reservations/{transition}",
            Who::ServiceInFunction,
            Some(r#"{"campaign":"spring","contacts":["joe@example.com"]}"#),
        )
    },
    row(
        "POST /v1/orgs/{org}/notifications/{notification}/read",
        Who::Member,
        None,
    ),
    row(
        "POST /v1/orgs/{org}/outcomes",
        Who::Member,
        Some(r#"{"campaign":"spring","outcome":"meeting_booked"}"#),
    ),
    // An admin may downgrade (this body); an upgrade is the service's.
    row(
        "PUT /v1/orgs/{org}/subscription",
        Who::Admin,
        Some(r#"{"plan":"starter"}"#),
    ),
    row("GET /v1/orgs/{org}/members", Who::Admin, None),
    row(
        "PUT /v1/orgs/{org}/members/{user}",
        Who::Admin,
        Some(r#"{"role":"member"}"#),
    ),
    row(
        "PUT /v1/orgs/{org}/members/{user}/limits",
        Who::Admin,
        Some(r#"{"daily":"10"}"#),
    ),
    row("DELETE /v1/orgs/{org}/members/{user}", Who::Admin, None),
    row(
        "PUT /v1/orgs/{org}/campaigns/{campaign}/budget",
        Who::Admin,
        Some(r#"{"credits":"500"}"#),
    ),
    row("DELETE /v1/orgs/{org}/campaigns/{campaign}/budget", Who::Admin, None),
    row(
        "PUT /v1/orgs/{org}/alerts/{alert}",
        Who::Admin,
        Some(r#"{"meter":"credits","percent":20,"channel":"both"}"#),
    ),
    row("DELETE /v1/orgs/{org}/alerts/{alert}", Who::Admin, None),
    row(
        "PUT /v1/orgs/{org}/top-up",
        Who::Admin,
        Some(r#"{"meter":"credits","below":"100","monthly_cap":2}"#),
    ),
    row("DELETE /v1/orgs/{org}/top-up", Who::Admin, None),
    row(
        "PUT /v1/orgs/{org}/approvals/threshold",
        Who::Admin,
        Some(r#"{"credits":"100"}"#),
    ),
    row("DELETE /v1/orgs/{org}/approvals/threshold", Who::Admin, None),
    row("GET /v1/orgs/{org}/approvals", Who::Admin, None),
    row("POST /v1/orgs/{org}/approvals/{approval}/approve", Who::Admin, None),
    row("POST /v1/orgs/{org}/approvals/{approval}/deny", Who::Admin, None),
    row("POST /v1/orgs/{org}/results/resume", Who::Admin, None),
    Row {
        query: "?from=2026-01-01&to=2026-01-31",
        ..row("GET /v1/orgs/{org}/usage", Who::Admin, None)
    },
    Row {
        query: "?from=2026-01-01&to=2026-01-31",
        ..row("GET /v1/orgs/{org}/roi", Who::Admin, None)
    },
    row("DELETE /v1/orgs/{org}/subscription", Who::Admin, None),
    // Past the authorizer, the domain's rule refuses an admin: paid credits
    // are the service's to grant.
    Row {
        admin_refused_as: "paid-by-service",
        ..row(
            "POST /v1/orgs/{org}/purchases",
            Who::ServiceScope,
            Some(r#"{"package":"credits_500","payment_reference":"pay-matrix"}"#),
        )
    },
    row(
        "POST /v1/orgs/{org}/reversals",
        Who::ServiceScope,
        Some(r#"{"entry_id":"{entry}","reason":"correction"}"#),
    ),
    row("POST /v1/orgs/{org}/renewals", Who::ServiceScope, None),
    row(
        "PUT /v1/orgs/{org}/overdraft",
        Who::ServiceScope,
        Some(r#"{"meter":"credits","allowance":"100"}"#),
    ),
];

/// A valid value for each path parameter; a new one must be added here.
fn param(name: &str, org: &str, export: &str) -> String {
    match name {
        "org" => org,
        "user" => "bob",
        "campaign" => "spring",
        "alert" => "low-credits",
        "notification" => "note-1",
        "approval" => "jane@example.com",
        "transition" => "commit",
        "export" => export,
        other => panic!("no value for the path parameter {{{other}}}: add one to `param`"),
    }
    .to_string()
}

/// Every caller the matrix tries on every route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// An admin of another organization, on this one's path.
    OtherOrganizationsAdmin,
    /// This organization's admin, on another organization's path.
    PathOfAnotherOrganization,
    /// The service, with a body that names another organization.
    BodyNamingAnotherOrganization,
    Member,
    Admin,
    NoToken,
    Expired,
    ForgedSignature,
    AlgNone,
    /// An admin's token that also carries the service scope.
    UserWithServiceScope,
}

const ATTEMPTS: [Attempt; 10] = [
    Attempt::OtherOrganizationsAdmin,
    Attempt::PathOfAnotherOrganization,
    Attempt::BodyNamingAnotherOrganization,
    Attempt::Member,
    Attempt::Admin,
    Attempt::NoToken,
    Attempt::Expired,
    Attempt::ForgedSignature,
    Attempt::AlgNone,
    Attempt::UserWithServiceScope,
];

/// How a refusal looks: API Gateway's own (`{"message": ...}`, before any
/// function runs) or the function's problem+json.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    Gateway(u16, &'static str),
    Problem(u16, &'static str),
}

/// What `attempt` on `row` must get: a refusal, or `None` where it may call
/// the route (or the attempt means nothing there). `scopes_enforced`: the
/// authorizer checks route scopes (as deployed); without, the functions'
/// own guards must refuse the same callers.
fn expected(row: &Row, attempt: Attempt, scopes_enforced: bool) -> Option<Refusal> {
    use Attempt as A;
    let names_org = row.route.contains("{org}");
    let service_only = matches!(row.who, Who::ServiceScope | Who::ServiceInFunction);
    let scoped = row.who == Who::ServiceScope && scopes_enforced;
    let forbidden = Some(Refusal::Problem(403, "forbidden"));
    match attempt {
        A::NoToken | A::Expired | A::ForgedSignature | A::AlgNone => Some(Refusal::Gateway(401, "Unauthorized")),
        A::UserWithServiceScope => forbidden,
        A::BodyNamingAnotherOrganization => row.body.map(|_| Refusal::Problem(400, "invalid-request")),
        A::PathOfAnotherOrganization if !names_org => None,
        // A user's token without the scope: the authorizer answers first.
        A::OtherOrganizationsAdmin | A::PathOfAnotherOrganization | A::Member | A::Admin if scoped => {
            Some(Refusal::Gateway(403, "Forbidden"))
        }
        A::OtherOrganizationsAdmin | A::PathOfAnotherOrganization => {
            (row.who != Who::Anyone).then_some(Refusal::Problem(404, "not-found"))
        }
        A::Member if row.who == Who::Admin || service_only => forbidden,
        A::Member => None,
        A::Admin => service_only.then_some(Refusal::Problem(403, row.admin_refused_as)),
    }
}

/// `alg: none`, base64url: a token "signed" with no algorithm.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

struct Matrix<'a> {
    stack: &'a Stack,
    template_routes: Vec<Route>,
    /// The setup's spend (a reversal's entry) and export.
    entry: String,
    export: String,
}

impl Matrix<'_> {
    fn token(&self, attempt: Attempt) -> Option<String> {
        let a = &self.stack.authority;
        let service = self.stack.service();
        Some(match attempt {
            Attempt::OtherOrganizationsAdmin => a.user_token(OTHER_ORG, "gina", "admin", 3600),
            Attempt::PathOfAnotherOrganization | Attempt::Admin => self.stack.admin(),
            Attempt::BodyNamingAnotherOrganization => service,
            Attempt::Member => self.stack.member(),
            Attempt::NoToken => return None,
            // The service's claims, which every route takes: only the token is wrong.
            Attempt::Expired => a.service_token("product-backend", -60),
            Attempt::ForgedSignature => DevAuthority::new(b"forged-key").service_token("product-backend", 3600),
            Attempt::AlgNone => {
                let payload = service.split('.').nth(1).expect("a JWT has a payload");
                format!("{ALG_NONE_HEADER}.{payload}.")
            }
            Attempt::UserWithServiceScope => {
                let claims = json!({ "sub": "alice", "org": ORG, "role": "admin", "scope": SERVICE_SCOPE });
                a.sign(claims.as_object().cloned().unwrap_or_default(), 3600)
            }
        })
    }

    /// The request `attempt` makes on `row`: method, path and body.
    fn request(&self, row: &Row, attempt: Attempt) -> (String, String, Option<String>) {
        let (method, route_path) = row.route.split_once(' ').expect("a route key");
        let org = if attempt == Attempt::PathOfAnotherOrganization {
            OTHER_ORG
        } else {
            ORG
        };
        // `$default` takes any path no route has.
        let (method, route_path) = match route_path {
            "$default" => ("POST", "/v1/orgs/{org}/teleport"),
            path => (method, path),
        };
        let path: Vec<String> = route_path
            .split('/')
            .map(
                |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => row
                        .params
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_else(|| param(name, org, &self.export)),
                    None => segment.to_string(),
                },
            )
            .collect();
        let mut body = row.body.map(|b| b.replace("{entry}", &self.entry));
        if attempt == Attempt::BodyNamingAnotherOrganization {
            body = body.map(|b| {
                let mut v: Value = serde_json::from_str(&b).expect("a row's body is JSON");
                v["org"] = json!(OTHER_ORG);
                v.to_string()
            });
        }
        (method.to_string(), format!("{}{}", path.join("/"), row.query), body)
    }

    /// Every refused attempt through `gateway`; a description of each
    /// answer that is not the expected refusal.
    async fn refusals(&self, gateway: &Gateway, scopes_enforced: bool) -> Vec<String> {
        let mut wrong = Vec::new();
        for (n, row) in ROWS.iter().enumerate() {
            for attempt in ATTEMPTS {
                let Some(want) = expected(row, attempt, scopes_enforced) else {
                    continue;
                };
                let (method, path, body) = self.request(row, attempt);
                let token = self.token(attempt);
                let key = format!("matrix-{n}-{attempt:?}");
                let r = call(gateway, &method, &path, token.as_deref(), Some(&key), body.as_deref()).await;
                let got = match r.content_type.as_str() {
                    "application/problem+json" => r.body["type"]
                        .as_str()
                        .and_then(|t| t.strip_prefix("urn:credit-ledger:problem:"))
                        .map(|t| format!("{} {t}", r.status)),
                    "application/json" => r.body["message"].as_str().map(|m| format!("{} {m}", r.status)),
                    _ => None,
                };
                let want_text = match &want {
                    Refusal::Gateway(status, message) => format!("{status} {message}"),
                    Refusal::Problem(status, kind) => format!("{status} {kind}"),
                };
                if got.as_deref() != Some(want_text.as_str()) {
                    wrong.push(format!(
                        "{} as {attempt:?} ({method} {path}): want {want_text}, got {} {} {}",
                        row.route, r.status, r.content_type, r.body
                    ));
                }
            }
        }
        wrong
    }
}

async fn set_up(stack: &Stack) -> (String, String) {
    let gw = stack.gateway();
    let service = stack.service();
    // Both organizations have accounts and credits: a refusal is the
    // guard's, not a 404 for missing data.
    for org in [ORG, OTHER_ORG] {
        let r = subscribe(&gw, &service, org, "business").await;
        assert_eq!(r.status, 201, "{}", r.body);
        let body = format!(r#"{{"package":"credits_500","payment_reference":"setup-{org}"}}"#);
        let path = format!("/v1/orgs/{org}/purchases");
        let r = call(&gw, "POST", &path, Some(&service), Some("setup-buy"), Some(&body)).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = spend(&gw, &stack.member(), "setup-spend", "ai_email_generation", 2).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = r.body["entry_id"].as_str().unwrap().to_string();
    let path = format!("/v1/orgs/{ORG}/exports");
    let r = call(&gw, "POST", &path, Some(&stack.admin()), Some("setup-export"), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    (entry, r.body["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn every_route_refuses_every_caller_who_may_not_call_it_and_writes_nothing() {
    let stack = Stack::new().await;
    let (entry, export) = set_up(&stack).await;
    let template_routes = stack.template.routes().unwrap();
    let matrix = Matrix {
        stack: &stack,
        template_routes,
        entry,
        export,
    };

    // The table covers the template: every route has a row, every row a route.
    let keys: BTreeSet<String> = matrix
        .template_routes
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let rows: BTreeSet<String> = ROWS.iter().map(|r| r.route.to_string()).collect();
    assert_eq!(rows, keys, "ROWS must say who may call each route of template.yaml");

    // The routes only the service may call carry its scope, and no other does.
    for route in &matrix.template_routes {
        let key = format!("{} {}", route.method, route.path);
        let scoped = ROWS.iter().any(|r| r.route == key && r.who == Who::ServiceScope);
        let want: Vec<String> = if scoped {
            vec![SERVICE_SCOPE.to_string()]
        } else {
            vec![]
        };
        assert_eq!(route.scopes, want, "AuthorizationScopes of {key}");
    }

    let before = stack.snapshot().await;
    // As deployed: the authorizer checks tokens and scopes.
    let wrong = matrix.refusals(&stack.gateway(), true).await;
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
    // The functions check again: with no scope on any route, they refuse
    // the same callers themselves.
    let unscoped = matrix
        .template_routes
        .iter()
        .cloned()
        .map(|r| Route { scopes: vec![], ..r })
        .collect();
    let gw = Gateway::new(unscoped, stack.authority.clone(), Arc::new(stack.ledger()));
    let wrong = matrix.refusals(&gw, false).await;
    assert!(wrong.is_empty(), "{} wrong answers:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(stack.snapshot().await, before, "a refused call wrote");

    // And the table is not stricter than the guards: the least caller who
    // may call each route gets past every guard (whatever the operation
    // then says).
    let gw = stack.gateway();
    for (n, row) in ROWS.iter().enumerate() {
        let (attempt, token) = match row.who {
            Who::Anyone => (
                Attempt::OtherOrganizationsAdmin,
                matrix.token(Attempt::OtherOrganizationsAdmin),
            ),
            Who::Member => (Attempt::Member, Some(stack.member())),
            Who::Admin => (Attempt::Admin, Some(stack.admin())),
            // The organization's path and the row's body, as the admin's.
            Who::ServiceScope | Who::ServiceInFunction => (Attempt::Admin, Some(stack.service())),
        };
        let (method, path, body) = matrix.request(row, attempt);
        let key = format!("allowed-{n}");
        let r = call(&gw, &method, &path, token.as_deref(), Some(&key), body.as_deref()).await;
        let kind = r.body["type"].as_str().unwrap_or_default();
        let refused = r.body.get("message").is_some()
            || ["unauthenticated", "forbidden", "not-found"]
                .iter()
                .any(|k| kind == format!("urn:credit-ledger:problem:{k}"));
        assert!(
            !refused,
            "{} as {:?} ({method} {path}): {} {}",
            row.route, row.who, r.status, r.body
        );
    }
}

/// A gateway in front of functions with no table: what the tests below
/// call must answer without the store (touching it would be a 500).
async fn gateway_without_table(routes: Vec<Route>, authority: &DevAuthority) -> Gateway {
    let config = ledger_service::config::sdk_config().await;
    let ledger = ledger_service::dynamo_ledger(
        aws_sdk_dynamodb::Client::new(&config),
        "no-table",
        Arc::new(ledger_domain::Catalog::default_catalog()),
        Arc::new(ledger_domain::FixedClock::new(start_time())),
    );
    Gateway::new(routes, authority.clone(), Arc::new(ledger))
}

/// A request through the gateway with its headers kept (`call` drops them).
async fn respond(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> lambda_http::Response<lambda_http::Body> {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    Box::pin(gw.respond(method, path, None, &headers, b"{}")).await
}

fn problem_type(response: lambda_http::Response<lambda_http::Body>) -> String {
    let lambda_http::Body::Text(text) = response.into_body() else {
        panic!("a problem has a text body");
    };
    let body: Value = serde_json::from_str(&text).unwrap();
    body["type"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn an_unknown_method_on_a_known_path_is_a_405_that_names_the_methods_it_takes() {
    let routes = Template::load(&ledger_local::project_root().join("template.yaml"))
        .unwrap()
        .routes()
        .unwrap();
    let authority = DevAuthority::new(b"security-test-key");
    let service = authority.service_token("product-backend", 600);
    // Each path of the template, its parameters filled, with its methods.
    let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for route in &routes {
        if route.path == "$default" {
            continue;
        }
        let path = route
            .path
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => param(name, ORG, "exp-1"),
                None => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/");
        paths.entry(path).or_default().insert(route.method.clone());
    }
    let gw = gateway_without_table(routes, &authority).await;
    for (path, methods) in &paths {
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            if methods.contains(method) {
                continue;
            }
            let r = respond(&gw, method, path, Some(&service)).await;
            assert_eq!(r.status(), 405, "{method} {path}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let allow: BTreeSet<String> = r.headers()["allow"]
                .to_str()
                .unwrap()
                .split(", ")
                .map(str::to_string)
                .collect();
            assert_eq!(&allow, methods, "Allow of {path}");
            assert_eq!(problem_type(r), "urn:credit-ledger:problem:method-not-allowed");
        }
    }
    // A path no route has is a 404, whatever the method.
    for (method, path) in [
        ("GET", "/v1/orgs/acme/teleport"),
        ("DELETE", "/v2/catalog"),
        ("GET", "/"),
    ] {
        let r = respond(&gw, method, path, Some(&service)).await;
        assert_eq!(r.status(), 404, "{method} {path}");
        assert!(!r.headers().contains_key("allow"));
        assert_eq!(problem_type(r), "urn:credit-ledger:problem:route-not-found");
    }
    // The authorizer guards `$default` too: no token, no answer about routes.
    let r = respond(&gw, "DELETE", "/v1/orgs/acme/spend", None).await;
    assert_eq!(r.status(), 401);
}

/// A route's scopes are read as SAM deploys them (the event's, else the
/// default authorizer's) and checked as API Gateway's JWT authorizer does:
/// one of them in the token's `scope` (space-separated) or `scp` claim, or 403.
#[tokio::test]
async fn the_gateway_checks_route_scopes_as_the_jwt_authorizer_does() {
    let template = Template::parse(
        r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            AuthorizationScopes: [ledger/read]
  Balance:
    Type: AWS::Serverless::Function
    Properties:
      Environment: { Variables: { LEDGER_FUNCTION: balance } }
      Events:
        Catalog:
          Type: HttpApi
          Properties: { ApiId: !Ref Api, Method: GET, Path: /v1/catalog }
        Fallback:
          Type: HttpApi
          Properties:
            ApiId: !Ref Api
            Method: ANY
            Path: $default
            Auth: { AuthorizationScopes: [ledger/service, ledger/audit] }
"#,
    )
    .unwrap();
    let authority = DevAuthority::new(b"security-test-key");
    let gw = gateway_without_table(template.routes().unwrap(), &authority).await;
    let token = |claim: &str, scope: Value| {
        let claims = json!({ "sub": "product-backend", claim: scope });
        authority.sign(claims.as_object().cloned().unwrap(), 600)
    };
    // Whether the authorizer lets the token through (the function then
    // answers as it will).
    let cases = [
        ("/v1/catalog", token("scope", json!("ledger/read")), true),
        ("/v1/catalog", token("scope", json!("openid ledger/read")), true),
        ("/v1/catalog", token("scp", json!(["ledger/read"])), true),
        ("/v1/catalog", token("scope", json!("ledger/service")), false),
        ("/v1/catalog", token("scope", json!("ledger")), false),
        ("/v1/catalog", token("other", json!("ledger/read")), false),
        // The event's scopes replace the default's: any one of them will do.
        ("/v1/teleport", token("scope", json!("ledger/read")), false),
        ("/v1/teleport", token("scope", json!("ledger/audit")), true),
        ("/v1/teleport", token("scope", json!("openid ledger/service")), true),
    ];
    for (path, token, passes) in cases {
        let r = call(&gw, "GET", path, Some(&token), None, None).await;
        let refused = r.body == json!({ "message": "Forbidden" });
        assert_eq!(refused, !passes, "{path}: {} {}", r.status, r.body);
        assert_eq!(r.status == 403, refused, "{path}: {} {}", r.status, r.body);
    }
}
