//! Santong as an OpenID Connect provider: discovery, keys, the authorization endpoint with its
//! consent page, the token endpoint, userinfo, RP-initiated logout, and the back-channel logout
//! job. Errors follow the specs' codes: JSON for the back-channel endpoints, a redirect back to the
//! client once its redirect URI is known to be registered, a page of ours before that.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use santong_domain::oidc as rules;
use santong_storage::jobs::{JobContext, JobError, JobFuture};
use santong_storage::oidc::{
    BACKCHANNEL_JOB, ClientRow, CodeRequest, ID_TOKEN_TTL, Issued, OAuthError, Oidc, TokenFailure,
};
use serde_json::{Value, json};

use crate::auth::{self, User};
use crate::shell::Ctx;
use crate::views::Chrome;
use crate::{AppError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oidc/jwks", get(jwks))
        .route("/oidc/authorize", get(authorize).post(authorize_post))
        .route("/oidc/token", axum::routing::post(token).options(preflight))
        .route(
            "/oidc/userinfo",
            get(userinfo).post(userinfo).options(preflight),
        )
        .route("/oidc/logout", get(logout_page).post(logout))
}

/// The issuer: the configured public URL, or where this request was sent (development only;
/// production sets `public_url` so a forged `Host` cannot change it).
pub fn issuer(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = state.config.public_url.as_deref() {
        return u.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// CSP for pages whose form ends in a redirect to a client: `form-action` also governs the
/// redirects after a submission, so it cannot be limited to 'self' there.
pub(crate) const CSP_TO_CLIENT: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'",
);

fn json_no_store(status: StatusCode, body: Value) -> Response {
    let mut res = (status, Json(body)).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

fn public_json(body: Value) -> Response {
    let mut res = Json(body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let iss = issuer(&state, &headers);
    let from_host = state.config.public_url.is_none();
    let mut scopes: Vec<&str> = rules::SCOPES.to_vec();
    scopes.extend(
        santong_domain::identity::Permission::ALL
            .iter()
            .map(|p| p.as_str()),
    );
    let mut res = public_json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oidc/authorize"),
        "token_endpoint": format!("{iss}/oidc/token"),
        "userinfo_endpoint": format!("{iss}/oidc/userinfo"),
        "jwks_uri": format!("{iss}/oidc/jwks"),
        "end_session_endpoint": format!("{iss}/oidc/logout"),
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [rules::ALG],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid",
            "name", "preferred_username", "email", "email_verified", "phone_number",
            "phone_number_verified", "santong_roles", "santong_school", "santong_region"],
        "ui_locales_supported": ["zh-CN", "en"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    }));
    if from_host {
        // Without `public_url` the document depends on the Host header: no cache may keep it.
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn jwks(State(state): State<AppState>) -> Result<Response, AppError> {
    let o = Oidc(&state.db);
    // Make sure a key exists (and is not past its age) before anyone needs to verify with it.
    o.signing_key().await?;
    Ok(public_json(json!({ "keys": o.jwks().await? })))
}

// ----- authorization endpoint -----------------------------------------------------------------

type Params = HashMap<String, String>;

fn p<'a>(q: &'a Params, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// A request that has passed every check; codes are only issued for these.
struct Checked {
    client: ClientRow,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    challenge: Option<String>,
    prompt: Vec<String>,
    max_age: Option<i64>,
}

/// Where a failed request goes: our own page while the client or redirect URI is unproven,
/// the client's redirect URI afterwards.
enum Refusal {
    Page(AppError),
    Redirect(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Page(e) => e.into_response(),
            Refusal::Redirect(to) => Redirect::to(&to).into_response(),
        }
    }
}

fn error_redirect(iss: &str, uri: &str, state: Option<&str>, error: &str) -> Refusal {
    let mut params = vec![("error", error), ("iss", iss)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    Refusal::Redirect(rules::with_query(uri, &params))
}

async fn check_request(state: &AppState, iss: &str, q: &Params) -> Result<Checked, Refusal> {
    let bad = |key: &'static str| {
        Refusal::Page(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            key,
        ))
    };
    let client = match p(q, "client_id") {
        Some(id) => Oidc(&state.db)
            .client(id)
            .await
            .map_err(|e| Refusal::Page(e.into()))?
            .filter(|c| c.disabled_at.is_none()),
        None => None,
    }
    .ok_or_else(|| bad("oidc-unknown-client"))?;
    let redirect_uri = p(q, "redirect_uri")
        .filter(|u| client.has_redirect(u))
        .ok_or_else(|| bad("oidc-bad-redirect"))?
        .to_owned();
    let st = p(q, "state");
    let fail = |code: &str| error_redirect(iss, &redirect_uri, st, code);
    if p(q, "request").is_some() {
        return Err(fail("request_not_supported"));
    }
    if p(q, "request_uri").is_some() {
        return Err(fail("request_uri_not_supported"));
    }
    if p(q, "response_type") != Some("code") {
        return Err(fail("unsupported_response_type"));
    }
    if p(q, "response_mode").is_some_and(|m| m != "query") {
        return Err(fail("invalid_request"));
    }
    let scopes = rules::grantable_scopes(p(q, "scope").unwrap_or(""), &client.allowed_scopes());
    if scopes.is_empty() {
        return Err(fail("invalid_scope"));
    }
    let challenge = match (p(q, "code_challenge"), p(q, "code_challenge_method")) {
        (None, _) if client.is_public() => return Err(fail("invalid_request")),
        (None, _) => None,
        (Some(c), Some("S256")) if rules::valid_challenge(c) => Some(c.to_owned()),
        // `plain` (or no method, which means plain) gives no protection: refuse it.
        _ => return Err(fail("invalid_request")),
    };
    let prompt: Vec<String> = p(q, "prompt")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // `none` means no interaction at all: it cannot be combined with anything that asks for one.
    if prompt.iter().any(|x| x == "none") && prompt.len() > 1 {
        return Err(fail("invalid_request"));
    }
    let max_age = match p(q, "max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|m| *m >= 0)
                .ok_or_else(|| fail("invalid_request"))?,
        ),
    };
    Ok(Checked {
        redirect_uri: redirect_uri.clone(),
        scopes,
        state: st.map(str::to_owned),
        nonce: p(q, "nonce").map(str::to_owned),
        challenge,
        prompt,
        max_age,
        client,
    })
}

