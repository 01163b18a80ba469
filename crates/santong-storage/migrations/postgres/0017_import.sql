-- Imports (导入): an uploaded file is checked first (the preview: counts and every rejected row)
-- and then committed as one batch; the events and corrections it writes carry the batch, so it
-- can be undone as a whole.

CREATE TABLE import_batch (
    id             UUID NOT NULL PRIMARY KEY,
    -- students (teachers, classes, schools and conditions to come)
    kind           TEXT NOT NULL,
    school_code    TEXT NOT NULL REFERENCES school (code),
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

-- The uploaded file in pieces, so whichever node runs the job can read it; dropped on commit.
CREATE TABLE import_file (
    batch_id UUID NOT NULL REFERENCES import_batch (id),
    seq      INTEGER NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (batch_id, seq)
);

-- Rejected rows: the line of the file, its cells as read and its problems (JSON).
CREATE TABLE import_reject (
    batch_id UUID NOT NULL REFERENCES import_batch (id),
    line     BIGINT NOT NULL,
    cells    TEXT NOT NULL,
    problems TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
);

-- Corrections written by an import carry its batch, so undoing the batch reverts them.
ALTER TABLE student_correction ADD COLUMN batch_id UUID;
CREATE INDEX student_correction_batch ON student_correction (batch_id) WHERE batch_id IS NOT NULL;
