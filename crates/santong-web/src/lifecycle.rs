//! A student's lifecycle on the pages and in the API: the history on the student's page, a change
//! recorded by hand, undo with a confirmation, and the year-end batch wizard (dry run, apply,
//! undo the whole batch).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use santong_domain::identity::Permission;
use santong_domain::lifecycle::EventKind;
use santong_storage::identity::Actor;
use santong_storage::lifecycle::{
    BatchRow, BatchTarget, EventRow, NewEvent, Plan, YearEnd, YearEndInput,
};
use santong_storage::registry::RegistryError;
use santong_storage::students::Students;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::schools::{FormState, Params, audited, p};
use crate::shell::Ctx;
use crate::students::{Shown, render_detail};
use crate::views::{Chrome, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/students/{id}/events", post(record))
        .route(
            "/students/{id}/events/{event}/undo",
            get(undo_form).post(undo),
        )
        .route("/schools/{code}/events", get(school_events))
        .route("/schools/{code}/events/export.csv", get(export_events))
        .route("/schools/{code}/events/export.xlsx", get(export_events))
        .route("/year-end", get(year_end).post(apply))
        .route("/year-end/batches/{id}", get(batch_page))
        .route("/year-end/batches/{id}/undo", post(batch_undo))
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::not_found())
}

fn kind_label(tr: &Tr, kind: &str) -> String {
    tr.t(&format!("event-kind-{kind}"))
}

/// Reasons the system writes are words of the interface, not of a person.
fn reason_label(tr: &Tr, reason: &str) -> String {
    match reason {
        "year-end" => tr.t("event-reason-year-end"),
        "batch" => tr.t("event-reason-batch"),
        r => r.to_owned(),
    }
}

/// One line of the history on the student's page.
pub(crate) struct EventView {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) code: String,
    pub(crate) on: String,
    pub(crate) school: String,
    pub(crate) grade: i32,
    pub(crate) from: String,
    pub(crate) reason: String,
    pub(crate) approval: String,
    pub(crate) recorded: String,
    pub(crate) actor: String,
    pub(crate) undone: bool,
    /// The event in force, which the viewer may undo.
    pub(crate) undoable: bool,
}

/// The student's history for the page (empty outside the viewer's scope).
pub(crate) async fn history(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    student: Uuid,
) -> Result<Vec<EventView>, AppError> {
    let tr = ctx.tr();
    let rows = Students(&state.db)
        .events(&user.0.scope(Permission::RegistryView), student)
        .await?;
    let in_force = rows
        .iter()
        .rev()
        .find(|e| e.undone_by.is_none() && e.kind != "undo")
        .map(|e| e.id);
    Ok(rows
        .iter()
        .map(|e| EventView {
            id: e.id.to_string(),
            kind: kind_label(&tr, &e.kind),
            code: e.code.clone(),
            on: e.effective_on.to_string(),
            school: e.school_code.clone(),
            grade: e.grade,
            from: match (&e.from_school, e.from_grade) {
                (Some(s), Some(g)) => format!("{s} · {g}"),
                (None, Some(g)) if g != e.grade => g.to_string(),
                _ => String::new(),
            },
            reason: reason_label(&tr, &e.reason),
            approval: e.approval_ref.clone().unwrap_or_default(),
            recorded: (e.recorded_at + chrono::Duration::hours(8))
                .format("%Y-%m-%d %H:%M")
                .to_string(),
            actor: e.actor.clone(),
            undone: e.undone_by.is_some(),
            undoable: Some(e.id) == in_force && e.kind != EventKind::Enrol.as_str(),
        })
        .collect())
}

fn event_of(f: &Params) -> NewEvent {
    NewEvent {
        kind: p(f, "kind").into(),
        effective_on: p(f, "effective_on").into(),
        reason: p(f, "reason").into(),
        approval_ref: p(f, "approval_ref").into(),
    }
}

