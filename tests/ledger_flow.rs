//! A Starter account through a realistic sequence, end to end: the local
//! gateway, the real handlers, the real SDK, DynamoDB Local.

mod common;

use chrono::Duration;
use common::*;

#[tokio::test]
async fn starter_account_sequence() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (admin, member) = (stack.admin(), stack.member());

    let r = subscribe(&gw, &stack.service(), ORG, "starter").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["period"]["end"], "2026-02-28", "anchor 31 clamps to Feb 28");
    assert_eq!(available(&gw, &member, "credits").await, "500");

    // AI emails and email verifications at 0.5.
    let r = spend(&gw, &member, "s-1", "ai_email_generation", 10).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["charged"], "10");
    let r = spend(&gw, &member, "s-2", "email_verification", 3).await;
    assert_eq!(r.body["charged"].as_str(), Some("1.5"));
    assert_eq!(available(&gw, &member, "credits").await, "488.5");
    assert_eq!(r.body["buckets"][0]["source"], "plan");

    // A purchase: price recorded, credits that never expire.
    let r = purchase(
        &gw,
        &stack.service(),
        "p-1",
        r#"{"package":"credits_500","payment_reference":"pay_123"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["entry"]["purchase"]["price_cents"], 2500);
    assert_eq!(available(&gw, &member, "credits").await, "988.5");

    // Plan credits go first: 490 emails take the plan's 488.5 and 1.5 purchased.
    let r = spend(&gw, &member, "s-3", "ai_email_generation", 490).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let paid: Vec<(&str, &str)> = r.body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["source"].as_str().unwrap(), l["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(paid, vec![("plan", "-488.5"), ("purchased", "-1.5")]);
    assert_eq!(available(&gw, &member, "credits").await, "498.5");

    // Out of credits: 402 with what was needed and what is available.
    let before = stack.snapshot().await;
    let r = spend(&gw, &member, "s-4", "ai_email_generation", 500).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(r.body["type"], "urn:credit-ledger:problem:insufficient-credits");
    assert_eq!(
        (r.body["needed"].as_str(), r.body["available"].as_str()),
        (Some("500"), Some("498.5"))
    );
    let kept = serde_json::json!({ "S": "REQ#s-4" });
    let after: Vec<_> = stack
        .snapshot()
        .await
        .into_iter()
        .filter(|item| item["sk"] != kept)
        .collect();
    assert_eq!(
        after, before,
        "a refused spend changes nothing; it only keeps its answer under its key"
    );

    // Credit-free actions keep working whatever the balance.
    let r = spend(&gw, &member, "s-5", "email_send", 25).await;
    assert_eq!((r.status, r.body["charged"].as_str()), (200, Some("0")));

    // A replay returns the original status and body, and charges nothing.
    let original = spend(&gw, &member, "s-3", "ai_email_generation", 490).await;
    assert_eq!(original.status, 200);
    assert!(original.replayed);
    stack.settle().await;
    assert_eq!(
        original.body["entry_id"],
        r_entry(&gw, &member, "ai_email_generation", 490).await
    );
    assert_eq!(available(&gw, &member, "credits").await, "498.5");
    // The same key with another body is refused.
    let r = spend(&gw, &member, "s-3", "ai_email_generation", 491).await;
    assert_eq!(
        (r.status, r.body["type"].as_str()),
        (422, Some("urn:credit-ledger:problem:idempotency-key-reused"))
    );

    // The ledger, newest first over small pages, sums to the balance.
    stack.settle().await;
    let entries = ledger(&gw, &admin, 2).await;
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![6, 5, 4, 3, 2, 1]);
    assert_eq!(ledger_total(&entries, "credits"), thousandths("498.5"));
    assert_eq!(entries[0]["balance_after"]["credits"], "498.5");

    // The month ends: the first use after it renews first. Last month's
    // plan leftovers are gone (none here), purchased credits stay.
    stack.clock.advance(Duration::days(29));
    let r = spend(&gw, &member, "s-6", "ai_email_generation", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(available(&gw, &member, "credits").await, "997.5");
    assert_eq!(r.body["buckets"][0]["source"], "plan");
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&member), None, None)
        .await
        .body;
    assert_eq!(balance["period"]["start"], "2026-02-28");
    assert_eq!(balance["meters"]["credits"]["used_this_period"], "1");
    stack.settle().await;
    let entries = ledger(&gw, &admin, 50).await;
    assert_eq!(entries[1]["kind"], "renewal");
    assert_eq!(ledger_total(&entries, "credits"), thousandths("997.5"));
}

