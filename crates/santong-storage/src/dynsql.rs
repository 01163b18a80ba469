//! Statements assembled at run time (variable filters, scope conditions, multi-row inserts) with
//! the right placeholder syntax per backend. Only placeholders and fixed fragments go into the
//! text; every value is bound.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::{Backend, Db, Tx};

/// A bind value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Text(String),
    OptText(Option<String>),
    Int(i32),
    OptInt(Option<i32>),
    BigInt(i64),
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
    Time(DateTime<Utc>),
    Date(chrono::NaiveDate),
    OptDate(Option<chrono::NaiveDate>),
    OptTime(Option<DateTime<Utc>>),
    Bool(bool),
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Text(s.to_owned())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Text(s)
    }
}
impl From<i64> for Val {
    fn from(n: i64) -> Self {
        Val::BigInt(n)
    }
}
impl From<Uuid> for Val {
    fn from(u: Uuid) -> Self {
        Val::Uuid(u)
    }
}
impl From<chrono::NaiveDate> for Val {
    fn from(d: chrono::NaiveDate) -> Self {
        Val::Date(d)
    }
}
impl From<DateTime<Utc>> for Val {
    fn from(t: DateTime<Utc>) -> Self {
        Val::Time(t)
    }
}

/// Binds every value of `$vals` to the query `$q`.
macro_rules! bind_vals {
    ($q:expr, $vals:expr) => {{
        let mut q = $q;
        for v in $vals {
            q = match v {
                Val::Text(s) => q.bind(s),
                Val::OptText(s) => q.bind(s),
                Val::Int(n) => q.bind(n),
                Val::OptInt(n) => q.bind(n),
                Val::BigInt(n) => q.bind(n),
                Val::Uuid(u) => q.bind(u),
                Val::OptUuid(u) => q.bind(u),
                Val::Time(t) => q.bind(t),
                Val::Date(d) => q.bind(d),
                Val::OptDate(d) => q.bind(d),
                Val::OptTime(t) => q.bind(t),
                Val::Bool(b) => q.bind(b),
            };
        }
        q
    }};
}

/// A statement under construction.
#[derive(Debug)]
pub(crate) struct DynQuery {
    sql: String,
    vals: Vec<Val>,
    pg: bool,
}

impl DynQuery {
    pub fn new(pg: bool) -> Self {
        Self {
            sql: String::with_capacity(256),
            vals: vec![],
            pg,
        }
    }

    pub fn for_db(db: &Db) -> Self {
        Self::new(db.is_postgres())
    }

    /// Appends fixed SQL text (never user input).
    pub fn push(&mut self, fragment: &str) -> &mut Self {
        self.sql.push_str(fragment);
        self
    }

    /// Appends a placeholder for `v`.
    pub fn bind(&mut self, v: impl Into<Val>) -> &mut Self {
        self.vals.push(v.into());
        self.sql.push(if self.pg { '$' } else { '?' });
        self.sql.push_str(&self.vals.len().to_string());
        self
    }

    pub fn bind_val(&mut self, v: Val) -> &mut Self {
        self.bind(v)
    }

    /// Appends ` (v, v, …)` for an `IN` list (not empty: the caller checks).
    pub fn push_in<V: Clone + Into<Val>>(&mut self, values: &[V]) -> &mut Self {
        self.push(" (");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v.clone());
        }
        self.push(")")
    }

    pub async fn fetch_all<T>(self, db: &Db) -> crate::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        Ok(match &db.backend {
            Backend::Sqlite(s) => {
                bind_vals!(sqlx::query_as::<_, T>(AssertSqlSafe(self.sql)), self.vals)
                    .fetch_all(&s.reader)
                    .await?
            }
            Backend::Postgres(p) => {
                bind_vals!(sqlx::query_as::<_, T>(AssertSqlSafe(self.sql)), self.vals)
                    .fetch_all(p)
                    .await?
            }
        })
    }

    pub async fn fetch_count(self, db: &Db) -> crate::Result<i64> {
        Ok(match &db.backend {
            Backend::Sqlite(s) => {
                bind_vals!(
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql)),
                    self.vals
                )
                .fetch_one(&s.reader)
                .await?
            }
            Backend::Postgres(p) => {
                bind_vals!(
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.sql)),
                    self.vals
                )
                .fetch_one(p)
                .await?
            }
        })
    }

    /// [`Self::fetch_all`] inside a transaction.
    pub async fn fetch_all_in<T>(self, tx: &mut Tx) -> crate::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
    {
        Ok(match tx {
            Tx::Sqlite(t) => {
                bind_vals!(sqlx::query_as::<_, T>(AssertSqlSafe(self.sql)), self.vals)
                    .fetch_all(&mut **t)
                    .await?
            }
            Tx::Postgres(t) => {
                bind_vals!(sqlx::query_as::<_, T>(AssertSqlSafe(self.sql)), self.vals)
                    .fetch_all(&mut **t)
                    .await?
            }
        })
    }

    pub async fn execute_in(self, tx: &mut Tx) -> crate::Result<u64> {
        Ok(match tx {
            Tx::Sqlite(t) => bind_vals!(sqlx::query(AssertSqlSafe(self.sql)), self.vals)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            Tx::Postgres(t) => bind_vals!(sqlx::query(AssertSqlSafe(self.sql)), self.vals)
                .execute(&mut **t)
                .await?
                .rows_affected(),
        })
    }
}

