//! The database-backed job queue and its worker.
//!
//! A job is a row: `queued` → `running` → `done` | `failed` | `cancelled`. Claiming is one atomic
//! statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers), so any number of
//! workers in any number of processes compete safely. Jobs must be idempotent: a worker that dies
//! mid-job leaves a stale heartbeat and the job runs again. A `dedup_key` collapses a second
//! enqueue of the same work while the first is still queued or running.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::{Backend, Db, db_query};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    pub dedup_key: Option<String>,
    pub priority: i32,
    pub max_attempts: i32,
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            dedup_key: None,
            priority: 0,
            max_attempts: 5,
            run_at: None,
        }
    }

    pub fn dedup(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    /// True when an equal job was already queued or running and no new row was written.
    pub deduplicated: bool,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub payload: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub progress: i32,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn state(&self) -> Option<JobState> {
        JobState::parse(&self.state)
    }
}

/// A job a worker has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub payload: String,
    pub attempts: i32,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started; it never will.
    Cancelled,
    /// It is running; its handler stops at its next progress report.
    Requested,
    /// It had already finished (or does not exist).
    TooLate,
}

/// Delay before retry number `attempts` (1-based): 2, 4, 8 … seconds times `base`, capped at an hour.
pub fn backoff(attempts: i32, base: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 12)).unwrap_or(1);
    (base * 2u32.pow(exp)).min(Duration::from_secs(3600))
}

/// Queues a job inside a caller's transaction: it exists exactly when the change that asked for it
/// commits. No deduplication here.
pub(crate) async fn enqueue_in(tx: &mut crate::Tx, job: &NewJob) -> crate::Result<Uuid> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO job (id, kind, payload, state, priority, attempts, max_attempts, run_at, \
            progress, cancel_requested, created_at) \
            VALUES ($1, $2, $3, 'queued', $4, 0, $5, $6, 0, $7, $8)",
        ))
        .bind(id)
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(job.priority)
        .bind(job.max_attempts.max(1))
        .bind(job.run_at.unwrap_or(now))
        .bind(false)
        .bind(now)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(id)
}

pub struct Jobs<'a>(pub &'a Db);

