-- 办学条件: what a school has, one record per school year (the monitoring of "broadband to every
-- school" and "quality resources to every class" is computed from it). A later year's record
-- leaves the earlier ones as they were.

CREATE TABLE school_condition (
    school_code           TEXT NOT NULL REFERENCES school (code),
    -- The calendar year the school year starts in (2025 = 2025–26).
    school_year           INTEGER NOT NULL,
    building_area_m2      INTEGER NOT NULL,
    classrooms            INTEGER NOT NULL,
    multimedia_classrooms INTEGER NOT NULL,
    computers             INTEGER NOT NULL,
    student_terminals     INTEGER NOT NULL,
    -- none | fibre | dsl | wireless | satellite
    broadband             TEXT NOT NULL,
    bandwidth_mbps        INTEGER,
    broadband_since       DATE,
    recorded_at           TIMESTAMPTZ NOT NULL,
    recorded_by           TEXT NOT NULL,
    PRIMARY KEY (school_code, school_year)
);
