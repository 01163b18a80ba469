//! The OpenID Connect provider's records: clients, signing keys, authorization codes, grants and
//! their tokens, consents, and the link from sign-in sessions to the grants made in them (so
//! that ending a session ends its grants and tells the clients).
//!
//! A *grant* is one redemption of a code (or one client-credentials request); its access and
//! refresh tokens hang off it. Revoking the grant kills every token of the family, which is how a
//! reused code or a replayed refresh token is answered.

use chrono::{DateTime, Duration, Utc};
use santong_domain::identity::{Node, Permission};
use santong_domain::oidc::{self as rules, JwsKey};
use santong_domain::password;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::identity::{Actor, Identity, IdentityError, Principal, UserRow};
use crate::jobs::{self, NewJob};
use crate::{Db, Tx, db_query};

/// How long a code may wait for its redemption.
pub const CODE_TTL: Duration = Duration::seconds(60);
/// Access tokens are short; refresh tokens carry the session on.
pub const ACCESS_TTL: Duration = Duration::minutes(10);
pub const ID_TOKEN_TTL: Duration = Duration::minutes(10);
/// A refresh-token family lives at most this long, whatever the rotations.
pub const GRANT_TTL: Duration = Duration::days(30);
/// A signing key signs for this long before a new one takes over.
pub const KEY_ROTATION: Duration = Duration::days(90);
/// A retired key stays in the JWKS until everything it signed has expired (and caches renewed).
pub const KEY_GRACE: Duration = Duration::hours(1);
/// The next key is published this long before it signs, so relying parties' cached key sets
/// (discovery says to cache for minutes) know it by then.
pub const KEY_PREPUBLISH: Duration = Duration::days(1);

/// The job that tells a client a session ended.
pub const BACKCHANNEL_JOB: &str = "oidc.backchannel_logout";

/// A registered client.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ClientRow {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: Option<String>,
    pub first_party: bool,
    pub redirect_uris: String,
    pub post_logout_uris: String,
    pub backchannel_logout_uri: Option<String>,
    pub scopes: String,
    pub service_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

const CLIENT_COLUMNS: &str = "SELECT id, name, secret_hash, first_party, redirect_uris, \
    post_logout_uris, backchannel_logout_uri, scopes, service_user_id, created_at, disabled_at \
    FROM oidc_client";

impl ClientRow {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    pub fn redirect_uris(&self) -> impl Iterator<Item = &str> {
        self.redirect_uris.lines().filter(|l| !l.is_empty())
    }

    pub fn post_logout_uris(&self) -> impl Iterator<Item = &str> {
        self.post_logout_uris.lines().filter(|l| !l.is_empty())
    }

    /// Exact string comparison, as RFC 9700 asks: no prefix, no wildcard, no normalisation.
    pub fn has_redirect(&self, uri: &str) -> bool {
        self.redirect_uris().any(|u| u == uri)
    }

    pub fn has_post_logout(&self, uri: &str) -> bool {
        self.post_logout_uris().any(|u| u == uri)
    }

    pub fn allowed_scopes(&self) -> Vec<String> {
        self.scopes.split_whitespace().map(str::to_owned).collect()
    }
}

/// What an operator registers.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub first_party: bool,
    /// Allowed scopes; empty means `openid profile`.
    pub scopes: Vec<String>,
}

/// A token endpoint error, named by the code RFC 6749 §5.2 gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request")]
    InvalidRequest,
    #[error("invalid_client")]
    InvalidClient,
    #[error("invalid_grant")]
    InvalidGrant,
    #[error("unauthorized_client")]
    UnauthorizedClient,
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("invalid_scope")]
    InvalidScope,
}

impl OAuthError {
    pub fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
        }
    }
}

/// A token request that failed either by the protocol or by the database.
#[derive(Debug, thiserror::Error)]
pub enum TokenFailure {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
}

impl From<sqlx::Error> for TokenFailure {
    fn from(e: sqlx::Error) -> Self {
        TokenFailure::Storage(e.into())
    }
}

/// A code waiting for redemption, as the authorization endpoint creates it.
#[derive(Debug, Clone)]
pub struct CodeRequest<'a> {
    pub client: &'a ClientRow,
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub auth_time: DateTime<Utc>,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub nonce: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
}

/// What the token endpoint hands out; the ID token is signed by the caller, who knows the issuer.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scopes: Vec<String>,
    pub subject: Subject,
    pub session_id: Option<Uuid>,
    pub nonce: Option<String>,
    pub auth_time: DateTime<Utc>,
}

impl Issued {
    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.iter().any(|x| x == s)
    }
}

