//! Sign-in, sign-out, change of password and "my account" (sessions with revoke).

use std::collections::HashMap;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use santong_domain::password;
use santong_storage::identity::{Identity, IdentityError, Login};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{self, LOGIN_CSRF_COOKIE, User, check_csrf, same_secret};
use crate::error::AppError;
use crate::i18n::{n, s};
use crate::pages::is_local_path;
use crate::shell::Ctx;
use crate::views::Chrome;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/account", get(account))
        .route("/account/contact", post(save_contact))
        .route(
            "/account/password",
            get(password_form).post(change_password),
        )
        .route("/account/sessions/{id}/revoke", post(revoke_session))
        .route("/login/mfa", get(mfa_prompt).post(mfa_submit))
        .route("/account/mfa", get(mfa_page))
        .route("/account/mfa/enable", post(mfa_enable))
        .route("/account/tokens", get(tokens_page).post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
        .route("/account/apps", get(apps_page))
        .route("/account/apps/{id}/revoke", post(revoke_app))
}

type FormData = Form<HashMap<String, String>>;

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(String::as_str).unwrap_or("")
}

use crate::views::private_page as html;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let next = q
        .get("next")
        .filter(|n| is_local_path(n))
        .cloned()
        .unwrap_or_else(|| "/".into());
    // `reauth`: an application asked for a fresh sign-in (`prompt=login`, `max_age`).
    if ctx.user.is_some() && !q.contains_key("reauth") {
        return Ok(Redirect::to(&next).into_response());
    }
    render_login(&state, &ctx, next, String::new(), None)
}

fn render_login(
    state: &AppState,
    ctx: &Ctx,
    next: String,
    username: String,
    error: Option<String>,
) -> Result<Response, AppError> {
    // Login CSRF: a fresh double-submit token in a cookie and in the form.
    let csrf = password::random_token();
    let page = LoginPage {
        c: ctx.chrome(ctx.tr().t("login-title")),
        csrf: csrf.clone(),
        next,
        username,
        error,
    };
    let next = page.next.clone();
    let mut res = to_client_csp(html(&page)?, &next);
    auth::set_cookie(
        &mut res,
        &state.config,
        LOGIN_CSRF_COOKIE,
        &csrf,
        Some(3600),
    );
    Ok(res)
}

async fn login(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    Form(f): FormData,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let next = Some(field(&f, "next"))
        .filter(|n| is_local_path(n))
        .unwrap_or("/")
        .to_owned();
    let username = field(&f, "username").trim().to_owned();
    let cookie_token =
        auth::read_cookie(&headers, &state.config, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie_token.is_empty() || !same_secret(&cookie_token, field(&f, "_csrf")) {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "error-csrf",
        ));
    }
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let device = auth::read_cookie(&headers, &state.config, auth::DEVICE_COOKIE);
    let outcome = Identity(&state.db)
        .authenticate_from(
            &username,
            field(&f, "password"),
            &ctx.ip,
            ua,
            device.as_deref(),
        )
        .await?;
    match outcome {
        Login::Ok {
            token,
            must_change,
            mfa_pending,
            device,
            ..
        } => {
            let target = if mfa_pending && next == "/" {
                "/login/mfa".to_owned()
            } else if mfa_pending {
                format!("/login/mfa?next={}", crate::views::percent_encode(&next))
            } else if must_change && next == "/" {
                "/account/password".to_owned()
            } else if must_change {
                format!(
                    "/account/password?next={}",
                    crate::views::percent_encode(&next)
                )
            } else {
                next
            };
            let mut res = Redirect::to(&target).into_response();
            // A new token at every sign-in: any session id planted before is worthless.
            auth::set_cookie(
                &mut res,
                &state.config,
                auth::session_cookie_name(&state.config),
                &token,
                None,
            );
            auth::clear_cookie(&mut res, &state.config, LOGIN_CSRF_COOKIE);
            if let Some(d) = device {
                auth::set_cookie(
                    &mut res,
                    &state.config,
                    auth::DEVICE_COOKIE,
                    &d,
                    Some(365 * 24 * 3600),
                );
            }
            // Whoever was signed in on this browser before is signed out.
            if let Some(old) = ctx.user.as_deref()
                && let Some(old_id) = old.session_id
            {
                let _ = Identity(&state.db).end_session(old, &ctx.ip, old_id).await;
            }
            Ok(res)
        }
        Login::Invalid => render_login(&state, &ctx, next, username, Some(tr.t("login-invalid")))
            .map(|mut r| {
                *r.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                r
            }),
        Login::Locked { retry_after } => {
            let msg = tr.f("login-locked", &[("seconds", n(retry_after as f64))]);
            render_login(&state, &ctx, next, username, Some(msg)).map(|mut r| {
                *r.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
                if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                }
                r
            })
        }
    }
}

