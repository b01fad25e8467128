//! Every bad input gets a clear 4xx problem with a stable type, and changes
//! nothing: a full read of the table before and after is identical.

mod common;

use common::*;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: Option<&'static str>,
    body: String,
    status: u16,
    problem: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    problem: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        key: Some("bad-1"),
        body: body.to_string(),
        status,
        problem,
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_problem_and_writes_nothing() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let admin = stack.admin();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    assert_eq!(spend(&gw, &admin, "good-1", "ai_email_generation", 1).await.status, 200);

    let spend_path = "/v1/orgs/acme/spend";
    let buy_path = "/v1/orgs/acme/purchases";
    let huge = format!(
        r#"{{"action":"ai_email_generation","campaign":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let cases = vec![
        case(
            "malformed JSON",
            "POST",
            spend_path,
            r#"{"action": "ai_email_generation""#,
            400,
            "malformed-json",
        ),
        case("not an object", "POST", spend_path, r#"[1,2]"#, 400, "malformed-json"),
        case(
            "unknown action",
            "POST",
            spend_path,
            r#"{"action":"teleport"}"#,
            400,
            "unknown-action",
        ),
        case(
            "zero quantity",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","quantity":0}"#,
            400,
            "invalid-quantity",
        ),
        case(
            "negative quantity",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","quantity":-3}"#,
            400,
            "invalid-request",
        ),
        case(
            "fractional quantity",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","quantity":1.5}"#,
            400,
            "invalid-request",
        ),
        case(
            "huge quantity",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","quantity":100001}"#,
            400,
            "invalid-quantity",
        ),
        case(
            "unknown field",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","org":"globex"}"#,
            400,
            "invalid-request",
        ),
        case(
            "charged on its result",
            "POST",
            spend_path,
            r#"{"action":"email_finder"}"#,
            400,
            "action-charged-on-result",
        ),
        case(
            "two ledger filters with no index for both",
            "GET",
            "/v1/orgs/acme/ledger?user=bob&action=email_send",
            "",
            400,
            "invalid-request",
        ),
        case(
            "bad mode",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","mode":"some"}"#,
            400,
            "invalid-request",
        ),
        case(
            "bad campaign id",
            "POST",
            spend_path,
            r#"{"action":"ai_email_generation","campaign":"a b"}"#,
            400,
            "invalid-request",
        ),
        case("oversized body", "POST", spend_path, &huge, 413, "body-too-large"),
        case(
            "over-precise credits",
            "POST",
            buy_path,
            r#"{"credits":"10.0001","payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "over-precise number",
            "POST",
            buy_path,
            r#"{"credits":0.0001,"payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "negative credits",
            "POST",
            buy_path,
            r#"{"credits":"-5","payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "zero credits",
            "POST",
            buy_path,
            r#"{"credits":0,"payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "non-numeric credits",
            "POST",
            buy_path,
            r#"{"credits":"lots","payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "exponent credits",
            "POST",
            buy_path,
            r#"{"credits":1e3,"payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "fractional custom credits",
            "POST",
            buy_path,
            r#"{"credits":"10.5","payment_reference":"r1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "package and credits",
            "POST",
            buy_path,
            r#"{"package":"credits_500","credits":5,"payment_reference":"r1"}"#,
            400,
            "invalid-request",
        ),
        case(
            "unknown package",
            "POST",
            buy_path,
            r#"{"package":"credits_7","payment_reference":"r1"}"#,
            400,
            "unknown-package",
        ),
        case(
            "no payment reference",
            "POST",
            buy_path,
            r#"{"package":"credits_500"}"#,
            400,
            "invalid-request",
        ),
        case(
            "unknown plan",
            "PUT",
            "/v1/orgs/acme/subscription",
            r#"{"plan":"platinum"}"#,
            400,
            "unknown-plan",
        ),
        case(
            "zero seats",
            "PUT",
            "/v1/orgs/acme/subscription",
            r#"{"plan":"starter","seats":0}"#,
            400,
            "invalid-request",
        ),
        case(
            "an upgrade asked by an admin (paid credits are the service's)",
            "PUT",
            "/v1/orgs/acme/subscription",
            r#"{"plan":"business"}"#,
            403,
            "paid-by-service",
        ),
        case(
            "limits for someone not a member",
            "PUT",
            "/v1/orgs/acme/members/nobody/limits",
            r#"{"daily":"10"}"#,
            404,
            "member-not-found",
        ),
        case(
            "a negative campaign budget",
            "PUT",
            "/v1/orgs/acme/campaigns/spring/budget",
            r#"{"credits":"-1"}"#,
            400,
            "invalid-amount",
        ),
        case(
            "a budget with an unknown field",
            "PUT",
            "/v1/orgs/acme/campaigns/spring/budget",
            r#"{"credits":"10","period":"month"}"#,
            400,
            "invalid-request",
        ),
        case(
            "unknown route",
            "POST",
            "/v1/orgs/acme/teleport",
            "{}",
            404,
            "route-not-found",
        ),
        case("unknown method", "DELETE", spend_path, "{}", 405, "method-not-allowed"),
        case(
            "bad ledger limit",
            "GET",
            "/v1/orgs/acme/ledger?limit=0",
            "",
            400,
            "invalid-request",
        ),
        case(
            "bad ledger cursor",
            "GET",
            "/v1/orgs/acme/ledger?cursor=%%%",
            "",
            400,
            "invalid-request",
        ),
        Case {
            key: None,
            ..case(
                "missing idempotency key",
                "POST",
                spend_path,
                r#"{"action":"ai_email_generation"}"#,
                400,
                "idempotency-key-missing",
            )
        },
        Case {
            key: Some(""),
            ..case(
                "empty idempotency key",
                "POST",
                spend_path,
                r#"{"action":"ai_email_generation"}"#,
                400,
                "idempotency-key-invalid",
            )
        },
        Case {
            key: None,
            ..case(
                "purchase without key",
                "POST",
                buy_path,
                r#"{"package":"credits_500","payment_reference":"r1"}"#,
                400,
                "idempotency-key-missing",
            )
        },
        // A key already used for another request (the spend above).
        Case {
            key: Some("good-1"),
            ..case(
                "reused key",
                "POST",
                spend_path,
                r#"{"action":"ai_email_generation","quantity":2}"#,
                422,
                "idempotency-key-reused",
            )
        },
        Case {
            key: Some("good-1"),
            ..case(
                "key on another route",
                "POST",
                buy_path,
                r#"{"package":"credits_500","payment_reference":"r9"}"#,
                422,
                "idempotency-key-reused",
            )
        },
    ];
    let long_key = "k".repeat(256);

    let before = stack.snapshot().await;
    let service = stack.service();
    for c in &cases {
        let body = (!c.body.is_empty()).then_some(c.body.as_str());
        // Purchases are the service's (an admin's is a 403 paid-by-service).
        let token = if c.path == buy_path { &service } else { &admin };
        let r = call(&gw, c.method, c.path, Some(token), c.key, body).await;
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.body);
        assert_eq!(r.content_type, "application/problem+json", "{}", c.name);
        assert_eq!(
            r.body["type"],
            format!("urn:credit-ledger:problem:{}", c.problem),
            "{}: {}",
            c.name,
            r.body
        );
        assert_eq!(r.body["status"], c.status, "{}", c.name);
        assert!(
            r.body["title"].is_string() && r.body["detail"].is_string(),
            "{}",
            c.name
        );
    }
    let r = call(
        &gw,
        "POST",
        spend_path,
        Some(&admin),
        Some(&long_key),
        Some(r#"{"action":"ai_email_generation"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (400, Some("urn:credit-ledger:problem:idempotency-key-invalid"))
    );
    assert_eq!(stack.snapshot().await, before, "refused requests must not write");
}

