//! Static assets compiled into the binary and served under content-hashed names, so they can be
//! cached for a year and a new release is fetched at once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::AppError;

const CSS: &str = include_str!("../static/app.css");

/// `/static/app-<hash>.css`.
pub fn css_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let digest = Sha256::digest(CSS.as_bytes());
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("/static/app-{hex}.css")
    })
}

pub async fn serve(Path(file): Path<String>) -> Result<Response, AppError> {
    if format!("/static/{file}") != css_url() {
        return Err(AppError::not_found());
    }
    let mut res = CSS.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(res)
}
