//! Identity: accounts, role grants at nodes, the scope filter every query of people goes through,
//! passwords, the sign-in throttle and sessions. Every change is audited in its own transaction.
//!
//! Authorisation lives here, below the handlers: each operation takes the [`Actor`] and checks its
//! permission *and* that the target lies in the actor's scope, so no page or API route can forget.

use chrono::{DateTime, Utc};
use santong_domain::identity::{
    Node, PasswordPolicy, PasswordProblem, Permission, Role, SchoolCode, Scope, SessionPolicy,
    ThrottlePolicy, escalating_lock, parse_username,
};
use santong_domain::region::RegionCode;
use santong_domain::{password, totp};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, AuditEntry};
use crate::dynsql::DynQuery;
use crate::settings::Settings;
use crate::{Db, Page, StorageError, Tx, db_query};

/// An account as stored. The password hash never leaves this module's callers' process.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub must_change_password: bool,
    pub system_role: Option<String>,
    pub home_region: Option<String>,
    pub home_school: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "SELECT u.id, u.username, u.display_name, u.password_hash, \
    u.must_change_password, u.system_role, u.home_region, u.home_school, u.disabled_at, \
    u.password_changed_at, u.created_at FROM app_user u";

impl UserRow {
    /// Where the account belongs.
    pub fn home(&self) -> Node {
        node_of(self.home_region.as_deref(), self.home_school.as_deref())
    }

    pub fn system_role(&self) -> Option<Role> {
        self.system_role.as_deref().and_then(Role::parse)
    }
}

fn node_of(region: Option<&str>, school: Option<&str>) -> Node {
    let region = region.and_then(|r| RegionCode::parse(r).ok());
    match (school.and_then(SchoolCode::parse), region) {
        (Some(code), Some(county)) => Node::School { code, county },
        (_, Some(r)) => Node::Region(r),
        _ => Node::Nation,
    }
}

/// A role granted at a node.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GrantRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub node_code: String,
    pub node_region: Option<String>,
    pub node_school: Option<String>,
    pub granted_at: DateTime<Utc>,
}

impl GrantRow {
    pub fn node(&self) -> Node {
        node_of(self.node_region.as_deref(), self.node_school.as_deref())
    }
}

/// A signed-in user with their grants, as loaded for a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserRow,
    pub grants: Vec<(Role, Node)>,
    pub session_id: Option<Uuid>,
    /// The session's synchronizer token for forms.
    pub csrf: String,
    /// A second factor is enrolled.
    pub mfa_enabled: bool,
    /// The password was right but the second factor is still to come.
    pub mfa_pending: bool,
    /// Signed in with an API token limited to these permissions (`None`: a browser session).
    pub token_scopes: Option<Vec<Permission>>,
}

impl Principal {
    /// Every role held, with where: an admin duty applies to the whole node.
    pub fn roles(&self) -> Vec<(Role, Node)> {
        let mut out: Vec<(Role, Node)> = self
            .user
            .system_role()
            .map(|r| (r, Node::Nation))
            .into_iter()
            .collect();
        out.extend(self.grants.iter().copied());
        out
    }

    pub fn has(&self, perm: Permission) -> bool {
        self.allows(perm)
            && self
                .roles()
                .iter()
                .any(|(r, _)| r.permissions().contains(&perm))
    }

    /// False when an API token excludes `perm`.
    pub(crate) fn allows(&self, perm: Permission) -> bool {
        self.token_scopes.as_ref().is_none_or(|s| s.contains(&perm))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles().iter().any(|(r, _)| *r == role)
    }

    /// Where `perm` applies for this user.
    pub fn scope(&self, perm: Permission) -> Scope {
        if !self.allows(perm) {
            return Scope::default();
        }
        let nodes: Vec<Node> = self
            .roles()
            .into_iter()
            .filter(|(r, _)| r.permissions().contains(&perm))
            .map(|(_, n)| n)
            .collect();
        Scope::of_nodes(&nodes)
    }

    /// Officials and admins: shorter sessions, expiring passwords.
    pub fn privileged(&self) -> bool {
        self.roles().iter().any(|(r, _)| r.is_privileged())
    }
}

/// Who performs an operation: a signed-in principal, or the command line (an operator with
/// shell access to the server, audited as `cli`).
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    User {
        principal: &'a Principal,
        ip: &'a str,
    },
    Cli,
    /// Santong itself, for scheduled changes (a signing key past its age).
    System,
    /// A job carrying out what a user asked for and was allowed to ask when they asked (an
    /// import's commit): recorded under their name, allowed nothing new.
    OnBehalf {
        name: &'a str,
        id: Option<Uuid>,
    },
}

impl Actor<'_> {
    pub(crate) fn name(&self) -> String {
        match self {
            Actor::User { principal, .. } => principal.user.username.clone(),
            Actor::Cli => "cli".into(),
            Actor::System => "system".into(),
            Actor::OnBehalf { name, .. } => (*name).to_owned(),
        }
    }

    pub(crate) fn id(&self) -> Option<Uuid> {
        match self {
            Actor::User { principal, .. } => Some(principal.user.id),
            Actor::OnBehalf { id, .. } => *id,
            Actor::Cli | Actor::System => None,
        }
    }

    fn ip(&self) -> String {
        match self {
            Actor::User { ip, .. } => (*ip).to_owned(),
            Actor::Cli | Actor::System | Actor::OnBehalf { .. } => "-".into(),
        }
    }

    /// The CLI may do anything; a user needs `perm` where `node` lies.
    pub(crate) fn may(&self, perm: Permission, node: &Node) -> bool {
        match self {
            Actor::Cli => true,
            Actor::System | Actor::OnBehalf { .. } => false,
            Actor::User { principal, .. } => principal.scope(perm).contains(node),
        }
    }

    pub(crate) fn entry(
        &self,
        event: &'static str,
        target: &str,
        result: &'static str,
        scope: &Node,
    ) -> AuditEntry {
        AuditEntry {
            actor: self.name(),
            actor_id: self.id(),
            ip: self.ip(),
            event,
            target: target.to_owned(),
            result,
            scope: scope.code(),
            detail: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("not allowed")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("the user name is taken")]
    UsernameTaken,
    #[error("the user name is not valid")]
    BadUsername,
    #[error("the password does not meet the policy")]
    Password(Vec<PasswordProblem>),
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("an account holds at most one admin duty and nothing else")]
    SeparationOfDuties,
    #[error("nobody can grant themselves a role")]
    SelfGrant,
    #[error("the security and audit administrators must be created first")]
    SetupIncomplete,
    #[error("the code is not correct")]
    WrongCode,
    #[error("the field {0} is missing or not valid")]
    BadField(&'static str),
    #[error("too many attempts: wait {0} seconds")]
    TooManyAttempts(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        IdentityError::Storage(StorageError::Sqlx(e))
    }
}

type IdResult<T> = Result<T, IdentityError>;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    /// `None` generates one (returned once).
    pub password: Option<String>,
    pub home: Node,
    /// One of the separated admin duties, or none.
    pub system_role: Option<Role>,
    /// A first grant, given with the account.
    pub grant: Option<(Role, Node)>,
}

/// Outcome of a sign-in attempt.
#[derive(Debug)]
pub enum Login {
    Ok {
        principal: Box<Principal>,
        token: String,
        must_change: bool,
        /// The second factor must be checked before the session is usable.
        mfa_pending: bool,
        /// A new known-device token for this browser, to set as a long-lived cookie.
        device: Option<String>,
    },
    /// Wrong user name or password (never says which), or the account is disabled.
    Invalid,
    /// Too many failures: try again after this many seconds.
    Locked { retry_after: u64 },
}

/// The security policies, stored as JSON in instance settings.
pub async fn password_policy(db: &Db) -> crate::Result<PasswordPolicy> {
    policy(db, "policy.password").await
}

pub async fn throttle_policy(db: &Db) -> crate::Result<ThrottlePolicy> {
    policy(db, "policy.throttle").await
}

pub async fn session_policy(db: &Db) -> crate::Result<SessionPolicy> {
    policy(db, "policy.session").await
}

pub async fn transfer_policy(db: &Db) -> crate::Result<santong_domain::lifecycle::TransferPolicy> {
    policy(db, "policy.transfer").await
}

