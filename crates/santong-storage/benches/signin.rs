//! The 8:00 rush: N students of one school sign in from one NAT address at once.
//! Prints sign-ins per second, success rate, latency percentiles and memory. Asserts nothing.
//!
//!     cargo bench -p santong-storage --bench signin -- [ACCOUNTS] [CONCURRENCY]

use std::time::{Duration, Instant};

use santong_domain::password;
use santong_storage::identity::{Identity, Login};
use santong_storage::{Db, DbOptions};

fn rss_kib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with('-')).collect();
    let accounts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(&DbOptions::sqlite_in(dir.path()))
        .await
        .expect("db");

    // One hash for every account keeps set-up fast; sign-in still verifies each attempt.
    let pw = "Ready!pass-2026";
    let hash = password::hash(pw);
    let t = Instant::now();
    for chunk in (0..accounts).collect::<Vec<_>>().chunks(400) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "({}, 's{i:05}', '学生{i}', '{hash}', {f}, NULL, '2026-09-01T00:00:00Z', '440305', '1144030501', '2026-09-01T00:00:00Z')",
                    if db.is_postgres() {
                        format!("'{}'", uuid::Uuid::now_v7())
                    } else {
                        format!("X'{}'", uuid::Uuid::now_v7().simple())
                    },
                    f = if db.is_postgres() { "false" } else { "0" },
                )
            })
            .collect();
        // Test data written by the benchmark itself, not user input.
        db.execute_unchecked(&format!(
            "INSERT INTO app_user (id, username, display_name, password_hash, must_change_password, \
             system_role, created_at, home_region, home_school, password_changed_at) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert accounts");
    }
    eprintln!("created {accounts} accounts in {:?}", t.elapsed());

    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let db = db.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let t = Instant::now();
            let r = Identity(&db)
                .authenticate(&format!("s{i:05}"), pw, "203.0.113.7", "bench")
                .await;
            (matches!(r, Ok(Login::Ok { .. })), t.elapsed())
        }));
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(accounts);
    let mut ok = 0usize;
    for t in tasks {
        let (success, d) = t.await.expect("task");
        ok += usize::from(success);
        lat.push(d);
    }
    let total = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "# 8:00 rush — {accounts} accounts, one IP, {concurrency} at a time, SQLite, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| total time | {:.1} s |", total.as_secs_f64());
    println!(
        "| sign-ins/s | {:.0} |",
        accounts as f64 / total.as_secs_f64()
    );
    println!(
        "| success | {ok} / {accounts} ({:.1} %) |",
        100.0 * ok as f64 / accounts as f64
    );
    println!(
        "| p50 latency | {:.0} ms |",
        pct(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "| p95 latency | {:.0} ms |",
        pct(0.95).as_secs_f64() * 1000.0
    );
    println!(
        "| p99 latency | {:.0} ms |",
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!("| resident memory | {} KiB |", rss_kib());
    db.close().await;
}