/// The request again, as hidden fields of the consent form.
const CARRIED: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage {
    c: Chrome,
    intro: String,
    scopes: Vec<String>,
    hidden: Vec<(&'static str, String)>,
}

async fn authorize(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, Refusal> {
    authorize_with(&state, &ctx, &headers, &q).await
}

/// The authorization endpoint by POST (OpenID Connect Core §3.1.2.1): an application's request
/// as form fields, or the user's answer on the consent page (which carries `decision`).
async fn authorize_post(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response, Refusal> {
    if f.contains_key("decision") {
        return consent_decision(&state, &ctx, &headers, &f).await;
    }
    authorize_with(&state, &ctx, &headers, &f).await
}

async fn authorize_with(
    state: &AppState,
    ctx: &Ctx,
    headers: &HeaderMap,
    q: &Params,
) -> Result<Response, Refusal> {
    let state = state.clone();
    let iss = issuer(&state, headers);
    let req = check_request(&state, &iss, q).await?;
    let fail = |code: &str| error_redirect(&iss, &req.redirect_uri, req.state.as_deref(), code);
    let signed_in = ctx
        .user
        .as_deref()
        .filter(|u| u.session_id.is_some() && !u.mfa_pending);
    let Some(user) = signed_in else {
        if req.prompt.iter().any(|x| x == "none") {
            return Err(fail("login_required"));
        }
        let next = crate::views::percent_encode(&ctx.path_and_query);
        return Ok(Redirect::to(&format!("/login?next={next}")).into_response());
    };
    // `prompt=login`, or a sign-in older than `max_age`: the user signs in again first.
    let auth_time = santong_storage::identity::Identity(&state.db)
        .session_started(user.session_id.unwrap_or_default())
        .await
        .map_err(|e| Refusal::Page(e.into()))?
        .unwrap_or_else(Utc::now);
    let stale = req
        .max_age
        .is_some_and(|m| m == 0 || (Utc::now() - auth_time).num_seconds() > m);
    if req.prompt.iter().any(|x| x == "login") || stale {
        if req.prompt.iter().any(|x| x == "none") {
            return Err(fail("login_required"));
        }
        // Back here afterwards without `prompt=login` and `max_age` (the sign-in just made
        // satisfies both), or the loop would never end.
        let mut again: Vec<(&str, String)> = CARRIED
            .iter()
            .filter_map(|k| q.get(*k).map(|v| (*k, v.clone())))
            .collect();
        let rest: Vec<&str> = req
            .prompt
            .iter()
            .map(String::as_str)
            .filter(|x| *x != "login")
            .collect();
        if !rest.is_empty() {
            again.push(("prompt", rest.join(" ")));
        }
        let pairs: Vec<(&str, &str)> = again.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let next = rules::with_query("/oidc/authorize", &pairs);
        let to = format!(
            "/login?reauth=1&next={}",
            crate::views::percent_encode(&next)
        );
        return Ok(Redirect::to(&to).into_response());
    }
    let needs_consent = !req.client.first_party
        && (req.prompt.iter().any(|x| x == "consent")
            || !Oidc(&state.db)
                .consent_covers(user.user.id, &req.client.id, &req.scopes)
                .await
                .map_err(|e| Refusal::Page(e.into()))?);
    if needs_consent {
        if req.prompt.iter().any(|x| x == "none") {
            return Err(fail("consent_required"));
        }
        let tr = ctx.tr();
        let page = ConsentPage {
            c: ctx.chrome(tr.t("consent-title")),
            intro: tr.f(
                "consent-intro",
                &[("client", req.client.name.clone().into())],
            ),
            scopes: req.scopes.iter().map(|s| scope_label(&tr, s)).collect(),
            hidden: CARRIED
                .iter()
                .filter_map(|k| q.get(*k).map(|v| (*k, v.clone())))
                .collect(),
        };
        let mut res = crate::views::private_page(&page).map_err(Refusal::Page)?;
        res.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, CSP_TO_CLIENT);
        return Ok(res);
    }
    issue_code(&state, &iss, user, &req).await
}

fn scope_label(tr: &crate::i18n::Tr, s: &str) -> String {
    match santong_domain::identity::Permission::parse(s) {
        Some(p) => tr.t(&format!("perm-{}", p.as_str())),
        None => tr.t(&format!("scope-{}", s.replace('_', "-"))),
    }
}

async fn issue_code(
    state: &AppState,
    iss: &str,
    user: &santong_storage::identity::Principal,
    req: &Checked,
) -> Result<Response, Refusal> {
    let Some(session_id) = user.session_id else {
        return Err(error_redirect(
            iss,
            &req.redirect_uri,
            req.state.as_deref(),
            "login_required",
        ));
    };
    let auth_time = santong_storage::identity::Identity(&state.db)
        .session_started(session_id)
        .await
        .map_err(|e| Refusal::Page(e.into()))?
        .unwrap_or_else(Utc::now);
    let code = Oidc(&state.db)
        .issue_code(&CodeRequest {
            client: &req.client,
            user_id: user.user.id,
            session_id,
            auth_time,
            redirect_uri: &req.redirect_uri,
            scopes: &req.scopes,
            nonce: req.nonce.as_deref(),
            code_challenge: req.challenge.as_deref(),
        })
        .await
        .map_err(|e| Refusal::Page(e.into()))?;
    let mut params = vec![("code", code.as_str()), ("iss", iss)];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    // 303: the browser follows with GET whether it came from a link or the consent form.
    Ok(Redirect::to(&rules::with_query(&req.redirect_uri, &params)).into_response())
}

async fn consent_decision(
    state: &AppState,
    ctx: &Ctx,
    headers: &HeaderMap,
    f: &Params,
) -> Result<Response, Refusal> {
    let user = ctx.user.clone().map(User).ok_or_else(|| {
        Refusal::Page(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "error-unauthorized",
        ))
    })?;
    auth::check_origin_of(headers, None, &state.config).map_err(Refusal::Page)?;
    user.check_form(f).map_err(Refusal::Page)?;
    let iss = issuer(state, headers);
    let req = check_request(state, &iss, f).await?;
    if p(f, "decision") != Some("allow") {
        return Err(error_redirect(
            &iss,
            &req.redirect_uri,
            req.state.as_deref(),
            "access_denied",
        ));
    }
    Oidc(&state.db)
        .record_consent(&user.0, &ctx.ip, &req.client.id, &req.scopes)
        .await
        .map_err(|e| Refusal::Page(e.into()))?;
    issue_code(state, &iss, &user.0, &req).await
}

// ----- token endpoint ---------------------------------------------------------------------------

fn oauth_error(e: OAuthError, basic: bool) -> Response {
    let status = match e {
        OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = json_no_store(status, json!({ "error": e.code() }));
    if basic && e == OAuthError::InvalidClient {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"santong\""),
        );
    }
    res
}

