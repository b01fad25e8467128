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
    assert_eq!(subscribe(&gw, &admin, ORG, "starter").await.status, 201);
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
        case("unknown method", "DELETE", spend_path, "{}", 404, "route-not-found"),
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
    for c in &cases {
        let body = (!c.body.is_empty()).then_some(c.body.as_str());
        let r = call(&gw, c.method, c.path, Some(&admin), c.key, body).await;
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
