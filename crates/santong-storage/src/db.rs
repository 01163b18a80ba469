//! The database handle: connection, pragmas, migrations and the backend dispatch macro.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot open the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("reference data {name} is broken at line {line}: {reason}")]
    Reference {
        name: &'static str,
        line: usize,
        reason: String,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `sqlite://…` / a path, or `postgres://…`. `None` means `<data_dir>/santong.db`.
    pub url: Option<String>,
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// PostgreSQL schema to use (tests give each test its own).
    pub pg_schema: Option<String>,
}

impl DbOptions {
    pub fn sqlite_in(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            url: None,
            data_dir: data_dir.into(),
            max_connections: 8,
            pg_schema: None,
        }
    }
}

/// SQLite keeps one writer connection (SQLite serialises writers anyway; one pool avoids
/// `SQLITE_BUSY` storms) beside a pool of readers that WAL lets run concurrently.
#[derive(Clone)]
pub struct SqliteDb {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
}

#[derive(Clone)]
pub enum Backend {
    Sqlite(SqliteDb),
    Postgres(PgPool),
}

/// The one handle every repository takes. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub(crate) backend: Backend,
    url_redacted: String,
    /// Per-database memory of recent `login.locked` events (see `identity::locked_event_due`).
    pub(crate) recent_locks: std::sync::Arc<std::sync::Mutex<crate::identity::RecentLocks>>,
    /// When stale sign-in counters were last purged (Unix seconds).
    pub(crate) last_throttle_purge: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.url_redacted)
    }
}

/// Replaces the password in a database URL with `***` so it can be printed and logged: the one
/// in the user-info part (even one holding a raw `/` or `@`) and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let main = match main.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => main.to_owned(),
        },
        None => main.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{main}?{q}"),
        None => format!("{scheme}://{main}"),
    }
}

impl Db {
    /// Connects (creating the SQLite file and data directory when needed) and applies migrations.
    pub async fn open(opts: &DbOptions) -> crate::Result<Self> {
        let db = Self::connect(opts).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without migrating.
    pub async fn connect(opts: &DbOptions) -> crate::Result<Self> {
        match opts.url.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::connect_postgres(url, opts).await
            }
            Some(url) => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or(url.strip_prefix("sqlite:"))
                    .unwrap_or(url);
                Self::connect_sqlite(PathBuf::from(path), url.to_owned()).await
            }
            None => {
                std::fs::create_dir_all(&opts.data_dir).map_err(|source| {
                    StorageError::DataDir {
                        path: opts.data_dir.clone(),
                        source,
                    }
                })?;
                let path = opts.data_dir.join("santong.db");
                let shown = path.display().to_string();
                Self::connect_sqlite(path, shown).await
            }
        }
    }

    async fn connect_sqlite(path: PathBuf, shown: String) -> crate::Result<Self> {
        let err = |source| StorageError::Connect {
            url: shown.clone(),
            source,
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits on power loss, never corrupt.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // 32 MiB of page cache (the default is 2 MiB): a county's year-end batch touches
            // index pages all over a 100,000-student table, and spilling them costs ten times more.
            .pragma("cache_size", "-32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.clone().create_if_missing(true))
            .await
            .map_err(err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(base.read_only(true))
            .await
            .map_err(err)?;
        Ok(Self {
            backend: Backend::Sqlite(SqliteDb { writer, reader }),
            url_redacted: shown,
            recent_locks: Default::default(),
            last_throttle_purge: Default::default(),
        })
    }

    async fn connect_postgres(url: &str, opts: &DbOptions) -> crate::Result<Self> {
        let shown = redact_url(url);
        let err = |source| StorageError::Connect {
            url: shown.clone(),
            source,
        };
        let mut connect = PgConnectOptions::from_str(url).map_err(err)?;
        if let Some(schema) = &opts.pg_schema {
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect)
            .await
            .map_err(err)?;
        Ok(Self {
            backend: Backend::Postgres(pool),
            url_redacted: shown,
            recent_locks: Default::default(),
            last_throttle_purge: Default::default(),
        })
    }

    pub async fn migrate(&self) -> crate::Result<()> {
        match &self.backend {
            Backend::Sqlite(s) => sqlx::migrate!("./migrations/sqlite").run(&s.writer).await?,
            Backend::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The URL with any password replaced, for messages and `config show`.
    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    /// Round-trips a trivial query: what `/readyz` asks.
    pub async fn ping(&self) -> crate::Result<()> {
        match &self.backend {
            Backend::Sqlite(s) => sqlx::query("SELECT 1")
                .execute(&s.reader)
                .await?
                .rows_affected(),
            Backend::Postgres(p) => sqlx::query("SELECT 1").execute(p).await?.rows_affected(),
        };
        Ok(())
    }

    /// Starts a transaction on the writer.
    pub async fn begin(&self) -> crate::Result<Tx> {
        Ok(match &self.backend {
            // IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
            // writes fails at once with SQLITE_BUSY when another process wrote in between,
            // instead of waiting on busy_timeout.
            Backend::Sqlite(s) => Tx::Sqlite(s.writer.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// Runs one statement written by the program itself (maintenance, and tests that simulate
    /// tampering). Never pass user input.
    pub async fn execute_unchecked(&self, sql: &str) -> crate::Result<u64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.backend {
            Backend::Sqlite(s) => sqlx::query(sql).execute(&s.writer).await?.rows_affected(),
            Backend::Postgres(p) => sqlx::query(sql).execute(p).await?.rows_affected(),
        })
    }

    /// Runs one counting query written by the program itself (maintenance, and tests that check
    /// what a change left behind). Never pass user input.
    pub async fn scalar_unchecked(&self, sql: &str) -> crate::Result<i64> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        Ok(match &self.backend {
            Backend::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.reader).await?,
            Backend::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await?,
        })
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => {
                s.reader.close().await;
                s.writer.close().await;
            }
            Backend::Postgres(p) => p.close().await,
        }
    }
}

/// The SQLite settings that matter for durability and concurrency, as a connection sees them.
#[derive(Debug, Clone)]
pub struct SqlitePragmas {
    pub journal_mode: String,
    pub foreign_keys: i64,
    pub busy_timeout_ms: i64,
    pub synchronous: i64,
}

/// Reads [`SqlitePragmas`] from the writer connection; `None` on PostgreSQL.
pub async fn sqlite_pragmas(db: &Db) -> crate::Result<Option<SqlitePragmas>> {
    let Backend::Sqlite(s) = &db.backend else {
        return Ok(None);
    };
    let mut c = s.writer.acquire().await?;
    Ok(Some(SqlitePragmas {
        journal_mode: sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await?,
        foreign_keys: sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *c)
            .await?,
        busy_timeout_ms: sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *c)
            .await?,
        synchronous: sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *c)
            .await?,
    }))
}