/// Stores a policy (already validated by parsing into its type) and audits the change.
pub async fn set_policy(db: &Db, kind: &str, json: &str) -> crate::Result<()> {
    let mut tx = db.begin().await?;
    db_query!(&mut tx, tx, |sql, ex| {
        sqlx::query(sql("INSERT INTO instance_setting (key, value, updated_at) VALUES ($1, $2, $3) \
            ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"))
        .bind(format!("policy.{kind}"))
        .bind(json)
        .bind(Utc::now())
        .execute(ex)
        .await?
        .rows_affected()
    });
    audit::append(
        &mut tx,
        &AuditEntry {
            actor: "cli".into(),
            ip: "-".into(),
            event: "policy.change",
            target: format!("policy.{kind}"),
            result: "success",
            scope: "000000".into(),
            detail: json.to_owned(),
            ..AuditEntry::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A policy stored as JSON under `key`, or its defaults when unset.
pub(crate) async fn policy<T: serde::de::DeserializeOwned + Default>(
    db: &Db,
    key: &str,
) -> crate::Result<T> {
    Ok(Settings(db)
        .get(key)
        .await?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

/// `a:<user>`, `p:<user>|<ip>`, `i:<ip>`.
fn throttle_keys(username: &str, ip: &str) -> [String; 3] {
    let ip = santong_domain::identity::throttle_address(ip);
    [
        format!("a:{username}"),
        format!("p:{username}|{ip}"),
        format!("i:{ip}"),
    ]
}

pub struct Identity<'a>(pub &'a Db);

impl Identity<'_> {
    // ----- reading -------------------------------------------------------------------------

    async fn user_by_id(&self, id: Uuid) -> crate::Result<Option<UserRow>> {
        const SQL: &str = "SELECT u.id, u.username, u.display_name, u.password_hash, \
            u.must_change_password, u.system_role, u.home_region, u.home_school, u.disabled_at, \
            u.password_changed_at, u.created_at FROM app_user u WHERE u.id = $1";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, UserRow>(sql(SQL))
                .bind(id)
                .fetch_optional(ex)
                .await?
        }))
    }

    pub async fn user_by_username(&self, username: &str) -> crate::Result<Option<UserRow>> {
        const SQL: &str = "SELECT u.id, u.username, u.display_name, u.password_hash, \
            u.must_change_password, u.system_role, u.home_region, u.home_school, u.disabled_at, \
            u.password_changed_at, u.created_at FROM app_user u WHERE u.username = $1";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, UserRow>(sql(SQL))
                .bind(username)
                .fetch_optional(ex)
                .await?
        }))
    }

    pub async fn grants_of(&self, user_id: Uuid) -> crate::Result<Vec<GrantRow>> {
        const SQL: &str = "SELECT id, user_id, role, node_code, node_region, node_school, \
            granted_at FROM role_grant WHERE user_id = $1 ORDER BY granted_at";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, GrantRow>(sql(SQL))
                .bind(user_id)
                .fetch_all(ex)
                .await?
        }))
    }

    /// An enabled account as a principal without a session (tokens issued to clients).
    pub async fn principal_by_id(&self, id: Uuid) -> crate::Result<Option<Principal>> {
        match self
            .user_by_id(id)
            .await?
            .filter(|u| u.disabled_at.is_none())
        {
            Some(u) => Ok(Some(self.principal_of(u, None).await?)),
            None => Ok(None),
        }
    }

    async fn principal_of(
        &self,
        user: UserRow,
        session: Option<(Uuid, String, bool)>,
    ) -> crate::Result<Principal> {
        let grants = self
            .grants_of(user.id)
            .await?
            .into_iter()
            .filter_map(|g| Role::parse(&g.role).map(|r| (r, g.node())))
            .collect();
        let (session_id, csrf, mfa_pending) = match session {
            Some((id, csrf, pending)) => (Some(id), csrf, pending),
            None => (None, String::new(), false),
        };
        let mfa_enabled = self.mfa_enabled(user.id).await?;
        Ok(Principal {
            user,
            grants,
            session_id,
            csrf,
            mfa_enabled,
            mfa_pending,
            token_scopes: None,
        })
    }

    /// Appends the scope condition on `app_user u` to `q`: where an account belongs.
    fn push_user_scope(q: &mut DynQuery, scope: &Scope) {
        crate::scope::push(q, scope, "u.home_region", "u.home_school");
    }

    /// Accounts in `scope`, optionally matching `query` (user name or display name), by user name.
    pub async fn list_users(
        &self,
        scope: &Scope,
        query: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<UserRow>> {
        self.list_users_holding(scope, None, query, limit, offset)
            .await
    }

    /// Accounts in `scope` that hold `role` somewhere (a teacher's view: the students of their
    /// school, not their colleagues).
    pub async fn list_users_holding(
        &self,
        scope: &Scope,
        role: Option<Role>,
        query: Option<&str>,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<UserRow>> {
        let filter = |q: &mut DynQuery| {
            q.push(" WHERE");
            Self::push_user_scope(q, scope);
            Self::push_role(q, role);
            if let Some(text) = query.map(str::trim).filter(|t| !t.is_empty()) {
                let pattern = format!("%{}%", like_escape(text));
                q.push(" AND (u.username LIKE ").bind(pattern.clone());
                q.push(" ESCAPE '\\' OR u.display_name LIKE ")
                    .bind(pattern)
                    .push(" ESCAPE '\\')");
            }
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(USER_COLUMNS);
        filter(&mut q);
        q.push(" ORDER BY u.username LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*) FROM app_user u");
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// One account, only if it lies in `scope` (otherwise `None`, as if it did not exist).
    pub async fn get_user(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<UserRow>> {
        self.get_user_holding(scope, None, id).await
    }

    /// One account in `scope` that holds `role`.
    pub async fn get_user_holding(
        &self,
        scope: &Scope,
        role: Option<Role>,
        id: Uuid,
    ) -> crate::Result<Option<UserRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(USER_COLUMNS)
            .push(" WHERE u.id = ")
            .bind(id)
            .push(" AND");
        Self::push_user_scope(&mut q, scope);
        Self::push_role(&mut q, role);
        Ok(q.fetch_all::<UserRow>(self.0).await?.into_iter().next())
    }

    fn push_role(q: &mut DynQuery, role: Option<Role>) {
        if let Some(r) = role {
            q.push(" AND EXISTS (SELECT 1 FROM role_grant g WHERE g.user_id = u.id AND g.role = ")
                .bind(r.as_str().to_owned())
                .push(")");
        }
    }

    async fn duty_held(&self, duty: Role) -> crate::Result<bool> {
        let n: i64 = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM app_user WHERE system_role = $1 AND disabled_at IS NULL",
            ))
            .bind(duty.as_str())
            .fetch_one(ex)
            .await?
        });
        Ok(n > 0)
    }

    /// Setup mode lasts until the security and the audit admin both exist.
    pub async fn setup_complete(&self) -> crate::Result<bool> {
        let n: i64 = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT COUNT(DISTINCT system_role) FROM app_user \
                WHERE system_role IN ($1, $2) AND disabled_at IS NULL"))
            .bind(Role::SecurityAdmin.as_str())
            .bind(Role::AuditAdmin.as_str())
            .fetch_one(ex)
            .await?
        });
        Ok(n == 2)
    }

    // ----- accounts ------------------------------------------------------------------------

    /// Checks a new account against the actor's rights and the policy, and hashes its password.
    async fn prepare_user(&self, actor: Actor<'_>, new: NewUser) -> IdResult<Prepared> {
        let username = parse_username(&new.username).ok_or(IdentityError::BadUsername)?;
        match new.system_role {
            Some(duty) => {
                if !duty.is_admin_duty() || new.grant.is_some() {
                    return Err(IdentityError::SeparationOfDuties);
                }
                // Only during setup, and only the system admin (or the CLI), creates the other two
                // duties, one holder each: afterwards a system admin minting a second security
                // admin would defeat the separation.
                let allowed = match actor {
                    Actor::Cli => true,
                    Actor::System | Actor::OnBehalf { .. } => false,
                    Actor::User { principal, .. } => {
                        principal.has_role(Role::SystemAdmin)
                            && duty != Role::SystemAdmin
                            && !self.setup_complete().await?
                            && !self.duty_held(duty).await?
                    }
                };
                if !allowed {
                    return Err(IdentityError::Forbidden);
                }
            }
            None => {
                if !actor.may(Permission::UsersManage, &new.home) {
                    return Err(IdentityError::Forbidden);
                }
                if matches!(actor, Actor::User { .. }) && !self.setup_complete().await? {
                    return Err(IdentityError::SetupIncomplete);
                }
                if let Some((role, node)) = &new.grant {
                    self.check_grant(actor, None, *role, node)?;
                }
            }
        }
        let policy = password_policy(self.0).await?;
        let (pw, generated) = match new.password {
            Some(p) => (p, None),
            None => {
                let p = password::generate(16);
                (p.clone(), Some(p))
            }
        };
        let problems = policy.check(&username, &pw);
        if !problems.is_empty() {
            return Err(IdentityError::Password(problems));
        }
        Ok(Prepared {
            id: Uuid::now_v7(),
            hash: hash_password(&pw).await,
            username,
            display_name: new.display_name.trim().to_owned(),
            home: new.home,
            system_role: new.system_role,
            grant: new.grant,
            generated,
        })
    }

    /// Creates an account. Returns its id and, when none was given, the generated password.
    pub async fn create_user(
        &self,
        actor: Actor<'_>,
        new: NewUser,
    ) -> IdResult<(Uuid, Option<String>)> {
        let p = self.prepare_user(actor, new).await?;
        let mut tx = self.0.begin().await?;
        insert_prepared(&mut tx, actor, &p).await?;
        tx.commit().await?;
        Ok((p.id, p.generated))
    }

    /// Creates many accounts, all or none: every row is checked first and every refused row is
    /// reported with its line number; then all are written in one transaction. Returns each user
    /// name with its generated password (when none was given).
    pub async fn create_users(
        &self,
        actor: Actor<'_>,
        rows: Vec<(usize, NewUser)>,
    ) -> Result<Vec<(String, Option<String>)>, RowErrors> {
        let (prepared, errors) = self.prepare_users(actor, rows).await;
        if !errors.is_empty() {
            return Err(errors);
        }
        self.write_users(actor, prepared).await
    }

    /// Checks every row; returns the good ones and every problem.
    async fn prepare_users(
        &self,
        actor: Actor<'_>,
        rows: Vec<(usize, NewUser)>,
    ) -> (Vec<(usize, Prepared)>, RowErrors) {
        let mut errors = vec![];
        let mut prepared = vec![];
        let mut seen = std::collections::HashSet::new();
        for (line, new) in rows {
            let name = parse_username(&new.username);
            if name.as_ref().is_some_and(|n| !seen.insert(n.clone())) {
                errors.push((line, IdentityError::UsernameTaken));
                continue;
            }
            if let Some(n) = &name {
                match self.user_by_username(n).await {
                    Ok(Some(_)) => {
                        errors.push((line, IdentityError::UsernameTaken));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        errors.push((line, e.into()));
                        continue;
                    }
                }
            }
            match self.prepare_user(actor, new).await {
                Ok(p) => prepared.push((line, p)),
                Err(e) => errors.push((line, e)),
            }
        }
        (prepared, errors)
    }

    /// Writes checked rows in one transaction.
    async fn write_users(
        &self,
        actor: Actor<'_>,
        prepared: Vec<(usize, Prepared)>,
    ) -> Result<Vec<(String, Option<String>)>, RowErrors> {
        let write = async {
            let mut tx = self.0.begin().await.map_err(|e| (0, e.into()))?;
            for (line, p) in &prepared {
                insert_prepared(&mut tx, actor, p)
                    .await
                    .map_err(|e| (*line, e))?;
            }
            audit::append(
                &mut tx,
                &AuditEntry {
                    detail: format!("{} accounts", prepared.len()),
                    ..actor.entry("user.import", "", "success", &Node::Nation)
                },
            )
            .await
            .map_err(|e| (0, e.into()))?;
            tx.commit().await.map_err(|e| (0, e.into()))?;
            Ok::<_, (usize, IdentityError)>(())
        };
        write.await.map_err(|e| vec![e])?;
        Ok(prepared
            .into_iter()
            .map(|(_, p)| (p.username, p.generated))
            .collect())
    }

    fn check_grant(
        &self,
        actor: Actor<'_>,
        target: Option<&UserRow>,
        role: Role,
        node: &Node,
    ) -> IdResult<()> {
        if role.is_admin_duty() {
            return Err(IdentityError::SeparationOfDuties);
        }
        if target.is_some_and(|t| t.system_role.is_some()) {
            return Err(IdentityError::SeparationOfDuties);
        }
        match actor {
            Actor::Cli => Ok(()),
            Actor::System | Actor::OnBehalf { .. } => Err(IdentityError::Forbidden),
            Actor::User { principal, .. } => {
                if target.is_some_and(|t| t.id == principal.user.id) {
                    return Err(IdentityError::SelfGrant);
                }
                let ok = principal
                    .roles()
                    .iter()
                    .any(|(r, at)| r.may_grant(role) && at.contains(node));
                if ok {
                    Ok(())
                } else {
                    Err(IdentityError::Forbidden)
                }
            }
        }
    }

    /// Grants `role` at `node` to an account the actor can see.
    pub async fn grant(
        &self,
        actor: Actor<'_>,
        user_id: Uuid,
        role: Role,
        node: Node,
    ) -> IdResult<()> {
        let target = self
            .visible_user(actor, Permission::UsersView, user_id)
            .await?;
        self.check_grant(actor, Some(&target), role, &node)?;
        let mut tx = self.0.begin().await?;
        insert_grant(&mut tx, user_id, role, &node, actor.id()).await?;
        audit::append(
            &mut tx,
            &AuditEntry {
                detail: role.to_string(),
                ..actor.entry("grant.add", &target.username, "success", &node)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn revoke_grant(
        &self,
        actor: Actor<'_>,
        user_id: Uuid,
        grant_id: Uuid,
    ) -> IdResult<()> {
        let target = self
            .visible_user(actor, Permission::UsersView, user_id)
            .await?;
        let grant = self
            .grants_of(user_id)
            .await?
            .into_iter()
            .find(|g| g.id == grant_id)
            .ok_or(IdentityError::NotFound)?;
        let role = Role::parse(&grant.role).ok_or(IdentityError::NotFound)?;
        self.check_grant(actor, Some(&target), role, &grant.node())?;
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("DELETE FROM role_grant WHERE id = $1 AND user_id = $2"))
                .bind(grant_id)
                .bind(user_id)
                .execute(ex)
                .await?
                .rows_affected()
        });
        audit::append(
            &mut tx,
            &AuditEntry {
                detail: role.to_string(),
                ..actor.entry("grant.revoke", &target.username, "success", &grant.node())
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The target, if the actor may act on it with `perm`: it lives in the actor's scope, and the
    /// actor outranks every role it holds — a grant of that role, at that node, is one the actor
    /// could give (the system admin counts for every ordinary role). So a school admin cannot take
    /// over a county official who happens to belong to the school, and a teacher resets only
    /// pure student accounts. Admin-duty accounts are managed from the CLI only.
    async fn administered(
        &self,
        actor: Actor<'_>,
        perm: Permission,
        id: Uuid,
    ) -> IdResult<UserRow> {
        let target = self.visible_user(actor, perm, id).await?;
        let Actor::User { principal, .. } = actor else {
            return Ok(target);
        };
        if principal.user.id == target.id || target.system_role.is_some() {
            return Err(IdentityError::Forbidden);
        }
        let mine = principal.roles();
        for g in self.grants_of(target.id).await? {
            let Some(role) = Role::parse(&g.role) else {
                continue;
            };
            let node = g.node();
            let ok = if perm == Permission::StudentPasswordsReset {
                role == Role::Student && principal.scope(perm).contains(&node)
            } else {
                mine.iter().any(|(r, at)| {
                    at.contains(&node) && (*r == Role::SystemAdmin || r.may_grant(role))
                })
            };
            if !ok {
                return Err(IdentityError::Forbidden);
            }
        }
        Ok(target)
    }

    /// The target account if the actor holds `perm` where it lives; `NotFound` otherwise, so an
    /// account outside the actor's scope is indistinguishable from none.
    async fn visible_user(
        &self,
        actor: Actor<'_>,
        perm: Permission,
        id: Uuid,
    ) -> IdResult<UserRow> {
        let scope = match actor {
            Actor::Cli => Scope::everything(),
            Actor::System | Actor::OnBehalf { .. } => Scope::default(),
            Actor::User { principal, .. } => principal.scope(perm),
        };
        self.get_user(&scope, id)
            .await?
            .ok_or(IdentityError::NotFound)
    }

    /// Sets a new generated password, to be changed at next sign-in; signs the account out
    /// everywhere and clears its lock. Teachers may reset students' passwords in their scope.
    pub async fn reset_password(&self, actor: Actor<'_>, user_id: Uuid) -> IdResult<String> {
        let target = match self
            .administered(actor, Permission::UsersManage, user_id)
            .await
        {
            Err(IdentityError::NotFound) => {
                self.administered(actor, Permission::StudentPasswordsReset, user_id)
                    .await?
            }
            other => other?,
        };
        let pw = password::generate(12);
        self.apply_reset(actor, &target, &pw).await?;
        Ok(pw)
    }

    /// Sets `pw` as a password to change at next sign-in, signs the account out everywhere and
    /// clears its locks, audited, in one transaction.
    async fn apply_reset(&self, actor: Actor<'_>, target: &UserRow, pw: &str) -> IdResult<()> {
        // A client's service account has no password by design: giving it one would let a person
        // sign in with the client's roles.
        if target.is_service_account() {
            return Err(IdentityError::Forbidden);
        }
        let hash = hash_password(pw).await;
        let mut tx = self.0.begin().await?;
        set_password(&mut tx, target.id, &hash, true).await?;
        revoke_sessions(&mut tx, target.id, None).await?;
        clear_throttle(&mut tx, &target.username).await?;
        audit::append(
            &mut tx,
            &actor.entry(
                "password.reset",
                &target.username,
                "success",
                &target.home(),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resets a password by user name from the CLI (`santong user reset-password`).
    pub async fn reset_password_by_name(
        &self,
        username: &str,
        new_password: Option<&str>,
    ) -> IdResult<String> {
        let name = parse_username(username).ok_or(IdentityError::NotFound)?;
        let user = self
            .user_by_username(&name)
            .await?
            .ok_or(IdentityError::NotFound)?;
        let pw = match new_password {
            Some(p) => {
                let problems = password_policy(self.0).await?.check(&name, p);
                if !problems.is_empty() {
                    return Err(IdentityError::Password(problems));
                }
                p.to_owned()
            }
            None => password::generate(12),
        };
        self.apply_reset(Actor::Cli, &user, &pw).await?;
        Ok(pw)
    }

    /// The user changes their own password: checks the old one, the policy and the history;
    /// signs out every other session.
    pub async fn change_password(
        &self,
        me: &Principal,
        ip: &str,
        old: &str,
        new: &str,
    ) -> IdResult<()> {
        let user = self
            .user_by_id(me.user.id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        let actor = Actor::User { principal: me, ip };
        // A stolen session must not become a password-guessing oracle: the current password is
        // checked under the same throttle as sign-in, with counters of its own.
        let addr = santong_domain::identity::throttle_address(ip);
        let keys = [
            format!("c:{}", user.username),
            format!("c:{}|{addr}", user.username),
            format!("i:{addr}"),
        ];
        let tp = throttle_policy(self.0).await?;
        if let Some(wait) = self.reserve_attempt(&keys, &tp, Utc::now()).await? {
            return Err(IdentityError::TooManyAttempts(wait));
        }
        if !verify_password(old, &user.password_hash).await {
            audit::record(
                self.0,
                &actor.entry("password.change", &user.username, "failure", &user.home()),
            )
            .await?;
            return Err(IdentityError::WrongPassword);
        }
        for k in &keys[..2] {
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql("DELETE FROM login_throttle WHERE key = $1"))
                    .bind(k)
                    .execute(ex)
                    .await?
                    .rows_affected()
            });
        }
        let policy = password_policy(self.0).await?;
        let mut problems = policy.check(&user.username, new);
        let history: Vec<String> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT password_hash FROM password_history WHERE user_id = $1 \
                ORDER BY created_at DESC LIMIT $2",
            ))
            .bind(user.id)
            .bind(i64::try_from(policy.history.max(1)).unwrap_or(1))
            .fetch_all(ex)
            .await?
        });
        let mut reused = verify_password(new, &user.password_hash).await;
        for h in &history {
            reused = reused || verify_password(new, h).await;
        }
        if reused {
            problems.push(PasswordProblem::Reused);
        }
        if !problems.is_empty() {
            return Err(IdentityError::Password(problems));
        }
        let hash = hash_password(new).await;
        let mut tx = self.0.begin().await?;
        set_password(&mut tx, user.id, &hash, false).await?;
        revoke_sessions(&mut tx, user.id, me.session_id).await?;
        audit::append(
            &mut tx,
            &actor.entry("password.change", &user.username, "success", &user.home()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Clears the sign-in locks of an account.
    pub async fn unlock(&self, actor: Actor<'_>, user_id: Uuid) -> IdResult<()> {
        let target = match self
            .administered(actor, Permission::GrantsManage, user_id)
            .await
        {
            Err(IdentityError::NotFound) => {
                self.administered(actor, Permission::UsersManage, user_id)
                    .await?
            }
            other => other?,
        };
        let mut tx = self.0.begin().await?;
        clear_throttle(&mut tx, &target.username).await?;
        audit::append(
            &mut tx,
            &actor.entry("user.unlock", &target.username, "success", &target.home()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables (signing out everywhere) or re-enables an account.
    pub async fn set_disabled(
        &self,
        actor: Actor<'_>,
        user_id: Uuid,
        disabled: bool,
    ) -> IdResult<()> {
        let target = self
            .administered(actor, Permission::UsersManage, user_id)
            .await?;
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("UPDATE app_user SET disabled_at = $2 WHERE id = $1"))
                .bind(target.id)
                .bind(disabled.then(Utc::now))
                .execute(ex)
                .await?
                .rows_affected()
        });
        if disabled {
            revoke_sessions(&mut tx, target.id, None).await?;
        }
        let event = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        audit::append(
            &mut tx,
            &actor.entry(event, &target.username, "success", &target.home()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// True when the account is currently locked by the throttle.
    pub async fn is_locked(&self, username: &str) -> crate::Result<bool> {
        let until: Option<Option<DateTime<Utc>>> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT locked_until FROM login_throttle WHERE key = $1",
            ))
            .bind(format!("a:{username}"))
            .fetch_optional(ex)
            .await?
        });
        Ok(until.flatten().is_some_and(|u| u > Utc::now()))
    }

    // ----- sign-in -------------------------------------------------------------------------

    /// Checks a user name and password under the throttle, and opens a session on success.
    ///
    /// Counters are reserved *before* the password is checked, inside one locking transaction, so
    /// parallel wrong attempts cannot run more checks than the limit allows.
    pub async fn authenticate(
        &self,
        username: &str,
        pw: &str,
        ip: &str,
        user_agent: &str,
    ) -> crate::Result<Login> {
        self.authenticate_from(username, pw, ip, user_agent, None)
            .await
    }

    /// [`Identity::authenticate`] from a browser that may carry a known-device token. On a
    /// browser where this account signed in before, the account's locks do not apply (only the
    /// device's own counter): a classmate hammering the account from elsewhere, even behind the
    /// same NAT address, cannot keep its owner out. A new device token is returned on success.
    pub async fn authenticate_from(
        &self,
        username: &str,
        pw: &str,
        ip: &str,
        user_agent: &str,
        device: Option<&str>,
    ) -> crate::Result<Login> {
        let name: String = username
            .trim()
            .to_ascii_lowercase()
            .chars()
            .take(64)
            .collect();
        // What users type as a user name is sometimes their password: only a well-formed name
        // goes into the audit log.
        let shown = parse_username(&name).unwrap_or_else(|| "(invalid)".into());
        let tp = throttle_policy(self.0).await?;
        let now = Utc::now();
        let known = match device {
            Some(token) => self
                .device_owner(token)
                .await?
                .zip(self.user_by_username(&name).await?)
                .is_some_and(|(owner, u)| owner == u.id),
            None => false,
        };
        let keys = match device.filter(|_| known) {
            Some(token) => {
                let h = password::token_hash(token);
                let ip = santong_domain::identity::throttle_address(ip);
                [format!("d:{h}"), format!("d:{h}|{ip}"), format!("i:{ip}")]
            }
            None => throttle_keys(&name, ip),
        };

        if let Some(wait) = self.reserve_attempt(&keys, &tp, now).await? {
            if let Some(repeats) = locked_event_due(self.0, &shown, ip) {
                audit::record(
                    self.0,
                    &AuditEntry {
                        actor: shown.clone(),
                        ip: ip.to_owned(),
                        event: "login.locked",
                        target: shown.clone(),
                        result: "denied",
                        scope: "000000".into(),
                        detail: if repeats > 0 {
                            format!("{repeats} more attempts while locked before this one")
                        } else {
                            String::new()
                        },
                        ..AuditEntry::default()
                    },
                )
                .await?;
            }
            return Ok(Login::Locked { retry_after: wait });
        }

        let user = self.user_by_username(&name).await?;
        // Always run one argon2 verification so timing does not tell whether the account exists.
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        // argon2 takes tens of milliseconds of CPU: off the async workers, so one school's rush
        // does not stall every other request.
        let matches = verify_password(pw, &hash).await;
        let user = user.filter(|u| matches && u.disabled_at.is_none());

        let Some(user) = user else {
            purge_stale_throttle(self.0, now).await?;
            let mut tx = self.0.begin().await?;
            count_ip_failure(&mut tx, &keys[2], &tp, now).await?;
            audit::append(
                &mut tx,
                &AuditEntry {
                    actor: shown.clone(),
                    ip: ip.to_owned(),
                    event: "login.failure",
                    target: shown.clone(),
                    result: "failure",
                    scope: "000000".into(),
                    ..AuditEntry::default()
                },
            )
            .await?;
            tx.commit().await?;
            return Ok(Login::Invalid);
        };

        let principal = self.principal_of(user, None).await?;
        let sp = session_policy(self.0).await?;
        let (idle, absolute) = if principal.privileged() {
            (sp.idle_secs_privileged, sp.absolute_secs_privileged)
        } else {
            (sp.idle_secs, sp.absolute_secs)
        };
        let token = password::random_token();
        let csrf = password::random_token();
        let session_id = Uuid::now_v7();
        let mut tx = self.0.begin().await?;
        for k in &keys[..2] {
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql("DELETE FROM login_throttle WHERE key = $1"))
                    .bind(k)
                    .execute(ex)
                    .await?
                    .rows_affected()
            });
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO user_session (id, token_hash, user_id, csrf_token, \
                created_at, last_seen_at, expires_at, idle_secs, ip, user_agent, mfa_pending) \
                VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10)",
            ))
            .bind(session_id)
            .bind(password::token_hash(&token))
            .bind(principal.user.id)
            .bind(&csrf)
            .bind(now)
            .bind(now + chrono::Duration::seconds(i64::try_from(absolute).unwrap_or(i64::MAX / 2)))
            .bind(i32::try_from(idle).unwrap_or(i32::MAX))
            .bind(ip)
            .bind(user_agent.chars().take(200).collect::<String>())
            .bind(principal.mfa_enabled)
            .execute(ex)
            .await?
            .rows_affected()
        });
        audit::append(
            &mut tx,
            &AuditEntry {
                actor: principal.user.username.clone(),
                actor_id: Some(principal.user.id),
                ip: ip.to_owned(),
                event: "login.success",
                target: principal.user.username.clone(),
                result: "success",
                scope: principal.user.home().code(),
                ..AuditEntry::default()
            },
        )
        .await?;
        tx.commit().await?;

        let pp = password_policy(self.0).await?;
        let expired = principal.privileged()
            && pp.max_age_days_privileged > 0
            && principal.user.password_changed_at.is_some_and(|t| {
                now - t > chrono::Duration::days(i64::from(pp.max_age_days_privileged))
            });
        if expired && !principal.user.must_change_password {
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE app_user SET must_change_password = $2 WHERE id = $1",
                ))
                .bind(principal.user.id)
                .bind(true)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        let must_change = principal.user.must_change_password || expired;
        let mfa_pending = principal.mfa_enabled;
        let new_device = if known {
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE known_device SET last_used_at = $2 WHERE token_hash = $1",
                ))
                .bind(password::token_hash(device.unwrap_or_default()))
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            None
        } else {
            let t = password::random_token();
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql(
                    "INSERT INTO known_device (token_hash, user_id, created_at, last_used_at) \
                    VALUES ($1, $2, $3, $3)",
                ))
                .bind(password::token_hash(&t))
                .bind(principal.user.id)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            Some(t)
        };
        let principal = Principal {
            session_id: Some(session_id),
            csrf,
            mfa_pending,
            ..principal
        };
        Ok(Login::Ok {
            principal: Box::new(principal),
            token,
            must_change,
            mfa_pending,
            device: new_device,
        })
    }

    // ----- API tokens ----------------------------------------------------------------------

    /// Creates a personal access token limited to `scopes` (each must be a permission the user
    /// holds) for `days` days. Returns its id and the token, shown once.
    pub async fn create_token(
        &self,
        me: &Principal,
        ip: &str,
        name: &str,
        scopes: &[Permission],
        days: u32,
    ) -> IdResult<(Uuid, String)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 60 {
            return Err(IdentityError::BadField("name"));
        }
        if !(1..=366).contains(&days) {
            return Err(IdentityError::BadField("days"));
        }
        if scopes.is_empty() || scopes.iter().any(|p| !me.has(*p)) {
            return Err(IdentityError::BadField("scopes"));
        }
        let token = format!("st_{}", password::random_token());
        let id = Uuid::now_v7();
        let now = Utc::now();
        let list: Vec<&str> = scopes.iter().map(|p| p.as_str()).collect();
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO api_token (id, user_id, name, token_hash, scopes, created_at, \
                expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ))
            .bind(id)
            .bind(me.user.id)
            .bind(name)
            .bind(password::token_hash(&token))
            .bind(list.join(" "))
            .bind(now)
            .bind(now + chrono::Duration::days(i64::from(days)))
            .execute(ex)
            .await?
            .rows_affected()
        });
        let mut e = Actor::User { principal: me, ip }.entry(
            "token.create",
            &me.user.username,
            "success",
            &me.user.home(),
        );
        e.detail = format!("{name}: {}", list.join(" "));
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok((id, token))
    }

    pub async fn tokens_of(&self, user_id: Uuid) -> crate::Result<Vec<TokenRow>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, TokenRow>(sql("SELECT id, name, scopes, created_at, expires_at, \
                last_used_at FROM api_token WHERE user_id = $1 AND revoked_at IS NULL \
                ORDER BY created_at DESC"))
            .bind(user_id)
            .fetch_all(ex)
            .await?
        }))
    }

    pub async fn revoke_token(&self, me: &Principal, ip: &str, id: Uuid) -> crate::Result<bool> {
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE api_token SET revoked_at = $3 WHERE id = $1 AND user_id = $2 \
                AND revoked_at IS NULL",
            ))
            .bind(id)
            .bind(me.user.id)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 1 {
            audit::append(
                &mut tx,
                &Actor::User { principal: me, ip }.entry(
                    "token.revoke",
                    &me.user.username,
                    "success",
                    &me.user.home(),
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// The principal of a live API token, its permissions limited to the token's scopes.
    pub async fn token_principal(&self, token: &str) -> crate::Result<Option<Principal>> {
        #[derive(sqlx::FromRow)]
        struct T {
            id: Uuid,
            user_id: Uuid,
            scopes: String,
            expires_at: DateTime<Utc>,
            last_used_at: Option<DateTime<Utc>>,
        }
        let row: Option<T> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, T>(sql(
                "SELECT id, user_id, scopes, expires_at, last_used_at FROM api_token \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
            ))
            .bind(password::token_hash(token))
            .fetch_optional(ex)
            .await?
        });
        let now = Utc::now();
        let Some(T {
            id,
            user_id,
            scopes,
            last_used_at: last_used,
            ..
        }) = row.filter(|r| r.expires_at > now)
        else {
            return Ok(None);
        };
        let Some(user) = self
            .user_by_id(user_id)
            .await?
            .filter(|u| u.disabled_at.is_none())
        else {
            return Ok(None);
        };
        if last_used.is_none_or(|t| now - t > chrono::Duration::seconds(60)) {
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql("UPDATE api_token SET last_used_at = $2 WHERE id = $1"))
                    .bind(id)
                    .bind(now)
                    .execute(ex)
                    .await?
                    .rows_affected()
            });
        }
        let mut p = self.principal_of(user, None).await?;
        p.token_scopes = Some(
            scopes
                .split_whitespace()
                .filter_map(Permission::parse)
                .collect(),
        );
        Ok(Some(p))
    }

    /// The account a known-device token belongs to.
    async fn device_owner(&self, token: &str) -> crate::Result<Option<Uuid>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT user_id FROM known_device WHERE token_hash = $1",
            ))
            .bind(password::token_hash(token))
            .fetch_optional(ex)
            .await?
        }))
    }

    // ----- second factor -------------------------------------------------------------------

    pub async fn mfa_enabled(&self, user_id: Uuid) -> crate::Result<bool> {
        let n: i64 = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT COUNT(*) FROM user_mfa WHERE user_id = $1 \
                AND enabled_at IS NOT NULL"))
            .bind(user_id)
            .fetch_one(ex)
            .await?
        });
        Ok(n > 0)
    }

    /// The TOTP secret (base32) and the last step used, enrolled or pending.
    pub async fn mfa_state(&self, user_id: Uuid) -> crate::Result<Option<(String, Option<u64>)>> {
        let row: Option<(String, Option<i64>)> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT secret, last_step FROM user_mfa WHERE user_id = $1",
            ))
            .bind(user_id)
            .fetch_optional(ex)
            .await?
        });
        Ok(row.map(|(s, l)| (s, l.and_then(|l| u64::try_from(l).ok()))))
    }

    /// Starts enrolment: a new secret, not active until confirmed with a code. Returns it in
    /// base32 for the authenticator app. An enrolled factor is never replaced this way.
    pub async fn mfa_begin(&self, me: &Principal) -> IdResult<String> {
        if self.mfa_enabled(me.user.id).await? {
            return Err(IdentityError::Forbidden);
        }
        let existing: Option<String> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT secret FROM user_mfa WHERE user_id = $1"))
                .bind(me.user.id)
                .fetch_optional(ex)
                .await?
        });
        if let Some(secret) = existing {
            return Ok(secret);
        }
        let secret = totp::base32(&totp::generate_secret());
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO user_mfa (user_id, secret, created_at) VALUES ($1, $2, $3) \
                ON CONFLICT (user_id) DO NOTHING",
            ))
            .bind(me.user.id)
            .bind(&secret)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(secret)
    }

    /// Confirms enrolment with a code from the app; returns recovery codes (shown once).
    pub async fn mfa_enable(&self, me: &Principal, ip: &str, code: &str) -> IdResult<Vec<String>> {
        let secret = self.mfa_begin(me).await?;
        let bytes = totp::base32_decode(&secret).ok_or(IdentityError::WrongCode)?;
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let actor = Actor::User { principal: me, ip };
        let Some(step) = totp::verify(&bytes, code, now, None) else {
            audit::record(
                self.0,
                &actor.entry("mfa.enable", &me.user.username, "failure", &me.user.home()),
            )
            .await?;
            return Err(IdentityError::WrongCode);
        };
        let codes = totp::recovery_codes(10);
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE user_mfa SET enabled_at = $2, last_step = $3 WHERE user_id = $1",
            ))
            .bind(me.user.id)
            .bind(Utc::now())
            .bind(i64::try_from(step).unwrap_or(i64::MAX))
            .execute(&mut *ex)
            .await?;
            sqlx::query(sql("DELETE FROM mfa_recovery_code WHERE user_id = $1"))
                .bind(me.user.id)
                .execute(ex)
                .await?
                .rows_affected()
        });
        for c in &codes {
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "INSERT INTO mfa_recovery_code (id, user_id, code_hash) VALUES ($1, $2, $3)",
                ))
                .bind(Uuid::now_v7())
                .bind(me.user.id)
                .bind(password::token_hash(c))
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        audit::append(
            &mut tx,
            &actor.entry("mfa.enable", &me.user.username, "success", &me.user.home()),
        )
        .await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// The second step of a sign-in: a code from the app, or a recovery code (used up). Under
    /// the same throttle as passwords. On success the session becomes usable.
    pub async fn mfa_complete(&self, me: &Principal, ip: &str, code: &str) -> crate::Result<Login> {
        let Some(session_id) = me.session_id.filter(|_| me.mfa_pending) else {
            return Ok(Login::Invalid);
        };
        let name = &me.user.username;
        let ip_key = santong_domain::identity::throttle_address(ip);
        let keys = [
            format!("m:{name}"),
            format!("mp:{name}|{ip_key}"),
            format!("i:{ip_key}"),
        ];
        let tp = throttle_policy(self.0).await?;
        let now = Utc::now();
        if let Some(wait) = self.reserve_attempt(&keys, &tp, now).await? {
            return Ok(Login::Locked { retry_after: wait });
        }
        let actor = Actor::User { principal: me, ip };
        let row: Option<(String, Option<i64>)> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT secret, last_step FROM user_mfa WHERE user_id = $1 \
                AND enabled_at IS NOT NULL",
            ))
            .bind(me.user.id)
            .fetch_optional(ex)
            .await?
        });
        let Some((secret, last)) = row else {
            return Ok(Login::Invalid);
        };
        let bytes = totp::base32_decode(&secret).unwrap_or_default();
        let unix = u64::try_from(now.timestamp()).unwrap_or(0);
        let last = last.and_then(|l| u64::try_from(l).ok());
        let mut tx = self.0.begin().await?;
        let accepted = match totp::verify(&bytes, code, unix, last) {
            // Record the step only if no concurrent attempt already used it or a later one.
            Some(step) => {
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                db_query!(&mut tx, tx, |sql, ex| {
                    sqlx::query(sql(
                        "UPDATE user_mfa SET last_step = $2 WHERE user_id = $1 \
                        AND (last_step IS NULL OR last_step < $2)",
                    ))
                    .bind(me.user.id)
                    .bind(step)
                    .execute(ex)
                    .await?
                    .rows_affected()
                }) == 1
            }
            None => {
                db_query!(&mut tx, tx, |sql, ex| {
                    sqlx::query(sql(
                        "UPDATE mfa_recovery_code SET used_at = $3 WHERE user_id = $1 \
                        AND code_hash = $2 AND used_at IS NULL",
                    ))
                    .bind(me.user.id)
                    .bind(password::token_hash(&totp::normalize_recovery(code)))
                    .bind(now)
                    .execute(ex)
                    .await?
                    .rows_affected()
                }) == 1
            }
        };
        if !accepted {
            audit::append(
                &mut tx,
                &actor.entry("login.mfa", name, "failure", &me.user.home()),
            )
            .await?;
            tx.commit().await?;
            return Ok(Login::Invalid);
        }
        for k in &keys[..2] {
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql("DELETE FROM login_throttle WHERE key = $1"))
                    .bind(k)
                    .execute(ex)
                    .await?
                    .rows_affected()
            });
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE user_session SET mfa_pending = $2 WHERE id = $1",
            ))
            .bind(session_id)
            .bind(false)
            .execute(ex)
            .await?
            .rows_affected()
        });
        audit::append(
            &mut tx,
            &actor.entry("login.mfa", name, "success", &me.user.home()),
        )
        .await?;
        tx.commit().await?;
        let principal = Principal {
            mfa_pending: false,
            ..me.clone()
        };
        Ok(Login::Ok {
            principal: Box::new(principal),
            token: String::new(),
            must_change: me.user.must_change_password,
            mfa_pending: false,
            device: None,
        })
    }

    /// Removes an account's second factor (lost phone): the security admin in scope, or the CLI.
    /// The user enrols again at next sign-in if the factor is required.
    pub async fn mfa_reset(&self, actor: Actor<'_>, user_id: Uuid) -> IdResult<()> {
        let target = self
            .administered(actor, Permission::GrantsManage, user_id)
            .await?;
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("DELETE FROM mfa_recovery_code WHERE user_id = $1"))
                .bind(target.id)
                .execute(&mut *ex)
                .await?;
            sqlx::query(sql("DELETE FROM user_mfa WHERE user_id = $1"))
                .bind(target.id)
                .execute(ex)
                .await?
                .rows_affected()
        });
        revoke_sessions(&mut tx, target.id, None).await?;
        audit::append(
            &mut tx,
            &actor.entry("mfa.reset", &target.username, "success", &target.home()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks the locks and counts this attempt. `Some(seconds)` when it must wait.
    ///
    /// An address over its failure limit is slowed down (each attempt waits a few seconds), never
    /// blocked: a block would let one pupil spraying made-up names lock out a whole school behind
    /// one NAT address, right passwords included.
    async fn reserve_attempt(
        &self,
        keys: &[String; 3],
        tp: &ThrottlePolicy,
        now: DateTime<Utc>,
    ) -> crate::Result<Option<u64>> {
        let mut tx = self.0.begin().await?;
        let mut wait: Option<u64> = None;
        let mut slow = false;
        let mut counts = [0i32; 2];
        for (i, key) in keys.iter().enumerate() {
            if i < 2 {
                db_query!(&mut tx, tx, |sql, ex| {
                    sqlx::query(sql(
                        "INSERT INTO login_throttle (key, failures, first_failure_at) \
                        VALUES ($1, 0, $2) ON CONFLICT (key) DO NOTHING",
                    ))
                    .bind(key)
                    .bind(now)
                    .execute(ex)
                    .await?
                    .rows_affected()
                });
            }
            let row: Option<(i32, Option<DateTime<Utc>>)> = match &mut tx {
                Tx::Sqlite(t) => {
                    sqlx::query_as(
                        "SELECT failures, locked_until FROM login_throttle WHERE key = ?1",
                    )
                    .bind(key)
                    .fetch_optional(&mut **t)
                    .await?
                }
                Tx::Postgres(t) => sqlx::query_as(
                    "SELECT failures, locked_until FROM login_throttle WHERE key = $1 FOR UPDATE",
                )
                .bind(key)
                .fetch_optional(&mut **t)
                .await?,
            };
            let (failures, locked) = row.unwrap_or((0, None));
            if let Some(until) = locked.filter(|u| *u > now) {
                if i == 2 {
                    slow = true;
                    continue;
                }
                let secs = u64::try_from((until - now).num_seconds())
                    .unwrap_or(0)
                    .max(1);
                wait = Some(wait.map_or(secs, |w| w.max(secs)));
            }
            if i < 2 {
                counts[i] = failures;
            }
        }
        if wait.is_some() {
            return Ok(wait);
        }
        // Count this attempt now, and lock for the next one if it would exceed the free tries.
        for (i, key) in keys[..2].iter().enumerate() {
            let n = u32::try_from(counts[i]).unwrap_or(0) + 1;
            let (free, cap) = if i == 0 {
                (tp.account_free_failures, tp.account_max_lock_secs)
            } else {
                (tp.pair_free_failures, tp.pair_max_lock_secs)
            };
            let lock = escalating_lock(n, free, std::time::Duration::from_secs(cap))
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default());
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE login_throttle SET failures = $2, locked_until = $3 WHERE key = $1",
                ))
                .bind(key)
                .bind(i32::try_from(n).unwrap_or(i32::MAX))
                .bind(lock)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        tx.commit().await?;
        if slow {
            tokio::time::sleep(std::time::Duration::from_secs(tp.ip_slow_secs)).await;
        }
        Ok(None)
    }

    // ----- sessions ------------------------------------------------------------------------

    /// The principal of a live session token, refreshing its idle timer at most once a minute.
    pub async fn session(&self, token: &str) -> crate::Result<Option<Principal>> {
        #[derive(sqlx::FromRow)]
        struct S {
            id: Uuid,
            user_id: Uuid,
            csrf_token: String,
            last_seen_at: DateTime<Utc>,
            expires_at: DateTime<Utc>,
            idle_secs: i32,
            mfa_pending: bool,
            created_at: DateTime<Utc>,
        }
        let row: Option<S> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, S>(sql(
                "SELECT id, user_id, csrf_token, last_seen_at, expires_at, \
                idle_secs, mfa_pending, created_at FROM user_session WHERE token_hash = $1 AND revoked_at IS NULL",
            ))
            .bind(password::token_hash(token))
            .fetch_optional(ex)
            .await?
        });
        let Some(s) = row else { return Ok(None) };
        let now = Utc::now();
        if s.expires_at <= now
            || s.last_seen_at + chrono::Duration::seconds(i64::from(s.idle_secs)) <= now
        {
            return Ok(None);
        }
        let Some(user) = self
            .user_by_id(s.user_id)
            .await?
            .filter(|u| u.disabled_at.is_none())
        else {
            return Ok(None);
        };
        if now - s.last_seen_at > chrono::Duration::seconds(60) {
            db_query!(self.0, write, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE user_session SET last_seen_at = $2 WHERE id = $1",
                ))
                .bind(s.id)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        let p = self
            .principal_of(user, Some((s.id, s.csrf_token, s.mfa_pending)))
            .await?;
        // Lifetimes were fixed at sign-in; a privileged role granted since then shortens them.
        if p.privileged() {
            let sp = session_policy(self.0).await?;
            let idle = chrono::Duration::seconds(
                i64::try_from(sp.idle_secs_privileged).unwrap_or(i64::MAX / 2),
            );
            let max = chrono::Duration::seconds(
                i64::try_from(sp.absolute_secs_privileged).unwrap_or(i64::MAX / 2),
            );
            if now - s.last_seen_at > idle || now - s.created_at > max {
                return Ok(None);
            }
        }
        Ok(Some(p))
    }

    /// Sets one's own e-mail address and mobile number (empty clears); released to applications
    /// only under the `email` / `phone` scopes. The values stay out of the audit detail.
    pub async fn set_contact(
        &self,
        me: &Principal,
        ip: &str,
        email: &str,
        phone: &str,
    ) -> IdResult<()> {
        use santong_domain::identity::{parse_email, parse_mobile};
        let email = match email.trim() {
            "" => None,
            e => Some(parse_email(e).ok_or(IdentityError::BadField("email"))?),
        };
        let phone = match phone.trim() {
            "" => None,
            p => Some(parse_mobile(p).ok_or(IdentityError::BadField("phone"))?),
        };
        let mut tx = self.0.begin().await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE app_user SET email = $2, phone = $3 WHERE id = $1",
            ))
            .bind(me.user.id)
            .bind(&email)
            .bind(&phone)
            .execute(ex)
            .await?
            .rows_affected()
        });
        audit::append(
            &mut tx,
            &Actor::User { principal: me, ip }.entry(
                "user.contact",
                &me.user.username,
                "success",
                &me.user.home(),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One's own e-mail address and mobile number.
    pub async fn contact(&self, user_id: Uuid) -> crate::Result<(Option<String>, Option<String>)> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql("SELECT email, phone FROM app_user WHERE id = $1"))
                .bind(user_id)
                .fetch_one(ex)
                .await?
        }))
    }

    /// When a session began: the `auth_time` of tokens issued in it.
    pub async fn session_started(&self, id: Uuid) -> crate::Result<Option<DateTime<Utc>>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_scalar(sql("SELECT created_at FROM user_session WHERE id = $1"))
                .bind(id)
                .fetch_optional(ex)
                .await?
        }))
    }

    /// The user's live sessions, newest first.
    pub async fn sessions_of(&self, user_id: Uuid) -> crate::Result<Vec<SessionRow>> {
        let rows: Vec<SessionRow> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, SessionRow>(sql(
                "SELECT id, created_at, last_seen_at, expires_at, \
                idle_secs, ip, user_agent FROM user_session WHERE user_id = $1 \
                AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC",
            ))
            .bind(user_id)
            .bind(Utc::now())
            .fetch_all(ex)
            .await?
        });
        let now = Utc::now();
        Ok(rows
            .into_iter()
            .filter(|s| s.last_seen_at + chrono::Duration::seconds(i64::from(s.idle_secs)) > now)
            .collect())
    }

    /// Ends one of the user's own sessions (sign-out, or "my sessions" → revoke).
    pub async fn end_session(
        &self,
        me: &Principal,
        ip: &str,
        session_id: Uuid,
    ) -> crate::Result<bool> {
        let mut tx = self.0.begin().await?;
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE user_session SET revoked_at = $3 WHERE id = $1 AND user_id = $2 \
                AND revoked_at IS NULL",
            ))
            .bind(session_id)
            .bind(me.user.id)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 1 {
            crate::oidc::sessions_ended(&mut tx, me.user.id, crate::oidc::Ended::One(session_id))
                .await?;
        }
        let event = if me.session_id == Some(session_id) {
            "logout"
        } else {
            "session.revoke"
        };
        audit::append(
            &mut tx,
            &Actor::User { principal: me, ip }.entry(
                event,
                &me.user.username,
                "success",
                &me.user.home(),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }
}

