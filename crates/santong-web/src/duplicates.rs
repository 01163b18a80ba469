//! The duplicate queue (重复学籍) on the pages and in the API: cases where one ID number sits on
//! two records that both hold a place, visible to both schools and their regions; merging the
//! temporary record into the other one, and undoing a resolution. Corrections close cases by
//! themselves (see the student page).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use santong_domain::identity::{Node, Permission, Scope};
use santong_storage::duplicates::{CaseFilter, CaseRecord, CaseRow, Duplicates};
use santong_storage::registry::{Registry, RegistryError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::schools::{FormState, Params, audited, p, page_of};
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/duplicates", get(list))
        .route("/duplicates/{id}", get(detail))
        .route("/duplicates/{id}/merge", post(merge))
        .route("/duplicates/{id}/undo", post(undo))
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::not_found())
}

fn filter_of(q: &Params) -> CaseFilter {
    if p(q, "show") == "all" {
        CaseFilter::All
    } else {
        CaseFilter::Open
    }
}

fn view(user: &User) -> Scope {
    user.0.scope(Permission::RegistryView)
}

struct Side {
    id: String,
    name: String,
    number: String,
    birth: String,
    school: String,
    school_code: String,
    grade: i32,
    status: String,
    /// The viewer may open the record.
    linked: bool,
}

/// Whether the viewer's scope covers this side of a case. The other side is shown only as far
/// as coordinating needs (school, masked name and number): entering someone's ID number must not
/// reveal who and where the child is.
fn covers(scope: &Scope, r: &CaseRecord) -> bool {
    r.node().is_some_and(|n| scope.contains(&n))
}

fn side_of(r: &CaseRecord, tr: &Tr, linked: bool, covered: bool) -> Side {
    let status = if r.kind == "merge" {
        tr.t("duplicate-merged-record")
    } else {
        tr.t(&format!("student-status-{}", r.status))
    };
    Side {
        id: r.id.to_string(),
        name: if covered {
            r.name.clone()
        } else {
            r.name_masked()
        },
        number: if covered {
            r.number_masked()
        } else {
            r.number_for_other()
        },
        birth: if covered {
            r.birth_date.to_string()
        } else {
            "—".into()
        },
        school: r.school_name.clone(),
        school_code: r.school_code.clone(),
        grade: r.grade,
        status,
        linked,
    }
}

struct Row {
    id: String,
    status: String,
    open: bool,
    opened: String,
    student: Side,
    other: Side,
}