/// The person (or service account) tokens speak for, with what claims are made of.
#[derive(Debug, Clone)]
pub struct Subject {
    pub principal: Principal,
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Subject {
    /// Claims released for `scopes` (OpenID Connect Core §5.4, plus `santong`).
    pub fn claims(&self, scopes: &[String]) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        let has = |s: &str| scopes.iter().any(|x| x == s);
        let u = &self.principal.user;
        let mut m = serde_json::Map::new();
        m.insert("sub".into(), Value::String(u.id.to_string()));
        if has("profile") {
            m.insert("name".into(), json!(u.display_name));
            m.insert("preferred_username".into(), json!(u.username));
        }
        if has("email")
            && let Some(e) = &self.email
        {
            m.insert("email".into(), json!(e));
            // Santong does not verify addresses; saying so lets clients decide.
            m.insert("email_verified".into(), json!(false));
        }
        if has("phone")
            && let Some(p) = &self.phone
        {
            m.insert("phone_number".into(), json!(p));
            m.insert("phone_number_verified".into(), json!(false));
        }
        if has("santong") {
            let roles: Vec<Value> = self
                .principal
                .roles()
                .iter()
                .map(|(r, n)| json!({ "role": r.as_str(), "node": n.code() }))
                .collect();
            m.insert("santong_roles".into(), Value::Array(roles));
            if let Some(school) = &u.home_school {
                m.insert("santong_school".into(), json!(school));
            }
            if let Some(region) = &u.home_region {
                m.insert("santong_region".into(), json!(region));
            }
        }
        m
    }
}

fn issued_token(prefix: &str) -> String {
    format!("{prefix}{}", password::random_token())
}

fn join_lines(v: &[String]) -> String {
    v.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The repository.
pub struct Oidc<'a>(pub &'a Db);

