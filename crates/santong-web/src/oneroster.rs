//! OneRoster 1.2 on the pages: a school's exchange page with the export (masked, or full with a
//! purpose) and the import of a package from an LMS or rostering tool (dry run first, all or
//! nothing or the valid rows), whose report lists every rejected row.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use santong_domain::identity::Permission;
use santong_domain::registry::SchoolYear;
use santong_storage::oneroster::{ImportReport, OneRoster, OneRosterError, Source, Target};
use santong_storage::registry::{Registry, SchoolRow, today};
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::{User, check_csrf};
use crate::error::AppError;
use crate::i18n::{Tr, n, s};
use crate::schools::Params;
use crate::shell::Ctx;
use crate::views::{Chrome, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/oneroster", get(page))
        .route(
            "/schools/{code}/oneroster.zip",
            get(export).post(export_full),
        )
}

/// The package upload, under the upload size limit and timeout like spreadsheet imports.
pub fn upload_routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/oneroster", axum::routing::post(import))
        .layer(DefaultBodyLimit::max(upload_limit))
}

struct RejectLine {
    file: String,
    line: u64,
    message: String,
    value: String,
}

struct ReportView {
    summary: String,
    committed: bool,
    dry_run: bool,
    rejects: Vec<RejectLine>,
}

#[derive(Template)]
#[template(path = "oneroster.html")]
struct PageView {
    c: Chrome,
    code: String,
    school_name: String,
    year: String,
    can_full: bool,
    can_import: bool,
    limit: String,
    error: Option<String>,
    report: Option<ReportView>,
}

/// Rejected rows shown on the page; the rest are counted.
const SHOWN: usize = 200;

/// The counts of an import, one sentence.
pub fn summary(tr: &Tr, r: &ImportReport) -> String {
    tr.f(
        "or-summary",
        &[
            ("new", n(r.classes_new as f64)),
            ("renamed", n(r.classes_renamed as f64)),
            ("placed", n(r.placed as f64)),
            ("ended", n(r.ended as f64)),
            ("heads", n(r.heads as f64)),
            ("unchanged", n(r.unchanged as f64)),
            ("ignored", n(r.ignored as f64)),
            ("rejected", n(r.rejected.len() as f64)),
        ],
    )
}

fn report_view(tr: &Tr, r: &ImportReport, dry_run: bool) -> ReportView {
    let summary = summary(tr, r);
    ReportView {
        summary,
        committed: r.committed,
        dry_run,
        rejects: r
            .rejected
            .iter()
            .take(SHOWN)
            .map(|x| RejectLine {
                file: x.file.to_owned(),
                line: x.line,
                message: tr.t(x.key),
                value: x.value.clone(),
            })
            .collect(),
    }
}

/// The message for a refused package.
pub fn error_text(tr: &Tr, e: &OneRosterError) -> String {
    match e {
        OneRosterError::MissingColumn(file, col) => tr.f(
            "oneroster-missing-column",
            &[("file", s(file.clone())), ("column", s(col.clone()))],
        ),
        OneRosterError::Package(key, file) if !file.is_empty() => {
            format!("{} ({file})", tr.t(key).trim_end_matches('。'))
        }
        other => tr.t(other.key()),
    }
}

async fn school_in_view(state: &AppState, user: &User, code: &str) -> Result<SchoolRow, AppError> {
    user.require(Permission::RegistryView)?;
    Registry(&state.db)
        .school(&user.0.scope(Permission::RegistryView), code)
        .await?
        .ok_or_else(AppError::not_found)
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    school: &SchoolRow,
    error: Option<String>,
    report: Option<ReportView>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let node = school.node();
    let mut res = html(&PageView {
        c: ctx.chrome(tr.t("or-title")),
        code: school.code.clone(),
        school_name: school.name.clone(),
        year: SchoolYear::of_date(today()).to_string(),
        can_full: user.0.scope(Permission::SensitiveView).contains(&node),
        can_import: user.0.scope(Permission::RegistryManage).contains(&node),
        limit: crate::shell::human_size(state.config.upload_limit),
        error: error.clone(),
        report,
    })?;
    if error.is_some() {
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    let school = school_in_view(&state, &user, &code).await?;
    render(&state, &ctx, &user, &school, None, None).await
}

async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    export_zip(state, ctx, user, code, q, false).await
}

