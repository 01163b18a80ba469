-- Registry, part one: institutions. A school's current row, and every change to it as an event
-- (create, edit, close, merge) with its effective date, so the history stays.

CREATE TABLE school (
    -- 学校标识码, 10 digits.
    code        TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    -- 办学类型 and 城乡类型 (GB/T 33782-2017).
    kind        TEXT NOT NULL,
    urban_rural TEXT NOT NULL,
    -- The county-level region (GB/T 2260) the school belongs to.
    county      TEXT NOT NULL REFERENCES region (code),
    -- A teaching point's parent school.
    parent_code TEXT REFERENCES school (code),
    -- Grades offered, `1-6`.
    grades      TEXT NOT NULL,
    -- open | closed | merged
    status      TEXT NOT NULL,
    opened_on   DATE NOT NULL,
    closed_on   DATE,
    merged_into TEXT REFERENCES school (code),
    -- Bumped at every change: an edit made on a stale page is refused instead of lost.
    version     INTEGER NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX school_county ON school (county, code);
CREATE INDEX school_name ON school (name);
CREATE INDEX school_parent ON school (parent_code);

CREATE TABLE school_event (
    id           UUID NOT NULL PRIMARY KEY,
    school_code  TEXT NOT NULL REFERENCES school (code),
    -- create | edit | close | merge
    kind         TEXT NOT NULL,
    effective_on DATE NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    actor        TEXT NOT NULL,
    actor_id     UUID,
    reason       TEXT NOT NULL,
    -- What changed: JSON {"field": [before, after]}.
    changes      TEXT NOT NULL
);
CREATE INDEX school_event_school ON school_event (school_code, recorded_at);