/// argon2 costs tens of milliseconds of CPU and ~19 MiB: run it on the blocking pool, at most one
/// per core at a time, so a sign-in rush neither stalls the async workers nor balloons memory.
async fn with_hashing<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let sem = PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    });
    let _permit = sem.acquire().await.ok();
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

pub(crate) async fn verify_password(pw: &str, hash: &str) -> bool {
    let (pw, hash) = (pw.to_owned(), hash.to_owned());
    with_hashing(move || password::verify(&pw, &hash)).await
}

pub(crate) async fn hash_password(pw: &str) -> String {
    let pw = pw.to_owned();
    with_hashing(move || password::hash(&pw)).await
}

/// Escapes LIKE wildcards (`\` is the escape character).
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads an account list (CSV, UTF-8, header row; comma or tab separated as pasted from Excel).
/// Columns by name, Chinese or English: 用户名/username, 姓名/name, 角色/role, 行政区划代码/region,
/// 学校标识码/school, 初始密码/password. Returns each data row with its line number, or every
/// problem found.
pub fn parse_user_csv(bytes: &[u8]) -> Result<Vec<(usize, CsvUser)>, RowErrors> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes))
        .map_err(|_| vec![(1, IdentityError::BadField("encoding"))])?;
    let delimiter = if text.lines().next().is_some_and(|h| h.contains('\t')) {
        b'\t'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .map_err(|_| vec![(1, IdentityError::BadField("header"))])?
        .clone();
    let col = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.trim().to_lowercase().as_str()))
    };
    let (Some(c_user), c_name, c_role, c_region, c_school, c_pw) = (
        col(&["用户名", "username"]),
        col(&["姓名", "name", "display_name"]),
        col(&["角色", "role"]),
        col(&["行政区划代码", "region"]),
        col(&["学校标识码", "school"]),
        col(&["初始密码", "password"]),
    ) else {
        return Err(vec![(1, IdentityError::BadField("username"))]);
    };
    let mut out = vec![];
    let mut errors = vec![];
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let Ok(rec) = rec else {
            errors.push((line, IdentityError::BadField("row")));
            continue;
        };
        let get = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .map(str::trim)
                .unwrap_or("")
                .to_owned()
        };
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let role = match get(c_role).as_str() {
            "" => None,
            r => {
                match Role::parse(r).or_else(|| Role::ALL.into_iter().find(|x| role_zh(*x) == r)) {
                    Some(r) => Some(r),
                    None => {
                        errors.push((line, IdentityError::BadField("role")));
                        continue;
                    }
                }
            }
        };
        out.push((
            line,
            CsvUser {
                username: get(Some(c_user)),
                name: get(c_name),
                role,
                region: get(c_region),
                school: get(c_school),
                password: Some(get(c_pw)).filter(|p| !p.is_empty()),
            },
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The Chinese role names a spreadsheet may use.
fn role_zh(r: Role) -> &'static str {
    match r {
        Role::SystemAdmin => "系统管理员",
        Role::SecurityAdmin => "安全管理员",
        Role::AuditAdmin => "审计管理员",
        Role::Official => "教育行政人员",
        Role::SchoolAdmin => "学校管理员",
        Role::Teacher => "教师",
        Role::Student => "学生",
        Role::Parent => "家长",
        Role::Provider => "资源提供方",
        Role::Reviewer => "评审专家",
    }
}

/// Refused rows: line number and why.
pub type RowErrors = Vec<(usize, IdentityError)>;

/// One row of an account list, before its node is resolved.
#[derive(Debug, Clone)]
pub struct CsvUser {
    pub username: String,
    pub name: String,
    pub role: Option<Role>,
    pub region: String,
    pub school: String,
    pub password: Option<String>,
}

impl Identity<'_> {
    /// Imports an account list all-or-nothing (see [`parse_user_csv`] and
    /// [`Identity::create_users`]). Admin duties cannot be imported.
    pub async fn import_users(
        &self,
        actor: Actor<'_>,
        bytes: &[u8],
    ) -> Result<Vec<(String, Option<String>)>, RowErrors> {
        let rows = parse_user_csv(bytes)?;
        let mut errors = vec![];
        let mut users = vec![];
        for (line, r) in rows {
            if r.role.is_some_and(Role::is_admin_duty) {
                errors.push((line, IdentityError::SeparationOfDuties));
                continue;
            }
            match resolve_node(self.0, &r.region, &r.school).await {
                Ok(home) => users.push((
                    line,
                    NewUser {
                        display_name: if r.name.is_empty() {
                            r.username.clone()
                        } else {
                            r.name
                        },
                        username: r.username,
                        password: r.password,
                        home,
                        system_role: None,
                        grant: r.role.map(|role| (role, home)),
                    },
                )),
                Err(e) => errors.push((line, e)),
            }
        }
        let (prepared, mut more) = self.prepare_users(actor, users).await;
        errors.append(&mut more);
        if !errors.is_empty() {
            errors.sort_by_key(|(line, _)| *line);
            return Err(errors);
        }
        self.write_users(actor, prepared).await
    }
}

