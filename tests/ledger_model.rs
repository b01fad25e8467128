//! The storage layout the other capabilities build on, against DynamoDB
//! Local: an account item that stays small whatever an organization buys,
//! members' history in full pages, accounts found by their renewal date.

mod common;

use std::collections::BTreeSet;

use chrono::Duration;
use common::*;
use ledger_domain::{Actor, CallerKind, Clock, Credits, OrgId, Period, PurchaseGrant, UserId};
use ledger_service::Idempotency;
use ledger_store::items::item_size;
use ledger_store::{DynamoLedgerStore, HistoryStore, RenewalIndex};

/// The bound the README states for the account item: four meters' buckets
/// and usage, whatever the organization buys.
const ACCOUNT_ITEM_LIMIT: usize = 4 * 1024;

#[tokio::test]
async fn five_thousand_purchases_keep_the_account_item_small() {
    let stack = Stack::with_account("starter").await;
    let ledger = stack.ledger();
    let org = OrgId::parse(ORG).unwrap();
    let buyer = Actor {
        user: Some(UserId::parse("alice").unwrap()),
        caller: CallerKind::Service,
    };
    for i in 0..5_000 {
        let grant =
            PurchaseGrant::priced(ledger.catalog(), None, Some(Credits::whole(1)), &format!("pay-{i}")).unwrap();
        let request = Idempotency {
            key: ledger_domain::IdempotencyKey::parse(&format!("buy-{i}")).unwrap(),
            fingerprint: format!("buy-{i}"),
        };
        ledger.purchase(&org, grant, buyer.clone(), &request).await.unwrap();
    }

    // Spends keep working, through the real handler: 600 credits take the
    // plan's 500 and the oldest 100 packs.
    let gw = stack.gateway();
    let r = spend(&gw, &stack.member(), "after-5000", "ai_email_generation", 600).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let pool_line = &r.body["buckets"][1];
    assert_eq!(
        (
            pool_line["source"].as_str(),
            pool_line["amount"].as_str(),
            pool_line["offset"].as_str()
        ),
        (Some("purchased"), Some("-100"), Some("0"))
    );
    let r = spend(&gw, &stack.member(), "next", "email_verification", 3).await;
    assert_eq!(
        r.body["buckets"][0]["offset"], "100",
        "the next spend starts at pack 101"
    );
    assert_eq!(available(&gw, &stack.member(), "credits").await, "4898.5");

    // Each pack stays traceable: the 4,000th purchase's entry says where
    // its credit sits in the pool.
    let store = DynamoLedgerStore::new(stack.client.clone(), stack.table.clone());
    let pack_id = ledger_store::EntryKey::Request(ledger_domain::IdempotencyKey::parse("buy-3999").unwrap()).entry_id();
    let pack = store.entry(&org, &pack_id).await.unwrap().expect("entry by id");
    assert_eq!(pack.lines[0].offset, Some(Credits::whole(3_999)));

    let account = ledger.balance(&org).await.unwrap();
    let stored = stack
        .client
        .get_item()
        .table_name(&stack.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("ORG#{ORG}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("ACCOUNT".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let size = item_size(&stored);
    println!(
        "account item after 5,000 purchases and 2 spends: {size} bytes ({} buckets)",
        account.buckets.len()
    );
    assert!(size <= ACCOUNT_ITEM_LIMIT, "{size} bytes");
}

#[tokio::test]
async fn a_members_history_comes_in_full_pages() {
    let stack = Stack::with_account("business").await;
    let gw = stack.gateway();
    let users = [("bob", "member"), ("carol", "member"), ("dave", "admin")];
    let tokens: Vec<String> = users
        .iter()
        .map(|(u, role)| stack.authority.user_token(ORG, u, role, 3600))
        .collect();
    for i in 0..300 {
        let r = spend(&gw, &tokens[i % 3], &format!("s-{i}"), "ai_variables", 1).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    stack.settle().await;
    for (token, (user, _)) in tokens.iter().zip(users).take(2) {
        let mut cursor: Option<String> = None;
        let mut seqs = Vec::new();
        loop {
            let mut path = format!("/v1/orgs/{ORG}/ledger?limit=7");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = call(&gw, "GET", &path, Some(token), None, None).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let page = r.body["entries"].as_array().unwrap();
            assert!(
                page.iter().all(|e| e["user"] == user),
                "{user} sees only their own entries"
            );
            seqs.extend(page.iter().map(|e| e["seq"].as_u64().unwrap()));
            match r.body["next_cursor"].as_str() {
                Some(c) => {
                    assert_eq!(page.len(), 7, "a page followed by a cursor is full");
                    cursor = Some(c.to_string());
                }
                None => {
                    assert!(!page.is_empty(), "no empty last page");
                    break;
                }
            }
        }
        assert_eq!(seqs.len(), 100, "{user}: all of their entries, once each");
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first, no duplicates");
    }
    let all = ledger(&gw, &stack.admin(), 200).await;
    assert_eq!(all.len(), 301, "admins see every entry (the subscription included)");
}

#[tokio::test]
async fn due_accounts_are_found_by_the_renewal_index() {
    let stack = Stack::new().await;
    let gw = stack.gateway();
    let mut anchors = Vec::new();
    for day in 0..12 {
        let org = format!("org-{day}");
        let r = subscribe(&gw, &stack.service(), &org, "starter").await;
        assert_eq!(r.status, 201, "{}", r.body);
        anchors.push((org, stack.clock.now().date_naive()));
        stack.clock.advance(Duration::days(1));
    }
    let due_by = ledger_domain::period::start_of_day(chrono::NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
    let expected: BTreeSet<String> = anchors
        .iter()
        .filter(|(_, anchor)| Period::containing(*anchor, *anchor).renews_at() <= due_by)
        .map(|(org, _)| org.clone())
        .collect();
    assert_eq!(expected.len(), 6, "Jan 31 renews Feb 28; Feb 1-5 renew Mar 1-5");

    let store = DynamoLedgerStore::new(stack.client.clone(), stack.table.clone());
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.due_accounts(due_by, 2, cursor.as_deref()).await.unwrap();
        assert!(page.accounts.len() <= 2);
        found.extend(page.accounts.into_iter().map(|(org, at)| {
            assert!(at <= due_by);
            org.to_string()
        }));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<String> = found.iter().cloned().collect();
    assert_eq!(unique.len(), found.len(), "each due account once");
    assert_eq!(unique, expected);
}
