-- Transfers (转学): started by the receiving school, approved step by step along the two
-- schools' chains (receiving school → receiving county → [receiving province → sending province]
-- → sending school → sending county). On the last approval the student gets a transfer_in event
-- at the new school; the transfer keeps the whole trail.

CREATE TABLE transfer (
    id           UUID NOT NULL PRIMARY KEY,
    student_id   UUID NOT NULL REFERENCES student (id),
    from_school  TEXT NOT NULL REFERENCES school (code),
    from_county  TEXT NOT NULL,
    to_school    TEXT NOT NULL REFERENCES school (code),
    to_county    TEXT NOT NULL,
    grade        INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    -- pending | completed | rejected
    status       TEXT NOT NULL,
    -- The step awaiting a decision; NULL once the transfer is decided.
    current_step INTEGER,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    decided_at   TIMESTAMPTZ,
    -- The transfer_in event written on completion.
    event_id     UUID REFERENCES student_event (id)
);
CREATE INDEX transfer_student ON transfer (student_id, status);
-- One transfer in approval per student, whatever two requests racing each other do.
CREATE UNIQUE INDEX transfer_one_pending ON transfer (student_id) WHERE status = 'pending';
CREATE INDEX transfer_from ON transfer (from_county, from_school);
CREATE INDEX transfer_to ON transfer (to_county, to_school);

CREATE TABLE transfer_step (
    transfer_id  UUID NOT NULL REFERENCES transfer (id),
    seq          INTEGER NOT NULL,
    -- receiving_school | receiving_county | receiving_province | sending_province |
    -- sending_school | sending_county
    role         TEXT NOT NULL,
    -- Who decides: a county or province code, and for a school step the school.
    region       TEXT NOT NULL,
    school_code  TEXT,
    opened_on    DATE,
    -- Ten working days after opening.
    due_on       DATE,
    -- approved | rejected; NULL while waiting (or not reached).
    decision     TEXT,
    decided_at   TIMESTAMPTZ,
    decided_by   TEXT,
    note         TEXT NOT NULL,
    PRIMARY KEY (transfer_id, seq)
);
CREATE INDEX transfer_step_waiting ON transfer_step (region, school_code) WHERE opened_on IS NOT NULL AND decision IS NULL;
