//! Accounts, as far as the foundation needs them: the initial system administrator.
//! The identity context owns the rest (roles, grants, sessions, policies).

use chrono::Utc;
use santong_domain::password;
use uuid::Uuid;

use crate::{Db, db_query};

pub const INITIAL_ADMIN: &str = "admin";
pub const SYSTEM_ADMIN: &str = "system_admin";

/// Credentials of a freshly created initial administrator, to be shown once.
#[derive(Debug)]
pub struct InitialAdmin {
    pub username: String,
    pub password: String,
}

pub struct Users<'a>(pub &'a Db);

impl Users<'_> {
    /// Creates the initial system administrator with a random password when there is none.
    ///
    /// Returns the credentials only when it created the account; the password is never stored in
    /// clear or logged. The insert is keyed on the user name, so two processes starting at once
    /// create one account and only the winner prints a password.
    pub async fn ensure_initial_admin(&self) -> crate::Result<Option<InitialAdmin>> {
        let existing: i64 = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT COUNT(*) FROM app_user WHERE system_role = $1"))
                .bind(SYSTEM_ADMIN)
                .fetch_one(ex)
                .await?
        });
        if existing > 0 {
            return Ok(None);
        }
        let pw = password::generate(16);
        let hash = crate::identity::hash_password(&pw).await;
        let inserted = db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO app_user (id, username, display_name, password_hash, \
                must_change_password, system_role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                ON CONFLICT (username) DO NOTHING",
            ))
            .bind(Uuid::now_v7())
            .bind(INITIAL_ADMIN)
            .bind("系统管理员")
            .bind(hash)
            .bind(true)
            .bind(SYSTEM_ADMIN)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok((inserted == 1).then(|| InitialAdmin {
            username: INITIAL_ADMIN.into(),
            password: pw,
        }))
    }

    /// Checks a password; used by the tests until the identity context adds sign-in.
    pub async fn verify_password(&self, username: &str, pw: &str) -> crate::Result<bool> {
        let hash: Option<String> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT password_hash FROM app_user WHERE username = $1",
            ))
            .bind(username)
            .fetch_optional(ex)
            .await?
        });
        Ok(match hash {
            Some(h) => crate::identity::verify_password(pw, &h).await,
            None => false,
        })
    }
}
