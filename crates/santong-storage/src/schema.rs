//! A backend-neutral description of the live schema, so a test can prove that the SQLite and
//! PostgreSQL migrations build the same tables, columns, nullability and indexes.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::{Backend, Db};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub name: String,
    /// One of `text`, `int`, `float`, `bool`, `uuid`, `timestamp`, `bytes`, `date`, `json`, or
    /// `other:<type>` for anything unmapped (which makes the comparison fail loudly).
    pub class: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Index {
    pub columns: Vec<String>,
    pub unique: bool,
    pub partial: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub indexes: Vec<Index>,
}

pub type Schema = BTreeMap<String, Table>;

fn pg_class(t: &str) -> String {
    match t {
        "text" | "character varying" | "character" => "text",
        "integer" | "bigint" | "smallint" => "int",
        "double precision" | "real" | "numeric" => "float",
        "boolean" => "bool",
        "uuid" => "uuid",
        "timestamp with time zone" => "timestamp",
        "bytea" => "bytes",
        "date" => "date",
        "jsonb" | "json" => "json",
        other => return format!("other:{other}"),
    }
    .to_owned()
}

fn sqlite_class(t: &str) -> String {
    match t.to_ascii_uppercase().as_str() {
        "TEXT" => "text",
        "INTEGER" | "BIGINT" => "int",
        "REAL" => "float",
        "BOOLEAN" => "bool",
        "UUID" => "uuid",
        "TIMESTAMPTZ" => "timestamp",
        "BLOB" => "bytes",
        "DATE" => "date",
        "JSON" => "json",
        other => return format!("other:{other}"),
    }
    .to_owned()
}

/// Reads the schema of the application tables (migration bookkeeping excluded).
pub async fn describe(db: &Db) -> crate::Result<Schema> {
    let mut schema = Schema::new();
    match &db.backend {
        Backend::Sqlite(s) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%'",
            )
            .fetch_all(&s.reader)
            .await?;
            for t in tables {
                let mut table = Table::default();
                let cols = sqlx::query("SELECT name, type, \"notnull\" FROM pragma_table_info(?1)")
                    .bind(&t)
                    .fetch_all(&s.reader)
                    .await?;
                for c in cols {
                    table.columns.push(Column {
                        name: c.try_get("name")?,
                        class: sqlite_class(&c.try_get::<String, _>("type")?),
                        nullable: c.try_get::<i64, _>("notnull")? == 0,
                    });
                }
                let idx =
                    sqlx::query("SELECT name, \"unique\", partial FROM pragma_index_list(?1)")
                        .bind(&t)
                        .fetch_all(&s.reader)
                        .await?;
                for i in idx {
                    let name: String = i.try_get("name")?;
                    let columns: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                            .bind(&name)
                            .fetch_all(&s.reader)
                            .await?;
                    table.indexes.push(Index {
                        columns,
                        unique: i.try_get::<i64, _>("unique")? == 1,
                        partial: i.try_get::<i64, _>("partial")? == 1,
                    });
                }
                schema.insert(t, table);
            }
        }
        Backend::Postgres(p) => {
            let cols = sqlx::query(
                "SELECT c.table_name::text AS t, c.column_name::text AS name, \
                 c.data_type::text AS ty, c.is_nullable::text AS nullable \
                 FROM information_schema.columns c JOIN information_schema.tables tb \
                 ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name \
                 WHERE c.table_schema = current_schema() AND tb.table_type = 'BASE TABLE' \
                 AND c.table_name NOT LIKE '\\_sqlx\\_%'",
            )
            .fetch_all(p)
            .await?;
            for c in cols {
                let t: String = c.try_get("t")?;
                schema.entry(t).or_default().columns.push(Column {
                    name: c.try_get("name")?,
                    class: pg_class(&c.try_get::<String, _>("ty")?),
                    nullable: c.try_get::<String, _>("nullable")? == "YES",
                });
            }
            let idx = sqlx::query(
                "SELECT t.relname::text AS t, ix.indisunique AS uniq, \
                 (ix.indpred IS NOT NULL) AS partial, \
                 ARRAY(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, ord) \
                       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                       ORDER BY k.ord) AS cols \
                 FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = current_schema() AND t.relname NOT LIKE '\\_sqlx\\_%'",
            )
            .fetch_all(p)
            .await?;
            for i in idx {
                let t: String = i.try_get("t")?;
                schema.entry(t).or_default().indexes.push(Index {
                    columns: i.try_get("cols")?,
                    unique: i.try_get("uniq")?,
                    partial: i.try_get("partial")?,
                });
            }
        }
    }
    for table in schema.values_mut() {
        table.columns.sort();
        table.indexes.sort();
    }
    Ok(schema)
}
