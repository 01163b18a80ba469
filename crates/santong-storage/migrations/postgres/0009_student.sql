-- Students (学籍). The record holds who the student is; where they are and in which grade is
-- derived from their events (enrol now; transfer, promotion and the rest later), so the roster of
-- any school on any past date can be answered. Mistakes are undone by marking an event undone
-- by a later one, never by deleting.

CREATE TABLE student (
    id               UUID NOT NULL PRIMARY KEY,
    -- 全国学籍号: G + ID number, J + ID-shaped number, or L temporary.
    student_number   TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    -- GB/T 2261.1: 1 male, 2 female.
    sex              TEXT NOT NULL,
    birth_date       DATE NOT NULL,
    -- GB/T 3304 code.
    ethnicity        TEXT NOT NULL,
    -- Resident ID number; NULL when the student has none.
    id_number        TEXT,
    -- The ID's region prefix is no longer a current GB/T 2260 code (accepted, flagged).
    id_region_retired BOOLEAN NOT NULL,
    household_region TEXT,
    guardian_name    TEXT NOT NULL,
    guardian_relation TEXT NOT NULL,
    guardian_phone   TEXT NOT NULL,
    -- Sensitive flags, shown only with their own permission.
    left_behind      BOOLEAN NOT NULL,
    migrant          BOOLEAN NOT NULL,
    disability       BOOLEAN NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX student_id_number ON student (id_number);

CREATE TABLE student_event (
    id           UUID NOT NULL PRIMARY KEY,
    student_id   UUID NOT NULL REFERENCES student (id),
    -- enrol (more kinds come with transfers and the year-end batch)
    kind         TEXT NOT NULL,
    school_code  TEXT NOT NULL REFERENCES school (code),
    grade        INTEGER NOT NULL,
    effective_on DATE NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    actor_id     UUID,
    reason       TEXT NOT NULL,
    approval_ref TEXT,
    -- Set when a later, compensating event undid this one.
    undone_by    UUID
);
CREATE INDEX student_event_student ON student_event (student_id, effective_on);
CREATE INDEX student_event_school ON student_event (school_code, effective_on);