/// Client authentication: HTTP Basic (RFC 6749 §2.3.1, both parts form-encoded), or the
/// credentials in the body, or a public client naming itself.
fn client_credentials_of(
    headers: &HeaderMap,
    f: &Params,
) -> (Option<(String, Option<String>)>, bool) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| rules::b64_standard_decode(b.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            Some((form_decode(id)?, form_decode(secret)?))
        });
    if let Some((id, secret)) = basic {
        return (Some((id, Some(secret))), true);
    }
    let id = p(f, "client_id").map(str::to_owned);
    (
        id.map(|id| (id, p(f, "client_secret").map(str::to_owned))),
        false,
    )
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Lets browser applications (public clients) read the token and userinfo answers: they carry
/// no cookies, so any origin may call them.
fn cors(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    cors(res)
}

/// Anything but a protocol answer (a database failure) as the spec's `server_error`.
fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "token endpoint failed");
    json_no_store(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({ "error": "server_error" }),
    )
}

async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Params>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return cors(oauth_error(OAuthError::InvalidRequest, false));
    };
    cors(match token_with(&state, &headers, &f).await {
        Ok(r) => r,
        Err(e) => server_error(&e),
    })
}

async fn token_with(
    state: &AppState,
    headers: &HeaderMap,
    f: &Params,
) -> Result<Response, santong_storage::StorageError> {
    let (state, headers, f) = (state.clone(), headers, f);
    let (creds, basic) = client_credentials_of(headers, f);
    let Some((id, secret)) = creds else {
        return Ok(oauth_error(OAuthError::InvalidClient, basic));
    };
    let oidc = Oidc(&state.db);
    let Some(client) = oidc.authenticate_client(&id, secret.as_deref()).await? else {
        return Ok(oauth_error(OAuthError::InvalidClient, basic));
    };
    let iss = issuer(&state, headers);
    let outcome = match p(f, "grant_type") {
        Some("authorization_code") => match (p(f, "code"), p(f, "redirect_uri")) {
            (Some(code), Some(uri)) => {
                oidc.redeem_code(&iss, &client, code, uri, p(f, "code_verifier"))
                    .await
            }
            _ => Err(OAuthError::InvalidRequest.into()),
        },
        Some("refresh_token") => match p(f, "refresh_token") {
            Some(t) => oidc.refresh(&client, t, p(f, "scope")).await,
            None => Err(OAuthError::InvalidRequest.into()),
        },
        Some("client_credentials") if client.is_public() => {
            Err(OAuthError::UnauthorizedClient.into())
        }
        Some("client_credentials") => oidc.client_credentials(&iss, &client, p(f, "scope")).await,
        Some(_) => Err(OAuthError::UnsupportedGrantType.into()),
        None => Err(OAuthError::InvalidRequest.into()),
    };
    let issued = match outcome {
        Ok(i) => i,
        Err(TokenFailure::OAuth(e)) => return Ok(oauth_error(e, basic)),
        Err(TokenFailure::Storage(e)) => return Err(e),
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": santong_storage::oidc::ACCESS_TTL.num_seconds(),
        "scope": issued.scopes.join(" "),
    });
    if let Some(r) = &issued.refresh_token {
        body["refresh_token"] = json!(r);
    }
    if issued.has_scope("openid") && issued.session_id.is_some() {
        body["id_token"] = json!(id_token(&state, &iss, &client, &issued).await?);
    }
    Ok(json_no_store(StatusCode::OK, body))
}

