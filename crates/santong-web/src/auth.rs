//! Sessions in cookies, the signed-in user as an extractor, and CSRF defences.
//!
//! The session cookie holds a random token (only its SHA-256 is stored). Under TLS it is a
//! `__Host-` cookie with `Secure`; always `HttpOnly` and `SameSite=Lax`. State-changing requests
//! are checked twice: `Origin` / `Sec-Fetch-Site` must not be another site ([`check_origin`], for
//! every request), and forms carry the session's synchronizer token ([`check_csrf`]). The sign-in
//! form, before any session exists, uses a double-submit cookie.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use santong_domain::identity::Permission;
use santong_storage::identity::Principal;

use crate::error::AppError;
use crate::shell::Ctx;
use crate::{AppState, WebConfig};

/// The session cookie's name: `__Host-` requires `Secure`, so only under TLS.
pub fn session_cookie_name(config: &WebConfig) -> &'static str {
    if is_secure(config) {
        "__Host-santong"
    } else {
        "santong_session"
    }
}

pub const LOGIN_CSRF_COOKIE: &str = "santong_login_csrf";
/// Marks a browser where an account signed in before (see `Identity::authenticate_from`).
pub const DEVICE_COOKIE: &str = "santong_device";

pub fn is_secure(config: &WebConfig) -> bool {
    config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

fn cookie_attrs(config: &WebConfig, max_age: Option<u64>) -> String {
    let mut a = String::from("; Path=/; HttpOnly; SameSite=Lax");
    if is_secure(config) {
        a.push_str("; Secure");
    }
    if let Some(secs) = max_age {
        a.push_str(&format!("; Max-Age={secs}"));
    }
    a
}

/// A cookie's name as sent: under TLS every cookie carries the `__Host-` prefix, so it is
/// Secure, host-only and path `/` — a sibling subdomain cannot plant or shadow it.
fn wire_name(config: &WebConfig, name: &str) -> String {
    if is_secure(config) && !name.starts_with("__Host-") {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// Reads one of our cookies by its base name.
pub fn read_cookie(
    headers: &axum::http::HeaderMap,
    config: &WebConfig,
    name: &str,
) -> Option<String> {
    crate::shell::cookie_of(headers, &wire_name(config, name))
}

/// Adds a `Set-Cookie` header.
pub fn set_cookie(
    res: &mut Response,
    config: &WebConfig,
    name: &str,
    value: &str,
    max_age: Option<u64>,
) {
    let v = format!(
        "{}={value}{}",
        wire_name(config, name),
        cookie_attrs(config, max_age)
    );
    if let Ok(h) = HeaderValue::from_str(&v) {
        res.headers_mut().append(header::SET_COOKIE, h);
    }
}

pub fn clear_cookie(res: &mut Response, config: &WebConfig, name: &str) {
    set_cookie(res, config, name, "", Some(0));
}

/// Refuses a state-changing request sent from another site: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` that is not ours — the configured public URL when there is one, otherwise the host the
/// request was sent to (`Host`, or the HTTP/2 authority).
pub fn check_origin(parts: &Parts, config: &WebConfig) -> Result<(), AppError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    check_origin_of(
        &parts.headers,
        parts.uri.authority().map(|a| a.as_str()),
        config,
    )
}

/// The `Origin` / `Sec-Fetch-Site` check of an unsafe request, for handlers that accept
/// cross-site requests in one form (an application's request) and must refuse them in another
/// (the user's own answer).
pub fn check_origin_of(
    headers: &axum::http::HeaderMap,
    authority: Option<&str>,
    config: &WebConfig,
) -> Result<(), AppError> {
    let forbidden = || AppError::new(StatusCode::FORBIDDEN, "cross_site_request", "error-csrf");
    let header = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if header(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(forbidden());
    }
    let Some(origin) = header(header::ORIGIN) else {
        return Ok(());
    };
    if origin == "null" {
        return Err(forbidden());
    }
    let ours = match config.public_url.as_deref() {
        Some(public) => {
            let (scheme, rest) = public.split_once("://").unwrap_or(("https", public));
            let host = rest.split('/').next().unwrap_or(rest);
            origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
        }
        None => {
            let host = header(header::HOST).or(authority);
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            host.is_some_and(|h| origin_host.eq_ignore_ascii_case(h))
        }
    };
    if ours { Ok(()) } else { Err(forbidden()) }
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive (RFC 9110).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a form's `_csrf` field against the session's token.
pub fn check_csrf(user: &Principal, submitted: Option<&str>) -> Result<(), AppError> {
    match submitted {
        Some(t) if !user.csrf.is_empty() && same_secret(t, &user.csrf) => Ok(()),
        _ => Err(AppError::new(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "error-csrf",
        )),
    }
}

/// The signed-in user; pages redirect to sign-in, the API answers 401.
#[derive(Debug, Clone)]
pub struct User(pub Arc<Principal>);

impl FromRequestParts<AppState> for User {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<Ctx>()
            .and_then(|c| c.user.clone())
            .map(User)
            .ok_or_else(|| {
                AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "error-unauthorized",
                )
            })
    }
}

impl User {
    /// Checks the `_csrf` field of a submitted form against this session's token.
    pub fn check_form(
        &self,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<(), AppError> {
        check_csrf(&self.0, form.get("_csrf").map(String::as_str))
    }

    /// 403 unless the user holds `perm` somewhere.
    pub fn require(&self, perm: Permission) -> Result<(), AppError> {
        if self.0.has(perm) {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "error-forbidden",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
