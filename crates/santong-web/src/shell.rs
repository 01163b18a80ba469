//! The middleware around every route: picks the language, and renders every error response
//! (from handlers, extractors, the body limit, the timeout or a panic) in that language, as a page
//! for browsers and as `application/problem+json` under `/api/`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::error::AppError;
use crate::i18n::{Catalog, Lang, Tr, s};
use crate::views::{Chrome, ErrorPage};
use crate::{AppState, REQUEST_ID};
use santong_storage::identity::Principal;

/// Per-request facts every handler and view may need.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    pub request_id: String,
    /// Path and query as requested, for the language switch to come back to.
    pub path_and_query: String,
    /// The signed-in user, when the request carries a live session cookie.
    pub user: Option<Arc<Principal>>,
    /// The client address (the socket peer).
    pub ip: String,
}

impl Ctx {
    pub fn tr(&self) -> Tr {
        Tr::new(self.lang)
    }

    pub fn chrome(&self, title: String) -> Chrome {
        Chrome::new(self, title)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .unwrap_or_else(|| ctx_of(parts, &crate::WebConfig::default())))
    }
}

/// Reads a cookie value from the `Cookie` header.
pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Reads a cookie value from request headers (for handlers that have no `Parts`).
pub fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn ctx_of(parts: &Parts, config: &crate::WebConfig) -> Ctx {
    let from_query = parts
        .uri
        .query()
        .and_then(|q| query_param(q, "lang"))
        .and_then(Lang::parse);
    let from_cookie = || cookie(parts, "lang").and_then(Lang::parse);
    let from_header = || {
        parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map(Lang::negotiate)
    };
    let lang = from_query
        .or_else(from_cookie)
        .or_else(from_header)
        .unwrap_or_default();
    let request_id = parts
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            santong_domain::net::client_ip(c.0.ip(), forwarded, &config.trusted_proxies).to_string()
        })
        .unwrap_or_else(|| "unknown".into());
    Ctx {
        lang,
        request_id,
        path_and_query,
        user: None,
        ip,
    }
}

/// The span of one request: method, path and request id on every log line inside it.
pub fn make_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

pub async fn shell(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let mut ctx = ctx_of(&parts, &state.config);
    let is_api = parts.uri.path().starts_with("/api/");
    let is_static = parts.uri.path().starts_with("/static/");
    let is_probe = matches!(parts.uri.path(), "/healthz" | "/readyz");
    let token = (!is_static && !is_probe)
        .then(|| cookie(&parts, crate::auth::session_cookie_name(&state.config)))
        .flatten();
    if let Some(token) = token {
        match santong_storage::identity::Identity(&state.db)
            .session(token)
            .await
        {
            Ok(p) => ctx.user = p.map(Arc::new),
            Err(e) => tracing::error!(error = %e, "session lookup failed"),
        }
    }
    // The JSON API also takes personal access tokens.
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token);
    if is_api && let Some(token) = bearer {
        // Personal access tokens start `st_`; access tokens from the OpenID provider `sta_`.
        let found = if token.starts_with("sta_") {
            santong_storage::oidc::Oidc(&state.db)
                .access_token(token)
                .await
                .map(|o| o.map(|(subject, _)| subject.principal))
        } else {
            santong_storage::identity::Identity(&state.db)
                .token_principal(token)
                .await
        };
        match found {
            Ok(Some(p)) => ctx.user = Some(Arc::new(p)),
            Ok(None) => {
                let e = AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "error-invalid-token",
                );
                return render_error(&ctx, &e, true);
            }
            Err(e) => tracing::error!(error = %e, "token lookup failed"),
        }
    }
    // The token and userinfo endpoints take no cookies (clients authenticate themselves), so a
    // browser app on another origin may call them.
    // The authorization and logout endpoints take applications' requests by POST too; their
    // handlers check the origin of the user's own answers (consent, confirmation) themselves.
    let cookieless = matches!(
        parts.uri.path(),
        "/oidc/token" | "/oidc/userinfo" | "/oidc/authorize" | "/oidc/logout"
    );
    if !cookieless && let Err(e) = crate::auth::check_origin(&parts, &state.config) {
        return render_error(&ctx, &e, is_api);
    }
    if let Some(user) = &ctx.user
        && !is_static
        && let Some((to, code, key)) = gate(&state, user, parts.uri.path()).await
    {
        if is_api {
            return render_error(&ctx, &AppError::new(StatusCode::FORBIDDEN, code, key), true);
        }
        // A page asked for on the way (an application's sign-in request) is where the step
        // leads on to afterwards.
        if parts.method == axum::http::Method::GET
            && ctx.path_and_query != "/"
            && to != "/account/mfa"
        {
            let next = crate::views::percent_encode(&ctx.path_and_query);
            return axum::response::Redirect::to(&format!("{to}?next={next}")).into_response();
        }
        return axum::response::Redirect::to(to).into_response();
    }
    parts.extensions.insert(ctx.clone());
    let upload = parts.uri.path().ends_with("/import");
    let mut res = next.run(Request::from_parts(parts, body)).await;

    // Pages depend on the language; caches must keep the variants apart. Hashed assets do not.
    if !is_static {
        res.headers_mut().append(
            header::VARY,
            HeaderValue::from_static("Accept-Language, Cookie"),
        );
    }

    let status = res.status();
    if status.as_u16() < 400 {
        return res;
    }
    // A handler may answer 4xx with a page of its own (a sign-in form with its message): keep it.
    // Errors from handlers (AppError) and bare statuses from layers and extractors are rendered.
    let has_error = res.extensions().get::<Arc<AppError>>().is_some();
    let own_page = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("text/html")
                || ct.starts_with("application/problem+json")
                || ct.starts_with("application/json")
        });
    if !has_error && own_page {
        return res;
    }
    let err = match res.extensions().get::<Arc<AppError>>() {
        Some(e) => (**e).clone(),
        None if status == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = if upload {
                state.config.upload_limit
            } else {
                state.config.body_limit
            };
            AppError::from_status(status).arg("limit", human_size(limit))
        }
        None => AppError::from_status(status),
    };
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), code = err.code, "server error");
    }
    if err.status == StatusCode::UNAUTHORIZED && !is_api {
        let next = crate::views::percent_encode(&ctx.path_and_query);
        return axum::response::Redirect::to(&format!("/login?next={next}")).into_response();
    }
    let mut rendered = render_error(&ctx, &err, is_api);
    // Keep headers such as `Allow` (405) or `Retry-After`; the body and its type are ours.
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered
}

