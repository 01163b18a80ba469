-- Identity: where accounts belong, role grants at nodes, password history, sessions, the sign-in
-- throttle and the hash-chained audit log.

ALTER TABLE app_user ADD COLUMN home_region TEXT;
ALTER TABLE app_user ADD COLUMN home_school TEXT;
ALTER TABLE app_user ADD COLUMN disabled_at TIMESTAMPTZ;
ALTER TABLE app_user ADD COLUMN password_changed_at TIMESTAMPTZ;
CREATE INDEX app_user_home ON app_user (home_region, home_school);

-- A role granted at a node applies to the node's subtree. `node_region` is the region of the
-- node (a school's county) so scope filters are prefix matches; NULL for the nation.
CREATE TABLE role_grant (
    id          UUID NOT NULL PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES app_user (id),
    role        TEXT NOT NULL,
    node_code   TEXT NOT NULL,
    node_region TEXT,
    node_school TEXT,
    granted_by  UUID,
    granted_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (user_id, role, node_code)
);
CREATE INDEX role_grant_node ON role_grant (node_region, node_school);

CREATE TABLE password_history (
    id            UUID NOT NULL PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES app_user (id),
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX password_history_user ON password_history (user_id, created_at);

-- Sessions: the cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE user_session (
    id           UUID NOT NULL PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    user_id      UUID NOT NULL REFERENCES app_user (id),
    csrf_token   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    idle_secs    INTEGER NOT NULL,
    ip           TEXT NOT NULL,
    user_agent   TEXT NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX user_session_user ON user_session (user_id, created_at);

-- Sign-in throttle counters, keyed `a:<account>`, `p:<account>|<ip>`, `i:<ip>`.
CREATE TABLE login_throttle (
    key              TEXT NOT NULL PRIMARY KEY,
    failures         INTEGER NOT NULL,
    first_failure_at TIMESTAMPTZ NOT NULL,
    locked_until     TIMESTAMPTZ
);

-- Append-only audit log. Each row's hash covers its fields and the previous row's hash; the head
-- row serialises appends so the chain never forks.
CREATE TABLE audit_event (
    seq       BIGINT NOT NULL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT NOT NULL,
    actor_id  UUID,
    ip        TEXT NOT NULL,
    event     TEXT NOT NULL,
    target    TEXT NOT NULL,
    result    TEXT NOT NULL,
    scope     TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_event_at ON audit_event (at);
CREATE INDEX audit_event_event ON audit_event (event, at);

CREATE TABLE audit_head (
    name TEXT NOT NULL PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (name, seq, hash)
VALUES ('head', 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Retention removes old events; a checkpoint keeps the hash the remainder chains from.
CREATE TABLE audit_checkpoint (
    seq        BIGINT NOT NULL PRIMARY KEY,
    hash       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
