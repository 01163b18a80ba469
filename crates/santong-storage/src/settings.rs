//! Instance settings kept in the database (set by commands such as `santong demo`), as opposed
//! to the process settings of flags, environment and file.

use chrono::Utc;

use crate::{Db, db_query};

pub struct Settings<'a>(pub &'a Db);

impl Settings<'_> {
    pub async fn get(&self, key: &str) -> crate::Result<Option<String>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT value FROM instance_setting WHERE key = $1"))
                .bind(key)
                .fetch_optional(ex)
                .await?
        }))
    }

    pub async fn set(&self, key: &str, value: &str) -> crate::Result<()> {
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql("INSERT INTO instance_setting (key, value, updated_at) VALUES ($1, $2, $3) \
                ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"))
                .bind(key)
                .bind(value)
                .bind(Utc::now())
                .execute(ex)
                .await?.rows_affected()
        });
        Ok(())
    }
}