async fn record(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let scope = user.0.scope(Permission::RegistryView);
    let students = Students(&state.db);
    match students
        .record(actor(&user, &ctx), &scope, id, &event_of(&f))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/students/{id}#history")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let s = students
                .student(&scope, id)
                .await?
                .ok_or_else(AppError::not_found)?;
            let shown = Shown {
                event_form: FormState::with_errors(&f, &ctx.tr(), &errors),
                ..Shown::default()
            };
            render_detail(&state, &ctx, &user, s, shown, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.event", &id.to_string(), e).await),
    }
}

#[derive(Template)]
#[template(path = "event_undo.html")]
struct UndoPage {
    c: Chrome,
    student: String,
    name: String,
    event: EventView,
    form: FormState,
}

async fn render_undo(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    student: Uuid,
    event: Uuid,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let s = Students(&state.db)
        .student(&user.0.scope(Permission::RegistryView), student)
        .await?
        .ok_or_else(AppError::not_found)?;
    let event = history(state, ctx, user, student)
        .await?
        .into_iter()
        .find(|e| e.id == event.to_string())
        .ok_or_else(AppError::not_found)?;
    let tr = ctx.tr();
    let mut res = html(&UndoPage {
        c: ctx.chrome(tr.t("event-undo-title")),
        student: student.to_string(),
        name: s.student.name,
        event,
        form,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn undo_form(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path((id, event)): Path<(String, String)>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let (id, event) = (parse_id(&id)?, parse_id(&event)?);
    render_undo(
        &state,
        &ctx,
        &user,
        id,
        event,
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

async fn undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path((id, event)): Path<(String, String)>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let (id, event) = (parse_id(&id)?, parse_id(&event)?);
    let scope = user.0.scope(Permission::RegistryView);
    match Students(&state.db)
        .undo(actor(&user, &ctx), &scope, id, event, p(&f, "reason"))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/students/{id}#history")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_undo(
                &state,
                &ctx,
                &user,
                id,
                event,
                form,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.undo", &id.to_string(), e).await),
    }
}

// ----- year-end batch pages ---------------------------------------------------------------------

/// The target named by a form or query: `school`, else `county`.
fn target_of(f: &Params) -> Option<BatchTarget> {
    match (p(f, "school").trim(), p(f, "county").trim()) {
        ("", "") => None,
        ("", county) => Some(BatchTarget::County(county.to_owned())),
        (school, _) => Some(BatchTarget::School(school.to_owned())),
    }
}

fn year_end_input(f: &Params) -> YearEndInput {
    YearEndInput {
        effective_on: p(f, "effective_on").into(),
        receiving_school: p(f, "receiving_school").into(),
    }
}

struct ExceptionView {
    id: String,
    name: String,
    school: String,
    grade: i32,
    why: String,
}

struct PlanView {
    promoted: u64,
    graduated: u64,
    progressed: u64,
    skipped: u64,
    effective_on: String,
    by_grade: Vec<(i32, u64)>,
    exceptions: Vec<ExceptionView>,
    /// Exceptions beyond those shown.
    more: usize,
}

/// How many exceptions the page lists (the API gives them all).
const SHOWN_EXCEPTIONS: usize = 200;

impl PlanView {
    fn of(plan: &Plan, tr: &Tr) -> PlanView {
        PlanView {
            promoted: plan.promoted,
            graduated: plan.graduated,
            progressed: plan.progressed,
            skipped: plan.skipped,
            effective_on: plan.effective_on.to_string(),
            by_grade: plan.by_grade.clone(),
            exceptions: plan
                .exceptions
                .iter()
                .take(SHOWN_EXCEPTIONS)
                .map(|e| ExceptionView {
                    id: e.student_id.to_string(),
                    name: e.name.clone(),
                    school: e.school_code.clone(),
                    grade: e.grade,
                    why: tr.t(e.exception.key()),
                })
                .collect(),
            more: plan.exceptions.len().saturating_sub(SHOWN_EXCEPTIONS),
        }
    }
}

struct BatchView {
    id: String,
    target: String,
    on: String,
    promoted: i32,
    graduated: i32,
    progressed: i32,
    skipped: i32,
    created: String,
    actor: String,
    undone: Option<String>,
}

impl BatchView {
    fn of(b: &BatchRow, tr: &Tr) -> BatchView {
        let at = |t: chrono::DateTime<chrono::Utc>| {
            (t + chrono::Duration::hours(8))
                .format("%Y-%m-%d %H:%M")
                .to_string()
        };
        BatchView {
            id: b.id.to_string(),
            target: b.school_code.clone().unwrap_or_else(|| b.county.clone()),
            on: b.effective_on.to_string(),
            promoted: b.promoted,
            graduated: b.graduated,
            progressed: b.progressed,
            skipped: b.skipped,
            created: at(b.created_at),
            actor: b.actor.clone(),
            undone: b.undone_at.map(|u| {
                tr.f(
                    "yearend-undone",
                    &[
                        ("at", at(u).into()),
                        ("who", b.undone_by.clone().unwrap_or_default().into()),
                    ],
                )
            }),
        }
    }
}

#[derive(Template)]
#[template(path = "year_end.html")]
struct YearEndPage {
    c: Chrome,
    form: FormState,
    /// A message for the whole form (permission, nothing to do).
    error: Option<String>,
    plan: Option<PlanView>,
    batches: Vec<BatchView>,
}

async fn render_year_end(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    form: FormState,
    error: Option<String>,
    plan: Option<PlanView>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let batches = YearEnd(&state.db)
        .batches(&user.0.scope(Permission::RegistryView), 20)
        .await?
        .iter()
        .map(|b| BatchView::of(b, &tr))
        .collect();
    let mut res = html(&YearEndPage {
        c: ctx.chrome(tr.t("yearend-title")),
        form,
        error,
        plan,
        batches,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

/// The wizard: the form, and with `preview` the dry run of what applying would do.
async fn year_end(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let mut form = FormState::with_errors(&q, &ctx.tr(), &[]);
    let Some(target) = target_of(&q).filter(|_| p(&q, "preview") == "1") else {
        // Prefilled with where the user works.
        if form.val("school").is_empty() && form.val("county").is_empty() {
            match user.0.user.home_school.clone() {
                Some(s) => form.v.insert("school".into(), s),
                None => form.v.insert(
                    "county".into(),
                    user.0.user.home_region.clone().unwrap_or_default(),
                ),
            };
        }
        return render_year_end(&state, &ctx, &user, form, None, None, StatusCode::OK).await;
    };
    let a = actor(&user, &ctx);
    match YearEnd(&state.db)
        .plan(&a, &target, &year_end_input(&q))
        .await
    {
        Ok(plan) => {
            form.v
                .insert("effective_on".into(), plan.effective_on.to_string());
            let view = PlanView::of(&plan, &ctx.tr());
            render_year_end(&state, &ctx, &user, form, None, Some(view), StatusCode::OK).await
        }
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&q, &ctx.tr(), &errors);
            render_year_end(
                &state,
                &ctx,
                &user,
                form,
                None,
                None,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.batch", "-", e).await),
    }
}

async fn apply(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryManage)?;
    let tr = ctx.tr();
    let Some(target) = target_of(&f) else {
        return Err(AppError::not_found());
    };
    if p(&f, "confirm") != "on" {
        let form = FormState::with_errors(&f, &tr, &[]);
        let msg = Some(tr.t("yearend-confirm-required"));
        return render_year_end(
            &state,
            &ctx,
            &user,
            form,
            msg,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    match YearEnd(&state.db)
        .apply(actor(&user, &ctx), &target, &year_end_input(&f))
        .await
    {
        Ok(b) => Ok(Redirect::to(&format!("/year-end/batches/{}", b.id)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let msg = errors.first().map(|e| tr.t(e.kind.key()));
            let form = FormState::with_errors(&f, &tr, &errors);
            render_year_end(
                &state,
                &ctx,
                &user,
                form,
                msg,
                None,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.batch", "-", e).await),
    }
}

#[derive(Template)]
#[template(path = "year_end_batch.html")]
struct BatchPage {
    c: Chrome,
    b: BatchView,
    error: Option<String>,
}

async fn render_batch(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let b = YearEnd(&state.db)
        .batch(&user.0.scope(Permission::RegistryView), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let mut res = html(&BatchPage {
        c: ctx.chrome(tr.t("yearend-batch")),
        b: BatchView::of(&b, &tr),
        error,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn batch_page(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    render_batch(&state, &ctx, &user, parse_id(&id)?, None, StatusCode::OK).await
}

async fn batch_undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let tr = ctx.tr();
    if p(&f, "confirm") != "on" {
        let msg = Some(tr.t("yearend-confirm-required"));
        return render_batch(&state, &ctx, &user, id, msg, StatusCode::BAD_REQUEST).await;
    }
    let scope = user.0.scope(Permission::RegistryView);
    match YearEnd(&state.db)
        .undo(actor(&user, &ctx), &scope, id)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/year-end/batches/{id}")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let msg = errors.first().map(|e| tr.t(e.kind.key()));
            render_batch(&state, &ctx, &user, id, msg, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(
            &state,
            &ctx,
            &user,
            "student.batch_undo",
            &id.to_string(),
            e,
        )
        .await),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// One event of a student's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDto {
    pub id: Uuid,
    /// `enrol`, `promote`, `repeat`, `skip`, `suspend`, `resume`, `transfer_in`, `progress`,
    /// `drop_out`, `death`, `abroad`, `graduate` or `undo`.
    pub kind: String,
    /// The type code (学籍异动类别码).
    pub code: String,
    /// Where the event leaves the student: `in`, `suspended` or `out`.
    pub status: String,
    pub school_code: String,
    pub grade: i32,
    pub from_school: Option<String>,
    pub from_grade: Option<i32>,
    pub effective_on: String,
    pub recorded_at: String,
    pub actor: String,
    pub reason: String,
    pub approval_ref: Option<String>,
    /// The compensating event that undid this one.
    pub undone_by: Option<Uuid>,
    /// For an `undo`: the event it cancels.
    pub undoes: Option<Uuid>,
    /// The year-end batch that wrote it.
    pub batch_id: Option<Uuid>,
}

impl From<EventRow> for EventDto {
    fn from(e: EventRow) -> Self {
        EventDto {
            id: e.id,
            kind: e.kind,
            code: e.code,
            status: e.status,
            school_code: e.school_code,
            grade: e.grade,
            from_school: e.from_school,
            from_grade: e.from_grade,
            effective_on: e.effective_on.to_string(),
            recorded_at: e.recorded_at.to_rfc3339(),
            actor: e.actor,
            reason: e.reason,
            approval_ref: e.approval_ref,
            undone_by: e.undone_by,
            undoes: e.undoes,
            batch_id: e.batch_id,
        }
    }
}

/// A change recorded by hand.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewEventDto {
    /// `promote`, `repeat`, `skip`, `suspend`, `resume`, `drop_out`, `death`, `abroad` or
    /// `graduate`.
    #[serde(default)]
    pub kind: String,
    /// `YYYY-MM-DD`; default today.
    #[serde(default)]
    pub effective_on: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub approval_ref: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UndoDto {
    #[serde(default)]
    pub reason: String,
}

/// The student's history, oldest first (404 outside the caller's scope).
#[utoipa::path(get, path = "/students/{id}/events", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<EventDto>),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_events(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventDto>>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let scope = user.0.scope(Permission::RegistryView);
    let students = Students(&state.db);
    if students.student(&scope, id).await?.is_none() {
        return Err(AppError::not_found());
    }
    Ok(Json(
        students
            .events(&scope, id)
            .await?
            .into_iter()
            .map(EventDto::from)
            .collect(),
    ))
}

/// Records a change of status (needs `registry_manage` at the student's school).
#[utoipa::path(post, path = "/students/{id}/events", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = NewEventDto,
    responses((status = 201, body = EventDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 409, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_record(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<NewEventDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let input = NewEvent {
        kind: b.kind,
        effective_on: b.effective_on.unwrap_or_default(),
        reason: b.reason,
        approval_ref: b.approval_ref.unwrap_or_default(),
    };
    match Students(&state.db)
        .record(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            &input,
        )
        .await
    {
        Ok(e) => Ok((StatusCode::CREATED, Json(EventDto::from(e))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "student.event", &id.to_string(), e).await),
    }
}

/// Undoes the student's event in force with a compensating event (never the enrolment).
#[utoipa::path(post, path = "/students/{id}/events/{event}/undo", tag = "registry",
    security(("token" = [])), params(("id" = Uuid, Path), ("event" = Uuid, Path)),
    request_body = UndoDto,
    responses((status = 201, body = EventDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path((id, event)): Path<(String, String)>,
    Json(b): Json<UndoDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let (id, event) = (parse_id(&id)?, parse_id(&event)?);
    match Students(&state.db)
        .undo(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            event,
            &b.reason,
        )
        .await
    {
        Ok(e) => Ok((StatusCode::CREATED, Json(EventDto::from(e))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "student.undo", &id.to_string(), e).await),
    }
}

/// A year-end batch to preview or apply: a school (`school`) or a whole county (`county`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct YearEndDto {
    #[serde(default)]
    pub school: Option<String>,
    #[serde(default)]
    pub county: Option<String>,
    /// `YYYY-MM-DD`; default 1 September of the current school year.
    #[serde(default)]
    pub effective_on: Option<String>,
    /// For a school: where its last grade goes on to (default: it graduates).
    #[serde(default)]
    pub receiving_school: Option<String>,
}

impl YearEndDto {
    fn parts(self) -> Result<(BatchTarget, YearEndInput), AppError> {
        let mut f = Params::new();
        f.insert("school".into(), self.school.unwrap_or_default());
        f.insert("county".into(), self.county.unwrap_or_default());
        let target = target_of(&f).ok_or_else(|| {
            AppError::bad_params(vec![santong_domain::paging::FieldError::new(
                "school",
                santong_domain::paging::FieldErrorKind::InvalidValue,
            )])
        })?;
        Ok((
            target,
            YearEndInput {
                effective_on: self.effective_on.unwrap_or_default(),
                receiving_school: self.receiving_school.unwrap_or_default(),
            },
        ))
    }
}

/// A student the dry run lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExceptionDto {
    pub student_id: Uuid,
    pub name: String,
    pub school_code: String,
    pub grade: i32,
    /// `suspended` and `already_moved` are left alone; `age_outlier` is moved and flagged.
    pub exception: String,
}

/// What a batch would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDto {
    pub county: String,
    pub school_code: Option<String>,
    pub effective_on: String,
    pub receiving_school: Option<String>,
    pub promoted: u64,
    pub graduated: u64,
    pub progressed: u64,
    pub skipped: u64,
    /// `[grade, students moving]`.
    pub by_grade: Vec<(i32, u64)>,
    pub exceptions: Vec<ExceptionDto>,
}

/// A batch as applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDto {
    pub id: Uuid,
    pub county: String,
    pub school_code: Option<String>,
    pub effective_on: String,
    pub receiving_school: Option<String>,
    pub promoted: i32,
    pub graduated: i32,
    pub progressed: i32,
    pub skipped: i32,
    pub created_at: String,
    pub actor: String,
    pub undone_at: Option<String>,
}

impl From<BatchRow> for BatchDto {
    fn from(b: BatchRow) -> Self {
        BatchDto {
            id: b.id,
            county: b.county,
            school_code: b.school_code,
            effective_on: b.effective_on.to_string(),
            receiving_school: b.receiving_school,
            promoted: b.promoted,
            graduated: b.graduated,
            progressed: b.progressed,
            skipped: b.skipped,
            created_at: b.created_at.to_rfc3339(),
            actor: b.actor,
            undone_at: b.undone_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// The dry run of a year-end batch: nothing is written.
#[utoipa::path(post, path = "/year-end/plan", tag = "registry", security(("token" = [])),
    request_body = YearEndDto,
    responses((status = 200, body = PlanDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Json(b): Json<YearEndDto>,
) -> Result<Json<PlanDto>, AppError> {
    user.require(Permission::RegistryManage)?;
    let (target, input) = b.parts()?;
    let a: Actor<'_> = actor(&user, &ctx);
    match YearEnd(&state.db).plan(&a, &target, &input).await {
        Ok(p) => Ok(Json(PlanDto {
            county: p.county,
            school_code: p.school_code,
            effective_on: p.effective_on.to_string(),
            receiving_school: p.receiving_school,
            promoted: p.promoted,
            graduated: p.graduated,
            progressed: p.progressed,
            skipped: p.skipped,
            by_grade: p.by_grade,
            exceptions: p
                .exceptions
                .into_iter()
                .map(|e| ExceptionDto {
                    student_id: e.student_id,
                    name: e.name,
                    school_code: e.school_code,
                    grade: e.grade,
                    exception: serde_json::to_value(e.exception)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                })
                .collect(),
        })),
        Err(e) => Err(audited(&state, &ctx, &user, "student.batch", "-", e).await),
    }
}

/// Applies a year-end batch in one transaction.
#[utoipa::path(post, path = "/year-end", tag = "registry", security(("token" = [])),
    request_body = YearEndDto,
    responses((status = 201, body = BatchDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_apply(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Json(b): Json<YearEndDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let (target, input) = b.parts()?;
    match YearEnd(&state.db)
        .apply(actor(&user, &ctx), &target, &input)
        .await
    {
        Ok(b) => Ok((StatusCode::CREATED, Json(BatchDto::from(b))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "student.batch", "-", e).await),
    }
}

/// A batch (404 outside the caller's scope).
#[utoipa::path(get, path = "/year-end/batches/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_batch(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<BatchDto>, AppError> {
    user.require(Permission::RegistryView)?;
    YearEnd(&state.db)
        .batch(&user.0.scope(Permission::RegistryView), parse_id(&id)?)
        .await?
        .map(|b| Json(b.into()))
        .ok_or_else(AppError::not_found)
}

/// Undoes a whole batch (refused while any of its students has a later event).
#[utoipa::path(post, path = "/year-end/batches/{id}/undo", tag = "registry",
    security(("token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = BatchDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_batch_undo(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<BatchDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    match YearEnd(&state.db)
        .undo(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
        )
        .await
    {
        Ok(b) => Ok(Json(b.into())),
        Err(e) => Err(audited(
            &state,
            &ctx,
            &user,
            "student.batch_undo",
            &id.to_string(),
            e,
        )
        .await),
    }
}

// ----- A school's events (学籍变动) ----------------------------------------------------------------

/// `from` and `until` of a school's event list: the current school year to today by default.
fn event_span(q: &Params) -> Result<(chrono::NaiveDate, chrono::NaiveDate), AppError> {
    let today = santong_storage::registry::today();
    let mut errors = vec![];
    let mut date = |field: &str, default: chrono::NaiveDate| match p(q, field).trim() {
        "" => default,
        raw => chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").unwrap_or_else(|_| {
            errors.push(santong_domain::paging::FieldError::new(
                field,
                santong_domain::paging::FieldErrorKind::Rule("registry-bad-date"),
            ));
            default
        }),
    };
    let from = date(
        "from",
        santong_domain::registry::SchoolYear::of_date(today).start(),
    );
    let until = date("until", today);
    if errors.is_empty() {
        Ok((from, until))
    } else {
        Err(AppError::bad_params(errors))
    }
}

struct SchoolEventLine {
    on: String,
    kind: String,
    code: String,
    student: String,
    name: String,
    number: String,
    grade: i32,
    from: String,
    reason: String,
    actor: String,
    undone: bool,
}

fn event_line(tr: &Tr, e: &santong_storage::lifecycle::SchoolEventRow) -> SchoolEventLine {
    SchoolEventLine {
        on: e.effective_on.to_string(),
        kind: kind_label(tr, &e.kind),
        code: e.code.clone(),
        student: e.student_id.to_string(),
        name: e.name.clone(),
        number: e.number_masked(),
        grade: e.grade,
        from: e.from_school.clone().unwrap_or_default(),
        reason: reason_label(tr, &e.reason),
        actor: e.actor.clone(),
        undone: e.undone_by.is_some(),
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    c: Chrome,
    code: String,
    school: String,
    from: String,
    until: String,
    export: String,
    rows: Vec<SchoolEventLine>,
    pager: crate::views::Pager,
}

async fn school_events(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    let school = santong_storage::registry::Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let (from, until) = event_span(&q)?;
    let page = crate::schools::page_of(&q)?;
    let tr = ctx.tr();
    let events = Students(&state.db)
        .school_events(&scope, &code, from, until, page.limit(), page.offset())
        .await?;
    let pages = page.page_count(events.total);
    let href = |n: u32| format!("/schools/{code}/events?from={from}&until={until}&page={n}");
    html(&EventsPage {
        c: ctx.chrome(tr.t("events-title")),
        code: code.clone(),
        school: school.name.clone(),
        from: from.to_string(),
        until: until.to_string(),
        export: format!("/schools/{code}/events/export.csv?from={from}&until={until}"),
        rows: events.items.iter().map(|e| event_line(&tr, e)).collect(),
        pager: crate::views::Pager::new(&tr, page.page, pages, events.total, href),
    })
}

/// The events of the span, every page of them, masked as the page is; audited.
async fn export_events(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let format = crate::export::ListFormat::of_path(uri.path());
    let gate = crate::export::gate(&state, &user, &code, &q, false).await?;
    let (from, until) = event_span(&q)?;
    let db = state.db.clone();
    let total = Students(&db)
        .school_events(&gate.scope, &code, from, until, 1, 0)
        .await?
        .total;
    let detail = serde_json::json!({
        "rows": total,
        "from": from.to_string(),
        "until": until.to_string(),
        "format": format.ext(),
    })
    .to_string();
    Students(&db)
        .record_export(
            actor(&user, &ctx),
            "event.export",
            &gate.school.code,
            detail,
        )
        .await?;
    let tr = ctx.tr();
    let head: Vec<String> = [
        "event-effective",
        "event-kind",
        "event-code",
        "student-number",
        "student-name",
        "student-grade",
        "event-from",
        "event-reason",
        "event-actor",
        "event-undone-col",
    ]
    .iter()
    .map(|k| tr.t(k))
    .collect();
    let (yes, scope) = (tr.t("event-undone-yes"), gate.scope);
    Ok(crate::export::stream_list(
        format,
        &format!("events-{code}-{from}-{until}"),
        head,
        move |offset| {
            let (db, scope, code, yes) = (db.clone(), scope.clone(), code.clone(), yes.clone());
            async move {
                let page = Students(&db)
                    .school_events(&scope, &code, from, until, crate::export::PAGE, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page
                    .items
                    .iter()
                    .map(|e| {
                        let l = event_line(&tr, e);
                        vec![
                            l.on,
                            l.kind,
                            l.code,
                            l.number,
                            l.name,
                            l.grade.to_string(),
                            l.from,
                            l.reason,
                            l.actor,
                            if l.undone { yes.clone() } else { String::new() },
                        ]
                    })
                    .collect())
            }
        },
    ))
}