impl Jobs<'_> {
    pub async fn enqueue(&self, job: NewJob) -> crate::Result<Enqueued> {
        let id = Uuid::now_v7();
        let now = Utc::now();
        let inserted = db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO job (id, kind, payload, dedup_key, state, priority, attempts, \
                max_attempts, run_at, progress, cancel_requested, created_at) \
                VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, 0, $8, $9) \
                ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING",
            ))
            .bind(id)
            .bind(&job.kind)
            .bind(job.payload.to_string())
            .bind(&job.dedup_key)
            .bind(job.priority)
            .bind(job.max_attempts.max(1))
            .bind(job.run_at.unwrap_or(now))
            .bind(false)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if inserted == 1 {
            return Ok(Enqueued {
                id,
                deduplicated: false,
            });
        }
        let existing: Option<Uuid> = db_query!(self.0, write, |sql, ex| {
            sqlx::query_scalar(sql("SELECT id FROM job WHERE dedup_key = $1 \
                AND state IN ('queued', 'running')"))
            .bind(&job.dedup_key)
            .fetch_optional(ex)
            .await?
        });
        match existing {
            Some(id) => Ok(Enqueued {
                id,
                deduplicated: true,
            }),
            // The other job finished between our insert and this read: try once more.
            None => Box::pin(self.enqueue(job)).await,
        }
    }

    pub async fn get(&self, id: Uuid) -> crate::Result<Option<JobRow>> {
        const SQL: &str = "SELECT id, kind, payload, state, attempts, max_attempts, progress, \
            cancel_requested, last_error, run_at, created_at, finished_at FROM job WHERE id = $1";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, JobRow>(sql(SQL))
                .bind(id)
                .fetch_optional(ex)
                .await?
        }))
    }

    /// The most recent jobs, newest first.
    pub async fn recent(&self, limit: i64) -> crate::Result<Vec<JobRow>> {
        const SQL: &str = "SELECT id, kind, payload, state, attempts, max_attempts, progress, \
            cancel_requested, last_error, run_at, created_at, finished_at FROM job \
            ORDER BY created_at DESC, id DESC LIMIT $1";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, JobRow>(sql(SQL))
                .bind(limit)
                .fetch_all(ex)
                .await?
        }))
    }

    /// Claims the most urgent due job for `worker`, if any.
    pub async fn claim(&self, worker: &str) -> crate::Result<Option<Claimed>> {
        let now = Utc::now();
        Ok(match &self.0.backend {
            Backend::Sqlite(s) => {
                // The writer connection is the only one that writes, so select-then-update inside
                // one statement cannot race with another claim in this process, and SQLite's
                // write lock serialises other processes.
                sqlx::query_as::<_, Claimed>(
                    "UPDATE job SET state = 'running', locked_by = ?1, heartbeat_at = ?2, \
                     attempts = attempts + 1 \
                     WHERE id = (SELECT id FROM job WHERE state = 'queued' AND run_at <= ?2 \
                                 ORDER BY priority DESC, run_at, id LIMIT 1) \
                     AND state = 'queued' \
                     RETURNING id, kind, payload, attempts, max_attempts",
                )
                .bind(worker)
                .bind(now)
                .fetch_optional(&s.writer)
                .await?
            }
            Backend::Postgres(p) => {
                sqlx::query_as::<_, Claimed>(
                    "UPDATE job SET state = 'running', locked_by = $1, heartbeat_at = $2, \
                     attempts = attempts + 1 \
                     WHERE id = (SELECT id FROM job WHERE state = 'queued' AND run_at <= $2 \
                                 ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     AND state = 'queued' \
                     RETURNING id, kind, payload, attempts, max_attempts",
                )
                .bind(worker)
                .bind(now)
                .fetch_optional(p)
                .await?
            }
        })
    }

    /// Records progress (0–100) and a heartbeat for a run `worker` holds. Returns true when the
    /// job should stop: cancellation was requested, or the run is no longer this worker's (it was
    /// requeued as stale and may be running elsewhere).
    pub async fn report_progress(
        &self,
        id: Uuid,
        worker: &str,
        percent: u8,
    ) -> crate::Result<bool> {
        let cancel: Option<bool> = db_query!(self.0, write, |sql, ex| {
            sqlx::query_scalar(sql("UPDATE job SET progress = $3, heartbeat_at = $4 \
                WHERE id = $1 AND locked_by = $2 AND state = 'running' RETURNING cancel_requested"))
            .bind(id)
            .bind(worker)
            .bind(i32::from(percent.min(100)))
            .bind(Utc::now())
            .fetch_optional(ex)
            .await?
        });
        Ok(cancel.unwrap_or(true))
    }

    /// Tells the queue the run is alive, so it is not requeued as stale.
    pub async fn heartbeat(&self, id: Uuid, worker: &str) -> crate::Result<()> {
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql("UPDATE job SET heartbeat_at = $3 \
                WHERE id = $1 AND locked_by = $2 AND state = 'running'"))
            .bind(id)
            .bind(worker)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn complete(&self, id: Uuid, worker: &str) -> crate::Result<()> {
        self.finish(id, worker, JobState::Done, None).await
    }

    /// Marks a cancelled run as cancelled.
    pub async fn mark_cancelled(&self, id: Uuid, worker: &str) -> crate::Result<()> {
        self.finish(id, worker, JobState::Cancelled, None).await
    }

    /// Ends a run; only the worker that holds it can.
    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        state: JobState,
        error: Option<&str>,
    ) -> crate::Result<()> {
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "UPDATE job SET state = $3, progress = CASE WHEN $3 = 'done' THEN 100 \
                ELSE progress END, last_error = COALESCE($4, last_error), finished_at = $5, \
                locked_by = NULL WHERE id = $1 AND locked_by = $2 AND state = 'running'",
            ))
            .bind(id)
            .bind(worker)
            .bind(state.as_str())
            .bind(error)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Records a failed run: queued again after a backoff, or `failed` for good when the attempts
    /// are used up.
    pub async fn fail(
        &self,
        job: &Claimed,
        worker: &str,
        error: &str,
        base: Duration,
    ) -> crate::Result<JobState> {
        if job.attempts >= job.max_attempts {
            self.finish(job.id, worker, JobState::Failed, Some(error))
                .await?;
            return Ok(JobState::Failed);
        }
        let delay = chrono::Duration::from_std(backoff(job.attempts, base)).unwrap_or_default();
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "UPDATE job SET state = 'queued', run_at = $3, last_error = $4, \
                locked_by = NULL WHERE id = $1 AND locked_by = $2 AND state = 'running'",
            ))
            .bind(job.id)
            .bind(worker)
            .bind(Utc::now() + delay)
            .bind(error)
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(JobState::Queued)
    }

    pub async fn cancel(&self, id: Uuid) -> crate::Result<CancelOutcome> {
        let now = Utc::now();
        let (cancelled, requested) = db_query!(self.0, write, |sql, ex| {
            let cancelled =
                sqlx::query(sql("UPDATE job SET state = 'cancelled', finished_at = $2 \
                WHERE id = $1 AND state = 'queued'"))
                .bind(id)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected();
            let requested = if cancelled == 0 {
                sqlx::query(sql(
                    "UPDATE job SET cancel_requested = $2 WHERE id = $1 AND state = 'running'",
                ))
                .bind(id)
                .bind(true)
                .execute(ex)
                .await?
                .rows_affected()
            } else {
                0
            };
            (cancelled, requested)
        });
        Ok(match (cancelled, requested) {
            (1.., _) => CancelOutcome::Cancelled,
            (_, 1..) => CancelOutcome::Requested,
            _ => CancelOutcome::TooLate,
        })
    }

    /// Puts back running jobs whose worker has not reported for `older_than` (it died); a job
    /// whose attempts are used up fails instead, so a job that kills its worker cannot loop.
    pub async fn requeue_stale(&self, older_than: Duration) -> crate::Result<u64> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(older_than).unwrap_or_default();
        Ok(db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql("UPDATE job SET locked_by = NULL, \
                last_error = 'worker stopped reporting', \
                state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
                finished_at = CASE WHEN attempts >= max_attempts THEN $2 ELSE finished_at END \
                WHERE state = 'running' AND heartbeat_at < $1"))
            .bind(cutoff)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        }))
    }
}

