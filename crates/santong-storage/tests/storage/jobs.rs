use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use santong_storage::jobs::{
    CancelOutcome, JobContext, JobError, JobFuture, JobHandler, JobState, Jobs, NewJob, Worker,
    WorkerOptions,
};
use santong_testkit::TestDb;
use serde_json::json;

santong_testkit::conformance!(
    enqueue_dedup_and_claim_order,
    retries_with_backoff_then_fail,
    cancel_queued_and_running,
    two_workers_never_run_a_job_twice,
    stale_jobs_are_requeued,
    heartbeats_keep_a_quiet_job_alive,
);

fn opts(name: &str) -> WorkerOptions {
    WorkerOptions {
        name: name.into(),
        poll_interval: Duration::from_millis(20),
        retry_base: Duration::ZERO,
        stale_after: Duration::from_secs(60),
    }
}

async fn enqueue_dedup_and_claim_order(t: TestDb) {
    let jobs = Jobs(&t.db);
    let a = jobs
        .enqueue(NewJob::new("k", json!({"n": 1})).dedup("import:1"))
        .await
        .unwrap();
    let b = jobs
        .enqueue(NewJob::new("k", json!({"n": 2})).dedup("import:1"))
        .await
        .unwrap();
    assert!(!a.deduplicated && b.deduplicated);
    assert_eq!(a.id, b.id);
    let urgent = jobs
        .enqueue(NewJob {
            priority: 10,
            ..NewJob::new("k", json!({}))
        })
        .await
        .unwrap();

    let first = jobs.claim("w").await.unwrap().unwrap();
    assert_eq!(first.id, urgent.id, "higher priority first");
    let second = jobs.claim("w").await.unwrap().unwrap();
    assert_eq!(second.id, a.id);
    assert_eq!(second.attempts, 1);
    assert!(jobs.claim("w").await.unwrap().is_none());

    // While running, the key still de-duplicates; once done, it may be enqueued again.
    assert!(
        jobs.enqueue(NewJob::new("k", json!({})).dedup("import:1"))
            .await
            .unwrap()
            .deduplicated
    );
    assert!(!jobs.report_progress(a.id, "w", 40).await.unwrap());
    assert_eq!(jobs.get(a.id).await.unwrap().unwrap().progress, 40);
    jobs.complete(a.id, "w").await.unwrap();
    let done = jobs.get(a.id).await.unwrap().unwrap();
    assert_eq!((done.state(), done.progress), (Some(JobState::Done), 100));
    assert!(done.finished_at.is_some());
    assert!(
        !jobs
            .enqueue(NewJob::new("k", json!({})).dedup("import:1"))
            .await
            .unwrap()
            .deduplicated
    );

    // A job scheduled in the future is not claimed yet.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    jobs.enqueue(NewJob {
        run_at: Some(later),
        ..NewJob::new("later", json!({}))
    })
    .await
    .unwrap();
    let next = jobs.claim("w").await.unwrap().unwrap();
    assert_ne!(next.kind, "later");
    assert!(jobs.claim("w").await.unwrap().is_none());
}

fn failing(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move { Err(JobError::Failed(format!("boom on attempt {}", ctx.attempt))) })
}

async fn retries_with_backoff_then_fail(t: TestDb) {
    let jobs = Jobs(&t.db);
    let id = jobs
        .enqueue(NewJob {
            max_attempts: 3,
            ..NewJob::new("fail", json!({}))
        })
        .await
        .unwrap()
        .id;
    let worker = Worker::new(t.db.clone(), opts("w")).register("fail", failing);
    for _ in 0..3 {
        assert!(worker.run_once().await.unwrap());
    }
    assert!(!worker.run_once().await.unwrap(), "no fourth attempt");
    let row = jobs.get(id).await.unwrap().unwrap();
    assert_eq!(row.state(), Some(JobState::Failed));
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error.as_deref(), Some("boom on attempt 3"));

    // With a real backoff base the retry waits.
    let id = jobs
        .enqueue(NewJob::new("fail", json!({})))
        .await
        .unwrap()
        .id;
    let slow = Worker::new(
        t.db.clone(),
        WorkerOptions {
            retry_base: Duration::from_secs(30),
            ..opts("w2")
        },
    )
    .register("fail", failing);
    assert!(slow.run_once().await.unwrap());
    let row = jobs.get(id).await.unwrap().unwrap();
    assert_eq!(row.state(), Some(JobState::Queued));
    assert!(row.run_at > chrono::Utc::now() + chrono::Duration::seconds(50));
    assert!(!slow.run_once().await.unwrap());
}