async fn id_token(
    state: &AppState,
    iss: &str,
    client: &ClientRow,
    issued: &Issued,
) -> Result<String, santong_storage::StorageError> {
    let now = Utc::now();
    let mut claims = issued.subject.claims(&issued.scopes);
    claims.insert("iss".into(), json!(iss));
    claims.insert("aud".into(), json!(client.id));
    claims.insert("azp".into(), json!(client.id));
    claims.insert("iat".into(), json!(now.timestamp()));
    claims.insert("exp".into(), json!((now + ID_TOKEN_TTL).timestamp()));
    claims.insert("auth_time".into(), json!(issued.auth_time.timestamp()));
    claims.insert(
        "at_hash".into(),
        json!(rules::half_hash(&issued.access_token)),
    );
    if let Some(sid) = issued.session_id {
        claims.insert("sid".into(), json!(sid.to_string()));
    }
    if let Some(n) = &issued.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    let key = Oidc(&state.db).signing_key().await?;
    Ok(key.sign("JWT", &Value::Object(claims)))
}

// ----- userinfo ---------------------------------------------------------------------------------

fn bearer_error(code: &'static str) -> Response {
    let mut res = json_no_store(StatusCode::UNAUTHORIZED, json!({ "error": code }));
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&format!("Bearer error=\"{code}\""))
            .unwrap_or(HeaderValue::from_static("Bearer")),
    );
    res
}

