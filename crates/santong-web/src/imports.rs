//! Imports on the pages: a school's import page (template downloads, the upload form, recent
//! batches), the batch page (progress while a job works, then the counts and the rejected rows,
//! commit, cancel, undo) and the rejected-rows report as CSV and XLSX. The messages of rows and
//! files are rendered here for the pages and the command line alike.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use santong_domain::identity::{Permission, Scope};
use santong_domain::import::{
    ClassColumn, Column, ConditionColumn, SchoolColumn, StudentColumn, TeacherColumn,
};
use santong_domain::registry::Ethnicity;
use santong_storage::imports::{
    BatchRow, ImportError, Imports, Kind, Mode, Place, Problem, Reject,
};
use santong_storage::jobs::Jobs;
use santong_storage::registry::{Registry, RegistryError};
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::{User, check_csrf};
use crate::error::AppError;
use crate::export::push_line;
use crate::i18n::{Tr, n, s};
use crate::schools::{Params, audited, p};
use crate::shell::Ctx;
use crate::views::{Chrome, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/import", get(form))
        .route("/schools/{code}/import/template.csv", get(template_csv))
        .route("/schools/{code}/import/template.xlsx", get(template_xlsx))
        .route("/regions/{code}/import", get(county_form))
        .route("/regions/{code}/import/template.csv", get(template_csv))
        .route("/regions/{code}/import/template.xlsx", get(template_xlsx))
        .route("/imports/{id}", get(batch_page))
        .route("/imports/{id}/commit", post(commit))
        .route("/imports/{id}/cancel", post(cancel))
        .route("/imports/{id}/undo", post(undo))
        .route("/imports/{id}/rejects.csv", get(rejects_csv))
        .route("/imports/{id}/rejects.xlsx", get(rejects_xlsx))
}

/// The upload alone, which `router` gives its own size limit and timeout.
pub fn upload_routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/import", post(upload))
        .route("/regions/{code}/import", post(county_upload))
        // Multipart's own default limit would cut a roster short.
        .layer(DefaultBodyLimit::max(upload_limit))
}

// ----- Messages ----------------------------------------------------------------------------------

/// The header of a field in the template, in the reader's language.
fn column_label(tr: &Tr, field: &str) -> String {
    tr.t(&format!("imp-col-{}", field.replace('_', "-")))
}

/// A kind's fields in template order: (field, required).
fn fields_of(kind: Kind) -> Vec<(&'static str, bool)> {
    fn all<C: Column>() -> Vec<(&'static str, bool)> {
        C::all().iter().map(|c| (c.field(), c.required())).collect()
    }
    match kind {
        Kind::Students => all::<StudentColumn>(),
        Kind::Teachers => all::<TeacherColumn>(),
        Kind::Classes => all::<ClassColumn>(),
        Kind::Schools => all::<SchoolColumn>(),
        Kind::Conditions => all::<ConditionColumn>(),
    }
}