/// The entry id the ledger holds for the (only) spend of `quantity` units.
async fn r_entry(gw: &ledger_local::gateway::Gateway, token: &str, action: &str, quantity: u64) -> serde_json::Value {
    let entries = ledger(gw, token, 50).await;
    entries
        .into_iter()
        .find(|e| e["action"] == action && e["quantity"] == quantity)
        .map(|e| e["id"].clone())
        .expect("the entry")
}

#[tokio::test]
async fn a_warm_spend_is_one_dynamodb_request() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "business").await.status, 201);

    let before = stack.dynamodb_requests();
    assert_eq!(
        spend(&gw, &stack.member(), "warm-1", "ai_email_generation", 1)
            .await
            .status,
        200
    );
    let warm = stack.dynamodb_requests() - before;
    assert_eq!(warm, 1, "the fast path is one TransactWriteItems, no read");

    // A fresh function instance has nothing cached: one consistent read first.
    let cold_gw = stack.gateway();
    let before = stack.dynamodb_requests();
    assert_eq!(
        spend(&cold_gw, &stack.member(), "cold-1", "ai_email_generation", 1)
            .await
            .status,
        200
    );
    assert_eq!(stack.dynamodb_requests() - before, 2);

    // The other instance's cache is now stale, but a spend is conditioned
    // only on the buckets it draws holding enough: the debit applies as a
    // delta to whatever they hold, still one request, nothing lost.
    let before = stack.dynamodb_requests();
    assert_eq!(
        spend(&gw, &stack.member(), "warm-2", "ai_email_generation", 1)
            .await
            .status,
        200
    );
    assert_eq!(stack.dynamodb_requests() - before, 1);
    assert_eq!(available(&gw, &stack.member(), "credits").await, "4997");

    // The other contracts: a balance is one read, a purchase one transaction.
    let before = stack.dynamodb_requests();
    balance(&gw, &stack.member()).await;
    assert_eq!(stack.dynamodb_requests() - before, 1, "a balance is one GetItem");
    let before = stack.dynamodb_requests();
    let bought = purchase(
        &gw,
        &stack.service(),
        "buy-count",
        r#"{"package":"credits_500","payment_reference":"pay-count"}"#,
    )
    .await;
    assert_eq!(bought.status, 201, "{}", bought.body);
    assert_eq!(
        stack.dynamodb_requests() - before,
        1,
        "a purchase is one TransactWriteItems (with its payment claim)"
    );
}