/// Inserts rows a batch of thousands per statement, in a few parameters: on PostgreSQL one typed
/// array per column (`UNNEST`), on SQLite one JSON array of the rows spread back into columns by
/// `jsonb_each`. Binding hundreds of parameters costs SQLite time that grows with their square
/// (`sqlite3_bind_parameter_name`), every statement is a round trip (to PostgreSQL, or to sqlx's
/// SQLite worker thread), and PostgreSQL plans a statement per distinct row count
/// (docs/benchmarks.md).
pub(crate) async fn insert_batched<T>(
    tx: &mut Tx,
    head: &str,
    tail: &str,
    rows: &[T],
    row_vals: impl Fn(&T) -> Vec<Val>,
) -> crate::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if matches!(tx, Tx::Postgres(_)) {
        insert_unnest(tx, head, tail, rows, row_vals).await
    } else {
        insert_json(tx, head, tail, rows, row_vals).await
    }
}

/// Rows per PostgreSQL statement of [`insert_unnest`].
const UNNEST_ROWS: usize = 5000;

/// One column of a batch as a typed array, for `UNNEST`.
enum ColumnArray {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    Uuid(Vec<Option<Uuid>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Date(Vec<Option<chrono::NaiveDate>>),
    Bool(Vec<Option<bool>>),
}

impl ColumnArray {
    fn of(v: &Val, n: usize) -> Self {
        match v {
            Val::Text(_) | Val::OptText(_) => ColumnArray::Text(Vec::with_capacity(n)),
            Val::Int(_) | Val::OptInt(_) => ColumnArray::Int(Vec::with_capacity(n)),
            Val::BigInt(_) => ColumnArray::BigInt(Vec::with_capacity(n)),
            Val::Uuid(_) | Val::OptUuid(_) => ColumnArray::Uuid(Vec::with_capacity(n)),
            Val::Time(_) | Val::OptTime(_) => ColumnArray::Time(Vec::with_capacity(n)),
            Val::Date(_) | Val::OptDate(_) => ColumnArray::Date(Vec::with_capacity(n)),
            Val::Bool(_) => ColumnArray::Bool(Vec::with_capacity(n)),
        }
    }

    fn cast(&self) -> &'static str {
        match self {
            ColumnArray::Text(_) => "text[]",
            ColumnArray::Int(_) => "int4[]",
            ColumnArray::BigInt(_) => "int8[]",
            ColumnArray::Uuid(_) => "uuid[]",
            ColumnArray::Time(_) => "timestamptz[]",
            ColumnArray::Date(_) => "date[]",
            ColumnArray::Bool(_) => "bool[]",
        }
    }

    /// Appends a value; false when it is not of the column's type (the caller falls back).
    fn push(&mut self, v: Val) -> bool {
        match (self, v) {
            (ColumnArray::Text(a), Val::Text(s)) => a.push(Some(s)),
            (ColumnArray::Text(a), Val::OptText(s)) => a.push(s),
            (ColumnArray::Int(a), Val::Int(n)) => a.push(Some(n)),
            (ColumnArray::Int(a), Val::OptInt(n)) => a.push(n),
            (ColumnArray::BigInt(a), Val::BigInt(n)) => a.push(Some(n)),
            (ColumnArray::Uuid(a), Val::Uuid(u)) => a.push(Some(u)),
            (ColumnArray::Uuid(a), Val::OptUuid(u)) => a.push(u),
            (ColumnArray::Time(a), Val::Time(t)) => a.push(Some(t)),
            (ColumnArray::Time(a), Val::OptTime(t)) => a.push(t),
            (ColumnArray::Date(a), Val::Date(d)) => a.push(Some(d)),
            (ColumnArray::Date(a), Val::OptDate(d)) => a.push(d),
            (ColumnArray::Bool(a), Val::Bool(b)) => a.push(Some(b)),
            _ => return false,
        }
        true
    }
}

