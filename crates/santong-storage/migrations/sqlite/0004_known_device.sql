-- Browsers where an account has signed in before: a classmate hammering a teacher's account from
-- another browser must not keep the teacher out of their own.
CREATE TABLE known_device (
    token_hash   TEXT NOT NULL PRIMARY KEY,
    user_id      UUID NOT NULL REFERENCES app_user (id),
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX known_device_user ON known_device (user_id);
