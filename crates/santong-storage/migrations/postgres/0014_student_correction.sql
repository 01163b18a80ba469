-- Corrections (更正) of a student's personal data: the record shows the corrected values, and
-- every change keeps its lineage here — which field, from what to what, why, by whom, when.
-- An ID number given or corrected makes the national student number G + that number.

CREATE TABLE student_correction (
    id          UUID NOT NULL PRIMARY KEY,
    student_id  UUID NOT NULL REFERENCES student (id),
    -- name | sex | birth_date | ethnicity | id_number | student_number
    field       TEXT NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX student_correction_student ON student_correction (student_id, recorded_at);