async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    if let Some(id) = user.0.session_id {
        Identity(&state.db)
            .end_session(&user.0, &ctx.ip, id)
            .await?;
    }
    let mut res = Redirect::to("/").into_response();
    auth::clear_cookie(
        &mut res,
        &state.config,
        auth::session_cookie_name(&state.config),
    );
    Ok(res)
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    c: Chrome,
    forced: bool,
    errors: Vec<String>,
    done: bool,
    next: String,
}

/// `next` when it is a local path; `/` otherwise.
fn local_next(v: Option<&str>) -> String {
    v.filter(|n| is_local_path(n)).unwrap_or("/").to_owned()
}

/// A page in the middle of a single sign-on flow: its form may lead on to the client.
fn to_client_csp(mut res: Response, next: &str) -> Response {
    if next.starts_with("/oidc/") {
        res.headers_mut().insert(
            axum::http::header::CONTENT_SECURITY_POLICY,
            crate::oidc::CSP_TO_CLIENT,
        );
    }
    res
}

fn password_page(
    ctx: &Ctx,
    forced: bool,
    errors: Vec<String>,
    done: bool,
    next: String,
) -> Result<Response, AppError> {
    let res = html(&PasswordPage {
        c: ctx.chrome(ctx.tr().t("password-title")),
        forced,
        errors,
        done,
        next: next.clone(),
    })?;
    Ok(to_client_csp(res, &next))
}

async fn password_form(
    ctx: Ctx,
    user: User,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let next = local_next(q.get("next").map(String::as_str));
    password_page(&ctx, user.0.user.must_change_password, vec![], false, next)
}

async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let tr = ctx.tr();
    let next = local_next(Some(field(&f, "next")));
    let mut errors = vec![];
    if field(&f, "new") != field(&f, "confirm") {
        errors.push(tr.t("password-mismatch"));
    } else {
        match Identity(&state.db)
            .change_password(&user.0, &ctx.ip, field(&f, "old"), field(&f, "new"))
            .await
        {
            // In the middle of a sign-in to another application: carry on there.
            Ok(()) if next.starts_with("/oidc/") => return Ok(Redirect::to(&next).into_response()),
            Ok(()) => return password_page(&ctx, false, vec![], true, next),
            Err(IdentityError::WrongPassword) => errors.push(tr.t("password-wrong-current")),
            Err(IdentityError::TooManyAttempts(secs)) => {
                errors.push(tr.f("login-locked", &[("seconds", n(secs as f64))]))
            }
            Err(IdentityError::Password(problems)) => {
                errors.extend(problems.iter().map(|p| tr.t(p.key())))
            }
            Err(e) => return Err(crate::admin::identity_error(e)),
        }
    }
    password_page(&ctx, user.0.user.must_change_password, errors, false, next).map(|mut r| {
        *r.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        r
    })
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    c: Chrome,
    username: String,
    email: String,
    phone: String,
    notice: Option<String>,
    error: Option<String>,
    roles: Vec<String>,
    sessions: Vec<SessionView>,
}

struct SessionView {
    id: String,
    current: bool,
    created: String,
    last_seen: String,
    ip: String,
    agent: String,
}

async fn account(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
) -> Result<Response, AppError> {
    render_account(&state, &ctx, &user, None, None).await
}

/// Saves one's own e-mail address and mobile number.
async fn save_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let tr = ctx.tr();
    match Identity(&state.db)
        .set_contact(&user.0, &ctx.ip, field(&f, "email"), field(&f, "phone"))
        .await
    {
        Ok(()) => {
            render_account(
                &state,
                &ctx,
                &user,
                Some(tr.t("account-contact-saved")),
                None,
            )
            .await
        }
        Err(IdentityError::BadField(which)) => {
            let msg = tr.t(&format!("account-bad-{which}"));
            let mut res = render_account(&state, &ctx, &user, None, Some(msg)).await?;
            *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            Ok(res)
        }
        Err(e) => Err(crate::admin::identity_error(e)),
    }
}

