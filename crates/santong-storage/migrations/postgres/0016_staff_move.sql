-- Staff moves (教师调动): a member of staff moves from one school to another along the same
-- approval chain as a student transfer (receiving school → receiving county → [receiving
-- province → sending province] → sending school → sending county). On the last approval the
-- person is appointed at the new school (a teacher_event), which takes them off the old staff.

CREATE TABLE staff_move (
    id           UUID NOT NULL PRIMARY KEY,
    teacher_id   UUID NOT NULL REFERENCES teacher (id),
    from_school  TEXT NOT NULL REFERENCES school (code),
    from_county  TEXT NOT NULL,
    to_school    TEXT NOT NULL REFERENCES school (code),
    to_county    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    -- pending | completed | rejected
    status       TEXT NOT NULL,
    -- The step awaiting a decision; NULL once the move is decided.
    current_step INTEGER,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    decided_at   TIMESTAMPTZ,
    -- The appointment written on completion.
    event_id     UUID REFERENCES teacher_event (id)
);
-- One move in approval per person.
CREATE UNIQUE INDEX staff_move_one_pending ON staff_move (teacher_id) WHERE status = 'pending';
CREATE INDEX staff_move_from ON staff_move (from_county, from_school);
CREATE INDEX staff_move_to ON staff_move (to_county, to_school);

CREATE TABLE staff_move_step (
    move_id      UUID NOT NULL REFERENCES staff_move (id),
    seq          INTEGER NOT NULL,
    role         TEXT NOT NULL,
    region       TEXT NOT NULL,
    school_code  TEXT,
    opened_on    DATE,
    due_on       DATE,
    decision     TEXT,
    decided_at   TIMESTAMPTZ,
    decided_by   TEXT,
    note         TEXT NOT NULL,
    PRIMARY KEY (move_id, seq)
);
CREATE INDEX staff_move_step_waiting ON staff_move_step (region, school_code) WHERE opened_on IS NOT NULL AND decision IS NULL;
