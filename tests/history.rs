//! History and usage end to end: thousands of entries by several users,
//! actions and campaigns over several days; every filter served by its own
//! index in full pages with cursors bound to it; usage reports from the
//! stream's day rollups equal to the entries, however the stream delivers.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use common::*;
use ledger_domain::Clock;
use serde_json::Value;

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const ACTIONS: [(&str, i64); 3] = [
    ("ai_email_generation", 1_000),
    ("email_verification", 500),
    ("email_send", 0),
];
const CAMPAIGNS: [Option<&str>; 3] = [Some("spring"), Some("summer"), None];
const DAYS: u32 = 4;
const PER_DAY: usize = 500;

/// One spend the test made, and what it should be found by.
#[derive(Clone, Debug)]
struct Made {
    id: String,
    day: String,
    user: &'static str,
    action: &'static str,
    campaign: Option<&'static str>,
    cost: i64,
}

async fn page(stack: &Stack, query: &str, cursor: Option<&str>) -> (u16, Value) {
    let mut path = format!("/v1/orgs/{ORG}/ledger?{query}");
    if let Some(c) = cursor {
        path.push_str(&format!("&cursor={c}"));
    }
    let r = call(&stack.gateway(), "GET", &path, Some(&stack.admin()), None, None).await;
    (r.status, r.body)
}

/// Every entry a filter lists, walking its pages; asserts full pages,
/// newest first, no entry twice.
async fn listed(stack: &Stack, query: &str) -> Vec<Value> {
    let (mut entries, mut cursor) = (Vec::<Value>::new(), None::<String>);
    loop {
        let (status, body) = page(stack, &format!("{query}&limit=37"), cursor.as_deref()).await;
        assert_eq!(status, 200, "{body}");
        let got = body["entries"].as_array().unwrap();
        cursor = body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_some() {
            assert_eq!(got.len(), 37, "every page but the last is full");
        }
        entries.extend(got.iter().cloned());
        if cursor.is_none() {
            break;
        }
    }
    let keys: Vec<(String, u64)> = entries
        .iter()
        .map(|e| (e["at"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap()))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest first, by time then seq");
    let ids: BTreeSet<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), entries.len(), "no entry twice");
    entries
}

fn ids<'a>(made: impl Iterator<Item = &'a Made>) -> BTreeSet<String> {
    made.map(|m| m.id.clone()).collect()
}

fn listed_ids(entries: &[Value]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == "spend")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn usage(stack: &Stack, from: &str, to: &str, group: &str) -> BTreeMap<String, (i64, i64)> {
    let path = format!("/v1/orgs/{ORG}/usage?from={from}&to={to}&group_by={group}");
    let r = call(&stack.gateway(), "GET", &path, Some(&stack.admin()), None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let used = g["used"]["credits"].as_str().map(thousandths).unwrap_or(0);
            (
                g["key"].as_str().unwrap().to_string(),
                (used, g["entries"].as_i64().unwrap()),
            )
        })
        .collect()
}

fn expected(made: &[Made], key: impl Fn(&Made) -> Option<String>) -> BTreeMap<String, (i64, i64)> {
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in made {
        if let Some(k) = key(m) {
            let t = totals.entry(k).or_default();
            t.0 += m.cost;
            t.1 += 1;
        }
    }
    totals
}