async fn render_account(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let p = &user.0;
    let roles = p
        .roles()
        .into_iter()
        .map(|(r, node)| {
            tr.f(
                "account-role-at",
                &[
                    ("role", s(tr.t(&format!("role-{}", r.as_str())))),
                    ("node", s(node.code())),
                ],
            )
        })
        .collect();
    let sessions = Identity(&state.db)
        .sessions_of(p.user.id)
        .await?
        .into_iter()
        .map(|x| SessionView {
            current: Some(x.id) == p.session_id,
            id: x.id.to_string(),
            created: x.created_at.format("%Y-%m-%d %H:%M").to_string(),
            last_seen: x.last_seen_at.format("%Y-%m-%d %H:%M").to_string(),
            ip: x.ip,
            agent: x.user_agent.chars().take(60).collect(),
        })
        .collect();
    let (email, phone) = Identity(&state.db).contact(p.user.id).await?;
    html(&AccountPage {
        c: ctx.chrome(tr.t("account-title")),
        username: p.user.username.clone(),
        email: email.unwrap_or_default(),
        phone: phone.unwrap_or_default(),
        notice,
        error,
        roles,
        sessions,
    })
}

async fn revoke_session(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    if !Identity(&state.db)
        .end_session(&user.0, &ctx.ip, id)
        .await?
    {
        return Err(AppError::not_found());
    }
    Ok(Redirect::to("/account").into_response())
}

#[derive(Template)]
#[template(path = "mfa_prompt.html")]
struct MfaPrompt {
    c: Chrome,
    next: String,
    error: Option<String>,
}

/// The second step of a sign-in; `next` carries on where the first step was going.
fn mfa_prompt_page(ctx: &Ctx, next: String, error: Option<String>) -> Result<Response, AppError> {
    let res = html(&MfaPrompt {
        c: ctx.chrome(ctx.tr().t("mfa-prompt-title")),
        next: next.clone(),
        error,
    })?;
    Ok(to_client_csp(res, &next))
}

async fn mfa_prompt(
    ctx: Ctx,
    _user: User,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let next = q
        .get("next")
        .filter(|n| is_local_path(n))
        .cloned()
        .unwrap_or_else(|| "/".into());
    mfa_prompt_page(&ctx, next, None)
}

async fn mfa_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let tr = ctx.tr();
    let outcome = Identity(&state.db)
        .mfa_complete(&user.0, &ctx.ip, field(&f, "code"))
        .await?;
    let next = Some(field(&f, "next"))
        .filter(|n| is_local_path(n))
        .unwrap_or("/")
        .to_owned();
    let (status, error) = match outcome {
        Login::Ok { must_change, .. } => {
            let to = if must_change && next != "/" {
                format!(
                    "/account/password?next={}",
                    crate::views::percent_encode(&next)
                )
            } else if must_change {
                "/account/password".to_owned()
            } else {
                next
            };
            return Ok(Redirect::to(&to).into_response());
        }
        Login::Invalid => (axum::http::StatusCode::UNAUTHORIZED, tr.t("mfa-invalid")),
        Login::Locked { retry_after } => (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            tr.f("login-locked", &[("seconds", n(retry_after as f64))]),
        ),
    };
    let mut res = mfa_prompt_page(&ctx, next, Some(error))?;
    *res.status_mut() = status;
    Ok(res)
}

#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage {
    c: Chrome,
    enabled: bool,
    required: bool,
    secret: String,
    uri: String,
    error: Option<String>,
    recovery: Vec<String>,
}

async fn mfa_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
) -> Result<Response, AppError> {
    render_mfa(&state, &ctx, &user, None, vec![]).await
}

