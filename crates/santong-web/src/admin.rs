//! User administration (scoped: every list and record goes through the caller's scope in
//! storage) and the audit viewer with CSV export.

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{NaiveDate, TimeZone, Utc};
use santong_domain::identity::{Node, Permission, Role};
use santong_domain::paging::{FieldError, FieldErrorKind, parse_page};
use santong_storage::audit::{self, AuditEntry, AuditFilter, Verification};
use santong_storage::identity::{Actor, Identity, IdentityError, NewUser};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{User, check_csrf};
use crate::error::AppError;
use crate::export::csv_field;
use crate::i18n::{Tr, n, s};
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, percent_encode};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/import", get(import_form).post(import_users))
        .route("/admin/users/{id}", get(user_page))
        .route("/admin/users/{id}/grants", post(add_grant))
        .route(
            "/admin/users/{id}/grants/{grant}/revoke",
            post(revoke_grant),
        )
        .route("/admin/users/{id}/reset-password", post(reset_password))
        .route("/admin/users/{id}/unlock", post(unlock))
        .route("/admin/users/{id}/reset-mfa", post(reset_mfa))
        .route("/admin/users/{id}/disable", post(disable))
        .route("/admin/users/{id}/enable", post(enable))
        .route("/admin/audit", get(audit_page))
        .route("/admin/audit/export.csv", get(audit_export))
}

type FormData = Form<HashMap<String, String>>;

/// Passes a successful outcome through; a refusal (no right, out of scope, separation of duties)
/// is recorded in the audit log as `denied` before it becomes the error response.
pub(crate) async fn refused<T>(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    event: &'static str,
    outcome: Result<T, IdentityError>,
) -> Result<T, AppError> {
    match outcome {
        Ok(v) => Ok(v),
        Err(e) => {
            if matches!(
                e,
                IdentityError::Forbidden
                    | IdentityError::NotFound
                    | IdentityError::SeparationOfDuties
                    | IdentityError::SelfGrant
                    | IdentityError::SetupIncomplete
            ) {
                record_refusal(state, ctx, user, event, &ctx.path_and_query, &e.to_string()).await;
            }
            Err(identity_error(e))
        }
    }
}

/// Records a refused action (no right, out of scope) as `denied` in the audit log. A failure to
/// record is logged, not raised: the refusal stands either way.
pub(crate) async fn record_refusal(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    event: &'static str,
    target: &str,
    detail: &str,
) {
    let entry = AuditEntry {
        actor: user.0.user.username.clone(),
        actor_id: Some(user.0.user.id),
        ip: ctx.ip.clone(),
        event,
        target: target.to_owned(),
        result: "denied",
        scope: user.0.user.home().code(),
        detail: detail.to_owned(),
    };
    if let Err(err) = audit::record(&state.db, &entry).await {
        tracing::error!(error = %err, "audit of a refusal failed");
    }
}

/// The signed-in user as the actor of a storage operation.
pub(crate) fn actor<'a>(user: &'a User, ctx: &'a Ctx) -> Actor<'a> {
    Actor::User {
        principal: &user.0,
        ip: &ctx.ip,
    }
}

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(String::as_str).unwrap_or("").trim()
}

/// Maps identity errors to statuses; an out-of-scope target is a 404, like a missing one.
pub fn identity_error(e: IdentityError) -> AppError {
    identity_error_ref(&e)
}

fn identity_error_ref(e: &IdentityError) -> AppError {
    match e {
        IdentityError::Forbidden => {
            AppError::new(StatusCode::FORBIDDEN, "forbidden", "error-forbidden")
        }
        IdentityError::NotFound => AppError::not_found(),
        IdentityError::UsernameTaken => AppError::new(
            StatusCode::CONFLICT,
            "username_taken",
            "error-username-taken",
        ),
        IdentityError::BadUsername => AppError::bad_params(vec![FieldError::new(
            "username",
            FieldErrorKind::InvalidValue,
        )]),
        IdentityError::Password(_) | IdentityError::WrongPassword => AppError::new(
            StatusCode::BAD_REQUEST,
            "password_policy",
            "password-policy-failed",
        ),
        IdentityError::SeparationOfDuties => AppError::new(
            StatusCode::CONFLICT,
            "separation_of_duties",
            "error-separation-of-duties",
        ),
        IdentityError::SelfGrant => {
            AppError::new(StatusCode::FORBIDDEN, "self_grant", "error-self-grant")
        }
        IdentityError::BadField(field) => {
            AppError::bad_params(vec![FieldError::new(*field, FieldErrorKind::InvalidValue)])
        }
        IdentityError::TooManyAttempts(secs) => AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "login-locked",
        )
        .arg("seconds", secs.to_string()),
        IdentityError::WrongCode => {
            AppError::new(StatusCode::BAD_REQUEST, "wrong_code", "mfa-invalid")
        }
        IdentityError::SetupIncomplete => {
            AppError::new(StatusCode::CONFLICT, "setup_incomplete", "setup-banner")
        }
        IdentityError::Storage(e) => {
            tracing::error!(error = %e, "storage error");
            AppError::internal()
        }
    }
}