/// A region code (current), optionally with a school code in that county.
pub async fn resolve_node(db: &Db, region: &str, school: &str) -> IdResult<Node> {
    let (region, school) = (region.trim(), school.trim());
    if region.is_empty() || region == "000000" {
        return if school.is_empty() {
            Ok(Node::Nation)
        } else {
            Err(IdentityError::BadField("region"))
        };
    }
    let code = RegionCode::parse(region).map_err(|_| IdentityError::BadField("region"))?;
    if crate::regions::Regions(db).get(code).await?.is_none() {
        return Err(IdentityError::BadField("region"));
    }
    if school.is_empty() {
        return Ok(Node::Region(code));
    }
    let school = SchoolCode::parse(school).ok_or(IdentityError::BadField("school"))?;
    if code.is_province_shaped() || code.is_prefecture_shaped() {
        return Err(IdentityError::BadField("region"));
    }
    Ok(Node::School {
        code: school,
        county: code,
    })
}

/// A checked account, ready to insert.
struct Prepared {
    id: Uuid,
    username: String,
    display_name: String,
    hash: String,
    home: Node,
    system_role: Option<Role>,
    grant: Option<(Role, Node)>,
    generated: Option<String>,
}

async fn insert_prepared(tx: &mut Tx, actor: Actor<'_>, p: &Prepared) -> IdResult<()> {
    let now = Utc::now();
    let (region, school) = home_columns(&p.home);
    let inserted = db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO app_user (id, username, display_name, password_hash, \
            must_change_password, system_role, created_at, home_region, home_school, \
            password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
            ON CONFLICT (username) DO NOTHING",
        ))
        .bind(p.id)
        .bind(&p.username)
        .bind(&p.display_name)
        .bind(&p.hash)
        .bind(true)
        .bind(p.system_role.map(Role::as_str))
        .bind(now)
        .bind(region)
        .bind(school)
        .bind(now)
        .execute(ex)
        .await?
        .rows_affected()
    });
    if inserted == 0 {
        return Err(IdentityError::UsernameTaken);
    }
    record_password(tx, p.id, &p.hash).await?;
    let mut e = actor.entry("user.create", &p.username, "success", &p.home);
    e.detail = p
        .system_role
        .map(|r| format!("duty {r}"))
        .unwrap_or_default();
    audit::append(tx, &e).await?;
    if let Some((role, node)) = p.grant {
        insert_grant(tx, p.id, role, &node, actor.id()).await?;
        audit::append(
            tx,
            &AuditEntry {
                detail: role.to_string(),
                ..actor.entry("grant.add", &p.username, "success", &node)
            },
        )
        .await?;
    }
    Ok(())
}

