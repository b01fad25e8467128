//! Who may do what: organization, user and role come only from verified
//! token claims; nobody reads or changes another organization's credits.

mod common;

use common::*;
use ledger_local::tokens::DevAuthority;

#[tokio::test]
async fn the_gateway_refuses_tokens_the_jwt_authorizer_would_refuse() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let path = "/v1/orgs/acme/balance";
    let mut wrong_audience = stack.authority.clone();
    wrong_audience.audience = "someone-else".into();
    let mut wrong_issuer = stack.authority.clone();
    wrong_issuer.issuer = "https://evil.example".into();
    let bad_tokens = [
        None,
        Some("not-a-jwt".to_string()),
        Some(DevAuthority::new(b"forged-key").user_token(ORG, "alice", "admin", 600)),
        Some(stack.authority.user_token(ORG, "alice", "admin", -60)),
        Some(wrong_audience.user_token(ORG, "alice", "admin", 600)),
        Some(wrong_issuer.user_token(ORG, "alice", "admin", 600)),
    ];
    for token in &bad_tokens {
        let r = call(&gw, "GET", path, token.as_deref(), None, None).await;
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.body["message"], "Unauthorized");
    }
    let no_role = stack.authority.user_token(ORG, "alice", "owner", 600);
    let r = call(&gw, "GET", path, Some(&no_role), None, None).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:forbidden"))
    );
}

#[tokio::test]
async fn a_member_cannot_purchase_or_subscribe() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    let before = stack.snapshot().await;
    let member = stack.member();
    // Buying is the service's route: the authorizer refuses a token
    // without its scope before any function runs.
    let r = purchase(
        &gw,
        &member,
        "m-1",
        r#"{"package":"credits_500","payment_reference":"p"}"#,
    )
    .await;
    assert_eq!((r.status, r.body["message"].as_str()), (403, Some("Forbidden")));
    let r = call(
        &gw,
        "PUT",
        "/v1/orgs/acme/subscription",
        Some(&member),
        Some("m-2"),
        Some(r#"{"plan":"starter"}"#),
    )
    .await;
    assert_eq!(r.status, 403);
    // An admin buying credits without the product's backend is credit
    // without payment: the service's to call, once paid.
    let r = purchase(
        &gw,
        &stack.admin(),
        "a-1",
        r#"{"package":"credits_500","payment_reference":"unpaid"}"#,
    )
    .await;
    assert_eq!((r.status, r.body["message"].as_str()), (403, Some("Forbidden")));
    assert_eq!(stack.snapshot().await, before);
}

#[tokio::test]
async fn a_user_token_that_also_carries_the_service_scope_acts_as_nobody() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    let before = stack.snapshot().await;
    let claims = serde_json::json!({ "sub": "mallory", "org": OTHER_ORG, "role": "admin", "scope": "ledger/service" });
    let token = stack.authority.sign(claims.as_object().cloned().unwrap(), 3600);
    let r = purchase(
        &gw,
        &token,
        "mixed-1",
        r#"{"package":"credits_500","payment_reference":"mixed"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (403, Some("urn:credit-ledger:problem:forbidden")),
        "{}",
        r.body
    );
    let r = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&token), None, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(stack.snapshot().await, before);
}

#[tokio::test]
async fn no_caller_reads_or_spends_another_organizations_credits() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let service = stack.service();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    assert_eq!(subscribe(&gw, &service, OTHER_ORG, "business").await.status, 201);
    let before = stack.snapshot().await;

    // An admin of acme, whatever the path or the body says.
    let admin = stack.admin();
    for (method, path, body) in [
        ("GET", "/v1/orgs/globex/balance", None),
        ("GET", "/v1/orgs/globex/ledger", None),
        (
            "POST",
            "/v1/orgs/globex/spend",
            Some(r#"{"action":"ai_email_generation"}"#),
        ),
        ("PUT", "/v1/orgs/globex/subscription", Some(r#"{"plan":"starter"}"#)),
        ("DELETE", "/v1/orgs/globex/subscription", None),
    ] {
        let r = call(&gw, method, path, Some(&admin), Some("cross-1"), body).await;
        assert_eq!(
            (r.status, r.body["type"].as_str()),
            (404, Some("urn:credit-ledger:problem:not-found")),
            "{method} {path}"
        );
        assert!(!r.body.to_string().contains("5000"), "nothing about globex leaks");
    }
    // The service's routes refuse a user's token before the organization matters.
    for (path, body) in [
        (
            "/v1/orgs/globex/purchases",
            Some(r#"{"package":"credits_500","payment_reference":"x"}"#),
        ),
        ("/v1/orgs/globex/renewals", None),
    ] {
        let r = call(&gw, "POST", path, Some(&admin), Some("cross-1"), body).await;
        assert_eq!(
            (r.status, r.body["message"].as_str()),
            (403, Some("Forbidden")),
            "{path}"
        );
    }
    // A body cannot choose the organization.
    let r = call(
        &gw,
        "POST",
        "/v1/orgs/acme/spend",
        Some(&admin),
        Some("cross-2"),
        Some(r#"{"action":"ai_email_generation","org":"globex"}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    // A member cannot act for another user.
    let r = call(
        &gw,
        "POST",
        "/v1/orgs/acme/spend",
        Some(&stack.member()),
        Some("cross-3"),
        Some(r#"{"action":"ai_email_generation","user":"alice"}"#),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(stack.snapshot().await, before, "nothing was written");

    // The service acts on any organization, for the user it names.
    let r = call(
        &gw,
        "POST",
        "/v1/orgs/globex/spend",
        Some(&service),
        Some("svc-1"),
        Some(r#"{"action":"ai_email_generation","user":"gina"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    stack.settle().await;
    let r = call(&gw, "GET", "/v1/orgs/globex/ledger", Some(&service), None, None).await;
    assert_eq!(r.body["entries"][0]["user"], "gina");
    assert_eq!(r.body["entries"][0]["caller"], "service");
    assert_eq!(available(&gw, &admin, "credits").await, "500", "acme untouched");
}

#[tokio::test]
async fn members_see_their_own_ledger_entries_admins_see_all() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (admin, member) = (stack.admin(), stack.member());
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    assert_eq!(spend(&gw, &member, "b-1", "ai_email_generation", 1).await.status, 200);
    assert_eq!(spend(&gw, &admin, "a-1", "ai_email_generation", 2).await.status, 200);
    assert_eq!(spend(&gw, &member, "b-2", "ai_email_generation", 3).await.status, 200);

    // Another user of the organization reusing someone's key and body is
    // not handed their replay.
    let r = spend(&gw, &admin, "b-1", "ai_email_generation", 1).await;
    assert_eq!((r.status, r.replayed), (422, false));

    stack.settle().await;
    let mine = ledger(&gw, &member, 1).await;
    assert_eq!(
        mine.iter().map(|e| e["quantity"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![3, 1]
    );
    assert!(mine.iter().all(|e| e["user"] == "bob"));
    assert_eq!(ledger(&gw, &admin, 50).await.len(), 4);
}
