-- Staff imports (and the kinds after them) log every write under their batch: a batch is undone
-- by reading its log backwards (deleting what it created, restoring what it changed, unless the
-- value changed again since).

CREATE TABLE import_change (
    batch_id   UUID NOT NULL REFERENCES import_batch (id),
    seq        BIGINT NOT NULL,
    table_name TEXT NOT NULL,
    -- The record's key: its id, or its code (a school).
    record_id  TEXT NOT NULL,
    -- NULL: the batch created the record.
    field      TEXT,
    old_value  TEXT,
    new_value  TEXT,
    PRIMARY KEY (batch_id, seq)
);

-- Appointments written by an import carry its batch, as students' events do.
ALTER TABLE teacher_event ADD COLUMN batch_id UUID;
CREATE INDEX teacher_event_batch ON teacher_event (batch_id) WHERE batch_id IS NOT NULL;