/// With student numbers and birth dates: posted with a purpose (sensitive-data permission).
async fn export_full(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    export_zip(state, ctx, user, code, f, true).await
}

/// The package is written to a temporary file first (a zip's directory comes last), audited,
/// then streamed.
async fn export_zip(
    state: AppState,
    ctx: Ctx,
    user: User,
    code: String,
    q: Params,
    posted: bool,
) -> Result<Response, AppError> {
    let gate = crate::export::gate(&state, &user, &code, &q, posted).await?;
    let year = SchoolYear::of_date(today());
    // Removed if the request ends before the download starts (the file holds personal data).
    let spool =
        Spool(std::env::temp_dir().join(format!("santong-oneroster-{}.zip", Uuid::new_v4())));
    let file = std::fs::File::create(&spool.0).map_err(|e| {
        tracing::error!(error = %e, "cannot write an export");
        AppError::internal()
    })?;
    let written = OneRoster(&state.db)
        .export(
            actor(&user, &ctx),
            &gate.scope,
            &Target::School(gate.school.code.clone()),
            year,
            gate.full.then_some(gate.purpose.as_str()),
            std::io::BufWriter::new(file),
        )
        .await;
    if let Err(e) = written {
        return Err(match e {
            OneRosterError::NotFound => AppError::not_found(),
            other => {
                tracing::error!(error = %other, "OneRoster export failed");
                AppError::internal()
            }
        });
    }
    let name = format!("oneroster-{}-{}.zip", gate.school.code, year.0);
    // The download removes it from here on.
    let path = spool.into_path();
    Ok(crate::export::temp_file_download(
        path,
        async { Ok(()) },
        "application/zip",
        &name,
    ))
}

/// A file spooled to disk while it uploads, removed when dropped.
struct Spool(std::path::PathBuf);

impl Spool {
    /// The path, no longer removed on drop.
    fn into_path(mut self) -> std::path::PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn import(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    mut form: Multipart,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let school = school_in_view(&state, &user, &code).await?;
    let tr = ctx.tr();
    let spool = Spool(std::env::temp_dir().join(format!("santong-oneroster-{}", Uuid::new_v4())));
    let (mut csrf, mut valid_only, mut dry_run, mut size) = (String::new(), false, false, 0u64);
    let too_large = || {
        AppError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
            .arg("limit", crate::shell::human_size(state.config.upload_limit))
    };
    while let Some(mut field) = form.next_field().await.map_err(|_| too_large())? {
        match field.name() {
            Some("_csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("mode") => valid_only = field.text().await.unwrap_or_default() == "valid",
            Some("dry_run") => dry_run = field.text().await.unwrap_or_default() == "1",
            Some("file") => {
                let mut out = std::fs::File::create(&spool.0).map_err(|e| {
                    tracing::error!(error = %e, "cannot spool an upload");
                    AppError::internal()
                })?;
                while let Some(chunk) = field.chunk().await.map_err(|_| too_large())? {
                    size += chunk.len() as u64;
                    std::io::Write::write_all(&mut out, &chunk).map_err(|e| {
                        tracing::error!(error = %e, "cannot spool an upload");
                        AppError::internal()
                    })?;
                }
            }
            _ => {}
        }
    }
    check_csrf(&user.0, Some(&csrf))?;
    if size == 0 {
        return render(
            &state,
            &ctx,
            &user,
            &school,
            Some(tr.t("sheet-empty")),
            None,
        )
        .await;
    }
    match OneRoster(&state.db)
        .import(
            actor(&user, &ctx),
            Source::Zip(&spool.0),
            valid_only,
            dry_run,
        )
        .await
    {
        Ok(r) => {
            let view = report_view(&tr, &r, dry_run);
            let mut res = render(&state, &ctx, &user, &school, None, Some(view)).await?;
            if !r.committed && !dry_run {
                *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            }
            Ok(res)
        }
        Err(OneRosterError::Storage(e)) => Err(e.into()),
        Err(e) => {
            render(
                &state,
                &ctx,
                &user,
                &school,
                Some(error_text(&tr, &e)),
                None,
            )
            .await
        }
    }
}