/// Why a job run ended without success.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

impl From<crate::StorageError> for JobError {
    fn from(e: crate::StorageError) -> Self {
        JobError::Failed(e.to_string())
    }
}

/// Handed to a running job: its payload, and progress reporting that also tells of cancellation.
pub struct JobContext {
    pub db: Db,
    pub id: Uuid,
    pub worker: String,
    pub payload: serde_json::Value,
    pub attempt: i32,
}

impl JobContext {
    /// Reports progress; returns `Err(Cancelled)` when the job should stop now.
    pub async fn progress(&self, percent: u8) -> Result<(), JobError> {
        if Jobs(&self.db)
            .report_progress(self.id, &self.worker, percent)
            .await?
        {
            return Err(JobError::Cancelled);
        }
        Ok(())
    }
}

pub type JobFuture<'a> = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;

/// One kind of job. Handlers must be idempotent: a run may be repeated after a crash.
pub trait JobHandler: Send + Sync + 'static {
    fn run<'a>(&'a self, ctx: &'a JobContext) -> JobFuture<'a>;
}

impl<F> JobHandler for F
where
    F: for<'a> Fn(&'a JobContext) -> JobFuture<'a> + Send + Sync + 'static,
{
    fn run<'a>(&'a self, ctx: &'a JobContext) -> JobFuture<'a> {
        self(ctx)
    }
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub stale_after: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            name: format!("worker-{}", Uuid::new_v4().simple()),
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            stale_after: Duration::from_secs(300),
        }
    }
}

