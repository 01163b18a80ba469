//! Santong's HTTP layer: server-rendered pages (askama, no JavaScript needed), the JSON API under
//! `/api/v1` with its OpenAPI document, and the middleware every request passes through.
//!
//! A request flows: request id → trace span → compression → security headers → [`shell`]
//! (language, error rendering) → timeout → panic catcher → body limit → route handler. Handlers
//! parse input into domain types, call a storage repository, and render a view or JSON. Errors are
//! [`AppError`] values rendered once, in [`shell`], as a translated page or `problem+json`.

pub mod account;
pub mod admin;
pub mod api;
pub mod assets;
pub mod auth;
pub mod classes;
pub mod clients;
pub mod duplicates;
pub mod error;
pub mod export;
pub mod i18n;
pub mod imports;
pub mod lifecycle;
pub mod oidc;
pub mod oneroster;
pub mod pages;
pub mod quality;
pub mod schools;
pub mod shell;
pub mod students;
pub mod teachers;
pub mod transfers;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use santong_storage::Db;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::AppError;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The URL users reach the platform at; `https://` turns on HSTS.
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<santong_domain::net::IpNet>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest spreadsheet upload (imports), in bytes.
    pub upload_limit: usize,
    pub request_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            trusted_proxies: Vec::new(),
            body_limit: 2 * 1024 * 1024,
            upload_limit: 200 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<WebConfig>,
}

impl AppState {
    pub fn new(db: Db, config: WebConfig) -> Self {
        Self {
            db,
            config: Arc::new(config),
        }
    }
}

/// How long a spreadsheet upload may take to arrive (200 MiB at 512 kbit/s is about an hour).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application as one tower service.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let hsts = config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
        .then(|| {
            SetResponseHeaderLayer::if_not_present(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            )
        });

    let routes = Router::new()
        .merge(pages::routes())
        .merge(account::routes())
        .merge(admin::routes())
        .merge(oidc::routes())
        .merge(clients::routes())
        .merge(schools::routes())
        .merge(students::routes())
        .merge(lifecycle::routes())
        .merge(transfers::routes())
        .merge(duplicates::routes())
        .merge(classes::routes())
        .merge(teachers::routes())
        .merge(quality::routes())
        .merge(imports::routes())
        .merge(oneroster::routes())
        .nest(
            "/api/v1",
            // API answers hold personal data and may be fetched with a session cookie: no cache
            // keeps them unless a handler says otherwise (public reference data does).
            api::routes().layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            )),
        )
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        // 503, not 408: the server was slow, not the client; clients must not blindly resend.
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        // A spreadsheet upload: its own, larger size limit, and the time a county's roster
        // takes over a slow school link (the work itself runs as a job afterwards).
        .merge(
            imports::upload_routes(config.upload_limit)
                .merge(oneroster::upload_routes(config.upload_limit))
                .layer(RequestBodyLimitLayer::new(config.upload_limit))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    UPLOAD_TIMEOUT.max(config.request_timeout),
                )),
        )
        .fallback(shell::not_found)
        .with_state(state.clone());

    routes.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(shell::make_span)
                    .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(CompressionLayer::new())
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .option_layer(hsts)
            .layer(axum::middleware::from_fn_with_state(state, shell::shell))
            .layer(CatchPanicLayer::new()),
    )
}