/// An API token as listed under "my account".
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A session as listed under "my sessions".
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub idle_secs: i32,
    pub ip: String,
    pub user_agent: String,
}

fn home_columns(node: &Node) -> (Option<String>, Option<String>) {
    match node {
        Node::Nation => (None, None),
        Node::Region(r) => (Some(r.to_string()), None),
        Node::School { code, county } => (Some(county.to_string()), Some(code.to_string())),
    }
}

async fn insert_grant(
    tx: &mut Tx,
    user_id: Uuid,
    role: Role,
    node: &Node,
    by: Option<Uuid>,
) -> crate::Result<()> {
    let (region, school) = home_columns(node);
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO role_grant (id, user_id, role, node_code, node_region, \
            node_school, granted_by, granted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
            ON CONFLICT (user_id, role, node_code) DO NOTHING",
        ))
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(role.as_str())
        .bind(node.code())
        .bind(region)
        .bind(school)
        .bind(by)
        .bind(Utc::now())
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

async fn record_password(tx: &mut Tx, user_id: Uuid, hash: &str) -> crate::Result<()> {
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO password_history (id, user_id, password_hash, created_at) \
            VALUES ($1, $2, $3, $4)",
        ))
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(hash)
        .bind(Utc::now())
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

async fn set_password(
    tx: &mut Tx,
    user_id: Uuid,
    hash: &str,
    must_change: bool,
) -> crate::Result<()> {
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE app_user SET password_hash = $2, must_change_password = $3, \
            password_changed_at = $4 WHERE id = $1",
        ))
        .bind(user_id)
        .bind(hash)
        .bind(must_change)
        .bind(Utc::now())
        .execute(ex)
        .await?
        .rows_affected()
    });
    record_password(tx, user_id, hash).await
}