fn role_label(tr: &Tr, r: &str) -> String {
    tr.t(&format!("role-{r}"))
}

/// Parses the node fields of a form: a region code, and optionally a school code in it.
async fn parse_node(state: &AppState, region: &str, school: &str) -> Result<Node, AppError> {
    santong_storage::identity::resolve_node(&state.db, region, school)
        .await
        .map_err(identity_error)
}

use crate::views::private_page as html;

struct UserRowView {
    id: String,
    username: String,
    display_name: String,
    home: String,
    status: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    q: String,
    rows: Vec<UserRowView>,
    pager: Pager,
    can_create: bool,
    setup: bool,
    duty_choices: Vec<(String, String)>,
    role_choices: Vec<(String, String)>,
    notice: Option<String>,
    secret: Option<String>,
}

async fn users(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    people_view(&user)?;
    render_users(&state, &ctx, &user, &q, None, None).await
}

/// Whose accounts the user may list: everyone in their `users_view` scope, or — a teacher — the
/// students where they may reset passwords.
fn people_view(user: &User) -> Result<(santong_domain::identity::Scope, Option<Role>), AppError> {
    if user.0.has(Permission::UsersView) {
        Ok((user.0.scope(Permission::UsersView), None))
    } else if user.0.has(Permission::StudentPasswordsReset) {
        Ok((
            user.0.scope(Permission::StudentPasswordsReset),
            Some(Role::Student),
        ))
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "error-forbidden",
        ))
    }
}

async fn render_users(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    q: &HashMap<String, String>,
    notice: Option<String>,
    secret: Option<String>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let mut errors = vec![];
    let page = parse_page(
        q.get("page").map(String::as_str),
        q.get("size").map(String::as_str),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let text = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    let (scope, role) = people_view(user)?;
    let id = Identity(&state.db);
    let list = id
        .list_users_holding(&scope, role, Some(&text), page.limit(), page.offset())
        .await?;
    let pages = page.page_count(list.total);
    let href = |p: u32| format!("/admin/users?q={}&page={p}", percent_encode(&text));
    let rows = list
        .items
        .into_iter()
        .map(|u| UserRowView {
            id: u.id.to_string(),
            home: u.home().code(),
            status: if u.disabled_at.is_some() {
                tr.t("user-disabled")
            } else {
                tr.t("user-active")
            },
            username: u.username,
            display_name: u.display_name,
        })
        .collect();
    let setup = !id.setup_complete().await?;
    let is_sys = user.0.has_role(Role::SystemAdmin);
    let duty_choices = if is_sys {
        [Role::SecurityAdmin, Role::AuditAdmin]
            .iter()
            .map(|r| (r.as_str().to_owned(), role_label(&tr, r.as_str())))
            .collect()
    } else {
        vec![]
    };
    let role_choices = Role::ALL
        .iter()
        .filter(|r| user.0.roles().iter().any(|(mine, _)| mine.may_grant(**r)))
        .map(|r| (r.as_str().to_owned(), role_label(&tr, r.as_str())))
        .collect();
    let view = UsersPage {
        c: ctx.chrome(tr.t("users-title")),
        q: text.clone(),
        rows,
        pager: Pager::new(&tr, page.page, pages, list.total, href),
        can_create: user.0.has(Permission::UsersManage),
        setup: setup && is_sys,
        duty_choices,
        role_choices,
        notice,
        secret,
    };
    html(&view)
}

async fn create_user(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::UsersManage)?;
    let tr = ctx.tr();
    let duty = Some(field(&f, "duty"))
        .filter(|d| !d.is_empty())
        .map(|d| {
            Role::parse(d).ok_or_else(|| {
                AppError::bad_params(vec![FieldError::new("duty", FieldErrorKind::InvalidValue)])
            })
        })
        .transpose()?;
    let home = parse_node(&state, field(&f, "region"), field(&f, "school")).await?;
    let grant = match Some(field(&f, "role")).filter(|r| !r.is_empty()) {
        Some(r) => Some((
            Role::parse(r).ok_or_else(|| {
                AppError::bad_params(vec![FieldError::new("role", FieldErrorKind::InvalidValue)])
            })?,
            home,
        )),
        None => None,
    };
    let new = NewUser {
        username: field(&f, "username").to_owned(),
        display_name: Some(field(&f, "display_name"))
            .filter(|d| !d.is_empty())
            .unwrap_or(field(&f, "username"))
            .to_owned(),
        password: None,
        home: if duty.is_some() { Node::Nation } else { home },
        system_role: duty,
        grant: if duty.is_some() { None } else { grant },
    };
    let username = new.username.trim().to_ascii_lowercase();
    let (_, pw) = refused(
        &state,
        &ctx,
        &user,
        "user.create",
        Identity(&state.db)
            .create_user(actor(&user, &ctx), new)
            .await,
    )
    .await?;
    let notice = tr.f("users-created", &[("username", s(username.as_str()))]);
    render_users(&state, &ctx, &user, &HashMap::new(), Some(notice), pw)
        .await
        .map(|mut r| {
            *r.status_mut() = StatusCode::CREATED;
            r
        })
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    c: Chrome,
    id: String,
    username: String,
    display_name: String,
    home: String,
    duty: Option<String>,
    disabled: bool,
    locked: bool,
    must_change: bool,
    grants: Vec<(String, String, String)>,
    role_choices: Vec<(String, String)>,
    can_manage: bool,
    can_reset: bool,
    can_unlock: bool,
    mfa: bool,
    can_reset_mfa: bool,
    notice: Option<String>,
    secret: Option<String>,
}