/// A time as China reads it (UTC+8), to the minute.
pub(crate) fn local(t: chrono::DateTime<chrono::Utc>) -> String {
    (t + chrono::Duration::hours(8))
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn row_of(c: &CaseRow, tr: &Tr, scope: &Scope, linked: (bool, bool)) -> Row {
    Row {
        id: c.id.to_string(),
        status: tr.t(&format!("duplicate-status-{}", c.status)),
        open: c.status == "open",
        opened: local(c.opened_at),
        student: side_of(&c.student, tr, linked.0, covers(scope, &c.student)),
        other: side_of(&c.other, tr, linked.1, covers(scope, &c.other)),
    }
}

#[derive(Template)]
#[template(path = "duplicates.html")]
struct ListPage {
    c: Chrome,
    all: bool,
    rows: Vec<Row>,
    pager: Pager,
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let filter = filter_of(&q);
    let page = page_of(&q)?;
    let tr = ctx.tr();
    let list = Duplicates(&state.db)
        .list(&view(&user), filter, page.limit(), page.offset())
        .await?;
    let pages = page.page_count(list.total);
    let show = if filter == CaseFilter::All {
        "all"
    } else {
        "open"
    };
    let href = |n: u32| format!("/duplicates?show={show}&page={n}");
    html(&ListPage {
        c: ctx.chrome(tr.t("duplicates-title")),
        all: filter == CaseFilter::All,
        rows: list
            .items
            .iter()
            .map(|c| row_of(c, &tr, &view(&user), (false, false)))
            .collect(),
        pager: Pager::new(&tr, page.page, pages, list.total, href),
    })
}

#[derive(Template)]
#[template(path = "duplicate.html")]
struct DetailPage {
    c: Chrome,
    r: Row,
    /// May merge (manages the temporary record's school, case open).
    can_merge: bool,
    /// May undo the resolution.
    can_undo: bool,
    resolved: String,
    steps: Vec<(String, String, String, String)>,
    form: FormState,
}

async fn manages(state: &AppState, user: &User, school: &str) -> Result<bool, AppError> {
    let node = Registry(&state.db)
        .school(&Scope::everything(), school)
        .await?
        .map(|s| s.node())
        .unwrap_or(Node::Nation);
    Ok(user.0.scope(Permission::RegistryManage).contains(&node))
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let d = Duplicates(&state.db);
    let c = d
        .case(&view(user), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let students = santong_storage::students::Students(&state.db);
    let sees = |s: Uuid| {
        let students = &students;
        async move { Ok::<_, AppError>(students.student(&view(user), s).await?.is_some()) }
    };
    let linked = (sees(c.student.id).await?, sees(c.other.id).await?);
    let undo_school = if c.corrected_id == Some(c.other.id) {
        &c.other.school_code
    } else {
        &c.student.school_code
    };
    let can_merge = c.status == "open" && manages(state, user, &c.student.school_code).await?;
    let can_undo = c.status != "open" && manages(state, user, undo_school).await?;
    let steps = d
        .steps(id)
        .await?
        .into_iter()
        .map(|s| {
            (
                tr.t(&format!("duplicate-step-{}", s.action)),
                s.actor,
                s.note,
                local(s.recorded_at),
            )
        })
        .collect();
    let resolved = match (&c.resolved_at, &c.resolved_by) {
        (Some(at), Some(by)) => format!("{} · {by}", local(*at)),
        _ => String::new(),
    };
    let mut res = html(&DetailPage {
        c: ctx.chrome(tr.t("duplicate-title")),
        r: row_of(&c, &tr, &view(user), linked),
        can_merge,
        can_undo,
        resolved,
        steps,
        form,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    render_detail(
        &state,
        &ctx,
        &user,
        parse_id(&id)?,
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

/// Runs a merge or an undo from its form: a refused field shows at the form (409 when the case
/// moved on meanwhile), anything else is the usual error page.
async fn act(
    state: AppState,
    ctx: Ctx,
    user: User,
    id: String,
    f: Params,
    merge: bool,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    if merge && p(&f, "confirm") != "on" {
        let mut form = FormState::with_errors(&f, &ctx.tr(), &[]);
        form.errors
            .push(("confirm".into(), ctx.tr().t("duplicate-confirm-required")));
        return render_detail(&state, &ctx, &user, id, form, StatusCode::BAD_REQUEST).await;
    }
    let d = Duplicates(&state.db);
    let a = actor(&user, &ctx);
    let reason = p(&f, "reason");
    let done = if merge {
        d.merge(a, &view(&user), id, reason).await
    } else {
        d.undo(a, &view(&user), id, reason).await
    };
    match done {
        Ok(_) => Ok(Redirect::to(&format!("/duplicates/{id}")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            let status = if errors.iter().any(|e| e.field == "case") {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            render_detail(&state, &ctx, &user, id, form, status).await
        }
        Err(e) => {
            let event = if merge {
                "duplicate.merge"
            } else {
                "duplicate.undo"
            };
            Err(audited(&state, &ctx, &user, event, &id.to_string(), e).await)
        }
    }
}

async fn merge(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    act(state, ctx, user, id, f, true).await
}

async fn undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    act(state, ctx, user, id, f, false).await
}

// ----- API --------------------------------------------------------------------------------------

/// One record of a case (the student number masked when it holds an ID number).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseRecordDto {
    pub id: Uuid,
    /// Masked but for the first character when the record is outside the caller's scope.
    pub name: String,
    pub student_number: String,
    /// Absent when the record is outside the caller's scope.
    pub birth_date: Option<String>,
    pub school_code: String,
    pub school_name: String,
    pub grade: i32,
    /// `in`, `suspended` or `out`.
    pub status: String,
    /// The kind of the event in force (`merge` once merged).
    pub kind: String,
}

impl CaseRecordDto {
    /// One side as the viewer may see it (see [`covers`]).
    fn of(r: &CaseRecord, scope: &Scope) -> Self {
        let covered = covers(scope, r);
        CaseRecordDto {
            id: r.id,
            name: if covered {
                r.name.clone()
            } else {
                r.name_masked()
            },
            student_number: if covered {
                r.number_masked()
            } else {
                r.number_for_other()
            },
            birth_date: if covered {
                Some(r.birth_date.to_string())
            } else {
                None
            },
            school_code: r.school_code.clone(),
            school_name: r.school_name.clone(),
            grade: r.grade,
            status: r.status.clone(),
            kind: r.kind.clone(),
        }
    }
}

/// A duplicate case (重复学籍).
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseDto {
    pub id: Uuid,
    /// `open`, `merged` or `corrected`.
    pub status: String,
    pub opened_at: String,
    pub opened_by: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    /// The record enrolled second, with a temporary number when the case opened.
    pub student: CaseRecordDto,
    /// The record it clashes with.
    pub other: CaseRecordDto,
    /// The record whose ID number was corrected (status `corrected`).
    pub corrected_id: Option<Uuid>,
}

impl CaseDto {
    fn of(c: &CaseRow, scope: &Scope) -> Self {
        CaseDto {
            id: c.id,
            status: c.status.clone(),
            opened_at: c.opened_at.to_rfc3339(),
            opened_by: c.opened_by.clone(),
            resolved_at: c.resolved_at.map(|t| t.to_rfc3339()),
            resolved_by: c.resolved_by.clone(),
            student: CaseRecordDto::of(&c.student, scope),
            other: CaseRecordDto::of(&c.other, scope),
            corrected_id: c.corrected_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaseList {
    pub items: Vec<CaseDto>,
    pub page: u32,
    pub size: u32,
    pub pages: u64,
    pub total: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CaseActionDto {
    #[serde(default)]
    pub reason: String,
}

/// Duplicate cases where either record's school is in the caller's scope: open ones
/// (`show=open`, default) or all (`show=all`), open first, newest first.
#[utoipa::path(get, path = "/duplicates", tag = "registry", security(("token" = [])),
    params(("show" = Option<String>, Query), ("page" = Option<u32>, Query),
           ("size" = Option<u32>, Query)),
    responses((status = 200, body = CaseList)))]
pub async fn api_list(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<Params>,
) -> Result<Json<CaseList>, AppError> {
    user.require(Permission::RegistryView)?;
    let page = page_of(&q)?;
    let list = Duplicates(&state.db)
        .list(&view(&user), filter_of(&q), page.limit(), page.offset())
        .await?;
    Ok(Json(CaseList {
        pages: page.page_count(list.total),
        items: list
            .items
            .iter()
            .map(|c| CaseDto::of(c, &view(&user)))
            .collect(),
        page: page.page,
        size: page.size,
        total: list.total,
    }))
}

/// A duplicate case (404 unless either record's school is in the caller's scope).
#[utoipa::path(get, path = "/duplicates/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CaseDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_detail(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<CaseDto>, AppError> {
    user.require(Permission::RegistryView)?;
    Duplicates(&state.db)
        .case(&view(&user), parse_id(&id)?)
        .await?
        .map(|c| Json(CaseDto::of(&c, &view(&user))))
        .ok_or_else(AppError::not_found)
}

/// Merges the case's temporary record into the other one (needs `registry_manage` at the
/// temporary record's school). A case resolved meanwhile answers 400 with code
/// `duplicate-not-open`.
#[utoipa::path(post, path = "/duplicates/{id}/merge", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = CaseActionDto,
    responses((status = 200, body = CaseDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_merge(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<CaseActionDto>,
) -> Result<Json<CaseDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    match Duplicates(&state.db)
        .merge(actor(&user, &ctx), &view(&user), id, &b.reason)
        .await
    {
        Ok(c) => Ok(Json(CaseDto::of(&c, &view(&user)))),
        Err(e) => Err(audited(&state, &ctx, &user, "duplicate.merge", &id.to_string(), e).await),
    }
}

/// Undoes a merge or a correction that closed the case, and opens it again.
#[utoipa::path(post, path = "/duplicates/{id}/undo", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = CaseActionDto,
    responses((status = 200, body = CaseDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<CaseActionDto>,
) -> Result<Json<CaseDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    match Duplicates(&state.db)
        .undo(actor(&user, &ctx), &view(&user), id, &b.reason)
        .await
    {
        Ok(c) => Ok(Json(CaseDto::of(&c, &view(&user)))),
        Err(e) => Err(audited(&state, &ctx, &user, "duplicate.undo", &id.to_string(), e).await),
    }
}