impl Oidc<'_> {
    // ----- clients ---------------------------------------------------------------------------

    pub async fn clients(&self) -> crate::Result<Vec<ClientRow>> {
        let sql = crate::db::intern(format!("{CLIENT_COLUMNS} ORDER BY created_at DESC"));
        Ok(db_query!(self.0, read, |q, ex| {
            sqlx::query_as::<_, ClientRow>(q(sql)).fetch_all(ex).await?
        }))
    }

    pub async fn client(&self, id: &str) -> crate::Result<Option<ClientRow>> {
        let sql = crate::db::intern(format!("{CLIENT_COLUMNS} WHERE id = $1"));
        Ok(db_query!(self.0, read, |q, ex| {
            sqlx::query_as::<_, ClientRow>(q(sql))
                .bind(id)
                .fetch_optional(ex)
                .await?
        }))
    }

    /// An enabled client, authenticated: a confidential client must present its secret, a public
    /// client must present none.
    pub async fn authenticate_client(
        &self,
        id: &str,
        secret: Option<&str>,
    ) -> crate::Result<Option<ClientRow>> {
        let found = self.client(id).await?.filter(|c| c.disabled_at.is_none());
        let ok = match (
            found.as_ref().and_then(|c| c.secret_hash.as_deref()),
            secret,
        ) {
            (None, None) => found.is_some(),
            (Some(stored), Some(given)) => same(stored, &password::token_hash(given)),
            _ => false,
        };
        if !ok {
            let mut tx = self.0.begin().await?;
            audit::append(&mut tx, &system_entry("oidc.client_auth", id, "failure")).await?;
            tx.commit().await?;
        }
        Ok(found.filter(|_| ok))
    }

    fn check_spec(spec: &ClientSpec) -> Result<(), IdentityError> {
        let name = spec.name.trim();
        if name.is_empty() || name.chars().count() > 80 {
            return Err(IdentityError::BadField("name"));
        }
        for u in &spec.redirect_uris {
            rules::check_registered_uri(u.trim())
                .map_err(|_| IdentityError::BadField("redirect_uris"))?;
        }
        for u in &spec.post_logout_uris {
            rules::check_registered_uri(u.trim())
                .map_err(|_| IdentityError::BadField("post_logout_uris"))?;
        }
        if let Some(u) = &spec.backchannel_logout_uri
            && (rules::check_registered_uri(u).is_err()
                || !(u.starts_with("https://") || u.starts_with("http://")))
        {
            return Err(IdentityError::BadField("backchannel_logout_uri"));
        }
        if spec.scopes.iter().any(|s| !rules::known_scope(s)) {
            return Err(IdentityError::BadField("scopes"));
        }
        Ok(())
    }

    fn scopes_text(spec: &ClientSpec) -> String {
        if spec.scopes.is_empty() {
            "openid profile".into()
        } else {
            let mut v: Vec<&str> = Vec::new();
            for s in &spec.scopes {
                if !v.contains(&s.as_str()) {
                    v.push(s);
                }
            }
            v.join(" ")
        }
    }

    fn may_manage(actor: &Actor<'_>) -> Result<(), IdentityError> {
        if actor.may(Permission::GrantsManage, &Node::Nation) {
            Ok(())
        } else {
            Err(IdentityError::Forbidden)
        }
    }

    /// Registers a client. A confidential client gets a secret, returned once; `service` gives it
    /// a service account for the client-credentials grant (grant that account roles to let the
    /// client read anything).
    pub async fn add_client(
        &self,
        actor: Actor<'_>,
        spec: &ClientSpec,
        public: bool,
        service: bool,
    ) -> Result<(ClientRow, Option<String>), IdentityError> {
        Self::may_manage(&actor)?;
        Self::check_spec(spec)?;
        if public && service {
            return Err(IdentityError::BadField("service"));
        }
        if spec.redirect_uris.is_empty() && !service {
            return Err(IdentityError::BadField("redirect_uris"));
        }
        let id = format!("c{}", &password::random_token()[..23]);
        let secret = (!public).then(password::random_token);
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let service_user = if service {
            let uid = Uuid::now_v7();
            db_query!(&mut tx, tx, |sql, ex| {
                // "!" is no PHC string: nobody can sign in as a service account.
                sqlx::query(sql(
                    "INSERT INTO app_user (id, username, display_name, password_hash, \
                    must_change_password, created_at) VALUES ($1, $2, $3, '!', $4, $5)",
                ))
                .bind(uid)
                .bind(format!("svc-{id}"))
                .bind(spec.name.trim())
                .bind(false)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            Some(uid)
        } else {
            None
        };
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO oidc_client (id, name, secret_hash, first_party, redirect_uris, \
                post_logout_uris, backchannel_logout_uri, scopes, service_user_id, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            ))
            .bind(&id)
            .bind(spec.name.trim())
            .bind(secret.as_deref().map(password::token_hash))
            .bind(spec.first_party)
            .bind(join_lines(&spec.redirect_uris))
            .bind(join_lines(&spec.post_logout_uris))
            .bind(spec.backchannel_logout_uri.as_deref().map(str::trim))
            .bind(Self::scopes_text(spec))
            .bind(service_user)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        let mut e = actor.entry("client.create", &id, "success", &Node::Nation);
        e.detail = format!(
            "{}; {}{}",
            spec.name.trim(),
            if public { "public" } else { "confidential" },
            if spec.first_party {
                ", first-party"
            } else {
                ""
            }
        );
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        let row = self.client(&id).await?.ok_or(IdentityError::NotFound)?;
        Ok((row, secret))
    }

    /// Changes a client's URIs, scopes and first-party flag.
    pub async fn update_client(
        &self,
        actor: Actor<'_>,
        id: &str,
        spec: &ClientSpec,
    ) -> Result<(), IdentityError> {
        Self::may_manage(&actor)?;
        Self::check_spec(spec)?;
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE oidc_client SET name = $2, first_party = $3, redirect_uris = $4, \
                post_logout_uris = $5, backchannel_logout_uri = $6, scopes = $7 WHERE id = $1",
            ))
            .bind(id)
            .bind(spec.name.trim())
            .bind(spec.first_party)
            .bind(join_lines(&spec.redirect_uris))
            .bind(join_lines(&spec.post_logout_uris))
            .bind(spec.backchannel_logout_uri.as_deref().map(str::trim))
            .bind(Self::scopes_text(spec))
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(IdentityError::NotFound);
        }
        let mut e = actor.entry("client.update", id, "success", &Node::Nation);
        e.detail = format!(
            "name={}; first_party={}; scopes={}; redirect={}; post_logout={}; backchannel={}",
            spec.name.trim(),
            spec.first_party,
            Self::scopes_text(spec),
            join_lines(&spec.redirect_uris).replace('\n', " "),
            join_lines(&spec.post_logout_uris).replace('\n', " "),
            spec.backchannel_logout_uri.as_deref().unwrap_or("-"),
        );
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new secret for a confidential client; the old one stops working at once.
    pub async fn rotate_secret(&self, actor: Actor<'_>, id: &str) -> Result<String, IdentityError> {
        Self::may_manage(&actor)?;
        let secret = password::random_token();
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE oidc_client SET secret_hash = $2 WHERE id = $1 AND secret_hash IS NOT NULL",
            ))
            .bind(id)
            .bind(password::token_hash(&secret))
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(IdentityError::NotFound);
        }
        audit::append(
            &mut tx,
            &actor.entry("client.secret", id, "success", &Node::Nation),
        )
        .await?;
        tx.commit().await?;
        Ok(secret)
    }

    /// Disables (every grant of it is revoked) or re-enables a client.
    pub async fn set_client_disabled(
        &self,
        actor: Actor<'_>,
        id: &str,
        disabled: bool,
    ) -> Result<(), IdentityError> {
        Self::may_manage(&actor)?;
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("UPDATE oidc_client SET disabled_at = $2 WHERE id = $1"))
                .bind(id)
                .bind(disabled.then_some(now))
                .execute(ex)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(IdentityError::NotFound);
        }
        if disabled {
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_grant SET revoked_at = $2 WHERE client_id = $1 \
                    AND revoked_at IS NULL",
                ))
                .bind(id)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        let event = if disabled {
            "client.disable"
        } else {
            "client.enable"
        };
        audit::append(&mut tx, &actor.entry(event, id, "success", &Node::Nation)).await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- signing keys ----------------------------------------------------------------------

    /// The key that signs now. The first call creates one; a key older than [`KEY_ROTATION`] is
    /// replaced on the way.
    pub async fn signing_key(&self) -> crate::Result<JwsKey> {
        #[derive(sqlx::FromRow)]
        struct K {
            kid: String,
            secret: String,
            activates_at: DateTime<Utc>,
        }
        let now = Utc::now();
        let keys: Vec<K> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, K>(sql(
                "SELECT kid, secret, activates_at FROM oidc_key WHERE retired_at IS NULL \
                ORDER BY activates_at DESC",
            ))
            .fetch_all(ex)
            .await?
        });
        let Some(current) = keys.iter().find(|k| k.activates_at <= now) else {
            return self.rotate(Actor::System, Duration::zero()).await;
        };
        let Some(key) = JwsKey::from_secret(&current.kid, &current.secret) else {
            return self.rotate(Actor::System, Duration::zero()).await;
        };
        let age = now - current.activates_at;
        let successor = keys.iter().any(|k| k.activates_at > current.activates_at);
        if age >= KEY_ROTATION + KEY_PREPUBLISH {
            // Nobody signed for a whole pre-publication period: replace it now.
            return self.rotate(Actor::System, Duration::zero()).await;
        }
        if age >= KEY_ROTATION - KEY_PREPUBLISH && !successor {
            // Publish the next key now; it signs once cached key sets have picked it up.
            self.rotate(Actor::System, current.activates_at + KEY_ROTATION - now)
                .await?;
        }
        if keys.iter().any(|k| k.activates_at < current.activates_at) {
            // A successor has taken over: the keys before it sign no more.
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_key SET retired_at = $1 WHERE retired_at IS NULL \
                    AND activates_at < $2",
                ))
                .bind(now)
                .bind(current.activates_at)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        Ok(key)
    }

    /// Makes a new signing key that signs from now on and retires the others (they stay
    /// published for [`KEY_GRACE`]): for a key that may be compromised.
    pub async fn rotate_key(&self, actor: Actor<'_>) -> Result<JwsKey, IdentityError> {
        Self::may_manage(&actor)?;
        Ok(self.rotate(actor, Duration::zero()).await?)
    }

    /// A new key taking over after `delay`; with no delay the others are retired at once.
    async fn rotate(&self, actor: Actor<'_>, delay: Duration) -> crate::Result<JwsKey> {
        let key = JwsKey::generate();
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        if delay <= Duration::zero() {
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_key SET retired_at = $1 WHERE retired_at IS NULL",
                ))
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("DELETE FROM oidc_key WHERE retired_at < $1"))
                .bind(now - KEY_GRACE)
                .execute(ex)
                .await?
                .rows_affected()
        });
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO oidc_key (kid, secret, created_at, activates_at) \
                VALUES ($1, $2, $3, $4)",
            ))
            .bind(&key.kid)
            .bind(key.secret())
            .bind(now)
            .bind(now + delay.max(Duration::zero()))
            .execute(ex)
            .await?
            .rows_affected()
        });
        audit::append(
            &mut tx,
            &actor.entry("key.rotate", &key.kid, "success", &Node::Nation),
        )
        .await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The published keys: the current one and those retired within the grace period.
    pub async fn jwks(&self) -> crate::Result<Vec<serde_json::Value>> {
        #[derive(sqlx::FromRow)]
        struct K {
            kid: String,
            secret: String,
        }
        let rows: Vec<K> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, K>(sql(
                "SELECT kid, secret FROM oidc_key WHERE retired_at IS NULL OR retired_at > $1 \
                ORDER BY activates_at DESC",
            ))
            .bind(Utc::now() - KEY_GRACE)
            .fetch_all(ex)
            .await?
        });
        Ok(rows
            .iter()
            .filter_map(|k| JwsKey::from_secret(&k.kid, &k.secret))
            .map(|k| k.public_jwk())
            .collect())
    }

    // ----- authorization codes ---------------------------------------------------------------

    pub async fn consent_covers(
        &self,
        user_id: Uuid,
        client_id: &str,
        scopes: &[String],
    ) -> crate::Result<bool> {
        let stored: Option<String> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT scope FROM oidc_consent WHERE user_id = $1 AND client_id = $2",
            ))
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(ex)
            .await?
        });
        Ok(stored.is_some_and(|s| scopes.iter().all(|x| s.split_whitespace().any(|y| y == x))))
    }

    pub async fn record_consent(
        &self,
        me: &Principal,
        ip: &str,
        client_id: &str,
        scopes: &[String],
    ) -> crate::Result<()> {
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO oidc_consent (user_id, client_id, scope, granted_at) \
                VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, client_id) \
                DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
            ))
            .bind(me.user.id)
            .bind(client_id)
            .bind(scopes.join(" "))
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        let mut e = Actor::User { principal: me, ip }.entry(
            "oidc.consent",
            client_id,
            "success",
            &me.user.home(),
        );
        e.detail = scopes.join(" ");
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a single-use code; returns the code (only its hash is stored).
    pub async fn issue_code(&self, r: &CodeRequest<'_>) -> crate::Result<String> {
        let code = password::random_token();
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        // Expired codes are of no use to anyone; keep the table small as we go.
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("DELETE FROM oidc_code WHERE expires_at < $1"))
                .bind(now - Duration::days(1))
                .execute(ex)
                .await?
                .rows_affected()
        });
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO oidc_code (code_hash, client_id, user_id, session_id, redirect_uri, \
                scope, nonce, code_challenge, auth_time, created_at, expires_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ))
            .bind(password::token_hash(&code))
            .bind(&r.client.id)
            .bind(r.user_id)
            .bind(r.session_id)
            .bind(r.redirect_uri)
            .bind(r.scopes.join(" "))
            .bind(r.nonce)
            .bind(r.code_challenge)
            .bind(r.auth_time)
            .bind(now)
            .bind(now + CODE_TTL)
            .execute(ex)
            .await?
            .rows_affected()
        });
        tx.commit().await?;
        Ok(code)
    }

    /// Redeems a code. A code presented a second time is refused and the tokens issued from it
    /// are revoked (RFC 6749 §4.1.2): whoever replays it learns nothing and wins nothing.
    pub async fn redeem_code(
        &self,
        issuer: &str,
        client: &ClientRow,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<Issued, TokenFailure> {
        #[derive(sqlx::FromRow)]
        struct C {
            client_id: String,
            user_id: Uuid,
            session_id: Uuid,
            redirect_uri: String,
            scope: String,
            nonce: Option<String>,
            code_challenge: Option<String>,
            auth_time: DateTime<Utc>,
            expires_at: DateTime<Utc>,
            used_at: Option<DateTime<Utc>>,
        }
        let hash = password::token_hash(code);
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let row: Option<C> = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_as::<_, C>(sql(
                "SELECT client_id, user_id, session_id, redirect_uri, scope, nonce, \
                code_challenge, auth_time, expires_at, used_at FROM oidc_code WHERE code_hash = $1",
            ))
            .bind(&hash)
            .fetch_optional(ex)
            .await?
        });
        let Some(c) = row else {
            return Err(OAuthError::InvalidGrant.into());
        };
        // Marking it used is the guard: of two concurrent redemptions only one updates the row.
        let claimed = c.used_at.is_none()
            && db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_code SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL",
                ))
                .bind(&hash)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            }) == 1;
        if !claimed {
            let revoked = db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_grant SET revoked_at = $2 WHERE code_hash = $1 \
                    AND revoked_at IS NULL",
                ))
                .bind(&hash)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            let mut e = system_entry("oidc.code_reuse", &c.client_id, "denied");
            e.detail = format!("grants revoked: {revoked}");
            audit::append(&mut tx, &e).await?;
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        }
        let pkce_ok = match (&c.code_challenge, verifier) {
            (Some(ch), Some(v)) => rules::pkce_matches(v, ch),
            (None, None) => !client.is_public(),
            _ => false,
        };
        if c.client_id != client.id
            || c.redirect_uri != redirect_uri
            || c.expires_at <= now
            || !pkce_ok
        {
            // The code stays used: a failed attempt with a stolen code must not leave it for later.
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        }
        // Signed out between the code and its redemption: no grant outlives the session unseen.
        if !session_alive(&mut tx, c.session_id, now).await? {
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        }
        let scopes: Vec<String> = c.scope.split_whitespace().map(str::to_owned).collect();
        let Some(subject) = self.subject(c.user_id).await? else {
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        };
        let grant = NewGrant {
            client_id: &client.id,
            user_id: c.user_id,
            session_id: Some(c.session_id),
            code_hash: Some(&hash),
            issuer,
            scopes: &scopes,
            nonce: c.nonce.as_deref(),
            auth_time: c.auth_time,
            refresh: true,
        };
        let (access, refresh) = insert_grant(&mut tx, &grant).await?;
        let mut e = system_entry("oidc.token", &subject.principal.user.username, "success");
        e.actor = client.id.clone();
        e.scope = subject.principal.user.home().code();
        e.detail = format!("authorization_code: {}", scopes.join(" "));
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(Issued {
            access_token: access,
            refresh_token: refresh,
            scopes,
            subject,
            session_id: Some(c.session_id),
            nonce: c.nonce,
            auth_time: c.auth_time,
        })
    }

    /// Exchanges a refresh token for new tokens; the old refresh token is spent. A spent refresh
    /// token presented again means it was copied: the whole grant is revoked (RFC 9700 §4.14.2).
    pub async fn refresh(
        &self,
        client: &ClientRow,
        token: &str,
        narrower: Option<&str>,
    ) -> Result<Issued, TokenFailure> {
        #[derive(sqlx::FromRow)]
        struct RefreshRow {
            grant_id: Uuid,
            used_at: Option<DateTime<Utc>>,
            client_id: String,
            user_id: Uuid,
            session_id: Option<Uuid>,
            scope: String,
            auth_time: DateTime<Utc>,
            expires_at: DateTime<Utc>,
            revoked_at: Option<DateTime<Utc>>,
        }
        let hash = password::token_hash(token);
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let row: Option<RefreshRow> = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_as::<_, RefreshRow>(sql(
                "SELECT t.grant_id, t.used_at, g.client_id, g.user_id, g.session_id, g.scope, \
                g.auth_time, g.expires_at, g.revoked_at FROM oidc_token t \
                JOIN oidc_grant g ON g.id = t.grant_id WHERE t.token_hash = $1 AND t.kind = 'refresh'",
            ))
            .bind(&hash)
            .fetch_optional(ex)
            .await?
        });
        let Some(r) = row.filter(|r| r.client_id == client.id) else {
            return Err(OAuthError::InvalidGrant.into());
        };
        if r.revoked_at.is_some() || r.expires_at <= now {
            return Err(OAuthError::InvalidGrant.into());
        }
        let spent_now = r.used_at.is_none()
            && db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE oidc_token SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
                ))
                .bind(&hash)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            }) == 1;
        if !spent_now {
            revoke_grants(&mut tx, &[r.grant_id], now).await?;
            audit::append(
                &mut tx,
                &system_entry("oidc.refresh_reuse", &client.id, "denied"),
            )
            .await?;
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        }
        // A scope taken from the client since the grant is gone from it too.
        let allowed = client.allowed_scopes();
        let granted: Vec<String> = r
            .scope
            .split_whitespace()
            .filter(|s| allowed.iter().any(|a| a == s))
            .map(str::to_owned)
            .collect();
        let scopes = match narrower {
            None => granted.clone(),
            Some(s) => {
                let asked: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
                if asked.iter().any(|a| !granted.contains(a)) {
                    tx.commit().await?;
                    return Err(OAuthError::InvalidScope.into());
                }
                asked
            }
        };
        // A grant tied to a sign-in session lives as long as the session, unless the client got
        // `offline_access`; using it keeps the session from idling out.
        if let Some(sid) = r.session_id
            && !granted.iter().any(|s| s == "offline_access")
            && !session_alive(&mut tx, sid, now).await?
        {
            revoke_grants(&mut tx, &[r.grant_id], now).await?;
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        }
        let Some(subject) = self.subject(r.user_id).await? else {
            tx.commit().await?;
            return Err(OAuthError::InvalidGrant.into());
        };
        let access = issued_token("sta_");
        let refresh = issued_token("str_");
        insert_token(
            &mut tx,
            &access,
            r.grant_id,
            "access",
            &scopes,
            now + ACCESS_TTL,
        )
        .await?;
        insert_token(
            &mut tx,
            &refresh,
            r.grant_id,
            "refresh",
            &granted,
            r.expires_at,
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            access_token: access,
            refresh_token: Some(refresh),
            scopes,
            subject,
            session_id: r.session_id,
            nonce: None,
            auth_time: r.auth_time,
        })
    }

    /// Client credentials: the client's service account, limited to the scopes asked for.
    pub async fn client_credentials(
        &self,
        issuer: &str,
        client: &ClientRow,
        scope: Option<&str>,
    ) -> Result<Issued, TokenFailure> {
        let Some(service) = client.service_user_id else {
            return Err(OAuthError::UnauthorizedClient.into());
        };
        let allowed = client.allowed_scopes();
        let scopes: Vec<String> = match scope {
            None => allowed
                .iter()
                .filter(|s| Permission::parse(s).is_some())
                .cloned()
                .collect(),
            Some(s) => {
                let asked: Vec<&str> = s.split_whitespace().collect();
                if asked
                    .iter()
                    .any(|a| Permission::parse(a).is_none() || !allowed.iter().any(|x| x == a))
                {
                    return Err(OAuthError::InvalidScope.into());
                }
                asked.into_iter().map(str::to_owned).collect()
            }
        };
        let Some(subject) = self.subject(service).await? else {
            return Err(OAuthError::UnauthorizedClient.into());
        };
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let grant = NewGrant {
            client_id: &client.id,
            user_id: service,
            session_id: None,
            code_hash: None,
            issuer,
            scopes: &scopes,
            nonce: None,
            auth_time: now,
            refresh: false,
        };
        let (access, _) = insert_grant(&mut tx, &grant).await?;
        let mut e = system_entry("oidc.token", &subject.principal.user.username, "success");
        e.actor = client.id.clone();
        e.detail = format!("client_credentials: {}", scopes.join(" "));
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(Issued {
            access_token: access,
            refresh_token: None,
            scopes,
            subject,
            session_id: None,
            nonce: None,
            auth_time: now,
        })
    }

    /// The subject and scopes of a live access token. The principal's permissions are limited to
    /// the permission scopes of the token, so an `openid profile` token reads no records.
    pub async fn access_token(&self, token: &str) -> crate::Result<Option<(Subject, Vec<String>)>> {
        #[derive(sqlx::FromRow)]
        struct A {
            user_id: Uuid,
            scope: String,
            client_scopes: String,
            expires_at: DateTime<Utc>,
            revoked_at: Option<DateTime<Utc>>,
            client_disabled: Option<DateTime<Utc>>,
        }
        let row: Option<A> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, A>(sql(
                "SELECT g.user_id, t.scope, c.scopes AS client_scopes, t.expires_at, g.revoked_at, \
                c.disabled_at AS client_disabled FROM oidc_token t \
                JOIN oidc_grant g ON g.id = t.grant_id JOIN oidc_client c ON c.id = g.client_id \
                WHERE t.token_hash = $1 AND t.kind = 'access'",
            ))
            .bind(password::token_hash(token))
            .fetch_optional(ex)
            .await?
        });
        let now = Utc::now();
        let Some(a) = row.filter(|a| {
            a.expires_at > now && a.revoked_at.is_none() && a.client_disabled.is_none()
        }) else {
            return Ok(None);
        };
        let Some(mut subject) = self.subject(a.user_id).await? else {
            return Ok(None);
        };
        let allowed: Vec<&str> = a.client_scopes.split_whitespace().collect();
        let scopes: Vec<String> = a
            .scope
            .split_whitespace()
            .filter(|s| allowed.contains(s))
            .map(str::to_owned)
            .collect();
        subject.principal.token_scopes =
            Some(scopes.iter().filter_map(|s| Permission::parse(s)).collect());
        Ok(Some((subject, scopes)))
    }

    async fn subject(&self, user_id: Uuid) -> crate::Result<Option<Subject>> {
        let Some(principal) = Identity(self.0).principal_by_id(user_id).await? else {
            return Ok(None);
        };
        let (email, phone) = Identity(self.0).contact(user_id).await?;
        Ok(Some(Subject {
            principal,
            email,
            phone,
        }))
    }

    /// The grants a user holds through clients, for "my account".
    pub async fn apps_of(&self, user_id: Uuid) -> crate::Result<Vec<AppAccess>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, AppAccess>(sql(
                "SELECT c.id AS client_id, c.name, k.scope, k.granted_at FROM oidc_client c \
                LEFT JOIN oidc_consent k ON k.client_id = c.id AND k.user_id = $1 \
                WHERE k.user_id IS NOT NULL OR EXISTS (SELECT 1 FROM oidc_grant g \
                    WHERE g.client_id = c.id AND g.user_id = $1 AND g.revoked_at IS NULL \
                    AND g.expires_at > $2) \
                ORDER BY c.name",
            ))
            .bind(user_id)
            .bind(Utc::now())
            .fetch_all(ex)
            .await?
        }))
    }

    /// Withdraws a consent and revokes the client's grants for this user.
    pub async fn revoke_app(
        &self,
        me: &Principal,
        ip: &str,
        client_id: &str,
    ) -> crate::Result<bool> {
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "DELETE FROM oidc_consent WHERE user_id = $1 AND client_id = $2",
            ))
            .bind(me.user.id)
            .bind(client_id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        let grants = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE oidc_grant SET revoked_at = $3 WHERE user_id = $1 AND client_id = $2 \
                AND revoked_at IS NULL",
            ))
            .bind(me.user.id)
            .bind(client_id)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        let n = n + grants;
        if n > 0 {
            audit::append(
                &mut tx,
                &Actor::User { principal: me, ip }.entry(
                    "oidc.consent_revoke",
                    client_id,
                    "success",
                    &me.user.home(),
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}

/// A client a user let in.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppAccess {
    pub client_id: String,
    pub name: String,
    /// What the user consented to; `None` for a first-party application (no consent asked).
    pub scope: Option<String>,
    pub granted_at: Option<DateTime<Utc>>,
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn system_entry(event: &'static str, target: &str, result: &'static str) -> AuditEntry {
    AuditEntry {
        actor: "oidc".into(),
        actor_id: None,
        ip: "-".into(),
        event,
        target: target.to_owned(),
        result,
        scope: Node::Nation.code(),
        detail: String::new(),
    }
}

struct NewGrant<'a> {
    client_id: &'a str,
    user_id: Uuid,
    session_id: Option<Uuid>,
    code_hash: Option<&'a str>,
    issuer: &'a str,
    scopes: &'a [String],
    nonce: Option<&'a str>,
    auth_time: DateTime<Utc>,
    refresh: bool,
}

async fn insert_grant(tx: &mut Tx, g: &NewGrant<'_>) -> crate::Result<(String, Option<String>)> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let expires = now + GRANT_TTL;
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO oidc_grant (id, client_id, user_id, session_id, code_hash, scope, nonce, \
            auth_time, created_at, expires_at, issuer) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ))
        .bind(id)
        .bind(g.client_id)
        .bind(g.user_id)
        .bind(g.session_id)
        .bind(g.code_hash)
        .bind(g.scopes.join(" "))
        .bind(g.nonce)
        .bind(g.auth_time)
        .bind(now)
        .bind(expires)
        .bind(g.issuer)
        .execute(ex)
        .await?
        .rows_affected()
    });
    // Spent and expired tokens can go; a family's refresh tokens live as long as the family, so
    // reuse detection still sees them.
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql("DELETE FROM oidc_token WHERE expires_at < $1"))
            .bind(now - Duration::days(1))
            .execute(ex)
            .await?
            .rows_affected()
    });
    let access = issued_token("sta_");
    insert_token(tx, &access, id, "access", g.scopes, now + ACCESS_TTL).await?;
    let refresh = if g.refresh {
        let r = issued_token("str_");
        insert_token(tx, &r, id, "refresh", g.scopes, expires).await?;
        Some(r)
    } else {
        None
    };
    Ok((access, refresh))
}