#[tokio::test]
async fn thousands_of_entries_filter_page_and_add_up_by_every_key() {
    let stack = Stack::with_account("starter").await;
    let r = purchase(
        &stack.gateway(),
        &stack.service(),
        "buy",
        r#"{"credits":"5000","payment_reference":"p1"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut made: Vec<Made> = Vec::new();
    for day in 0..DAYS {
        let date = stack.clock.now().date_naive().to_string();
        let mut tasks = Vec::new();
        for i in 0..PER_DAY {
            let n = day as usize * PER_DAY + i;
            let user = USERS[n % USERS.len()];
            let (action, cost) = ACTIONS[(n / 4) % ACTIONS.len()];
            let campaign = CAMPAIGNS[(n / 12) % CAMPAIGNS.len()];
            let role = if user == "alice" { "admin" } else { "member" };
            let token = stack.authority.user_token(ORG, user, role, 3600);
            let gateway = stack.gateway();
            let mut body = serde_json::json!({ "action": action });
            if let Some(c) = campaign {
                body["campaign"] = serde_json::json!(c);
            }
            let date = date.clone();
            tasks.push(tokio::spawn(async move {
                let (r, _) = call_retrying(
                    &gateway,
                    "POST",
                    &format!("/v1/orgs/{ORG}/spend"),
                    &token,
                    &format!("s-{n}"),
                    &body.to_string(),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.body);
                Made {
                    id: r.body["entry_id"].as_str().unwrap().to_string(),
                    day: date,
                    user,
                    action,
                    campaign,
                    cost,
                }
            }));
            if tasks.len() == 16 {
                for t in tasks.drain(..) {
                    made.push(t.await.unwrap());
                }
            }
        }
        for t in tasks {
            made.push(t.await.unwrap());
        }
        stack.clock.advance(Duration::days(1));
    }
    stack.settle().await;
    let days: Vec<String> = made
        .iter()
        .map(|m| m.day.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(days.len(), DAYS as usize);

    // Unfiltered, and each key: exactly the expected entries.
    let all = listed(&stack, "").await;
    assert_eq!(listed_ids(&all), ids(made.iter()));
    for action in ACTIONS.map(|(a, _)| a) {
        let got = listed(&stack, &format!("action={action}")).await;
        assert_eq!(
            listed_ids(&got),
            ids(made.iter().filter(|m| m.action == action)),
            "{action}"
        );
        assert_eq!(got.len(), made.iter().filter(|m| m.action == action).count());
    }
    for user in USERS {
        let got = listed(&stack, &format!("user={user}")).await;
        assert_eq!(listed_ids(&got), ids(made.iter().filter(|m| m.user == user)), "{user}");
    }
    let got = listed(&stack, "campaign=spring").await;
    assert_eq!(
        listed_ids(&got),
        ids(made.iter().filter(|m| m.campaign == Some("spring")))
    );
    // A date range, alone and with a key.
    let (d1, d2) = (&days[1], &days[2]);
    let got = listed(&stack, &format!("from={d1}&to={d2}")).await;
    assert_eq!(
        listed_ids(&got),
        ids(made.iter().filter(|m| m.day == *d1 || m.day == *d2))
    );
    let got = listed(&stack, &format!("from={d2}&to={d2}&campaign=summer")).await;
    assert_eq!(
        listed_ids(&got),
        ids(made.iter().filter(|m| m.day == *d2 && m.campaign == Some("summer")))
    );
    // A cursor continues only the listing it came from.
    let (_, first) = page(&stack, "action=email_send&limit=5", None).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) = page(&stack, "action=email_verification&limit=5", Some(cursor)).await;
    assert_eq!(status, 400, "{body}");
    // Two keys at once have no index: a clear 400.
    let (status, body) = page(&stack, "action=email_send&user=bob", None).await;
    assert_eq!(status, 400, "{body}");

    // Usage from the rollups equals the entries, by every group.
    let (from, to) = (&days[0], &days[days.len() - 1]);
    let report = |group| usage(&stack, from, to, group);
    assert_eq!(report("action").await, expected(&made, |m| Some(m.action.to_string())));
    assert_eq!(report("user").await, expected(&made, |m| Some(m.user.to_string())));
    assert_eq!(
        report("campaign").await,
        expected(&made, |m| m.campaign.map(str::to_string))
    );
    assert_eq!(report("day").await, expected(&made, |m| Some(m.day.clone())));
    let one_day = usage(&stack, d1, d1, "user").await;
    assert_eq!(one_day, expected(&made, |m| (m.day == *d1).then(|| m.user.to_string())));
    // And equals the history's own lines.
    let spent: i64 = -ledger_total(
        &all.iter().filter(|e| e["kind"] == "spend").cloned().collect::<Vec<_>>(),
        "credits",
    );
    assert_eq!(spent, made.iter().map(|m| m.cost).sum::<i64>());

    // CSV of a period: the same entries as the JSON history, in order.
    let query = format!("from={d1}&to={d2}");
    let json_entries = listed(&stack, &query).await;
    let text = csv(&stack, &query).await;
    let mut rows = text.split("\r\n").filter(|r| !r.is_empty()).map(fields);
    let header = rows.next().unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<Vec<String>> = rows.collect();
    assert_eq!(rows.len(), json_entries.len());
    for (row, e) in rows.iter().zip(&json_entries) {
        assert_eq!(row[col("id")], e["id"].as_str().unwrap());
        assert_eq!(row[col("seq")], e["seq"].to_string());
        assert_eq!(row[col("action")], e["action"].as_str().unwrap_or_default());
        let net = ledger_total(std::slice::from_ref(e), "credits");
        assert_eq!(thousandths(&row[col("credits_change")]), net, "{row:?}");
    }

    // The same period as an export job, as a whole year would go: written
    // to S3 a part a run (pages of 100, each run out of time after its
    // first part, so it queues its own continuation), then linked.
    let start = format!("/v1/orgs/{ORG}/exports?{query}");
    let r = call(
        &stack.gateway(),
        "POST",
        &start,
        Some(&stack.admin()),
        Some("export-1"),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (202, Some("running")),
        "{}",
        r.body
    );
    let id = r.body["id"].as_str().unwrap().to_string();
    let again = call(
        &stack.gateway(),
        "POST",
        &start,
        Some(&stack.admin()),
        Some("export-1"),
        None,
    )
    .await;
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (202, Some(id.as_str())),
        "the same job"
    );
    let other = format!("/v1/orgs/{ORG}/exports?from={d1}");
    let reused = call(
        &stack.gateway(),
        "POST",
        &other,
        Some(&stack.admin()),
        Some("export-1"),
        None,
    )
    .await;
    assert_eq!(reused.status, 422, "another filter under the same key: {}", reused.body);
    let status = format!("/v1/orgs/{ORG}/exports/{id}");
    let runs = stack.run_exports(100, 1_024, std::time::Duration::ZERO).await;
    let parts = json_entries.len().div_ceil(100);
    assert!(
        runs >= parts,
        "one part a run, each run continuing the job: {runs} runs"
    );
    let r = call(&stack.gateway(), "GET", &status, Some(&stack.admin()), None, None).await;
    assert_eq!(
        (
            r.body["state"].as_str(),
            r.body["rows"].as_u64(),
            r.body["parts"].as_u64()
        ),
        (Some("done"), Some(json_entries.len() as u64), Some(parts as u64)),
        "{}",
        r.body
    );
    let url = r.body["url"].as_str().unwrap();
    let file = reqwest::get(url).await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.text().await.unwrap(),
        text,
        "the file is the inline CSV, byte for byte"
    );
    // Delivered again after it is done: nothing changes.
    ledger_store::ExportFiles::new(
        &stack.config,
        "test-exports",
        aws_sdk_sqs::Client::new(&stack.config),
        &stack.export_queue,
    )
    .schedule(&ledger_domain::OrgId::parse(ORG).unwrap(), &id)
    .await
    .unwrap();
    assert_eq!(stack.run_exports(100, 1_024, std::time::Duration::ZERO).await, 1);
    let r = call(&stack.gateway(), "GET", &status, Some(&stack.admin()), None, None).await;
    assert_eq!(r.body["parts"].as_u64(), Some(parts as u64));
    // A member sees only their own exports.
    let r = call(&stack.gateway(), "GET", &status, Some(&stack.member()), None, None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    // ...and exports only their own entries, as they list them.
    let others = format!("/v1/orgs/{ORG}/exports?user=alice");
    let r = call(
        &stack.gateway(),
        "POST",
        &others,
        Some(&stack.member()),
        Some("export-m"),
        None,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // The whole stream again, shuffled: nothing changes.
    let before = report("campaign").await;
    assert!(stack.redeliver_shuffled().await > made.len());
    assert_eq!(report("campaign").await, before);
    assert_eq!(report("day").await, expected(&made, |m| Some(m.day.clone())));
    assert_eq!(listed(&stack, "").await.len(), all.len());
}

/// The filtered history as CSV, as a spreadsheet would download it.
async fn csv(stack: &Stack, query: &str) -> String {
    let headers = vec![
        ("authorization".to_string(), format!("Bearer {}", stack.admin())),
        ("accept".to_string(), "text/csv".to_string()),
    ];
    let path = format!("/v1/orgs/{ORG}/ledger");
    let r = stack.gateway().respond("GET", &path, Some(query), &headers, b"").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    match r.into_body() {
        lambda_http::Body::Text(t) => t,
        other => panic!("unexpected body {other:?}"),
    }
}

/// One RFC 4180 row's fields (quoted fields may hold commas and quotes).
fn fields(row: &str) -> Vec<String> {
    let (mut out, mut field, mut quoted, mut chars) = (Vec::new(), String::new(), false, row.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

#[tokio::test]
async fn credit_roi_reports_credits_per_outcome_by_campaign_and_action() {
    let stack = Stack::with_account("starter").await;
    let day = stack.clock.now().date_naive().to_string();
    let spends = [
        ("spring", "ai_email_generation", 10),
        ("spring", "email_verification", 4),
        ("summer", "ai_email_generation", 5),
    ];
    for (i, (campaign, action, quantity)) in spends.into_iter().enumerate() {
        let body = serde_json::json!({ "action": action, "quantity": quantity, "campaign": campaign }).to_string();
        let path = format!("/v1/orgs/{ORG}/spend");
        let r = call(
            &stack.gateway(),
            "POST",
            &path,
            Some(&stack.member()),
            Some(&format!("s{i}")),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let outcomes = [
        ("spring", "meeting_booked", 2),
        ("spring", "reply", 3),
        ("summer", "reply", 1),
    ];
    for (i, (campaign, outcome, count)) in outcomes.into_iter().enumerate() {
        let body = serde_json::json!({ "campaign": campaign, "outcome": outcome, "count": count }).to_string();
        let path = format!("/v1/orgs/{ORG}/outcomes");
        let r = call(
            &stack.gateway(),
            "POST",
            &path,
            Some(&stack.service()),
            Some(&format!("o{i}")),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let body = serde_json::json!({ "campaign": "spring", "outcome": "a b" }).to_string();
    let path = format!("/v1/orgs/{ORG}/outcomes");
    let r = call(
        &stack.gateway(),
        "POST",
        &path,
        Some(&stack.service()),
        Some("bad"),
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    stack.settle().await;
    let path = format!("/v1/orgs/{ORG}/roi?from={day}&to={day}");
    let r = call(&stack.gateway(), "GET", &path, Some(&stack.admin()), None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spring = &r.body["campaigns"][0];
    assert_eq!(spring["campaign"], "spring");
    assert_eq!(spring["used"]["credits"], "12");
    assert_eq!(
        spring["outcomes"],
        serde_json::json!({ "meeting_booked": 2, "reply": 3 })
    );
    assert_eq!(
        spring["credits_per_outcome"],
        serde_json::json!({ "meeting_booked": "6", "reply": "4" })
    );
    assert_eq!(spring["by_action"]["ai_email_generation"]["credits"], "10");
    assert_eq!(
        spring["by_action"]["ai_email_generation"]["per_outcome"]["meeting_booked"],
        "5"
    );
    assert_eq!(spring["by_action"]["email_verification"]["credits"], "2");
    let summer = &r.body["campaigns"][1];
    assert_eq!(
        (
            summer["used"]["credits"].as_str(),
            summer["credits_per_outcome"]["reply"].as_str()
        ),
        (Some("5"), Some("5"))
    );
    // Outcomes are not usage: the usage report counts spends only.
    let usage_path = format!("/v1/orgs/{ORG}/usage?from={day}&to={day}&group_by=campaign");
    let r = call(&stack.gateway(), "GET", &usage_path, Some(&stack.admin()), None, None).await;
    assert_eq!(r.body["groups"][0]["entries"], 2, "{}", r.body);
}
