//! HTTP tests through `tower::ServiceExt::oneshot`, each on SQLite and on PostgreSQL.
//! One test binary for the crate.

mod api;
mod classes;
mod duplicates;
mod identity;
mod imports;
mod lifecycle;
mod oidc;
mod oneroster;
mod pages;
mod quality;
mod schools;
mod shell;
mod teachers;
mod transfers;