/// Runs registered handlers for claimed jobs until told to stop.
#[derive(Clone)]
pub struct Worker {
    db: Db,
    handlers: Arc<HashMap<String, Arc<dyn JobHandler>>>,
    opts: WorkerOptions,
}

impl Worker {
    pub fn new(db: Db, opts: WorkerOptions) -> Self {
        Self {
            db,
            handlers: Arc::new(HashMap::new()),
            opts,
        }
    }

    pub fn register(mut self, kind: &str, handler: impl JobHandler) -> Self {
        Arc::make_mut(&mut self.handlers).insert(kind.to_owned(), Arc::new(handler));
        self
    }

    /// Claims and runs one job. Returns false when nothing was due.
    pub async fn run_once(&self) -> crate::Result<bool> {
        let jobs = Jobs(&self.db);
        let worker = self.opts.name.as_str();
        let Some(job) = jobs.claim(worker).await? else {
            return Ok(false);
        };
        let span =
            tracing::info_span!("job", id = %job.id, kind = %job.kind, attempt = job.attempts);
        async {
            let Some(handler) = self.handlers.get(&job.kind).cloned() else {
                tracing::warn!("no handler for this job kind");
                jobs.fail(
                    &job,
                    worker,
                    "no handler for this job kind",
                    self.opts.retry_base,
                )
                .await?;
                return Ok(true);
            };
            let ctx = JobContext {
                db: self.db.clone(),
                id: job.id,
                worker: worker.to_owned(),
                payload: serde_json::from_str(&job.payload).unwrap_or(serde_json::Value::Null),
                attempt: job.attempts,
            };
            // Heartbeats keep a long job that reports no progress from looking dead.
            let beat = {
                let (db, id, name) = (self.db.clone(), job.id, worker.to_owned());
                let every = (self.opts.stale_after / 4).max(Duration::from_millis(100));
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = Jobs(&db).heartbeat(id, &name).await {
                            tracing::warn!(error = %e, "job heartbeat failed");
                        }
                    }
                })
            };
            let outcome = handler.run(&ctx).await;
            beat.abort();
            match outcome {
                Ok(()) => {
                    jobs.complete(job.id, worker).await?;
                    tracing::info!("job done");
                }
                Err(JobError::Cancelled) => {
                    jobs.mark_cancelled(job.id, worker).await?;
                    tracing::info!("job cancelled");
                }
                Err(JobError::Failed(e)) => {
                    let state = jobs.fail(&job, worker, &e, self.opts.retry_base).await?;
                    tracing::warn!(error = %e, next = state.as_str(), "job failed");
                }
            }
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// Works until `shutdown` resolves; the job in hand is finished first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_sweep = std::time::Instant::now() - self.opts.stale_after;
        loop {
            if last_sweep.elapsed() >= self.opts.stale_after / 4 {
                last_sweep = std::time::Instant::now();
                match Jobs(&self.db).requeue_stale(self.opts.stale_after).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(requeued = n, "requeued jobs of a stopped worker"),
                    Err(e) => tracing::error!(error = %e, "stale job sweep failed"),
                }
            }
            let worked = match self.run_once().await {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "job queue unavailable");
                    false
                }
            };
            if worked {
                // Drain the queue without sleeping, but still notice a shutdown between jobs.
                if futures_poll_ready(&mut shutdown).await {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.opts.poll_interval) => {}
            }
        }
        tracing::info!(worker = %self.opts.name, "worker stopped");
    }
}

async fn futures_poll_ready(f: &mut Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = f.as_mut() => true,
        () = std::future::ready(()) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(1, base), Duration::from_secs(2));
        assert_eq!(backoff(3, base), Duration::from_secs(8));
        assert_eq!(backoff(40, base), Duration::from_secs(3600));
    }
}