async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    cors(match userinfo_with(&state, &headers).await {
        Ok(r) => r,
        Err(e) => server_error(&e),
    })
}

async fn userinfo_with(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response, santong_storage::StorageError> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer_token)
    else {
        return Ok(bearer_error("invalid_request"));
    };
    let Some((subject, scopes)) = Oidc(&state.db).access_token(token).await? else {
        return Ok(bearer_error("invalid_token"));
    };
    if !scopes.iter().any(|s| s == "openid") {
        let mut res = json_no_store(
            StatusCode::FORBIDDEN,
            json!({ "error": "insufficient_scope" }),
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
        );
        return Ok(res);
    }
    Ok(json_no_store(
        StatusCode::OK,
        Value::Object(subject.claims(&scopes)),
    ))
}

// ----- RP-initiated logout ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "oidc_logout.html")]
struct LogoutPage {
    c: Chrome,
    from: Option<String>,
    hidden: Vec<(&'static str, String)>,
}

/// The client a logout request speaks for, and where to send the browser afterwards. A target
/// that is not registered for that client is refused: the endpoint must not be an open redirect.
async fn logout_target(
    state: &AppState,
    q: &Params,
) -> Result<(Option<ClientRow>, Option<String>), AppError> {
    let bad = |key: &'static str| AppError::new(StatusCode::BAD_REQUEST, "invalid_request", key);
    let oidc = Oidc(&state.db);
    // A hint may have expired, or be signed by a key no longer published: then it names
    // nobody. A forged one (bad signature) is refused.
    let hinted = match p(q, "id_token_hint") {
        None => None,
        Some(hint) => match rules::verify(hint, &oidc.jwks().await?) {
            Ok(claims) => claims["aud"].as_str().map(str::to_owned),
            Err(rules::JwsError::UnknownKey) => None,
            Err(_) => return Err(bad("oidc-bad-logout")),
        },
    };
    let client_id = match (hinted, p(q, "client_id")) {
        (Some(a), Some(b)) if a != b => return Err(bad("oidc-bad-logout")),
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_owned),
    };
    let client = match client_id {
        Some(id) => Some(
            oidc.client(&id)
                .await?
                .filter(|c| c.disabled_at.is_none())
                .ok_or_else(|| bad("oidc-bad-logout"))?,
        ),
        None => None,
    };
    let target = match p(q, "post_logout_redirect_uri") {
        Some(uri) if client.as_ref().is_some_and(|c| c.has_post_logout(uri)) => {
            let mut params = vec![];
            if let Some(s) = p(q, "state") {
                params.push(("state", s));
            }
            Some(rules::with_query(uri, &params))
        }
        Some(_) => return Err(bad("oidc-bad-logout")),
        None => None,
    };
    Ok((client, target))
}