#[tokio::test]
async fn dry_runs_quote_and_up_to_charges_what_the_balance_covers() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let member = stack.member();
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "free_trial").await.status, 201);
    let balance = call(&gw, "GET", "/v1/orgs/acme/balance", Some(&member), None, None)
        .await
        .body;
    assert_eq!(balance["meters"]["credits"]["buckets"][0]["source"], "trial");
    assert_eq!(
        balance["meters"]["credits"]["buckets"][0]["expires_at"],
        serde_json::Value::Null
    );

    let before = stack.snapshot().await;
    let quote = |body: &'static str| call(&gw, "POST", "/v1/orgs/acme/spend", Some(&member), None, Some(body));
    let q = quote(r#"{"action":"linkedin_enrichment","quantity":620,"dry_run":true}"#).await;
    assert_eq!(q.status, 200, "{}", q.body);
    assert_eq!(
        (
            q.body["cost"].as_str(),
            q.body["affordable"].as_u64(),
            q.body["sufficient"].as_bool(),
            q.body["charged"].as_str()
        ),
        (Some("620"), Some(500), Some(false), Some("0"))
    );
    let q = quote(r#"{"action":"linkedin_enrichment","quantity":620,"mode":"up_to","dry_run":true}"#).await;
    assert_eq!(
        (q.body["quantity"].as_u64(), q.body["charged"].as_str()),
        (Some(500), Some("500"))
    );
    assert_eq!(stack.snapshot().await, before, "a dry run charges nothing");

    let r = call(
        &gw,
        "POST",
        "/v1/orgs/acme/spend",
        Some(&member),
        Some("bulk-1"),
        Some(r#"{"action":"linkedin_enrichment","quantity":620,"mode":"up_to","campaign":"q4"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.body["requested"].as_u64(),
            r.body["quantity"].as_u64(),
            r.body["charged"].as_str()
        ),
        (Some(620), Some(500), Some("500"))
    );
    let r = call(
        &gw,
        "POST",
        "/v1/orgs/acme/spend",
        Some(&member),
        Some("bulk-2"),
        Some(r#"{"action":"linkedin_enrichment","quantity":5,"mode":"up_to"}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.body["needed"].as_str(), r.body["available"].as_str()),
        (402, Some("1"), Some("0"))
    );
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 10).await;
    assert_eq!(
        (entries[0]["campaign"].as_str(), entries[0]["requested"].as_u64()),
        (Some("q4"), Some(620))
    );
}

#[tokio::test]
async fn a_payment_reference_credits_once_whatever_the_key() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let service = stack.service();
    assert_eq!(subscribe(&gw, &service, ORG, "per_seat_1000").await.status, 201);
    let buy = |key: &'static str, body: &'static str| purchase(&gw, &service, key, body);

    // A custom amount at the catalog's unit price ($0.10 a credit).
    let first = buy("buy-1", r#"{"credits":300,"payment_reference":"pi_9"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["entry"]["purchase"]["price_cents"], 3000);
    // The payment provider's webhook retried with a new key: the original answer, no second grant.
    let again = buy("buy-2", r#"{"credits":300,"payment_reference":"pi_9"}"#).await;
    assert_eq!((again.status, again.replayed), (201, true));
    assert_eq!(again.body, first.body);
    // The same reference for something else is refused.
    let other = buy("buy-3", r#"{"package":"credits_1000","payment_reference":"pi_9"}"#).await;
    assert_eq!(
        (other.status, other.body["type"].as_str()),
        (409, Some("urn:credit-ledger:problem:payment-reference-reused"))
    );
    assert_eq!(available(&gw, &service, "credits").await, "1300");
    // A payment belongs to one organization: its reference cannot credit another.
    assert_eq!(subscribe(&gw, &service, OTHER_ORG, "starter").await.status, 201);
    let elsewhere = call(
        &gw,
        "POST",
        "/v1/orgs/globex/purchases",
        Some(&service),
        Some("buy-1"),
        Some(r#"{"credits":300,"payment_reference":"pi_9"}"#),
    )
    .await;
    assert_eq!(
        (elsewhere.status, elsewhere.body["type"].as_str()),
        (409, Some("urn:credit-ledger:problem:payment-reference-reused"))
    );
}

#[tokio::test]
async fn two_instances_renewing_at_once_renew_once_and_both_spends_land() {
    let stack = Stack::new().await;
    let (a, b) = (stack.gateway(), stack.gateway());
    let member = stack.member();
    assert_eq!(subscribe(&a, &stack.service(), ORG, "starter").await.status, 201);
    // Both instances hold the account in their caches.
    assert_eq!(spend(&a, &member, "a-1", "ai_email_generation", 10).await.status, 200);
    assert_eq!(spend(&b, &member, "b-1", "ai_email_generation", 10).await.status, 200);
    assert_eq!(spend(&a, &member, "a-2", "ai_email_generation", 10).await.status, 200);

    // The month ends. A renews and spends; B's stale guess renews the same
    // period again: the account's condition and the renewal's key both
    // fail, and B must decide again from the fresh state, not see a replay.
    stack.clock.advance(Duration::days(28));
    assert_eq!(spend(&a, &member, "a-3", "ai_email_generation", 1).await.status, 200);
    let r = spend(&b, &member, "b-2", "ai_email_generation", 1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(available(&a, &member, "credits").await, "498");

    stack.settle().await;
    let entries = ledger(&a, &stack.admin(), 50).await;
    assert_eq!(
        entries.iter().filter(|e| e["kind"] == "renewal").count(),
        1,
        "renewed once"
    );
    assert_eq!(ledger_total(&entries, "credits"), thousandths("498"));
}

#[tokio::test]
async fn a_refusal_is_kept_under_its_key_and_a_new_key_asks_afresh() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let (admin, member) = (stack.admin(), stack.member());
    assert_eq!(subscribe(&gw, &stack.service(), ORG, "starter").await.status, 201);
    assert_eq!(spend(&gw, &member, "all", "ai_email_generation", 500).await.status, 200);

    let refused = spend(&gw, &member, "late", "ai_email_generation", 3).await;
    assert_eq!((refused.status, refused.replayed), (402, false));
    let top_up = r#"{"package":"credits_500","payment_reference":"pay-late"}"#;
    assert_eq!(purchase(&gw, &stack.service(), "top-up", top_up).await.status, 201);

    // The retry gets the original answer, from any instance.
    for instance in [&gw, &stack.gateway()] {
        let retry = spend(instance, &member, "late", "ai_email_generation", 3).await;
        assert_eq!((retry.status, retry.replayed), (402, true));
        assert_eq!(retry.content_type, "application/problem+json");
        assert_eq!(retry.body, refused.body);
    }
    // The same key for another request is still a reuse.
    let other = spend(&gw, &member, "late", "ai_email_generation", 4).await;
    assert_eq!(other.status, 422);
    // A new key asks afresh.
    let fresh = spend(&gw, &member, "late-2", "ai_email_generation", 3).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(available(&gw, &member, "credits").await, "497");
    // The kept refusal is not a ledger entry.
    stack.settle().await;
    let entries = ledger(&gw, &admin, 50).await;
    assert_eq!(entries.len(), 4);
    assert_eq!(ledger_total(&entries, "credits"), thousandths("497"));
}

#[tokio::test]
async fn voiding_a_refunded_purchase_takes_back_what_is_left_of_that_pack_only() {
    // starter: 500 plan credits; three packs bought: 100, 50, 30.
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let mut packs = Vec::new();
    for (i, credits) in [100, 50, 30].into_iter().enumerate() {
        let body = format!(r#"{{"credits":"{credits}","payment_reference":"pay-{i}"}}"#);
        let r = purchase(&gw, &stack.service(), &format!("buy-{i}"), &body).await;
        assert_eq!(r.status, 201, "{}", r.body);
        packs.push(r.body["entry"]["id"].as_str().unwrap().to_string());
    }
    // 520 spent: the plan's 500, then 20 of the first pack.
    let r = spend(&gw, &stack.member(), "s1", "ai_email_generation", 520).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let void = |key: &str, entry: &str| {
        let body = serde_json::json!({ "entry_id": entry, "reason": "refunded" }).to_string();
        let (gw, token, key) = (stack.gateway(), stack.service(), key.to_string());
        async move {
            call(
                &gw,
                "POST",
                &format!("/v1/orgs/{ORG}/reversals"),
                Some(&token),
                Some(&key),
                Some(&body),
            )
            .await
        }
    };
    // The second pack, untouched: all of it leaves.
    let r = void("v-b", &packs[1]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["taken_back"].as_str(), r.body["not_taken_back"].as_str()),
        (Some("50"), Some("0"))
    );
    // The first, 20 spent: 80 leave, the 20 stay spent.
    let r = void("v-a", &packs[0]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.body["taken_back"].as_str(), r.body["not_taken_back"].as_str()),
        (Some("80"), Some("20"))
    );
    assert_eq!(
        available(&gw, &stack.member(), "credits").await,
        "30",
        "the third pack, untouched"
    );
    // Spending skips the voided ranges: the next spend draws the third pack.
    let r = spend(&gw, &stack.member(), "s2", "ai_email_generation", 10).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["buckets"][0]["offset"], "150", "{}", r.body);
    let r = void("v-c", &packs[2]).await;
    assert_eq!(
        (r.body["taken_back"].as_str(), r.body["not_taken_back"].as_str()),
        (Some("20"), Some("10"))
    );
    assert_eq!(available(&gw, &stack.member(), "credits").await, "0");
    // Once each: the same void under another key replays the first; another
    // one of the same pack is refused. Only purchases are voided.
    let r = void("v-a-again", &packs[0]).await;
    assert_eq!((r.status, r.replayed), (201, true), "{}", r.body);
    assert_eq!(r.body["taken_back"], "80");
    let body = serde_json::json!({ "entry_id": packs[0], "reason": "refunded", "note": "again" }).to_string();
    let path = format!("/v1/orgs/{ORG}/reversals");
    let r = call(
        &gw,
        "POST",
        &path,
        Some(&stack.service()),
        Some("v-a-other"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    stack.settle().await;
    let entries = ledger(&gw, &stack.admin(), 100).await;
    let a_spend = entries.iter().find(|e| e["kind"] == "spend").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = void("v-spend", &a_spend).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(ledger_total(&entries, "credits"), 0, "history sums to the balance");
}

/// A charge's credits go back once: sent again under another key once its
/// bucket is full again (returning them twice would overfill it), the
/// reversal replays the first; another reversal of it is refused.
#[tokio::test]
async fn a_charge_reversed_is_reversed_once_whatever_the_key_even_with_its_bucket_full_again() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let r = spend(&gw, &stack.member(), "s1", "ai_email_generation", 8).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let charge = r.body["entry_id"].as_str().unwrap().to_string();
    let reverse = |key: &str, note: &str| {
        let body = serde_json::json!({ "entry_id": charge, "reason": "invalid_result", "note": note }).to_string();
        let (gw, token, key) = (stack.gateway(), stack.service(), key.to_string());
        async move {
            let path = format!("/v1/orgs/{ORG}/reversals");
            call(&gw, "POST", &path, Some(&token), Some(&key), Some(&body)).await
        }
    };
    let first = reverse("r-1", "bad data").await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(
        available(&gw, &stack.member(), "credits").await,
        "500",
        "the plan's bucket is full again"
    );
    let again = reverse("r-1-again", "bad data").await;
    assert_eq!((again.status, again.replayed), (201, true), "{}", again.body);
    assert_eq!(again.body["entry"]["id"], first.body["entry"]["id"]);
    let other = reverse("r-2", "another reason").await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert!(
        other.body["type"].as_str().unwrap().ends_with("already-reversed"),
        "{}",
        other.body
    );
    assert_eq!(available(&gw, &stack.member(), "credits").await, "500");
}

#[tokio::test]
async fn a_retry_that_writes_out_the_defaults_replays_the_request_that_left_them_out() {
    let stack = Stack::with_account("starter").await;
    let gw = stack.gateway();
    let member = stack.member();
    let path = format!("/v1/orgs/{ORG}/spend");
    let first = call(
        &gw,
        "POST",
        &path,
        Some(&member),
        Some("d-1"),
        Some(r#"{"action":"ai_email_generation"}"#),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let spelled = r#"{"action":"ai_email_generation","quantity":1,"mode":"all","dry_run":false}"#;
    let again = call(&gw, "POST", &path, Some(&member), Some("d-1"), Some(spelled)).await;
    assert_eq!((again.status, again.replayed), (200, true), "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(available(&gw, &member, "credits").await, "499", "charged once");
    // Another value is another request: the key was used for something else.
    let other = r#"{"action":"ai_email_generation","mode":"up_to"}"#;
    let r = call(&gw, "POST", &path, Some(&member), Some("d-1"), Some(other)).await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A subscription's default billing, written out, is the same request.
    let service = stack.service();
    let first = put_subscription(&gw, &service, OTHER_ORG, "s-1", r#"{"plan":"starter"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let spelled = r#"{"plan":"starter","billing":"monthly"}"#;
    let again = put_subscription(&gw, &service, OTHER_ORG, "s-1", spelled).await;
    assert_eq!((again.status, again.replayed), (201, true), "{}", again.body);
    let annual = r#"{"plan":"starter","billing":"annual"}"#;
    let r = put_subscription(&gw, &service, OTHER_ORG, "s-1", annual).await;
    assert_eq!(r.status, 422, "{}", r.body);
}