async fn revoke_sessions(tx: &mut Tx, user_id: Uuid, except: Option<Uuid>) -> crate::Result<()> {
    crate::oidc::sessions_ended(tx, user_id, crate::oidc::Ended::AllBut(except)).await?;
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE user_session SET revoked_at = $2 WHERE user_id = $1 \
            AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)",
        ))
        .bind(user_id)
        .bind(Utc::now())
        .bind(except)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// When each (account, address) last had a `login.locked` event, and how many attempts since.
pub(crate) type RecentLocks =
    std::collections::HashMap<(String, String), (std::time::Instant, u64)>;

/// At most one `login.locked` event per account and address a minute: a script hammering a
/// locked account must not flood the audit log. Returns `None` to stay quiet, or how many
/// attempts went unrecorded since the last event.
fn locked_event_due(db: &Db, target: &str, ip: &str) -> Option<u64> {
    use std::time::{Duration, Instant};
    const WINDOW: Duration = Duration::from_secs(60);
    let mut seen = db
        .recent_locks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    if seen.len() > 10_000 {
        seen.retain(|_, (t, _)| now.duration_since(*t) < WINDOW);
    }
    match seen.get_mut(&(target.to_owned(), ip.to_owned())) {
        Some((t, n)) if now.duration_since(*t) < WINDOW => {
            *n += 1;
            None
        }
        Some((t, n)) => {
            let quiet = *n;
            *t = now;
            *n = 0;
            Some(quiet)
        }
        None => {
            seen.insert((target.to_owned(), ip.to_owned()), (now, 0));
            Some(0)
        }
    }
}