async fn logout_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    logout_request(&state, &ctx, &q).await
}

/// An application's logout request (by GET or POST): asks the signed-in user to confirm.
async fn logout_request(state: &AppState, ctx: &Ctx, q: &Params) -> Result<Response, AppError> {
    let (client, target) = logout_target(state, q).await?;
    if ctx.user.is_none() {
        return Ok(Redirect::to(target.as_deref().unwrap_or("/")).into_response());
    }
    let tr = ctx.tr();
    let hidden = ["client_id", "post_logout_redirect_uri", "state"]
        .into_iter()
        .filter_map(|k| {
            let v = match k {
                "client_id" => client.as_ref().map(|c| c.id.clone()),
                _ => p(q, k).map(str::to_owned),
            };
            v.map(|v| (k, v))
        })
        .collect();
    let mut res = crate::views::private_page(&LogoutPage {
        c: ctx.chrome(tr.t("oidc-logout-title")),
        from: client.map(|c| tr.f("oidc-logout-from", &[("client", c.name.into())])),
        hidden,
    })?;
    res.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, CSP_TO_CLIENT);
    Ok(res)
}

async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    // Without our form's token this is an application's request, not the user's answer.
    let (Some(user), true) = (ctx.user.clone().map(User), f.contains_key("_csrf")) else {
        return logout_request(&state, &ctx, &f).await;
    };
    auth::check_origin_of(&headers, None, &state.config)?;
    user.check_form(&f)?;
    let (_, target) = logout_target(&state, &f).await?;
    if let Some(id) = user.0.session_id {
        santong_storage::identity::Identity(&state.db)
            .end_session(&user.0, &ctx.ip, id)
            .await?;
    }
    let mut res = Redirect::to(target.as_deref().unwrap_or("/")).into_response();
    auth::clear_cookie(
        &mut res,
        &state.config,
        auth::session_cookie_name(&state.config),
    );
    Ok(res)
}

// ----- back-channel logout ----------------------------------------------------------------------

/// The job that posts a logout token to a client's back-channel URI (OpenID Connect Back-Channel
/// Logout 1.0 §2.5). A client that does not answer 200 gets retries with backoff.
pub fn backchannel_logout(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        let field = |k: &str| ctx.payload[k].as_str().unwrap_or("").to_owned();
        let oidc = Oidc(&ctx.db);
        let Some(client) = oidc
            .client(&field("client_id"))
            .await?
            .filter(|c| c.disabled_at.is_none())
        else {
            return Ok(());
        };
        let Some(uri) = client.backchannel_logout_uri.clone() else {
            return Ok(());
        };
        let key = oidc.signing_key().await?;
        let now = Utc::now();
        let token = key.sign(
            "logout+jwt",
            &json!({
                "iss": field("iss"),
                "aud": client.id,
                "iat": now.timestamp(),
                "exp": (now + chrono::Duration::minutes(2)).timestamp(),
                "jti": uuid::Uuid::new_v4().to_string(),
                "sub": field("sub"),
                "sid": field("sid"),
                "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
            }),
        );
        let status = tokio::task::spawn_blocking(move || post_form(&uri, &token))
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        match status {
            Ok(200..=299) => Ok(()),
            Ok(s) => Err(JobError::Failed(format!("client answered {s}"))),
            Err(e) => Err(JobError::Failed(e)),
        }
    })
}

/// The job kind, for registration with the worker.
pub const BACKCHANNEL: &str = BACKCHANNEL_JOB;

fn post_form(uri: &str, token: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    agent
        .post(uri)
        .send_form([("logout_token", token)])
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}
