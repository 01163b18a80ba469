-- Duplicate records (重复学籍): an ID number on two records that both hold a place. The record
-- enrolled second gets a temporary L-number and a case opens, visible to both schools and their
-- counties. It is resolved by merging the temporary record into the other one (a `merge` event
-- ends it) or by correcting the wrong ID number on either record; either can be undone, so the
-- case keeps what undoing needs.

CREATE TABLE duplicate_case (
    id            UUID NOT NULL PRIMARY KEY,
    -- The record enrolled second (temporary number) and the record it clashes with.
    student_id    UUID NOT NULL REFERENCES student (id),
    other_id      UUID NOT NULL REFERENCES student (id),
    -- open | merged | corrected
    status        TEXT NOT NULL,
    opened_at     TIMESTAMPTZ NOT NULL,
    opened_by     TEXT NOT NULL,
    resolved_at   TIMESTAMPTZ,
    resolved_by   TEXT,
    -- merged: the event that ended the temporary record.
    merge_event   UUID REFERENCES student_event (id),
    -- corrected: the record whose ID number changed, and its number before and after.
    corrected_id  UUID REFERENCES student (id),
    corrected_old_id_number TEXT,
    corrected_old_number TEXT,
    corrected_new_number TEXT,
    -- corrected: the temporary record that then got its official number, and its old number.
    upgraded_id   UUID REFERENCES student (id),
    upgraded_old_number TEXT
);
CREATE INDEX duplicate_case_student ON duplicate_case (student_id);
CREATE INDEX duplicate_case_other ON duplicate_case (other_id);
CREATE INDEX duplicate_case_status ON duplicate_case (status, opened_at);

-- What happened to a case, in order: opened, merged, corrected, undone.
CREATE TABLE duplicate_step (
    id          UUID NOT NULL PRIMARY KEY,
    case_id     UUID NOT NULL REFERENCES duplicate_case (id),
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX duplicate_step_case ON duplicate_step (case_id, recorded_at);
