-- Classes (班级): one per school, school year and name, in one grade, with an optional head
-- teacher (an account holding the teacher or school administrator role at that school).
-- Membership has dates: moving a student to another class ends the old membership the day the
-- new one starts, so the class list of any day is answerable.

CREATE TABLE school_class (
    id           UUID NOT NULL PRIMARY KEY,
    school_code  TEXT NOT NULL REFERENCES school (code),
    -- 2025 is the school year 2025–26.
    school_year  INTEGER NOT NULL,
    grade        INTEGER NOT NULL,
    name         TEXT NOT NULL,
    head_teacher UUID REFERENCES app_user (id),
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (school_code, school_year, grade, name)
);

CREATE TABLE class_member (
    class_id     UUID NOT NULL REFERENCES school_class (id),
    student_id   UUID NOT NULL REFERENCES student (id),
    from_on      DATE NOT NULL,
    -- The first day no longer in the class; NULL while still in it.
    until_on     DATE,
    PRIMARY KEY (class_id, student_id, from_on)
);
CREATE INDEX class_member_student ON class_member (student_id, from_on);
