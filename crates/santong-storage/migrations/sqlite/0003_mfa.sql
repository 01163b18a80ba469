-- Second factor: TOTP secrets (enabled once confirmed with a code), single-use recovery codes,
-- and sessions that still wait for the second factor.
CREATE TABLE user_mfa (
    user_id    UUID NOT NULL PRIMARY KEY REFERENCES app_user (id),
    secret     TEXT NOT NULL,
    enabled_at TIMESTAMPTZ,
    last_step  BIGINT,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE mfa_recovery_code (
    id        UUID NOT NULL PRIMARY KEY,
    user_id   UUID NOT NULL REFERENCES app_user (id),
    code_hash TEXT NOT NULL,
    used_at   TIMESTAMPTZ
);
CREATE INDEX mfa_recovery_code_user ON mfa_recovery_code (user_id);

ALTER TABLE user_session ADD COLUMN mfa_pending BOOLEAN NOT NULL DEFAULT FALSE;