/// Forgets counters that have been quiet for a day (names nobody has, sprayed by a script, would
/// otherwise pile up forever); runs at most every ten minutes per process.
async fn purge_stale_throttle(db: &Db, now: DateTime<Utc>) -> crate::Result<()> {
    use std::sync::atomic::Ordering;
    let last = db.last_throttle_purge.load(Ordering::Relaxed);
    if now.timestamp() - last < 600
        || db
            .last_throttle_purge
            .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return Ok(());
    }
    let day_ago = now - chrono::Duration::days(1);
    db_query!(db, write, |sql, ex| {
        sqlx::query(sql(
            "DELETE FROM login_throttle WHERE first_failure_at < $1 \
            AND (locked_until IS NULL OR locked_until < $1)",
        ))
        .bind(day_ago)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

async fn clear_throttle(tx: &mut Tx, username: &str) -> crate::Result<()> {
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "DELETE FROM login_throttle WHERE key = $1 OR key LIKE $2 ESCAPE '\\'",
        ))
        .bind(format!("a:{username}"))
        .bind(format!("p:{}|%", like_escape(username)))
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Counts a failure for an address; a window that has passed starts again.
async fn count_ip_failure(
    tx: &mut Tx,
    key: &str,
    tp: &ThrottlePolicy,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    let window_start =
        now - chrono::Duration::seconds(i64::try_from(tp.ip_window_secs).unwrap_or(600));
    let lock_until = now + chrono::Duration::seconds(i64::try_from(tp.ip_lock_secs).unwrap_or(300));
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql("INSERT INTO login_throttle (key, failures, first_failure_at) VALUES ($1, 1, $2) \
            ON CONFLICT (key) DO UPDATE SET \
              failures = CASE WHEN login_throttle.first_failure_at < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
              first_failure_at = CASE WHEN login_throttle.first_failure_at < $3 THEN $2 ELSE login_throttle.first_failure_at END"))
        .bind(key)
        .bind(now)
        .bind(window_start)
        .execute(&mut *ex)
        .await?;
        sqlx::query(sql(
            "UPDATE login_throttle SET locked_until = $2 WHERE key = $1 AND failures >= $3",
        ))
        .bind(key)
        .bind(lock_until)
        .bind(i32::try_from(tp.ip_max_failures).unwrap_or(i32::MAX))
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}
