-- The rest of a student's lifecycle: every event says where it leaves the student (status,
-- school, grade), carries its type code, where the student came from, and — for the year-end
-- batch — the batch that wrote it, so a whole batch can be undone. An undo is itself an event
-- (kind 'undo') naming the one it cancels.

ALTER TABLE student_event ADD COLUMN status TEXT NOT NULL DEFAULT 'in';
ALTER TABLE student_event ADD COLUMN code TEXT NOT NULL DEFAULT '10';
ALTER TABLE student_event ADD COLUMN from_school TEXT REFERENCES school (code);
ALTER TABLE student_event ADD COLUMN from_grade INTEGER;
ALTER TABLE student_event ADD COLUMN undoes UUID REFERENCES student_event (id);
ALTER TABLE student_event ADD COLUMN batch_id UUID;
-- Partial: nearly every event has neither, and the planner must not think a lookup matches them all.
CREATE INDEX student_event_undoes ON student_event (undoes) WHERE undoes IS NOT NULL;
CREATE INDEX student_event_batch ON student_event (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX student_event_from ON student_event (from_school, effective_on);

-- A year-end batch (学年升级): one school's or one county's students promoted, graduated or
-- sent on to the next stage on one date; undone as a whole.
CREATE TABLE student_batch (
    id               UUID NOT NULL PRIMARY KEY,
    county           TEXT NOT NULL,
    -- NULL: every school of the county.
    school_code      TEXT REFERENCES school (code),
    effective_on     DATE NOT NULL,
    -- Where the last grade goes on to (NULL: it graduates).
    receiving_school TEXT REFERENCES school (code),
    promoted         INTEGER NOT NULL,
    graduated        INTEGER NOT NULL,
    progressed       INTEGER NOT NULL,
    -- Left alone (suspended, already moved on).
    skipped          INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    actor            TEXT NOT NULL,
    undone_at        TIMESTAMPTZ,
    undone_by        TEXT
);
CREATE INDEX student_batch_county ON student_batch (county, created_at);