/// A transaction on either backend; commit it or it rolls back on drop.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> crate::Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Gives a statement assembled at run time from a closed set of fragments (sort orders, filter
/// shapes) a `'static` lifetime, once per distinct text.
///
/// Never pass user input here: values go through `bind`. The cache is bounded because callers
/// only combine fixed fragments.
pub(crate) fn intern(sql: String) -> &'static str {
    static CACHE: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.read().ok().and_then(|c| c.get(&sql).copied()) {
        return hit;
    }
    let mut c = cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(hit) = c.get(&sql) {
        return hit;
    }
    let leaked: &'static str = Box::leak(sql.clone().into_boxed_str());
    c.insert(sql, leaked);
    leaked
}

/// Rewrites `$n` placeholders to SQLite's `?n` once per distinct statement.
///
/// SQLite reads `$1` as a *named* parameter numbered by first appearance, which silently binds the
/// wrong values when a statement mentions `$2` before `$1`; `?n` is positional. Statements are
/// `'static` literals, so the cache is bounded by the program text.
pub(crate) fn sqlite_sql(sql: &'static str) -> &'static str {
    static CACHE: OnceLock<RwLock<HashMap<(usize, usize), &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Address and length: a literal that is a prefix of another may share its address.
    let key = (sql.as_ptr() as usize, sql.len());
    if let Some(hit) = cache.read().ok().and_then(|c| c.get(&key).copied()) {
        return hit;
    }
    let converted: &'static str = Box::leak(to_sqlite_placeholders(sql).into_boxed_str());
    if let Ok(mut c) = cache.write() {
        c.insert(key, converted);
    }
    converted
}

pub(crate) fn to_sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
        }
        if c == '$' && !in_string && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs one body against the configured backend.
///
/// `db_query!(db, read, |sql, ex| body)` binds `ex` to the reader (SQLite) or the pool, and
/// `sql` to a function turning a `'static` `$n` statement into this backend's text; `write`
/// uses the writer. `db_query!(tx, tx, |sql, ex| body)` runs inside a [`Tx`]. The body is compiled
/// once per backend, so every bound and decoded type must work on both.
#[macro_export]
#[doc(hidden)]
macro_rules! db_query {
    ($db:expr, read, |$sql:ident, $ex:ident| $body:expr) => {
        match &$db.backend {
            $crate::Backend::Sqlite(s) => {
                let $ex = &s.reader;
                let $sql = $crate::db::sqlite_sql_fn();
                $body
            }
            $crate::Backend::Postgres(p) => {
                let $ex = p;
                let $sql = $crate::db::pg_sql_fn();
                $body
            }
        }
    };
    ($db:expr, write, |$sql:ident, $ex:ident| $body:expr) => {
        match &$db.backend {
            $crate::Backend::Sqlite(s) => {
                let $ex = &s.writer;
                let $sql = $crate::db::sqlite_sql_fn();
                $body
            }
            $crate::Backend::Postgres(p) => {
                let $ex = p;
                let $sql = $crate::db::pg_sql_fn();
                $body
            }
        }
    };
    ($tx:expr, tx, |$sql:ident, $ex:ident| $body:expr) => {
        match $tx {
            $crate::Tx::Sqlite(t) => {
                let $ex = &mut **t;
                let $sql = $crate::db::sqlite_sql_fn();
                $body
            }
            $crate::Tx::Postgres(t) => {
                let $ex = &mut **t;
                let $sql = $crate::db::pg_sql_fn();
                $body
            }
        }
    };
}

#[doc(hidden)]
pub fn sqlite_sql_fn() -> fn(&'static str) -> &'static str {
    sqlite_sql
}

#[doc(hidden)]
pub fn pg_sql_fn() -> fn(&'static str) -> &'static str {
    |s| s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_positional_outside_strings() {
        assert_eq!(
            to_sqlite_placeholders("SELECT '$1', a FROM t WHERE b = $2 AND c = $1"),
            "SELECT '$1', a FROM t WHERE b = ?2 AND c = ?1"
        );
        let s: &'static str = "SELECT $1";
        assert_eq!(sqlite_sql(s), "SELECT ?1");
        assert_eq!(sqlite_sql(s), "SELECT ?1");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://santong:s3cret@db.example:5432/santong"),
            "postgres://santong:***@db.example:5432/santong"
        );
        assert_eq!(
            redact_url("postgres://localhost/test"),
            "postgres://localhost/test"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://u:p@w@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact_url("postgres://u:a/b@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
    }
}