fn slow_until_cancelled(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        for pct in 0..=100u8 {
            ctx.progress(pct).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
}

async fn cancel_queued_and_running(t: TestDb) {
    let jobs = Jobs(&t.db);
    let queued = jobs
        .enqueue(NewJob::new("slow", json!({})))
        .await
        .unwrap()
        .id;
    assert_eq!(jobs.cancel(queued).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(
        jobs.get(queued).await.unwrap().unwrap().state(),
        Some(JobState::Cancelled)
    );
    assert_eq!(jobs.cancel(queued).await.unwrap(), CancelOutcome::TooLate);

    let running = jobs
        .enqueue(NewJob::new("slow", json!({})))
        .await
        .unwrap()
        .id;
    let worker = Worker::new(t.db.clone(), opts("w")).register("slow", slow_until_cancelled);
    let handle = tokio::spawn(async move { worker.run_once().await });
    // Wait until it reports progress, then cancel.
    for _ in 0..200 {
        if jobs.get(running).await.unwrap().unwrap().progress > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        jobs.cancel(running).await.unwrap(),
        CancelOutcome::Requested
    );
    handle.await.unwrap().unwrap();
    let row = jobs.get(running).await.unwrap().unwrap();
    assert_eq!(row.state(), Some(JobState::Cancelled));
    assert!(row.progress < 100);
}

struct Counter {
    seen: Arc<std::sync::Mutex<Vec<i64>>>,
    runs: Arc<AtomicU32>,
}

impl JobHandler for Counter {
    fn run<'a>(&'a self, ctx: &'a JobContext) -> JobFuture<'a> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.seen
                .lock()
                .unwrap()
                .push(ctx.payload["i"].as_i64().unwrap());
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(())
        })
    }
}

async fn two_workers_never_run_a_job_twice(t: TestDb) {
    let jobs = Jobs(&t.db);
    let n = 40;
    for i in 0..n {
        jobs.enqueue(NewJob::new("count", json!({ "i": i })))
            .await
            .unwrap();
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let runs = Arc::new(AtomicU32::new(0));
    let make = |name: &str, db: santong_storage::Db| {
        Worker::new(db, opts(name)).register(
            "count",
            Counter {
                seen: seen.clone(),
                runs: runs.clone(),
            },
        )
    };
    // Two workers on separate pools, as two processes would have.
    let other_db = santong_storage::Db::open(&t.options()).await.unwrap();
    let w1 = make("w1", t.db.clone());
    let w2 = make("w2", other_db.clone());
    let drain = |w: Worker| async move { while w.run_once().await.unwrap() {} };
    tokio::join!(drain(w1), drain(w2));
    let seen = seen.lock().unwrap().clone();
    let distinct: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(runs.load(Ordering::SeqCst), n);
    assert_eq!(distinct.len(), n as usize);
    for row in jobs.recent(100).await.unwrap() {
        assert_eq!(row.state(), Some(JobState::Done));
    }
    other_db.close().await;
}

async fn stale_jobs_are_requeued(t: TestDb) {
    let jobs = Jobs(&t.db);
    let id = jobs.enqueue(NewJob::new("k", json!({}))).await.unwrap().id;
    jobs.claim("dead-worker").await.unwrap().unwrap();
    assert_eq!(
        jobs.requeue_stale(Duration::from_secs(60)).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        jobs.requeue_stale(Duration::from_millis(10)).await.unwrap(),
        1
    );
    let row = jobs.get(id).await.unwrap().unwrap();
    assert_eq!(row.state(), Some(JobState::Queued));
    assert_eq!(row.attempts, 1);

    // The dead worker comes back: it no longer owns the run and cannot finish it.
    let claimed = jobs.claim("live-worker").await.unwrap().unwrap();
    assert_eq!(claimed.id, id);
    assert!(
        jobs.report_progress(id, "dead-worker", 50).await.unwrap(),
        "told to stop"
    );
    jobs.complete(id, "dead-worker").await.unwrap();
    assert_eq!(
        jobs.get(id).await.unwrap().unwrap().state(),
        Some(JobState::Running)
    );
    jobs.complete(id, "live-worker").await.unwrap();
    assert_eq!(
        jobs.get(id).await.unwrap().unwrap().state(),
        Some(JobState::Done)
    );

    // A job that keeps killing its worker fails once its attempts are used up.
    let doomed = jobs
        .enqueue(NewJob {
            max_attempts: 1,
            ..NewJob::new("k", json!({}))
        })
        .await
        .unwrap()
        .id;
    jobs.claim("w").await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        jobs.requeue_stale(Duration::from_millis(10)).await.unwrap(),
        1
    );
    let row = jobs.get(doomed).await.unwrap().unwrap();
    assert_eq!(row.state(), Some(JobState::Failed));
    assert!(row.finished_at.is_some());
}

fn quiet_but_long(_ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok(())
    })
}

async fn heartbeats_keep_a_quiet_job_alive(t: TestDb) {
    let jobs = Jobs(&t.db);
    let id = jobs
        .enqueue(NewJob::new("quiet", json!({})))
        .await
        .unwrap()
        .id;
    let worker = Worker::new(
        t.db.clone(),
        WorkerOptions {
            stale_after: Duration::from_millis(400),
            ..opts("w")
        },
    )
    .register("quiet", quiet_but_long);
    let run = tokio::spawn(async move { worker.run_once().await });
    // Sweep with the same staleness while it runs: the heartbeat must keep it.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            jobs.requeue_stale(Duration::from_millis(400))
                .await
                .unwrap(),
            0
        );
    }
    run.await.unwrap().unwrap();
    assert_eq!(
        jobs.get(id).await.unwrap().unwrap().state(),
        Some(JobState::Done)
    );
}
