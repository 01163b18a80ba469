//! Client administration for single sign-on: register, edit, issue a new secret, disable, and
//! rotate the signing key. The security administrator's work (三权分立): it needs
//! `grants_manage`, which storage checks again.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use santong_domain::identity::Permission;
use santong_storage::identity::IdentityError;
use santong_storage::oidc::{ClientRow, ClientSpec, Oidc};

use crate::AppState;
use crate::admin::{actor, refused};
use crate::auth::{User, check_csrf};
use crate::error::AppError;
use crate::i18n::s;
use crate::shell::Ctx;
use crate::views::{Chrome, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/clients", get(list).post(create))
        .route("/admin/clients/{id}", get(detail).post(update))
        .route("/admin/clients/{id}/secret", post(new_secret))
        .route("/admin/clients/{id}/disable", post(disable))
        .route("/admin/clients/{id}/enable", post(enable))
        .route("/admin/keys/rotate", post(rotate_key))
}

/// A form read as pairs: scopes come as repeated checkboxes.
type Pairs = Form<Vec<(String, String)>>;

fn value<'a>(f: &'a [(String, String)], k: &str) -> &'a str {
    f.iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.trim())
        .unwrap_or("")
}

fn lines(v: &str) -> Vec<String> {
    v.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn spec_of(f: &[(String, String)]) -> ClientSpec {
    let back = value(f, "backchannel_logout_uri");
    ClientSpec {
        name: value(f, "name").to_owned(),
        redirect_uris: lines(value(f, "redirect_uris")),
        post_logout_uris: lines(value(f, "post_logout_uris")),
        backchannel_logout_uri: (!back.is_empty()).then(|| back.to_owned()),
        first_party: value(f, "first_party") == "on",
        scopes: f
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect(),
    }
}

fn check(user: &User, f: &[(String, String)]) -> Result<(), AppError> {
    user.require(Permission::GrantsManage)?;
    check_csrf(&user.0, Some(value(f, "_csrf")))
}

/// Every scope a client may be allowed, with its label.
fn scope_choices(ctx: &Ctx, allowed: &[String]) -> Vec<(String, String, bool)> {
    let tr = ctx.tr();
    let mut all: Vec<&str> = santong_domain::oidc::SCOPES.to_vec();
    all.extend(Permission::ALL.iter().map(|p| p.as_str()));
    all.into_iter()
        .map(|v| {
            let label = match Permission::parse(v) {
                Some(p) => tr.t(&format!("perm-{}", p.as_str())),
                None => tr.t(&format!("scope-{}", v.replace('_', "-"))),
            };
            (
                v.to_owned(),
                format!("{v} — {label}"),
                allowed.iter().any(|a| a == v),
            )
        })
        .collect()
}

struct ClientView {
    id: String,
    name: String,
    kind: String,
    first_party: bool,
    disabled: bool,
}

#[derive(Template)]
#[template(path = "clients.html")]
struct ClientsPage {
    c: Chrome,
    rows: Vec<ClientView>,
    scopes: Vec<(String, String, bool)>,
    keys: Vec<String>,
    created: Option<(String, Option<String>)>,
    error: Option<String>,
}

fn kind_label(ctx: &Ctx, c: &ClientRow) -> String {
    let tr = ctx.tr();
    if c.service_user_id.is_some() {
        tr.t("clients-service")
    } else if c.is_public() {
        tr.t("clients-public")
    } else {
        tr.t("clients-confidential")
    }
}

async fn render_list(
    state: &AppState,
    ctx: &Ctx,
    created: Option<(String, Option<String>)>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let oidc = Oidc(&state.db);
    let rows = oidc
        .clients()
        .await?
        .iter()
        .map(|c| ClientView {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: kind_label(ctx, c),
            first_party: c.first_party,
            disabled: c.disabled_at.is_some(),
        })
        .collect();
    let keys = oidc
        .jwks()
        .await?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    let defaults = ["openid".to_owned(), "profile".to_owned()];
    let mut res = html(&ClientsPage {
        c: ctx.chrome(ctx.tr().t("clients-title")),
        rows,
        scopes: scope_choices(ctx, &defaults),
        keys,
        created,
        error: error.clone(),
    })?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

fn field_message(ctx: &Ctx, e: &IdentityError) -> Option<String> {
    match e {
        IdentityError::BadField(f) => Some(ctx.tr().f("import-bad-field", &[("field", s(*f))])),
        _ => None,
    }
}

async fn list(State(state): State<AppState>, ctx: Ctx, user: User) -> Result<Response, AppError> {
    user.require(Permission::GrantsManage)?;
    render_list(&state, &ctx, None, None).await
}

async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    check(&user, &f)?;
    let kind = value(&f, "kind");
    let outcome = Oidc(&state.db)
        .add_client(
            actor(&user, &ctx),
            &spec_of(&f),
            kind == "public",
            kind == "service",
        )
        .await;
    match outcome {
        Ok((row, secret)) => render_list(&state, &ctx, Some((row.id, secret)), None).await,
        Err(e) => match field_message(&ctx, &e) {
            Some(msg) => render_list(&state, &ctx, None, Some(msg)).await,
            None => refused(&state, &ctx, &user, "client.create", Err(e)).await,
        },
    }
}

#[derive(Template)]
#[template(path = "client.html")]
struct ClientPage {
    c: Chrome,
    id: String,
    name: String,
    kind: String,
    public: bool,
    first_party: bool,
    disabled: bool,
    redirect_uris: String,
    post_logout_uris: String,
    backchannel: String,
    scopes: Vec<(String, String, bool)>,
    secret: Option<String>,
    error: Option<String>,
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    secret: Option<String>,
    error: Option<String>,
) -> Result<Response, AppError> {
    let c = Oidc(&state.db)
        .client(id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let mut res = html(&ClientPage {
        c: ctx.chrome(c.name.clone()),
        id: c.id.clone(),
        name: c.name.clone(),
        kind: kind_label(ctx, &c),
        public: c.is_public(),
        first_party: c.first_party,
        disabled: c.disabled_at.is_some(),
        redirect_uris: c.redirect_uris.clone(),
        post_logout_uris: c.post_logout_uris.clone(),
        backchannel: c.backchannel_logout_uri.clone().unwrap_or_default(),
        scopes: scope_choices(ctx, &c.allowed_scopes()),
        secret,
        error: error.clone(),
    })?;
    if error.is_some() {
        *res.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user.require(Permission::GrantsManage)?;
    render_detail(&state, &ctx, &id, None, None).await
}

async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    check(&user, &f)?;
    match Oidc(&state.db)
        .update_client(actor(&user, &ctx), &id, &spec_of(&f))
        .await
    {
        Ok(()) => Ok(Redirect::to(&format!("/admin/clients/{id}")).into_response()),
        Err(e) => match field_message(&ctx, &e) {
            Some(msg) => render_detail(&state, &ctx, &id, None, Some(msg)).await,
            None => refused(&state, &ctx, &user, "client.update", Err(e)).await,
        },
    }
}

async fn new_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    check(&user, &f)?;
    let outcome = Oidc(&state.db).rotate_secret(actor(&user, &ctx), &id).await;
    let secret = refused(&state, &ctx, &user, "client.secret", outcome).await?;
    render_detail(&state, &ctx, &id, Some(secret), None).await
}

async fn set_disabled(
    state: AppState,
    ctx: Ctx,
    user: User,
    id: String,
    f: Vec<(String, String)>,
    disabled: bool,
) -> Result<Response, AppError> {
    check(&user, &f)?;
    let outcome = Oidc(&state.db)
        .set_client_disabled(actor(&user, &ctx), &id, disabled)
        .await;
    refused(&state, &ctx, &user, "client.disable", outcome).await?;
    Ok(Redirect::to(&format!("/admin/clients/{id}")).into_response())
}

async fn disable(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    set_disabled(state, ctx, user, id, f, true).await
}

async fn enable(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    set_disabled(state, ctx, user, id, f, false).await
}

async fn rotate_key(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): Pairs,
) -> Result<Response, AppError> {
    check(&user, &f)?;
    let outcome = Oidc(&state.db).rotate_key(actor(&user, &ctx)).await;
    refused(&state, &ctx, &user, "key.rotate", outcome).await?;
    Ok(Redirect::to("/admin/clients").into_response())
}
