//! The security audit log: append-only and hash-chained. Appends take the head row's lock inside the
//! caller's transaction, so the chain never forks and an event exists only if the change it records
//! was committed. There is no update or delete path except retention, which leaves a checkpoint.

use chrono::{DateTime, SecondsFormat, Utc};
use santong_domain::audit::{AuditFields, GENESIS, chain_hash};
use serde::Serialize;
use uuid::Uuid;

use crate::dynsql::DynQuery;
use crate::{Db, Page, Tx, db_query};

/// What happened, by whom, from where, to what, with what result, in which scope.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub ip: String,
    pub event: &'static str,
    pub target: String,
    /// `success`, `failure` or `denied`.
    pub result: &'static str,
    /// Node code the action applied in (`000000` for the nation).
    pub scope: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub ip: String,
    pub event: String,
    pub target: String,
    pub result: String,
    pub scope: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    fn fields(&self) -> (String, i64) {
        (fmt_at(self.at), self.seq)
    }
}

/// The timestamp as hashed: RFC 3339, UTC, microseconds (what both backends store exactly).
fn fmt_at(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Appends one event inside `tx`; returns its sequence number.
pub async fn append(tx: &mut Tx, e: &AuditEntry) -> crate::Result<i64> {
    let (seq, prev): (i64, String) = match tx {
        Tx::Sqlite(t) => {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE name = 'head'")
                .fetch_one(&mut **t)
                .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE name = 'head' FOR UPDATE")
                .fetch_one(&mut **t)
                .await?
        }
    };
    let seq = seq + 1;
    let at = now_micros();
    let at_s = fmt_at(at);
    let hash = chain_hash(
        &prev,
        &AuditFields {
            seq,
            at: &at_s,
            actor: &e.actor,
            ip: &e.ip,
            event: e.event,
            target: &e.target,
            result: e.result,
            scope: &e.scope,
            detail: &e.detail,
        },
    );
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO audit_event (seq, at, actor, actor_id, ip, event, target, \
            result, scope, detail, prev_hash, hash) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        ))
        .bind(seq)
        .bind(at)
        .bind(&e.actor)
        .bind(e.actor_id)
        .bind(&e.ip)
        .bind(e.event)
        .bind(&e.target)
        .bind(e.result)
        .bind(&e.scope)
        .bind(&e.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *ex)
        .await?;
        sqlx::query(sql(
            "UPDATE audit_head SET seq = $1, hash = $2 WHERE name = 'head'",
        ))
        .bind(seq)
        .bind(&hash)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(seq)
}

/// Appends one event in a transaction of its own.
pub async fn record(db: &Db, e: &AuditEntry) -> crate::Result<i64> {
    let mut tx = db.begin().await?;
    let seq = append(&mut tx, e).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Filters of the audit viewer.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub result: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    fn push_where(&self, q: &mut DynQuery) {
        q.push(" WHERE 1 = 1");
        for (col, v) in [
            ("event", &self.event),
            ("actor", &self.actor),
            ("target", &self.target),
            ("result", &self.result),
        ] {
            if let Some(v) = v {
                q.push(" AND ").push(col).push(" = ").bind(v.clone());
            }
        }
        if let Some(from) = self.from {
            q.push(" AND at >= ").bind(from);
        }
        if let Some(to) = self.to {
            q.push(" AND at < ").bind(to);
        }
    }
}

const AUDIT_COLUMNS: &str = "SELECT seq, at, actor, actor_id, ip, event, target, result, scope, detail, prev_hash, hash \
     FROM audit_event";

/// Newest first.
pub async fn search(
    db: &Db,
    filter: &AuditFilter,
    limit: u64,
    offset: u64,
) -> crate::Result<Page<AuditRow>> {
    let mut q = DynQuery::for_db(db);
    q.push(AUDIT_COLUMNS);
    filter.push_where(&mut q);
    q.push(" ORDER BY seq DESC LIMIT ")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind(i64::try_from(offset).unwrap_or(i64::MAX));
    let items = q.fetch_all(db).await?;
    let mut c = DynQuery::for_db(db);
    c.push("SELECT COUNT(*) FROM audit_event");
    filter.push_where(&mut c);
    let total = u64::try_from(c.fetch_count(db).await?).unwrap_or(0);
    Ok(Page { items, total })
}