async fn insert_token(
    tx: &mut Tx,
    token: &str,
    grant: Uuid,
    kind: &str,
    scopes: &[String],
    expires: DateTime<Utc>,
) -> crate::Result<()> {
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO oidc_token (token_hash, grant_id, kind, scope, created_at, expires_at) \
            VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(password::token_hash(token))
        .bind(grant)
        .bind(kind)
        .bind(scopes.join(" "))
        .bind(Utc::now())
        .bind(expires)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

async fn revoke_grants(tx: &mut Tx, ids: &[Uuid], now: DateTime<Utc>) -> crate::Result<()> {
    for id in ids {
        db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE oidc_grant SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            ))
            .bind(*id)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
    }
    Ok(())
}

/// True when the session is neither revoked nor expired; touches it, as a page view would.
async fn session_alive(tx: &mut Tx, sid: Uuid, now: DateTime<Utc>) -> crate::Result<bool> {
    #[derive(sqlx::FromRow)]
    struct S {
        last_seen_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        idle_secs: i32,
        revoked_at: Option<DateTime<Utc>>,
    }
    let row: Option<S> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as::<_, S>(sql(
            "SELECT last_seen_at, expires_at, idle_secs, revoked_at FROM user_session \
                WHERE id = $1",
        ))
        .bind(sid)
        .fetch_optional(ex)
        .await?
    });
    let Some(S {
        last_seen_at: seen,
        expires_at: expires,
        idle_secs: idle,
        revoked_at: revoked,
    }) = row
    else {
        return Ok(false);
    };
    if revoked.is_some() || expires <= now || seen + Duration::seconds(i64::from(idle)) <= now {
        return Ok(false);
    }
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE user_session SET last_seen_at = $2 WHERE id = $1",
        ))
        .bind(sid)
        .bind(now)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(true)
}