async fn user_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    render_user(&state, &ctx, &user, id, None, None).await
}

async fn render_user(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    notice: Option<String>,
    secret: Option<String>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let identity = Identity(&state.db);
    // Visible to anyone who may view users there; a teacher sees the students whose passwords
    // they may reset, and no one else.
    let target = match identity
        .get_user(&user.0.scope(Permission::UsersView), id)
        .await?
    {
        Some(u) => Some(u),
        None => {
            identity
                .get_user_holding(
                    &user.0.scope(Permission::StudentPasswordsReset),
                    Some(Role::Student),
                    id,
                )
                .await?
        }
    };
    let target = target.ok_or_else(AppError::not_found)?;
    let grants = identity
        .grants_of(target.id)
        .await?
        .into_iter()
        .map(|g| (g.id.to_string(), role_label(&tr, &g.role), g.node_code))
        .collect();
    let role_choices = Role::ALL
        .iter()
        .filter(|r| user.0.roles().iter().any(|(mine, _)| mine.may_grant(**r)))
        .map(|r| (r.as_str().to_owned(), role_label(&tr, r.as_str())))
        .collect();
    let view = UserPage {
        c: ctx.chrome(target.display_name.clone()),
        id: target.id.to_string(),
        locked: identity.is_locked(&target.username).await?,
        username: target.username.clone(),
        display_name: target.display_name.clone(),
        home: target.home().code(),
        duty: target.system_role.as_deref().map(|r| role_label(&tr, r)),
        disabled: target.disabled_at.is_some(),
        must_change: target.must_change_password,
        grants,
        role_choices,
        can_manage: user
            .0
            .scope(Permission::UsersManage)
            .contains(&target.home()),
        can_reset: user
            .0
            .scope(Permission::UsersManage)
            .contains(&target.home())
            || user
                .0
                .scope(Permission::StudentPasswordsReset)
                .contains(&target.home()),
        can_unlock: user
            .0
            .scope(Permission::UsersManage)
            .contains(&target.home())
            || user
                .0
                .scope(Permission::GrantsManage)
                .contains(&target.home()),
        mfa: identity.mfa_enabled(target.id).await?,
        can_reset_mfa: user
            .0
            .scope(Permission::GrantsManage)
            .contains(&target.home()),
        notice,
        secret,
    };
    html(&view)
}

async fn add_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let role = Role::parse(field(&f, "role")).ok_or_else(|| {
        AppError::bad_params(vec![FieldError::new("role", FieldErrorKind::InvalidValue)])
    })?;
    let node = parse_node(&state, field(&f, "region"), field(&f, "school")).await?;
    refused(
        &state,
        &ctx,
        &user,
        "grant.add",
        Identity(&state.db)
            .grant(actor(&user, &ctx), id, role, node)
            .await,
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")).into_response())
}

async fn revoke_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path((id, grant)): Path<(Uuid, Uuid)>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    refused(
        &state,
        &ctx,
        &user,
        "grant.revoke",
        Identity(&state.db)
            .revoke_grant(actor(&user, &ctx), id, grant)
            .await,
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")).into_response())
}

