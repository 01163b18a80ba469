//! Storage conformance suite: every test runs on SQLite and on PostgreSQL
//! (`SANTONG_TEST_PG_URL`). One test binary for the crate.

mod classes;
mod duplicates;
mod identity;
mod imports;
mod jobs;
mod lifecycle;
mod oneroster;
mod quality;
mod regions;
mod registry;
mod schema;
mod students;
mod teachers;
mod transfers;
mod users;