/// [`insert_batched`] for PostgreSQL: `INSERT INTO t (a, b) SELECT * FROM UNNEST($1::text[],
/// $2::uuid[]) …`, one typed array per column, so a statement carries thousands of rows in as
/// many parameters as the table has columns.
async fn insert_unnest<T>(
    tx: &mut Tx,
    head: &str,
    tail: &str,
    rows: &[T],
    row_vals: impl Fn(&T) -> Vec<Val>,
) -> crate::Result<()> {
    let Tx::Postgres(t) = tx else {
        return Ok(());
    };
    let into = head
        .trim_end()
        .strip_suffix("VALUES")
        .unwrap_or(head)
        .trim_end();
    for chunk in rows.chunks(UNNEST_ROWS) {
        let mut cols: Vec<ColumnArray> = vec![];
        for row in chunk {
            for (c, v) in row_vals(row).into_iter().enumerate() {
                if cols.len() <= c {
                    cols.push(ColumnArray::of(&v, chunk.len()));
                }
                if !cols[c].push(v) {
                    return Err(crate::StorageError::Sqlx(sqlx::Error::Protocol(
                        "a batch's rows disagree on a column's type".into(),
                    )));
                }
            }
        }
        let mut sql = format!("{into} SELECT * FROM UNNEST(");
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}::{}", i + 1, c.cast()));
        }
        sql.push(')');
        sql.push_str(tail);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for c in cols {
            q = match c {
                ColumnArray::Text(a) => q.bind(a),
                ColumnArray::Int(a) => q.bind(a),
                ColumnArray::BigInt(a) => q.bind(a),
                ColumnArray::Uuid(a) => q.bind(a),
                ColumnArray::Time(a) => q.bind(a),
                ColumnArray::Date(a) => q.bind(a),
                ColumnArray::Bool(a) => q.bind(a),
            };
        }
        q.execute(&mut **t).await?;
    }
    Ok(())
}

/// Rows per SQLite statement of [`insert_json`].
const JSON_ROWS: usize = 2000;

/// A value as SQLite's JSON carries it, with the SQL that reads it back as sqlx would have bound
/// it: UUIDs are blobs (sent as hex), dates and times the text sqlx writes.
fn json_of(v: &Val) -> (serde_json::Value, bool) {
    use serde_json::Value as J;
    match v {
        Val::Text(s) => (J::String(s.clone()), false),
        Val::OptText(s) => (s.clone().map_or(J::Null, J::String), false),
        Val::Int(n) => (J::from(*n), false),
        Val::OptInt(n) => (n.map_or(J::Null, J::from), false),
        Val::BigInt(n) => (J::from(*n), false),
        Val::Uuid(u) => (J::String(u.simple().to_string()), true),
        Val::OptUuid(u) => (
            u.map_or(J::Null, |u| J::String(u.simple().to_string())),
            true,
        ),
        Val::Time(t) => (
            J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)),
            false,
        ),
        Val::OptTime(t) => (
            t.map_or(J::Null, |t| {
                J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
            }),
            false,
        ),
        Val::Date(d) => (J::String(d.format("%F").to_string()), false),
        Val::OptDate(d) => (
            d.map_or(J::Null, |d| J::String(d.format("%F").to_string())),
            false,
        ),
        Val::Bool(b) => (J::from(i32::from(*b)), false),
    }
}

/// [`insert_batched`] for SQLite: `INSERT INTO t (a, b) SELECT value->>0, unhex(value->>1) FROM
/// jsonb_each(?1) WHERE true …` (the `WHERE` keeps an `ON CONFLICT` tail from reading as a join;
/// `jsonb_each` hands each row over parsed once, where `json_each` would re-read it per column).
async fn insert_json<T>(
    tx: &mut Tx,
    head: &str,
    tail: &str,
    rows: &[T],
    row_vals: impl Fn(&T) -> Vec<Val>,
) -> crate::Result<()> {
    let into = head
        .trim_end()
        .strip_suffix("VALUES")
        .unwrap_or(head)
        .trim_end();
    for chunk in rows.chunks(JSON_ROWS) {
        let mut blob_cols: Vec<bool> = vec![];
        let mut array = Vec::with_capacity(chunk.len());
        for row in chunk {
            let vals = row_vals(row);
            let mut cells = Vec::with_capacity(vals.len());
            for (c, v) in vals.iter().enumerate() {
                let (j, blob) = json_of(v);
                if blob_cols.len() <= c {
                    blob_cols.push(blob);
                }
                cells.push(j);
            }
            array.push(serde_json::Value::Array(cells));
        }
        let mut q = DynQuery::new(false);
        q.push(into).push(" SELECT ");
        for (c, blob) in blob_cols.iter().enumerate() {
            if c > 0 {
                q.push(", ");
            }
            if *blob {
                q.push(&format!("unhex(value->>{c})"));
            } else {
                q.push(&format!("value->>{c}"));
            }
        }
        q.push(" FROM jsonb_each(")
            .bind(serde_json::Value::Array(array).to_string())
            .push(") WHERE true")
            .push(tail);
        q.execute_in(tx).await?;
    }
    Ok(())
}