async fn render_mfa(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    error: Option<String>,
    recovery: Vec<String>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let id = Identity(&state.db);
    let enabled = id.mfa_enabled(user.0.user.id).await?;
    let (secret, uri) = if enabled {
        (String::new(), String::new())
    } else {
        let secret = id
            .mfa_begin(&user.0)
            .await
            .map_err(crate::admin::identity_error)?;
        let uri =
            santong_domain::totp::otpauth_uri(&tr.t("app-name"), &user.0.user.username, &secret);
        (secret, uri)
    };
    let required = user.0.privileged()
        && santong_storage::identity::session_policy(&state.db)
            .await?
            .mfa_required_privileged;
    html(&MfaPage {
        c: ctx.chrome(tr.t("mfa-title")),
        enabled,
        required,
        secret,
        uri,
        error,
        recovery,
    })
}

async fn mfa_enable(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    match Identity(&state.db)
        .mfa_enable(&user.0, &ctx.ip, field(&f, "code"))
        .await
    {
        Ok(codes) => render_mfa(&state, &ctx, &user, None, codes).await,
        Err(IdentityError::WrongCode) => {
            let mut res =
                render_mfa(&state, &ctx, &user, Some(ctx.tr().t("mfa-invalid")), vec![]).await?;
            *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            Ok(res)
        }
        Err(e) => Err(crate::admin::identity_error(e)),
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    c: Chrome,
    tokens: Vec<(String, String, String, String)>,
    choices: Vec<(&'static str, String)>,
    created: Option<String>,
    error: Option<String>,
}

async fn render_tokens(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    created: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    use santong_domain::identity::Permission;
    let tr = ctx.tr();
    let tokens = Identity(&state.db)
        .tokens_of(user.0.user.id)
        .await?
        .into_iter()
        .map(|t| {
            (
                t.id.to_string(),
                t.name,
                t.scopes,
                t.expires_at.format("%Y-%m-%d").to_string(),
            )
        })
        .collect();
    let choices = Permission::ALL
        .into_iter()
        .filter(|p| user.0.has(*p))
        .map(|p| (p.as_str(), tr.t(&format!("perm-{}", p.as_str()))))
        .collect();
    html(&TokensPage {
        c: ctx.chrome(tr.t("tokens-title")),
        tokens,
        choices,
        created,
        error,
    })
}

async fn tokens_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
) -> Result<Response, AppError> {
    render_tokens(&state, &ctx, &user, None, None).await
}

async fn create_token(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    use santong_domain::identity::Permission;
    // Scopes come as repeated checkbox fields, so the form is read as pairs.
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    check_csrf(&user.0, Some(get("_csrf")))?;
    let scopes: Vec<Permission> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .filter_map(|(_, v)| Permission::parse(v))
        .collect();
    let days = get("days").parse::<u32>().unwrap_or(0);
    match Identity(&state.db)
        .create_token(&user.0, &ctx.ip, get("name"), &scopes, days)
        .await
    {
        Ok((_, token)) => render_tokens(&state, &ctx, &user, Some(token), None).await,
        Err(IdentityError::BadField(f)) => {
            let msg = ctx.tr().f("import-bad-field", &[("field", s(f))]);
            let mut res = render_tokens(&state, &ctx, &user, None, Some(msg)).await?;
            *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
            Ok(res)
        }
        Err(e) => Err(crate::admin::identity_error(e)),
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<Uuid>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    if !Identity(&state.db)
        .revoke_token(&user.0, &ctx.ip, id)
        .await?
    {
        return Err(AppError::not_found());
    }
    Ok(Redirect::to("/account/tokens").into_response())
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    c: Chrome,
    /// (client id, name, scopes, granted on)
    apps: Vec<(String, String, String, String)>,
}

/// Applications this user let in through single sign-on, with a way to withdraw each.
async fn apps_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
) -> Result<Response, AppError> {
    let apps = santong_storage::oidc::Oidc(&state.db)
        .apps_of(user.0.user.id)
        .await?
        .into_iter()
        .map(|a| {
            (
                a.client_id,
                a.name,
                a.scope.unwrap_or_default(),
                a.granted_at
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    html(&AppsPage {
        c: ctx.chrome(ctx.tr().t("apps-title")),
        apps,
    })
}

async fn revoke_app(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): FormData,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    if !santong_storage::oidc::Oidc(&state.db)
        .revoke_app(&user.0, &ctx.ip, &id)
        .await?
    {
        return Err(AppError::not_found());
    }
    Ok(Redirect::to("/account/apps").into_response())
}
