-- Imports of a county's schools and school conditions belong to the county, not to one school:
-- `school_code` becomes optional. SQLite cannot drop a NOT NULL, so the table is rebuilt; the
-- rows that reference it are set aside meanwhile (a parent with referencing rows cannot be
-- dropped while foreign keys are enforced) and put back.

CREATE TABLE import_batch_keep AS SELECT * FROM import_batch;
CREATE TABLE import_file_keep AS SELECT * FROM import_file;
CREATE TABLE import_reject_keep AS SELECT * FROM import_reject;
CREATE TABLE import_change_keep AS SELECT * FROM import_change;
DELETE FROM import_file;
DELETE FROM import_reject;
DELETE FROM import_change;
DROP TABLE import_batch;

CREATE TABLE import_batch (
    id             UUID NOT NULL PRIMARY KEY,
    -- students | teachers | classes | schools | conditions
    kind           TEXT NOT NULL,
    -- NULL: a county's batch (schools, school conditions).
    school_code    TEXT REFERENCES school (code),
    county         TEXT NOT NULL,
    file_name      TEXT NOT NULL,
    file_size      BIGINT NOT NULL,
    -- all: nothing unless every row is valid; valid: the valid rows, the rest reported
    mode           TEXT NOT NULL,
    -- uploaded → checking → checked → committing → committed → undone; failed; cancelled
    state          TEXT NOT NULL,
    job_id         UUID,
    rows_total     BIGINT NOT NULL,
    rows_new       BIGINT NOT NULL,
    rows_updated   BIGINT NOT NULL,
    rows_unchanged BIGINT NOT NULL,
    rows_rejected  BIGINT NOT NULL,
    -- The file's header row as read (JSON array), for the rejected-rows report.
    headers        TEXT NOT NULL,
    -- Message key of the file's refusal (bad encoding, zip bomb, missing column …).
    error_key      TEXT,
    actor          TEXT NOT NULL,
    actor_id       UUID,
    created_at     TIMESTAMPTZ NOT NULL,
    committed_at   TIMESTAMPTZ,
    undone_at      TIMESTAMPTZ
);
CREATE INDEX import_batch_school ON import_batch (school_code, created_at);
CREATE INDEX import_batch_county ON import_batch (county, created_at);

INSERT INTO import_batch SELECT * FROM import_batch_keep;
INSERT INTO import_file SELECT * FROM import_file_keep;
INSERT INTO import_reject SELECT * FROM import_reject_keep;
INSERT INTO import_change SELECT * FROM import_change_keep;
DROP TABLE import_batch_keep;
DROP TABLE import_file_keep;
DROP TABLE import_reject_keep;
DROP TABLE import_change_keep;