/// Events after `after_seq` in ascending order (for exports and verification in batches).
pub async fn batch_after(
    db: &Db,
    filter: &AuditFilter,
    after_seq: i64,
    limit: i64,
) -> crate::Result<Vec<AuditRow>> {
    let mut q = DynQuery::for_db(db);
    q.push(AUDIT_COLUMNS);
    filter.push_where(&mut q);
    q.push(" AND seq > ")
        .bind(after_seq)
        .push(" ORDER BY seq LIMIT ")
        .bind(limit);
    q.fetch_all(db).await
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every event from the checkpoint on chains correctly and the head matches.
    Intact { events: u64, from_seq: i64 },
    /// The first broken link, and why.
    Broken { seq: i64, reason: String },
}

/// Recomputes the chain from the latest checkpoint (or the beginning) to the head.
pub async fn verify(db: &Db) -> crate::Result<Verification> {
    // The head first: events appended while we verify are beyond it and not judged.
    let head: (i64, String) = db_query!(db, read, |_sql, ex| {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE name = 'head'")
            .fetch_one(ex)
            .await?
    });
    let checkpoint: Option<(i64, String)> = db_query!(db, read, |_sql, ex| {
        sqlx::query_as("SELECT seq, hash FROM audit_checkpoint ORDER BY seq DESC LIMIT 1")
            .fetch_optional(ex)
            .await?
    });
    let (from_seq, mut prev) = checkpoint.unwrap_or((0, GENESIS.to_owned()));
    let mut expected = from_seq + 1;
    let mut count = 0u64;
    loop {
        let rows = batch_after(db, &AuditFilter::default(), expected - 1, 1000).await?;
        let rows: Vec<_> = rows.into_iter().filter(|r| r.seq <= head.0).collect();
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            if r.seq != expected {
                return Ok(Verification::Broken {
                    seq: expected,
                    reason: format!("event {expected} is missing (next present is {})", r.seq),
                });
            }
            if r.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: r.seq,
                    reason: "its previous-hash does not match the event before it".into(),
                });
            }
            let (at, seq) = r.fields();
            let h = chain_hash(
                &prev,
                &AuditFields {
                    seq,
                    at: &at,
                    actor: &r.actor,
                    ip: &r.ip,
                    event: &r.event,
                    target: &r.target,
                    result: &r.result,
                    scope: &r.scope,
                    detail: &r.detail,
                },
            );
            if h != r.hash {
                return Ok(Verification::Broken {
                    seq: r.seq,
                    reason: "its content does not match its hash (it was changed)".into(),
                });
            }
            prev = h;
            expected += 1;
            count += 1;
        }
    }
    if head.0 != expected - 1 || head.1 != prev {
        return Ok(Verification::Broken {
            seq: head.0.max(expected),
            reason: format!(
                "the log ends at event {} but the head records event {}: events were removed",
                expected - 1,
                head.0
            ),
        });
    }
    Ok(Verification::Intact {
        events: count,
        from_seq,
    })
}

/// Removes events older than `keep_days`, leaving a checkpoint with the hash of the last removed
/// event so the remainder still verifies. Returns how many were removed.
pub async fn prune(db: &Db, keep_days: u32) -> crate::Result<u64> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(keep_days));
    let mut tx = db.begin().await?;
    let last: Option<(i64, String)> = db_query!(&mut tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT seq, hash FROM audit_event WHERE at < $1 ORDER BY seq DESC LIMIT 1",
        ))
        .bind(cutoff)
        .fetch_optional(ex)
        .await?
    });
    let Some((seq, hash)) = last else {
        return Ok(0);
    };
    let removed = db_query!(&mut tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO audit_checkpoint (seq, hash, created_at) VALUES ($1, $2, $3)",
        ))
        .bind(seq)
        .bind(&hash)
        .bind(Utc::now())
        .execute(&mut *ex)
        .await?;
        sqlx::query(sql("DELETE FROM audit_event WHERE seq <= $1"))
            .bind(seq)
            .execute(ex)
            .await?
            .rows_affected()
    });
    append(
        &mut tx,
        &AuditEntry {
            actor: "system".into(),
            ip: "-".into(),
            event: "audit.prune",
            target: format!("events up to {seq}"),
            result: "success",
            scope: "000000".into(),
            detail: format!("retention {keep_days} days, {removed} removed"),
            ..AuditEntry::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(removed)
}
