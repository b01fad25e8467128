//! The scheduled renewal at scale: N due accounts renewed by one sweep, as
//! the reset function runs it, next to the raw rate of the same number of
//! bare 2-item transactions (a renewal's shape: the account's update and
//! its renewal entry) at the same concurrency, in the same run. Requests
//! per account must stay flat as N grows: the sweep reads the renewal
//! index a page at a time and never scans.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use chrono::{Duration, TimeZone, Utc};
use futures::StreamExt;
use ledger_domain::{Actor, FixedClock, IdempotencyKey, OrgId, Subscription};
use ledger_service::{Idempotency, SweepLimits};

use super::Bench;

pub async fn sweeps(bench: &Bench) -> Result<()> {
    let sizes: &[usize] = if bench.quick {
        &[100, 300]
    } else {
        &[1_000, 5_000, 10_000]
    };
    let concurrency = reset::CONCURRENCY;
    println!("\nRenewal sweep: one sweep over N due accounts, {concurrency} renewals in flight:");
    println!(
        "  {:>7} {:>10} {:>12} {:>16} {:>7} {:>17}",
        "due", "sweep s", "accounts/s", "raw 2-item tx/s", "ratio", "requests/account"
    );
    for (n, &size) in sizes.iter().enumerate() {
        // Each size a year before the last: accounts of earlier sizes are
        // not due at this one's instant.
        let start = Utc.with_ymd_and_hms(2024 - n as i32, 3, 10, 8, 0, 0).unwrap();
        let clock = Arc::new(FixedClock::new(start));
        let ledger = bench.ledger(clock.clone());
        let subscribing = (0..size).map(|i| {
            let ledger = &ledger;
            async move {
                let org = OrgId::parse(&format!("sweep-{size}-{i}")).expect("an org id");
                let sub = Subscription::new(ledger.catalog(), "starter", None, None, None).expect("a plan");
                let key = Idempotency {
                    key: IdempotencyKey::parse("sub").expect("a key"),
                    fingerprint: "sub".into(),
                };
                ledger
                    .subscribe(&org, sub, Actor::system(), &key)
                    .await
                    .expect("subscribed");
            }
        });
        futures::stream::iter(subscribing)
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
        clock.advance(Duration::days(32));

        let raw = raw_writes(bench, size, concurrency).await;
        let sweeping = bench.ledger(clock);
        bench.counter.reset();
        let started = Instant::now();
        let report = sweeping
            .sweep(SweepLimits {
                deadline: None,
                max_accounts: usize::MAX,
                concurrency,
            })
            .await?;
        let elapsed = started.elapsed().as_secs_f64();
        ensure!(
            report.renewed == size && report.failed == 0,
            "{size} due, the sweep reported {report:?}"
        );
        let rate = size as f64 / elapsed;
        println!(
            "  {:>7} {:>10.2} {:>12.0} {:>16.0} {:>7.2} {:>17.2}",
            size,
            elapsed,
            rate,
            raw,
            rate / raw,
            bench.counter.total() as f64 / size as f64
        );
    }
    Ok(())
}

/// Bare conditional 2-item transactions on distinct items, `concurrency`
/// at a time: the ceiling a renewal sweep compares with.
async fn raw_writes(bench: &Bench, count: usize, concurrency: usize) -> f64 {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let writes = (0..count).map(|i| async move {
        super::bare_transaction(bench, &format!("RAWSWEEP#{run}#{i}"), "ACCOUNT", "RENEWAL#1").await;
    });
    futures::stream::iter(writes)
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    count as f64 / started.elapsed().as_secs_f64()
}