#[tokio::test]
async fn spending_before_subscribing_is_a_clear_404() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let r = spend(&gw, &stack.member(), "early", "ai_email_generation", 1).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (404, Some("urn:credit-ledger:problem:account-not-found"))
    );
    assert!(stack.snapshot().await.is_empty());
}

/// What the contract refuses, however it arrives: amounts with a sign or
/// spaces, a null for a defaulted field, a JSON body not sent as JSON, two
/// Idempotency-Keys or a non-ASCII one, `.` and `..` as organizations. Each
/// a problem, nothing written.
#[tokio::test]
async fn input_outside_the_contract_is_refused_however_it_arrives() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (admin, service) = (stack.admin(), stack.service());
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    let before = stack.snapshot().await;
    let problem = |r: &HttpReply| {
        (
            r.status,
            r.content_type.clone(),
            r.body["type"].as_str().unwrap_or_default().to_string(),
        )
    };
    let expect = |status: u16, kind: &str| {
        (
            status,
            "application/problem+json".to_string(),
            format!("urn:credit-ledger:problem:{kind}"),
        )
    };

    for (i, credits) in [" 5", "5 ", "+5"].iter().enumerate() {
        let body = serde_json::json!({ "credits": credits, "payment_reference": format!("pay-{i}") }).to_string();
        let r = purchase(&gw, &service, &format!("amount-{i}"), &body).await;
        assert_eq!(problem(&r), expect(400, "invalid-amount"), "{credits:?}: {}", r.body);
    }
    let r = call(
        &gw,
        "POST",
        "/v1/orgs/acme/spend",
        Some(&admin),
        Some("null-1"),
        Some(r#"{"action":"ai_email_generation","quantity":null}"#),
    )
    .await;
    assert_eq!(problem(&r), expect(400, "invalid-request"), "{}", r.body);

    // A JSON body sent as text, as a form, or with no content type.
    let body = br#"{"action":"ai_email_generation","quantity":1}"#;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut headers = vec![
            ("authorization".to_string(), format!("Bearer {admin}")),
            ("idempotency-key".to_string(), "typed-1".to_string()),
        ];
        if let Some(t) = content_type {
            headers.push(("content-type".to_string(), t.to_string()));
        }
        let response = gw.respond("POST", "/v1/orgs/acme/spend", None, &headers, body).await;
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    // JSON with parameters, or a +json type, is JSON.
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {admin}")),
        ("idempotency-key".to_string(), "typed-2".to_string()),
        (
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        ),
    ];
    let response = gw
        .respond(
            "POST",
            "/v1/orgs/acme/spend",
            None,
            &headers,
            br#"{"action":"ai_email_generation","dry_run":true}"#,
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);

    // Two Idempotency-Key headers reach the function joined, as API Gateway
    // joins them: not one key. A non-ASCII key is invalid, not missing.
    for (name, keys) in [("two keys", vec!["k-1", "k-2"]), ("non-ASCII", vec!["clé"])] {
        let mut headers = vec![
            ("authorization".to_string(), format!("Bearer {admin}")),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        headers.extend(keys.iter().map(|k| ("idempotency-key".to_string(), k.to_string())));
        let response = gw.respond("POST", "/v1/orgs/acme/spend", None, &headers, body).await;
        assert_eq!(response.status().as_u16(), 400, "{name}");
        let text = match response.into_body() {
            lambda_http::Body::Text(t) => t,
            other => panic!("{name}: {other:?}"),
        };
        assert!(text.contains("idempotency-key-invalid"), "{name}: {text}");
    }

    // `.` and `..` are path steps, not organizations: no such organization,
    // however they are spelled (API Gateway decodes path parameters).
    for org in [".", "..", "%2e%2e", "%2E"] {
        let path = format!("/v1/orgs/{org}/purchases");
        let body = r#"{"credits":"5","payment_reference":"dots"}"#;
        let r = call(&gw, "POST", &path, Some(&service), Some("dots"), Some(body)).await;
        assert_eq!(problem(&r), expect(404, "not-found"), "{org}: {}", r.body);
    }
    assert_eq!(stack.snapshot().await, before, "refused requests must not write");
}

#[tokio::test]
async fn the_ledger_of_an_organization_without_an_account_is_a_404_like_its_balance() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    for path in ["/v1/orgs/acme/balance", "/v1/orgs/acme/ledger"] {
        let r = call(&gw, "GET", path, Some(&stack.admin()), None, None).await;
        assert_eq!(
            (r.status, r.body["type"].as_str()),
            (404, Some("urn:credit-ledger:problem:account-not-found")),
            "{path}: {}",
            r.body
        );
    }
}