/// Where an import page is: a school's (students, staff, classes) or a county's (schools).
#[derive(Clone, Copy)]
enum At<'a> {
    School(&'a str),
    County(&'a str),
}

/// `kind` of the query or form for a page at `at`: students at a school, schools at a county,
/// unless it says otherwise; an unknown kind, or one of the other level, is no page.
fn kind_at(at: At<'_>, raw: &str) -> Result<Kind, AppError> {
    let county = matches!(at, At::County(_));
    let kind = match raw {
        "" if county => Kind::Schools,
        "" => Kind::Students,
        k => Kind::parse(k).ok_or_else(AppError::not_found)?,
    };
    if kind.county_level() == county {
        Ok(kind)
    } else {
        Err(AppError::not_found())
    }
}

/// The place of an import page, if the caller manages it: the place, its path, its name and the
/// crumbs' root.
async fn place_at(
    state: &AppState,
    user: &User,
    at: At<'_>,
) -> Result<(Place, String, String, (&'static str, String)), AppError> {
    user.require(Permission::RegistryManage)?;
    match at {
        At::School(code) => {
            let school = Registry(&state.db)
                .school(&manage(user), code)
                .await?
                .ok_or_else(AppError::not_found)?;
            let base = format!("/schools/{}", school.code);
            let name = school.name.clone();
            Ok((
                Place::School(school),
                base,
                name,
                ("/schools", String::new()),
            ))
        }
        At::County(code) => {
            let county = santong_domain::region::RegionCode::parse(code)
                .map_err(|_| AppError::not_found())?;
            let region = santong_storage::regions::Regions(&state.db)
                .get(county)
                .await?
                .filter(|r| {
                    santong_domain::region::RegionLevel::parse(&r.level)
                        == Some(santong_domain::region::RegionLevel::County)
                })
                .ok_or_else(AppError::not_found)?;
            if !manage(user).contains(&santong_domain::identity::Node::Region(county)) {
                return Err(AppError::not_found());
            }
            Ok((
                Place::County(county),
                format!("/regions/{county}"),
                region.name,
                ("/regions", String::new()),
            ))
        }
    }
}

/// `kind` of the query or form: students unless it says otherwise; an unknown kind is no page.
fn kind_of(q: &Params) -> Result<Kind, AppError> {
    kind_at(At::School(""), p(q, "kind"))
}

/// A message key of the kind: `imp-title` for students, `imp-title-teachers` for staff.
fn kind_key(base: &str, kind: Kind) -> String {
    match kind {
        Kind::Students => base.to_owned(),
        k => format!("{base}-{}", k.as_str()),
    }
}

/// One problem of a row: `出生日期：…` when it is one cell's.
pub fn problem_text(tr: &Tr, pb: &Problem, headers: &[String]) -> String {
    let msg = match pb.line {
        Some(l) => tr.f(&pb.key, &[("line", n(l as f64))]),
        None => tr.t(&pb.key),
    };
    match pb.col.and_then(|c| headers.get(c)) {
        Some(h) if !h.trim().is_empty() => tr.f(
            "imp-problem-at",
            &[("column", s(h.trim().to_owned())), ("message", s(msg))],
        ),
        _ => msg,
    }
}

/// All problems of a row, joined.
pub fn problems_text(tr: &Tr, r: &Reject, headers: &[String]) -> String {
    r.problems
        .iter()
        .map(|pb| {
            let t = problem_text(tr, pb, headers);
            t.trim_end_matches('。').to_owned()
        })
        .collect::<Vec<_>>()
        .join(&tr.t("imp-problem-sep"))
}

/// A rejected row as the command line prints it.
pub fn reject_line(tr: &Tr, r: &Reject, headers: &[String]) -> String {
    tr.f(
        "imp-reject-line",
        &[
            ("line", n(r.line as f64)),
            ("problems", s(problems_text(tr, r, headers))),
        ],
    )
}

/// The message for a refused file or batch.
pub fn error_text(tr: &Tr, e: &ImportError) -> String {
    match e {
        ImportError::MissingColumn(field) => tr.f(
            "import-missing-column",
            &[("column", s(column_label(tr, field)))],
        ),
        ImportError::SameField(a, b) => tr.f(
            "import-same-field",
            &[("first", n(*a as f64)), ("second", n(*b as f64))],
        ),
        ImportError::Registry(RegistryError::Fields(f)) => f
            .iter()
            .map(|f| tr.t(f.kind.key()))
            .collect::<Vec<_>>()
            .join(" "),
        ImportError::Registry(RegistryError::NotFound) => tr.t("error-not-found"),
        ImportError::Registry(RegistryError::Forbidden) => tr.t("error-forbidden"),
        other => match other.key() {
            Some(k) => tr.t(k),
            None => tr.t("import-failed"),
        },
    }
}

/// The rejected-rows report as CSV: the file's columns, then 错误说明.
pub fn write_rejects_csv(
    w: &mut impl std::io::Write,
    tr: &Tr,
    headers: &[String],
    rows: &[Reject],
) -> std::io::Result<()> {
    let mut out = String::from("\u{feff}");
    let mut head = headers.to_vec();
    head.push(tr.t("imp-error-column"));
    push_line(&mut out, &head);
    for r in rows {
        let mut cells = r.cells.clone();
        cells.resize(headers.len().max(cells.len()), String::new());
        cells.push(problems_text(tr, r, headers));
        push_line(&mut out, &cells);
        if out.len() > 1 << 16 {
            w.write_all(out.as_bytes())?;
            out.clear();
        }
    }
    w.write_all(out.as_bytes())
}

// ----- The school's import page ------------------------------------------------------------------

struct BatchLine {
    id: String,
    created: String,
    file_name: String,
    state: String,
    tally: String,
}

fn tally_text(tr: &Tr, b: &BatchRow) -> String {
    let t = b.tally();
    tr.f(
        "imp-tally",
        &[
            ("rows", n(t.rows as f64)),
            ("new", n(t.new as f64)),
            ("updated", n(t.updated as f64)),
            ("unchanged", n(t.unchanged as f64)),
            ("rejected", n(t.rejected as f64)),
        ],
    )
}

#[derive(Template)]
#[template(path = "imports.html")]
struct FormPage {
    c: Chrome,
    kind: &'static str,
    /// `/schools/{code}` or `/regions/{code}`: the page's place, under which its import lives.
    base: String,
    place_name: String,
    /// The list the place belongs to, for the crumbs: (href, label).
    root: (&'static str, String),
    columns: Vec<(String, bool)>,
    batches: Vec<BatchLine>,
    error: Option<String>,
    limit: String,
}

/// A region's name, or its code if there is none.
async fn region_name(state: &AppState, code: &str) -> Result<String, AppError> {
    Ok(match santong_domain::region::RegionCode::parse(code) {
        Ok(c) => santong_storage::regions::Regions(&state.db)
            .get(c)
            .await?
            .map_or_else(|| code.to_owned(), |r| r.name),
        Err(_) => code.to_owned(),
    })
}

fn manage(user: &User) -> Scope {
    user.0.scope(Permission::RegistryManage)
}

async fn import_page(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    at: At<'_>,
    kind: Kind,
    error: Option<String>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let (place, base, place_name, (root, _)) = place_at(state, user, at).await?;
    let root_label = tr.t(if root == "/schools" {
        "schools-title"
    } else {
        "regions-title"
    });
    let batches = Imports(&state.db)
        .batches(&manage(user), Some(&place), 20)
        .await?
        .iter()
        .map(|b| BatchLine {
            id: b.id.to_string(),
            created: crate::duplicates::local(b.created_at),
            file_name: b.file_name.clone(),
            state: tr.t(&format!("imp-state-{}", b.state)),
            tally: tally_text(&tr, b),
        })
        .collect();
    let mut res = html(&FormPage {
        c: ctx.chrome(tr.t(&kind_key("imp-title", kind))),
        kind: kind.as_str(),
        base,
        place_name,
        root: (root, root_label),
        columns: fields_of(kind)
            .into_iter()
            .map(|(f, required)| (column_label(&tr, f), required))
            .collect(),
        batches,
        limit: crate::shell::human_size(state.config.upload_limit),
        error: error.clone(),
    })?;
    if error.is_some() {
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

async fn form(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let kind = kind_of(&q)?;
    import_page(&state, &ctx, &user, At::School(&code), kind, None).await
}

/// A county's import page (its schools).
async fn county_form(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let at = At::County(&code);
    let kind = kind_at(at, p(&q, "kind"))?;
    import_page(&state, &ctx, &user, at, kind, None).await
}

/// A file spooled to disk while it uploads, removed when dropped.
struct Spool(std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Receives the upload into a temporary file (never whole in memory), then stores it as a batch
/// whose check runs as a job; the browser goes to the batch page.
async fn upload(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    form: Multipart,
) -> Result<Response, AppError> {
    receive(state, ctx, user, At::School(&code), form).await
}

async fn county_upload(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    form: Multipart,
) -> Result<Response, AppError> {
    receive(state, ctx, user, At::County(&code), form).await
}

async fn receive(
    state: AppState,
    ctx: Ctx,
    user: User,
    at: At<'_>,
    mut form: Multipart,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let code = match at {
        At::School(c) | At::County(c) => c.to_owned(),
    };
    let tr = ctx.tr();
    let spool = Spool(std::env::temp_dir().join(format!("santong-upload-{}", Uuid::new_v4())));
    let (mut csrf, mut mode, mut file_name, mut size, mut kind) =
        (String::new(), Mode::All, String::new(), 0u64, String::new());
    let too_large = || {
        AppError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
            .arg("limit", crate::shell::human_size(state.config.upload_limit))
    };
    while let Some(mut field) = form.next_field().await.map_err(|_| too_large())? {
        match field.name() {
            Some("_csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("kind") => kind = field.text().await.unwrap_or_default(),
            Some("mode") => {
                mode = Mode::parse(&field.text().await.unwrap_or_default()).unwrap_or(Mode::All)
            }
            Some("file") => {
                file_name = field.file_name().unwrap_or("").to_owned();
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
    let kind = kind_at(at, &kind)?;
    if size == 0 {
        return import_page(&state, &ctx, &user, at, kind, Some(tr.t("sheet-empty"))).await;
    }
    match Imports(&state.db)
        .upload(actor(&user, &ctx), kind, &code, &file_name, mode, &spool.0)
        .await
    {
        Ok(b) => Ok(Redirect::to(&format!("/imports/{}", b.id)).into_response()),
        Err(ImportError::Registry(e)) => {
            Err(audited(&state, &ctx, &user, "import.upload", &code, e).await)
        }
        Err(e) => import_page(&state, &ctx, &user, at, kind, Some(error_text(&tr, &e))).await,
    }
}

// ----- Templates ---------------------------------------------------------------------------------

/// The drop-down list of a coded field: names in Chinese, codes otherwise (the import reads
/// both, but not every language's names).
fn choices_of(tr: &Tr, field: &str) -> Vec<String> {
    let coded = |kind: &str, codes: &[&str]| -> Vec<String> {
        codes
            .iter()
            .map(|c| {
                if tr.tag() == "zh-CN" {
                    tr.t(&format!("teacher-{kind}-{c}"))
                } else {
                    (*c).to_owned()
                }
            })
            .collect()
    };
    match field {
        "sex" => vec![tr.t("imp-sex-1"), tr.t("imp-sex-2")],
        "ethnicity" => Ethnicity::all()
            .iter()
            .map(|(_, zh, roman)| {
                if tr.tag() == "zh-CN" {
                    zh.clone()
                } else {
                    roman.clone()
                }
            })
            .collect(),
        "grade" => (1..=12).map(|g| g.to_string()).collect(),
        "kind" => santong_domain::registry::SchoolKind::ALL
            .iter()
            .map(|k| {
                if tr.tag() == "zh-CN" {
                    tr.t(&format!("school-kind-{}", k.code()))
                } else {
                    k.code().to_owned()
                }
            })
            .collect(),
        "urban_rural" => santong_domain::registry::UrbanRural::ALL
            .iter()
            .map(|u| {
                if tr.tag() == "zh-CN" {
                    tr.t(&format!("urban-rural-{}", u.code()))
                } else {
                    u.code().to_owned()
                }
            })
            .collect(),
        "broadband" => santong_domain::registry::Broadband::ALL
            .iter()
            .map(|b| {
                if tr.tag() == "zh-CN" {
                    tr.t(&format!("broadband-{}", b.as_str()))
                } else {
                    b.as_str().to_owned()
                }
            })
            .collect(),
        "qualification" => coded("qualification", &santong_domain::staff::QUALIFICATIONS),
        "title" => coded("title", &santong_domain::staff::TITLES),
        "post" => coded("post", &santong_domain::staff::POSTS),
        _ => vec![],
    }
}

/// Fields a spreadsheet must keep as text (long digit strings).
fn text_field(field: &str) -> bool {
    matches!(
        field,
        "id_number"
            | "student_number"
            | "guardian_phone"
            | "household_region"
            | "code"
            | "parent_code"
    )
}

/// A school's or a county's page, by the path it was asked under.
fn at_of<'a>(uri: &axum::http::Uri, code: &'a str) -> At<'a> {
    if uri.path().starts_with("/regions/") {
        At::County(code)
    } else {
        At::School(code)
    }
}

/// The kind of a template download at `at`, if the caller manages the place.
async fn template_kind(
    state: &AppState,
    user: &User,
    at: At<'_>,
    q: &Params,
) -> Result<Kind, AppError> {
    let kind = kind_at(at, p(q, "kind"))?;
    place_at(state, user, at).await?;
    Ok(kind)
}

fn attachment(body: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The CSV template: the header row.
async fn template_csv(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let kind = template_kind(&state, &user, at_of(&uri, &code), &q).await?;
    let tr = ctx.tr();
    let mut out = String::from("\u{feff}");
    let head: Vec<String> = fields_of(kind)
        .into_iter()
        .map(|(f, _)| column_label(&tr, f))
        .collect();
    // The header alone: an example row would be imported as a pupil by whoever types below it.
    push_line(&mut out, &head);
    Ok(attachment(
        out.into_bytes(),
        "text/csv; charset=utf-8",
        &format!("{}-template.csv", kind.as_str()),
    ))
}

/// The XLSX template: drop-down lists for coded fields, a note on every header, an
/// instructions sheet.
async fn template_xlsx(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let kind = template_kind(&state, &user, at_of(&uri, &code), &q).await?;
    let tr = ctx.tr();
    let columns: Vec<santong_storage::sheet::TemplateColumn> = fields_of(kind)
        .into_iter()
        .map(|(f, required)| santong_storage::sheet::TemplateColumn {
            header: column_label(&tr, f),
            note: tr.t(&kind_key(
                &format!("imp-note-{}", f.replace('_', "-")),
                kind,
            )),
            required,
            choices: choices_of(&tr, f),
            text: text_field(f),
        })
        .collect();
    let steps = match kind {
        Kind::Students => 6,
        Kind::Teachers => 4,
        Kind::Classes | Kind::Schools | Kind::Conditions => 3,
    };
    let instructions: Vec<String> = (1..=steps)
        .map(|i| tr.t(&kind_key(&format!("imp-howto-{i}"), kind)))
        .collect();
    let body = santong_storage::sheet::template_xlsx(
        &tr.t(&format!("imp-sheet-{}", kind.as_str())),
        &columns,
        &tr.t("imp-sheet-instructions"),
        &instructions,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot write the template");
        AppError::internal()
    })?;
    Ok(attachment(
        body,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &format!("{}-template.xlsx", kind.as_str()),
    ))
}

// ----- The batch page ----------------------------------------------------------------------------

struct RejectLine {
    line: u64,
    cells: Vec<(String, bool)>,
    problems: String,
}

#[derive(Template)]
#[template(path = "import_batch.html")]
struct BatchPage {
    c: Chrome,
    id: String,
    kind: &'static str,
    kind_title: String,
    base: String,
    place_name: String,
    root: (&'static str, String),
    file_name: String,
    state_key: String,
    all_or_nothing: bool,
    state: String,
    busy: bool,
    percent: i32,
    tally: santong_storage::imports::Tally,
    error: Option<String>,
    headers: Vec<String>,
    rejects: Vec<RejectLine>,
    more_rejects: bool,
    next_after: u64,
    can_manage: bool,
    form_error: Option<String>,
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::not_found())
}

fn view(user: &User) -> Scope {
    user.0.scope(Permission::RegistryView)
}

/// Rejected rows a page shows at once.
const REJECTS_PAGE: u64 = 100;

async fn render_batch(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    after: u64,
    form_error: Option<String>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let tr = ctx.tr();
    let imports = Imports(&state.db);
    let b = imports
        .batch(&view(user), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let percent = match (b.state().busy(), b.job_id) {
        (true, Some(job)) => Jobs(&state.db).get(job).await?.map_or(0, |j| j.progress),
        _ => 100,
    };
    let headers = b.header_cells();
    let rows = imports
        .rejects(&view(user), id, after, REJECTS_PAGE + 1)
        .await?;
    let more_rejects = rows.len() as u64 > REJECTS_PAGE;
    let rejects: Vec<RejectLine> = rows
        .iter()
        .take(REJECTS_PAGE as usize)
        .map(|r| RejectLine {
            line: r.line,
            cells: (0..headers.len().max(r.cells.len()))
                .map(|i| {
                    let bad = r.problems.iter().any(|pb| pb.col == Some(i));
                    (masked_cell(r.cells.get(i).map_or("", String::as_str)), bad)
                })
                .collect(),
            problems: problems_text(&tr, r, &headers),
        })
        .collect();
    let next_after = rejects.last().map_or(after, |r| r.line);
    let can_manage = manage(user).contains(&b.node());
    let (base, place_name, root) = match &b.school_code {
        Some(code) => (
            format!("/schools/{code}"),
            Registry(&state.db)
                .school(&view(user), code)
                .await?
                .map_or_else(|| code.clone(), |s| s.name),
            ("/schools", tr.t("schools-title")),
        ),
        None => (
            format!("/regions/{}", b.county),
            region_name(state, &b.county).await?,
            ("/regions", tr.t("regions-title")),
        ),
    };
    let error = b.error_key.as_deref().map(|k| tr.t(k));
    let mut res = html(&BatchPage {
        c: ctx.chrome(tr.t("imp-batch-title")),
        id: b.id.to_string(),
        kind: b.kind().as_str(),
        kind_title: tr.t(&kind_key("imp-title", b.kind())),
        base,
        place_name,
        root,
        file_name: b.file_name.clone(),
        state_key: b.state.clone(),
        all_or_nothing: b.mode() == Mode::All,
        state: tr.t(&format!("imp-state-{}", b.state)),
        busy: b.state().busy(),
        percent,
        tally: b.tally(),
        error,
        headers,
        rejects,
        more_rejects,
        next_after,
        can_manage,
        form_error: form_error.clone(),
    })?;
    if form_error.is_some() {
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(res)
}

/// A cell of a rejected row as the page shows it: anything shaped like an ID number or a mobile
/// number is masked, whatever its column is called (a 家长身份证 column is not one the import
/// knows).
fn masked_cell(v: &str) -> String {
    let t = santong_domain::import::normalize(v).replace(' ', "");
    let chars: Vec<char> = t.chars().collect();
    let digits = chars.iter().filter(|c| c.is_ascii_digit()).count();
    let id_like = (15..=19).contains(&chars.len()) && digits + 1 >= chars.len();
    let phone_like = (11..=14).contains(&chars.len()) && digits >= 11;
    if id_like {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[chars.len() - 2..].iter().collect();
        format!("{head}********{tail}")
    } else if phone_like {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}****{tail}")
    } else {
        v.to_owned()
    }
}

async fn batch_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let after = p(&q, "after").parse().unwrap_or(0);
    render_batch(&state, &ctx, &user, parse_id(&id)?, after, None).await
}

async fn act(
    state: AppState,
    ctx: Ctx,
    user: User,
    id: String,
    f: Params,
    what: &'static str,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let tr = ctx.tr();
    if what == "undo" && p(&f, "confirm") != "on" {
        return render_batch(&state, &ctx, &user, id, 0, Some(tr.t("imp-confirm-undo"))).await;
    }
    let imports = Imports(&state.db);
    let a = actor(&user, &ctx);
    let scope = view(&user);
    let done = match what {
        "commit" => {
            let mode = Mode::parse(p(&f, "mode")).unwrap_or(Mode::All);
            imports.commit(a, &scope, id, mode).await.map(|_| ())
        }
        "cancel" => imports.cancel(a, &scope, id).await,
        _ => imports.undo(a, &scope, id).await.map(|_| ()),
    };
    match done {
        Ok(()) => Ok(Redirect::to(&format!("/imports/{id}")).into_response()),
        Err(ImportError::Registry(RegistryError::Fields(fields))) => {
            let msg = fields
                .iter()
                .map(|f| tr.t(f.kind.key()))
                .collect::<Vec<_>>()
                .join(" ");
            render_batch(&state, &ctx, &user, id, 0, Some(msg)).await
        }
        Err(ImportError::Registry(e)) => {
            let event = match what {
                "commit" => "import.commit",
                "cancel" => "import.cancel",
                _ => "import.undo",
            };
            Err(audited(&state, &ctx, &user, event, &id.to_string(), e).await)
        }
        Err(e) => render_batch(&state, &ctx, &user, id, 0, Some(error_text(&tr, &e))).await,
    }
}

async fn commit(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    act(state, ctx, user, id, f, "commit").await
}

async fn cancel(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    act(state, ctx, user, id, f, "cancel").await
}

async fn undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    act(state, ctx, user, id, f, "undo").await
}

// ----- The rejected-rows report ------------------------------------------------------------------

/// Every rejected row of a batch the user manages (the rows hold full personal data as the file
/// had it: only for those who may import there), audited.
async fn all_rejects(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: &str,
    format: &str,
) -> Result<(BatchRow, Vec<Reject>), AppError> {
    user.require(Permission::RegistryManage)?;
    let id = parse_id(id)?;
    let imports = Imports(&state.db);
    let b = imports
        .batch(&manage(user), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    // The rows are the file as it came, ID and phone numbers whole: the sensitive-data right at
    // the school, as for a full roster.
    if !user.0.scope(Permission::SensitiveView).contains(&b.node()) {
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "error-forbidden",
        ));
    }
    let mut rows = vec![];
    let mut after = 0;
    loop {
        let page = imports.rejects(&manage(user), id, after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.line;
        rows.extend(page);
    }
    imports
        .record_reject_export(actor(user, ctx), &b, format)
        .await?;
    Ok((b, rows))
}

async fn rejects_csv(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (b, rows) = all_rejects(&state, &ctx, &user, &id, "csv").await?;
    let mut out = vec![];
    write_rejects_csv(&mut out, &ctx.tr(), &b.header_cells(), &rows)
        .map_err(|_| AppError::internal())?;
    Ok(attachment(
        out,
        "text/csv; charset=utf-8",
        "rejected-rows.csv",
    ))
}

async fn rejects_xlsx(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let (b, rows) = all_rejects(&state, &ctx, &user, &id, "xlsx").await?;
    let tr = ctx.tr();
    let headers = b.header_cells();
    let body = santong_storage::sheet::rejects_xlsx(
        &headers,
        &tr.t("imp-error-column"),
        rows.into_iter().map(|r| santong_storage::sheet::Rejected {
            line: r.line,
            problems: r
                .problems
                .iter()
                .map(|pb| (pb.col, problem_text(&tr, pb, &headers)))
                .collect(),
            cells: r.cells,
        }),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot write the rejected rows");
        AppError::internal()
    })?;
    Ok(attachment(
        body,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "rejected-rows.xlsx",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::csv_field;

    #[test]
    fn report_keeps_cells_and_adds_the_problems() {
        let tr = Tr::new(crate::i18n::Lang::ZhCn);
        let headers = vec!["姓名".to_owned(), "性别".to_owned()];
        let rows = vec![Reject {
            line: 3,
            cells: vec!["=1+1".into(), "X".into()],
            problems: vec![Problem {
                col: Some(1),
                key: "student-bad-sex".into(),
                line: None,
            }],
        }];
        let mut out = vec![];
        write_rejects_csv(&mut out, &tr, &headers, &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("\u{feff}姓名,性别,错误说明\r\n"), "{text}");
        assert!(
            text.contains(&format!("{},X,性别：", csv_field("=1+1"))),
            "{text}"
        );
        assert_eq!(masked_cell("44030520160301001X"), "440305********1X");
        assert_eq!(masked_cell("138 0013 8000"), "138****8000");
        assert_eq!(masked_cell("张三"), "张三");
        assert_eq!(masked_cell("2016-03-01"), "2016-03-01");
    }
}