async fn reset_password(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let pw = refused(
        &state,
        &ctx,
        &user,
        "password.reset",
        Identity(&state.db)
            .reset_password(actor(&user, &ctx), id)
            .await,
    )
    .await?;
    render_user(
        &state,
        &ctx,
        &user,
        id,
        Some(ctx.tr().t("users-password-reset")),
        Some(pw),
    )
    .await
}

async fn unlock(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    refused(
        &state,
        &ctx,
        &user,
        "user.unlock",
        Identity(&state.db).unlock(actor(&user, &ctx), id).await,
    )
    .await?;
    render_user(
        &state,
        &ctx,
        &user,
        id,
        Some(ctx.tr().t("users-unlocked")),
        None,
    )
    .await
}

async fn reset_mfa(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    refused(
        &state,
        &ctx,
        &user,
        "mfa.reset",
        Identity(&state.db).mfa_reset(actor(&user, &ctx), id).await,
    )
    .await?;
    render_user(
        &state,
        &ctx,
        &user,
        id,
        Some(ctx.tr().t("users-mfa-reset")),
        None,
    )
    .await
}

async fn disable(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    set_disabled(state, ctx, user, id, f, true).await
}

async fn enable(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    set_disabled(state, ctx, user, id, f, false).await
}

async fn set_disabled(
    state: AppState,
    ctx: Ctx,
    user: User,
    id: Uuid,
    f: HashMap<String, String>,
    disabled: bool,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    refused(
        &state,
        &ctx,
        &user,
        "user.disable",
        Identity(&state.db)
            .set_disabled(actor(&user, &ctx), id, disabled)
            .await,
    )
    .await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")).into_response())
}

// ----- audit ---------------------------------------------------------------------------------

struct AuditRowView {
    seq: i64,
    at: String,
    actor: String,
    ip: String,
    event: String,
    target: String,
    result: String,
    scope: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    filters: Vec<(&'static str, String, String)>,
    export: String,
    rows: Vec<AuditRowView>,
    pager: Pager,
    verification: String,
    intact: bool,
}

fn parse_audit_filter(q: &HashMap<String, String>) -> Result<AuditFilter, AppError> {
    let text = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.len() <= 100)
    };
    let date = |k: &str| -> Result<Option<chrono::DateTime<Utc>>, AppError> {
        match text(k) {
            None => Ok(None),
            Some(v) => NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|dt| Some(Utc.from_utc_datetime(&dt)))
                .ok_or_else(|| {
                    AppError::bad_params(vec![FieldError::new(k, FieldErrorKind::InvalidValue)])
                }),
        }
    };
    let to = date("to")?.map(|d| d + chrono::Duration::days(1));
    Ok(AuditFilter {
        event: text("event"),
        actor: text("actor"),
        target: text("target"),
        result: text("result"),
        from: date("from")?,
        to,
    })
}

