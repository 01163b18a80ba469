-- Teachers and staff (教职工): one person, one number for life (the ID number is unique, so the
-- same person cannot be registered twice); where they work comes from their events (appoint at a
-- school, leave), so a school's staff on any date is answerable, as for students.

CREATE TABLE teacher (
    id             UUID NOT NULL PRIMARY KEY,
    -- T + county of first appointment + year + sequence: no personal data in it.
    teacher_number TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    sex            TEXT NOT NULL,
    birth_date     DATE NOT NULL,
    ethnicity      TEXT NOT NULL,
    id_number      TEXT NOT NULL UNIQUE,
    -- 教师资格种类: kindergarten | primary | junior | senior | vocational | none
    qualification  TEXT NOT NULL,
    -- 专业技术职务: senior_full | senior | first | second | third | none
    title          TEXT NOT NULL,
    -- Subjects taught, as written (语文, 数学).
    subjects       TEXT NOT NULL,
    -- 岗位类别: teaching | admin | support | service
    post           TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE teacher_event (
    id           UUID NOT NULL PRIMARY KEY,
    teacher_id   UUID NOT NULL REFERENCES teacher (id),
    -- appoint | leave
    kind         TEXT NOT NULL,
    school_code  TEXT NOT NULL REFERENCES school (code),
    effective_on DATE NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL
);
CREATE INDEX teacher_event_teacher ON teacher_event (teacher_id, effective_on);
CREATE INDEX teacher_event_school ON teacher_event (school_code, effective_on);