fn render_error(ctx: &Ctx, err: &AppError, is_api: bool) -> Response {
    let tr = ctx.tr();
    let args: Vec<(&str, fluent_bundle::FluentValue<'_>)> =
        err.args.iter().map(|(k, v)| (*k, s(v.as_str()))).collect();
    let detail = tr.f(err.key, &args);
    let field_messages: Vec<(String, String)> = err
        .fields
        .iter()
        .map(|f| {
            (
                f.field.clone(),
                tr.f(f.kind.key(), &[("field", s(f.field.as_str()))]),
            )
        })
        .collect();

    if is_api {
        let errors: Vec<_> = err
            .fields
            .iter()
            .zip(&field_messages)
            .map(|(f, (_, msg))| json!({ "field": f.field, "code": f.kind.code(), "detail": msg }))
            .collect();
        let mut body = json!({
            "type": "about:blank",
                        "title": status_title(&tr, err.status),
            "status": err.status.as_u16(),
            "code": err.code,
            "detail": detail,
            "request_id": ctx.request_id,
        });
        if !errors.is_empty() {
            body["errors"] = serde_json::Value::Array(errors);
        }
        let mut res = (err.status, body.to_string()).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res.headers_mut().insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(ctx.lang.tag()),
        );
        return res;
    }

    let page = ErrorPage {
        c: ctx.chrome(tr.t("error-title")),
        status: err.status.as_u16(),
        detail,
        fields: field_messages.into_iter().map(|(_, m)| m).collect(),
        request_id: tr.f("error-request-id", &[("id", s(ctx.request_id.as_str()))]),
    };
    let html = crate::views::render(&page).unwrap_or_else(|_| detail_fallback(&tr));
    let mut res = (err.status, Html(html)).into_response();
    res.headers_mut().insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(ctx.lang.tag()),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Where a signed-in user must go first, if anywhere: the second factor of a sign-in, then a
/// required password change, then a required second-factor enrolment. Only the pages that finish
/// the step (and sign-out, and the language switch) are open meanwhile.
async fn gate(
    state: &AppState,
    user: &Principal,
    path: &str,
) -> Option<(&'static str, &'static str, &'static str)> {
    let open = |allowed: &[&str]| {
        allowed.contains(&path) || path == "/logout" || path.starts_with("/lang/")
    };
    if user.mfa_pending {
        return (!open(&["/login/mfa"])).then_some(("/login/mfa", "mfa_required", "mfa-prompt"));
    }
    if user.user.must_change_password {
        return (!open(&["/account/password"])).then_some((
            "/account/password",
            "password_change_required",
            "password-forced",
        ));
    }
    // A service account has no person behind it to enrol; its client proved itself with a secret.
    if user.privileged()
        && !user.mfa_enabled
        && !user.user.is_service_account()
        && !open(&["/account/mfa", "/account/mfa/enable", "/account/password"])
    {
        let required = santong_storage::identity::session_policy(&state.db)
            .await
            .map(|p| p.mfa_required_privileged)
            .unwrap_or(true);
        if required {
            return Some(("/account/mfa", "mfa_enrolment_required", "mfa-required"));
        }
    }
    None
}

/// The translated name of a status, for the problem `title`.
fn status_title(tr: &Tr, status: StatusCode) -> String {
    let key = match status.as_u16() {
        400 => "status-400",
        401 => "status-401",
        403 => "status-403",
        404 => "status-404",
        405 => "status-405",
        408 => "status-408",
        409 => "status-409",
        413 => "status-413",
        429 => "status-429",
        503 => "status-503",
        s if s >= 500 => "status-500",
        _ => "status-400",
    };
    tr.t(key)
}

/// `2097152` → `2 MiB`, for messages.
pub fn human_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

fn detail_fallback(tr: &Tr) -> String {
    format!(
        "<!doctype html><title>{0}</title><p>{0}</p>",
        tr.t("error-internal")
    )
}

/// The fallback route: a translated 404.
pub async fn not_found() -> AppError {
    AppError::not_found()
}

/// Checks that catalogues load at start-up rather than on the first request.
pub fn warm_up() {
    let _ = Catalog::global();
}

/// 500 for a handler that cannot render its view (a template bug).
pub(crate) fn template_error(e: askama::Error) -> AppError {
    tracing::error!(error = %e, "template rendering failed");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "error-internal",
    )
}
