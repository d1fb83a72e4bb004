//! `hookline erase --account` on a large ledger: how long the DynamoDB
//! adapter's paced parallel Scan takes and the read units DynamoDB bills
//! for it.
//!
//! Writes BENCH_LEDGER ledger items (default 100,000; 50 of them the
//! target account's, the rest spread over 5,000 other accounts) to fresh
//! tables on the AWS endpoint (`AWS_ENDPOINT_URL`, moto in `make bench`),
//! then finds the target account's items through `Store::holdings`, as
//! `erase` does. Read units are counted as DynamoDB bills a Scan: per page,
//! the size of every item read (not only those the filter keeps), in 4 KB
//! units, halved at eventual consistency. moto's speed is not DynamoDB's:
//! the time says how the pace (10 pages a second) bounds a real table.
//!
//! Run: `make bench`, or with moto up: `cargo bench --bench erase_scan`.

use std::time::Instant;

use hookline_core::ports::{Store, Subject};
use serde_json::{json, Map, Value};

#[path = "support.rs"]
mod support;
use support::env_usize;

const TARGET: &str = "acct_1BenchEraseTarget0";
const TARGET_ITEMS: usize = 50;

/// A ledger item as the worker leaves an applied event.
fn ledger_item(i: usize, account: &str) -> Map<String, Value> {
    let item = json!({
        "eventId": format!("evt_1BenchLedger{i:010}"),
        "status": "COMPLETED",
        "eventType": "payment_intent.succeeded",
        "attempts": 1,
        "outcome": "applied",
        "completedAt": "2026-12-07T10:00:00Z",
        "expiresAt": 1_800_000_000,
        "objectId": format!("pi_3BenchObject{i:010}"),
        "source": "webhook",
        "subject": account,
        "traceId": format!("{i:032x}"),
    });
    match item {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Its size as DynamoDB counts it: names plus values.
fn size(item: &Map<String, Value>) -> u64 {
    item.iter()
        .map(|(k, v)| {
            k.len() as u64
                + match v {
                    Value::String(s) => s.len() as u64,
                    other => other.to_string().len() as u64,
                }
        })
        .sum()
}

#[tokio::main]
async fn main() {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        println!("erase_scan: skipped (no AWS_ENDPOINT_URL; make bench starts moto)");
        return;
    }
    let n = env_usize("BENCH_LEDGER", 100_000);
    let clients = hookline_aws::AwsClients::load().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tables = hookline_aws::Tables {
        events: format!("bench-erase-events-{}", &id[..8]),
        objects: format!("bench-erase-objects-{}", &id[..8]),
        provider: format!("bench-erase-provider-{}", &id[..8]),
    };
    hookline_aws::provision::create_tables(&clients.dynamodb, &tables)
        .await
        .expect("tables");
    let every = n / TARGET_ITEMS;
    let started = Instant::now();
    let items: Vec<_> = (0..n)
        .map(|i| {
            let account = if i % every == 0 {
                TARGET.to_owned()
            } else {
                format!("acct_1BenchOther{:06}", i % 5000)
            };
            ledger_item(i, &account)
        })
        .collect();
    let bytes: u64 = items.iter().map(size).sum();
    let store = hookline_aws::DynamoStore::new(clients.dynamodb.clone(), tables.clone());
    store.put_raw(&tables.events, &items).await.expect("write");
    println!(
        "erase_scan: {n} ledger items ({:.1} MB) written in {:.0?}",
        bytes as f64 / 1e6,
        started.elapsed()
    );
    let started = Instant::now();
    let found = store
        .holdings(&Subject::Account(TARGET.to_owned()))
        .await
        .expect("holdings");
    let took = started.elapsed();
    // Billed per page of up to 1 MB: every item read counts, 4 KB units,
    // half a unit each at eventual consistency.
    let read_units = (bytes as f64 / 4096.0).ceil() / 2.0;
    println!(
        "erase_scan: found {} of the account's {TARGET_ITEMS} ledger items in {took:.2?} (moto); \
         read units billed: {read_units:.0} for the ledger ({:.1} MB) plus the empty objects table, \
         = {:.0} read units per GB, ${:.4} at $0.125 per million",
        found.events.len(),
        bytes as f64 / 1e6,
        read_units / (bytes as f64 / 1e9),
        read_units * 0.125 / 1e6
    );
    assert_eq!(
        found.events.len(),
        TARGET_ITEMS,
        "every item of the account"
    );
}
