-- Foundation: regions, reference data bookkeeping, instance settings, the first accounts, jobs.
-- Mirrors migrations/sqlite/0001_foundation.sql; the schema-drift test keeps the two in step.
CREATE TABLE region (
    code          TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL,
    level         TEXT NOT NULL,
    parent_code   TEXT REFERENCES region (code),
    province_code TEXT NOT NULL
);
CREATE INDEX region_parent ON region (parent_code, code);
CREATE INDEX region_name ON region (name);

CREATE TABLE region_history (
    id          UUID NOT NULL PRIMARY KEY,
    code        TEXT NOT NULL,
    name        TEXT NOT NULL,
    level       TEXT NOT NULL,
    status      TEXT NOT NULL,
    province    TEXT NOT NULL,
    prefecture  TEXT NOT NULL,
    start_year  INTEGER NOT NULL,
    end_year    INTEGER,
    new_codes   TEXT NOT NULL
);
CREATE INDEX region_history_code ON region_history (code, start_year);

CREATE TABLE region_successor (
    code           TEXT NOT NULL,
    successor_code TEXT NOT NULL REFERENCES region (code),
    year           INTEGER NOT NULL,
    PRIMARY KEY (code, successor_code)
);

CREATE TABLE reference_data (
    name      TEXT NOT NULL PRIMARY KEY,
    version   TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE instance_setting (
    key        TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Accounts. The identity context grows this table; `system_role` holds at most one of the three
-- separated admin duties (三权分立) per account by construction.
CREATE TABLE app_user (
    id                   UUID NOT NULL PRIMARY KEY,
    username             TEXT NOT NULL UNIQUE,
    display_name         TEXT NOT NULL,
    password_hash        TEXT NOT NULL,
    must_change_password BOOLEAN NOT NULL,
    system_role          TEXT,
    created_at           TIMESTAMPTZ NOT NULL
);

CREATE TABLE job (
    id               UUID NOT NULL PRIMARY KEY,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedup_key        TEXT,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    run_at           TIMESTAMPTZ NOT NULL,
    locked_by        TEXT,
    heartbeat_at     TIMESTAMPTZ,
    progress         INTEGER NOT NULL,
    cancel_requested BOOLEAN NOT NULL,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX job_dedup ON job (dedup_key) WHERE state IN ('queued', 'running');
CREATE INDEX job_ready ON job (state, priority, run_at);