fn filter_query(q: &HashMap<String, String>) -> String {
    ["event", "actor", "target", "result", "from", "to"]
        .iter()
        .filter_map(|k| {
            q.get(*k)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", percent_encode(v)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn audit_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    user.require(Permission::AuditRead)?;
    let tr = ctx.tr();
    let filter = parse_audit_filter(&q)?;
    let mut errors = vec![];
    let page = parse_page(
        q.get("page").map(String::as_str),
        q.get("size").map(String::as_str),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let list = audit::search(&state.db, &filter, page.limit(), page.offset()).await?;
    let pages = page.page_count(list.total);
    let fq = filter_query(&q);
    let href = |p: u32| format!("/admin/audit?{fq}&page={p}");
    // Verifying reads the whole chain: only when asked.
    let (verification, intact) = if !q.contains_key("verify") {
        (String::new(), true)
    } else {
        match audit::verify(&state.db).await? {
            Verification::Intact { events, .. } => {
                (tr.f("audit-intact", &[("events", n(events as f64))]), true)
            }
            Verification::Broken { seq, reason } => (
                tr.f(
                    "audit-broken",
                    &[("seq", n(seq as f64)), ("reason", s(reason))],
                ),
                false,
            ),
        }
    };
    let rows = list
        .items
        .into_iter()
        .map(|r| AuditRowView {
            seq: r.seq,
            at: r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            actor: r.actor,
            ip: r.ip,
            event: r.event,
            target: r.target,
            result: r.result,
            scope: r.scope,
            detail: r.detail,
        })
        .collect();
    let filters = ["event", "actor", "target", "result", "from", "to"]
        .into_iter()
        .map(|k| {
            (
                k,
                tr.t(&format!("audit-col-{k}")),
                q.get(k).cloned().unwrap_or_default(),
            )
        })
        .collect();
    html(&AuditPage {
        c: ctx.chrome(tr.t("audit-title")),
        filters,
        export: format!("/admin/audit/export.csv?{fq}"),
        rows,
        pager: Pager::new(&tr, page.page, pages, list.total, href),
        verification,
        intact,
    })
}

/// Streams the filtered log as CSV (UTF-8 with BOM for Excel) in batches; the export is audited.
async fn audit_export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    user.require(Permission::AuditRead)?;
    let filter = parse_audit_filter(&q)?;
    audit::record(
        &state.db,
        &AuditEntry {
            actor: user.0.user.username.clone(),
            actor_id: Some(user.0.user.id),
            ip: ctx.ip.clone(),
            event: "audit.export",
            target: filter_query(&q),
            result: "success",
            scope: "000000".into(),
            detail: String::new(),
        },
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let db = state.db.clone();
    tokio::spawn(async move {
        let mut out =
            String::from("\u{feff}seq,time,actor,ip,event,target,result,scope,detail,hash\r\n");
        let mut after = 0i64;
        loop {
            let rows = match audit::batch_after(&db, &filter, after, 1000).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let fields = [
                    r.seq.to_string(),
                    r.at.to_rfc3339(),
                    r.actor.clone(),
                    r.ip.clone(),
                    r.event.clone(),
                    r.target.clone(),
                    r.result.clone(),
                    r.scope.clone(),
                    r.detail.clone(),
                    r.hash.clone(),
                ];
                out.push_str(
                    &fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push_str("\r\n");
                after = r.seq;
            }
            if tx.send(Ok(std::mem::take(&mut out))).await.is_err() {
                return;
            }
        }
        if !out.is_empty() {
            let _ = tx.send(Ok(out)).await;
        }
    });
    Ok(crate::export::csv_response("audit.csv", rx))
}

#[derive(Template)]
#[template(path = "users_import.html")]
struct ImportPage {
    c: Chrome,
    errors: Vec<(usize, String)>,
}

async fn import_form(ctx: Ctx, user: User) -> Result<Response, AppError> {
    user.require(Permission::UsersManage)?;
    html(&ImportPage {
        c: ctx.chrome(ctx.tr().t("import-title")),
        errors: vec![],
    })
}

/// The message for one refused row.
fn row_message(tr: &Tr, e: &IdentityError) -> String {
    match e {
        IdentityError::BadField(f) => tr.f("import-bad-field", &[("field", s(*f))]),
        IdentityError::Password(p) => p
            .iter()
            .map(|p| tr.t(p.key()))
            .collect::<Vec<_>>()
            .join(" "),
        other => tr.t(identity_error_ref(other).key),
    }
}

/// Creates every account of an uploaded list, or none: refused rows are listed with their line
/// numbers. On success the answer is a CSV of user names and initial passwords, to print and hand
/// out (it is never stored).
async fn import_users(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    mut form: axum::extract::Multipart,
) -> Result<Response, AppError> {
    user.require(Permission::UsersManage)?;
    let tr = ctx.tr();
    let (mut csrf, mut file) = (String::new(), Vec::new());
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|_| AppError::from_status(StatusCode::BAD_REQUEST))?
    {
        match field.name() {
            Some("_csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("file") => {
                file = field
                    .bytes()
                    .await
                    .map_err(|_| AppError::from_status(StatusCode::PAYLOAD_TOO_LARGE))?
                    .to_vec()
            }
            _ => {}
        }
    }
    check_csrf(&user.0, Some(&csrf))?;
    match Identity(&state.db)
        .import_users(actor(&user, &ctx), &file)
        .await
    {
        Ok(created) => {
            let mut out = String::from("\u{feff}username,initial_password\r\n");
            for (name, pw) in created {
                out.push_str(&format!(
                    "{},{}\r\n",
                    csv_field(&name),
                    csv_field(pw.as_deref().unwrap_or(""))
                ));
            }
            let mut res = out.into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"accounts.csv\""),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(rows) => {
            if let Some((_, IdentityError::Storage(e))) = rows
                .iter()
                .find(|(_, e)| matches!(e, IdentityError::Storage(_)))
            {
                tracing::error!(error = %e, "import failed");
                return Err(AppError::internal());
            }
            let errors = rows
                .iter()
                .map(|(line, e)| (*line, row_message(&tr, e)))
                .collect();
            let mut res = html(&ImportPage {
                c: ctx.chrome(tr.t("import-title")),
                errors,
            })?;
            *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(res)
        }
    }
}
