-- The OpenID Connect provider: registered clients, signing keys, authorization codes, grants
-- (one per code redemption or client-credentials request) with their tokens, and consents.
-- Codes and tokens are stored as SHA-256 only.

ALTER TABLE app_user ADD COLUMN email TEXT;
ALTER TABLE app_user ADD COLUMN phone TEXT;

CREATE TABLE oidc_client (
    id                     TEXT NOT NULL PRIMARY KEY,
    name                   TEXT NOT NULL,
    -- NULL for public clients (browser and mobile apps), which must use PKCE.
    secret_hash            TEXT,
    first_party            BOOLEAN NOT NULL,
    -- One URI per line, matched exactly.
    redirect_uris          TEXT NOT NULL,
    post_logout_uris       TEXT NOT NULL,
    backchannel_logout_uri TEXT,
    -- What the client may ask for, space separated.
    scopes                 TEXT NOT NULL,
    -- Client credentials act as this account, whose grants decide what the client may see.
    service_user_id        UUID REFERENCES app_user (id),
    created_at             TIMESTAMPTZ NOT NULL,
    disabled_at            TIMESTAMPTZ
);

-- Signing keys. The newest active key signs; the next key is published a day before it takes
-- over (so cached key sets know it), and retired keys stay published for a grace period.
CREATE TABLE oidc_key (
    kid          TEXT NOT NULL PRIMARY KEY,
    secret       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    activates_at TIMESTAMPTZ NOT NULL,
    retired_at   TIMESTAMPTZ
);

CREATE TABLE oidc_code (
    code_hash      TEXT NOT NULL PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES oidc_client (id),
    user_id        UUID NOT NULL REFERENCES app_user (id),
    session_id     UUID NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    auth_time      TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ
);
CREATE INDEX oidc_code_expiry ON oidc_code (expires_at);

CREATE TABLE oidc_grant (
    id         UUID NOT NULL PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES oidc_client (id),
    user_id    UUID NOT NULL REFERENCES app_user (id),
    -- The sign-in session it came from; NULL for client credentials.
    session_id UUID,
    code_hash  TEXT,
    -- The issuer the client saw in the ID token; logout tokens carry the same.
    issuer     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    nonce      TEXT,
    auth_time  TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX oidc_grant_user ON oidc_grant (user_id, session_id);
CREATE INDEX oidc_grant_code ON oidc_grant (code_hash);
CREATE INDEX oidc_grant_client ON oidc_grant (client_id);

CREATE TABLE oidc_token (
    token_hash TEXT NOT NULL PRIMARY KEY,
    grant_id   UUID NOT NULL REFERENCES oidc_grant (id),
    -- `access` or `refresh`.
    kind       TEXT NOT NULL,
    -- What this token may do: the grant's scopes, or fewer when a refresh asked for fewer.
    scope      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- A refresh token is used once; presenting it again revokes its grant.
    used_at    TIMESTAMPTZ
);
CREATE INDEX oidc_token_grant ON oidc_token (grant_id);
CREATE INDEX oidc_token_expiry ON oidc_token (expires_at);

CREATE TABLE oidc_consent (
    user_id    UUID NOT NULL REFERENCES app_user (id),
    client_id  TEXT NOT NULL REFERENCES oidc_client (id),
    scope      TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