/// Which sessions of a user just ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    /// One session (sign-out, "revoke" on my sessions).
    One(Uuid),
    /// Every session but this one (password change, disable, reset): offline grants end too.
    AllBut(Option<Uuid>),
}

/// Ends the grants made in sessions that just ended, and queues a back-channel logout for every
/// client with a logout URI that had a grant in them. Runs in the transaction that ends the
/// sessions, so a crash cannot leave a session ended and its clients uninformed.
pub(crate) async fn sessions_ended(tx: &mut Tx, user_id: Uuid, ended: Ended) -> crate::Result<()> {
    #[derive(sqlx::FromRow)]
    struct G {
        id: Uuid,
        client_id: String,
        session_id: Option<Uuid>,
        scope: String,
        issuer: String,
        backchannel_logout_uri: Option<String>,
    }
    let (one, except) = match ended {
        Ended::One(s) => (Some(s), None),
        Ended::AllBut(e) => (None, e),
    };
    let rows: Vec<G> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as::<_, G>(sql(
            "SELECT g.id, g.client_id, g.session_id, g.scope, g.issuer, c.backchannel_logout_uri \
            FROM oidc_grant g JOIN oidc_client c ON c.id = g.client_id \
            WHERE g.user_id = $1 AND g.revoked_at IS NULL \
            AND ($2 IS NULL OR g.session_id = $2) \
            AND ($3 IS NULL OR g.session_id IS NULL OR g.session_id <> $3)",
        ))
        .bind(user_id)
        .bind(one)
        .bind(except)
        .fetch_all(ex)
        .await?
    });
    let now = Utc::now();
    let revoke: Vec<Uuid> = rows
        .iter()
        .filter(|g| {
            matches!(ended, Ended::AllBut(_))
                || !g.scope.split_whitespace().any(|s| s == "offline_access")
        })
        .map(|g| g.id)
        .collect();
    revoke_grants(tx, &revoke, now).await?;
    let mut told: Vec<(&str, Uuid)> = Vec::new();
    for g in &rows {
        let (Some(_), Some(sid)) = (&g.backchannel_logout_uri, g.session_id) else {
            continue;
        };
        if told.contains(&(g.client_id.as_str(), sid)) {
            continue;
        }
        told.push((g.client_id.as_str(), sid));
        let job = NewJob::new(
            BACKCHANNEL_JOB,
            serde_json::json!({
                "client_id": g.client_id,
                "iss": g.issuer,
                "sub": user_id.to_string(),
                "sid": sid.to_string(),
            }),
        );
        jobs::enqueue_in(tx, &job).await?;
    }
    Ok(())
}

impl UserRow {
    /// A client's service account (client credentials): it has no password to sign in with.
    pub fn is_service_account(&self) -> bool {
        self.password_hash == "!"
    }
}
