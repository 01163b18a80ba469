//! Santong's storage: one [`Db`] over SQLite (a county on one machine) and PostgreSQL (a
//! province), the migrations of both, and one repository module per context.
//!
//! Every query is written once with `$n` placeholders and portable SQL; [`db_query!`] runs the
//! same Rust code against whichever pool is configured, rewriting placeholders for SQLite. SQL that
//! genuinely differs (row locking in the job queue) is written per backend beside each other.

pub mod audit;
pub mod classes;
pub mod db;
pub mod demo;
pub mod duplicates;
mod dynsql;
pub mod identity;
pub mod imports;
pub mod jobs;
pub mod lifecycle;
pub mod oidc;
#[cfg(feature = "xlsx")]
pub mod oneroster;
pub mod quality;
pub mod reference;
pub mod regions;
pub mod registry;
pub mod schema;
mod scope;
pub mod settings;
pub mod sheet;
pub mod students;
pub mod teachers;
pub mod transfers;
pub mod users;

pub use db::{Backend, Db, DbOptions, StorageError, Tx, redact_url};

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One page of a list and the total number of rows matching its filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}
