//! Classes on the pages and in the API: a school's classes per school year, a class list on any
//! day, opening a class and placing students in it.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use santong_domain::identity::Permission;
use santong_domain::paging::{FieldError, FieldErrorKind};
use santong_domain::registry::SchoolYear;
use santong_storage::classes::{ClassRow, Classes, MemberRow, NewClass};
use santong_storage::registry::{Registry, RegistryError, today};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::{User, check_csrf};
use crate::error::AppError;
use crate::i18n::Tr;
use crate::schools::{FormState, Params, audited, p, parse_on};
use crate::shell::Ctx;
use crate::views::{Chrome, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/classes", get(list).post(create))
        .route("/schools/{code}/classes/export.csv", get(export))
        .route("/schools/{code}/classes/export.xlsx", get(export))
        .route("/classes/{id}", get(detail))
        .route("/classes/{id}/members", post(assign))
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::not_found())
}

fn bad(field: &str) -> AppError {
    AppError::bad_params(vec![FieldError::new(field, FieldErrorKind::InvalidValue)])
}

fn parse_year(q: &Params) -> Result<SchoolYear, AppError> {
    match p(q, "year") {
        "" => Ok(SchoolYear::of_date(today())),
        y => SchoolYear::parse(y).ok_or_else(|| bad("year")),
    }
}

/// The day a class's list is shown for: `on` (or today) kept inside its school year.
fn day_in(year: SchoolYear, q: &Params) -> Result<NaiveDate, AppError> {
    Ok(parse_on(q)?.clamp(year.start(), year.end()))
}

struct ClassView {
    id: String,
    grade: i32,
    name: String,
    head: String,
    members: i64,
}

fn class_view(c: &ClassRow) -> ClassView {
    ClassView {
        id: c.id.to_string(),
        grade: c.grade,
        name: c.name.clone(),
        head: c.head_name.clone().unwrap_or_default(),
        members: c.members,
    }
}

#[derive(Template)]
#[template(path = "classes.html")]
struct ListPage {
    c: Chrome,
    code: String,
    school: String,
    year: String,
    prev_year: i32,
    next_year: i32,
    classes: Vec<ClassView>,
    manage: bool,
    form: FormState,
}

async fn render_list(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    code: &str,
    year: SchoolYear,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let scope = user.0.scope(Permission::RegistryView);
    let school = Registry(&state.db)
        .school(&scope, code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = today().clamp(year.start(), year.end());
    let classes = Classes(&state.db).list(&scope, code, year, on).await?;
    let tr = ctx.tr();
    let mut res = html(&ListPage {
        c: ctx.chrome(tr.f("classes-title", &[("school", school.name.clone().into())])),
        code: code.to_owned(),
        school: school.name.clone(),
        year: year.to_string(),
        prev_year: year.0 - 1,
        next_year: year.0 + 1,
        classes: classes.iter().map(class_view).collect(),
        manage: user
            .0
            .scope(Permission::RegistryManage)
            .contains(&school.node()),
        form,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let year = parse_year(&q)?;
    let mut form = FormState::default();
    form.v.insert("school_year".into(), year.0.to_string());
    render_list(&state, &ctx, &user, &code, year, form, StatusCode::OK).await
}

/// A school year's classes with their head teachers and sizes, as CSV or XLSX (no pupil's data
/// in it; audited like every export).
async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let format = crate::export::ListFormat::of_path(uri.path());
    let year = parse_year(&q)?;
    let scope = user.0.scope(Permission::RegistryView);
    let school = santong_storage::registry::Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = today().clamp(year.start(), year.end());
    let classes = Classes(&state.db).list(&scope, &code, year, on).await?;
    let detail = serde_json::json!({
        "rows": classes.len(),
        "school_year": year.0,
        "format": format.ext(),
    })
    .to_string();
    santong_storage::students::Students(&state.db)
        .record_export(actor(&user, &ctx), "class.export", &school.code, detail)
        .await?;
    let tr = ctx.tr();
    let head: Vec<String> = [
        "classes-year",
        "student-grade",
        "classes-name",
        "classes-head",
        "classes-members",
    ]
    .iter()
    .map(|k| tr.t(k))
    .collect();
    let rows: Vec<Vec<String>> = classes
        .iter()
        .map(|k| {
            vec![
                year.to_string(),
                k.grade.to_string(),
                k.name.clone(),
                k.head_name.clone().unwrap_or_default(),
                k.members.to_string(),
            ]
        })
        .collect();
    let rows = std::sync::Arc::new(rows);
    let name = format!("classes-{}-{}", school.code, year.0);
    Ok(crate::export::stream_list(
        format,
        &name,
        head,
        move |offset| {
            let rows = rows.clone();
            async move {
                // One school year's classes are one page.
                Ok(if offset == 0 { (*rows).clone() } else { vec![] })
            }
        },
    ))
}

fn new_class(f: &Params) -> NewClass {
    NewClass {
        school_year: p(f, "school_year").into(),
        grade: p(f, "grade").into(),
        name: p(f, "name").into(),
        head_teacher: p(f, "head_teacher").into(),
    }
}

async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    match Classes(&state.db)
        .create(actor(&user, &ctx), &code, &new_class(&f))
        .await
    {
        Ok(c) => Ok(Redirect::to(&format!("/classes/{}", c.id)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let year = SchoolYear::parse(p(&f, "school_year"))
                .unwrap_or_else(|| SchoolYear::of_date(today()));
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_list(
                &state,
                &ctx,
                &user,
                &code,
                year,
                form,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "class.create", &code, e).await),
    }
}

struct MemberView {
    id: String,
    name: String,
    number: String,
    sex: String,
    since: String,
    suspended: bool,
}

fn member_view(m: &MemberRow, tr: &Tr) -> MemberView {
    MemberView {
        id: m.student_id.to_string(),
        name: m.name.clone(),
        number: m.number_masked(),
        sex: tr.t(&format!("sex-{}", m.sex)),
        since: m.from_on.to_string(),
        suspended: m.status == "suspended",
    }
}

#[derive(Template)]
#[template(path = "class.html")]
struct DetailPage {
    c: Chrome,
    k: ClassView,
    code: String,
    year: String,
    on: String,
    /// The term of the day shown.
    term: String,
    members: Vec<MemberView>,
    manage: bool,
    unplaced: Vec<MemberView>,
    error: Option<String>,
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    q: &Params,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let scope = user.0.scope(Permission::RegistryView);
    let classes = Classes(&state.db);
    let probe = classes
        .class(&scope, id, today())
        .await?
        .ok_or_else(AppError::not_found)?;
    let year = SchoolYear(probe.school_year);
    let on = day_in(year, q)?;
    let class = classes
        .class(&scope, id, on)
        .await?
        .ok_or_else(AppError::not_found)?;
    let tr = ctx.tr();
    let school = Registry(&state.db)
        .school(&scope, &class.school_code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let manage = user
        .0
        .scope(Permission::RegistryManage)
        .contains(&school.node());
    let members = classes.members(&scope, id, on).await?;
    let unplaced = if manage {
        classes.unplaced(&scope, &class, on, 200).await?
    } else {
        vec![]
    };
    let mut res = html(&DetailPage {
        c: ctx.chrome(format!("{} · {}", school.name, class.name)),
        k: class_view(&class),
        code: class.school_code.clone(),
        year: year.to_string(),
        on: on.to_string(),
        term: tr.t(&format!("classes-term-{}", SchoolYear::term_of(on).1)),
        members: members.iter().map(|m| member_view(m, &tr)).collect(),
        manage,
        unplaced: unplaced.iter().map(|m| member_view(m, &tr)).collect(),
        error,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    render_detail(
        &state,
        &ctx,
        &user,
        parse_id(&id)?,
        &q,
        None,
        StatusCode::OK,
    )
    .await
}

/// Placing students: the form sends one `student` field per ticked box.
async fn assign(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let value = |k: &str| {
        f.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    };
    check_csrf(&user.0, Some(value("_csrf")))?;
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let students: Vec<Uuid> = f
        .iter()
        .filter(|(k, _)| k == "student")
        .filter_map(|(_, v)| Uuid::parse_str(v).ok())
        .collect();
    match Classes(&state.db)
        .assign(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            &students,
            value("from_on"),
        )
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/classes/{id}")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let msg = errors.first().map(|e| ctx.tr().t(e.kind.key()));
            render_detail(
                &state,
                &ctx,
                &user,
                id,
                &Params::new(),
                msg,
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "class.assign", &id.to_string(), e).await),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// A class with its size on the day asked about.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassDto {
    pub id: Uuid,
    pub school_code: String,
    /// 2025 is the school year 2025–26.
    pub school_year: i32,
    pub grade: i32,
    pub name: String,
    pub head_teacher: Option<Uuid>,
    pub head_name: Option<String>,
    pub members: i64,
}

impl From<&ClassRow> for ClassDto {
    fn from(c: &ClassRow) -> Self {
        ClassDto {
            id: c.id,
            school_code: c.school_code.clone(),
            school_year: c.school_year,
            grade: c.grade,
            name: c.name.clone(),
            head_teacher: c.head_teacher,
            head_name: c.head_name.clone(),
            members: c.members,
        }
    }
}

/// A member on the day asked about (the student number masked when it holds an ID number).
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberDto {
    pub student_id: Uuid,
    pub name: String,
    pub student_number: String,
    pub sex: String,
    pub status: String,
    pub from_on: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassDetailDto {
    pub class: ClassDto,
    /// The day the list is for.
    pub on: String,
    pub members: Vec<MemberDto>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewClassDto {
    /// `2025` or `2025-2026`; default the current school year.
    #[serde(default)]
    pub school_year: Option<String>,
    #[serde(default)]
    pub grade: String,
    #[serde(default)]
    pub name: String,
    /// User name of a teacher or administrator of the school.
    #[serde(default)]
    pub head_teacher: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MembersDto {
    #[serde(default)]
    pub students: Vec<Uuid>,
    /// `YYYY-MM-DD`, a day of the class's school year; default today (or the year's first day).
    #[serde(default)]
    pub from_on: Option<String>,
}

/// The school's classes in a school year (default the current one), by grade and name.
#[utoipa::path(get, path = "/schools/{code}/classes", tag = "registry", security(("token" = [])),
    params(("code" = String, Path), ("year" = Option<String>, Query)),
    responses((status = 200, body = Vec<ClassDto>),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_list(
    State(state): State<AppState>,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<Vec<ClassDto>>, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let year = parse_year(&q)?;
    let on = today().clamp(year.start(), year.end());
    Ok(Json(
        Classes(&state.db)
            .list(&scope, &code, year, on)
            .await?
            .iter()
            .map(ClassDto::from)
            .collect(),
    ))
}

/// Opens a class (needs `registry_manage` at the school).
#[utoipa::path(post, path = "/schools/{code}/classes", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = NewClassDto,
    responses((status = 201, body = ClassDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_create(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(b): Json<NewClassDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let input = NewClass {
        school_year: b.school_year.unwrap_or_default(),
        grade: b.grade,
        name: b.name,
        head_teacher: b.head_teacher.unwrap_or_default(),
    };
    match Classes(&state.db)
        .create(actor(&user, &ctx), &code, &input)
        .await
    {
        Ok(c) => Ok((StatusCode::CREATED, Json(ClassDto::from(&c))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "class.create", &code, e).await),
    }
}

/// A class and its list on a day (`on`, default today within the class's school year).
#[utoipa::path(get, path = "/classes/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path), ("on" = Option<String>, Query, description = "YYYY-MM-DD")),
    responses((status = 200, body = ClassDetailDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_detail(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<ClassDetailDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let scope = user.0.scope(Permission::RegistryView);
    let classes = Classes(&state.db);
    let probe = classes
        .class(&scope, id, today())
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = day_in(SchoolYear(probe.school_year), &q)?;
    let class = classes
        .class(&scope, id, on)
        .await?
        .ok_or_else(AppError::not_found)?;
    let members = classes.members(&scope, id, on).await?;
    Ok(Json(ClassDetailDto {
        class: (&class).into(),
        on: on.to_string(),
        members: members
            .iter()
            .map(|m| MemberDto {
                student_id: m.student_id,
                name: m.name.clone(),
                student_number: m.number_masked(),
                sex: m.sex.clone(),
                status: m.status.clone(),
                from_on: m.from_on.to_string(),
            })
            .collect(),
    }))
}

/// Places students in the class from a day (all or nothing; other classes of theirs that year
/// end that day).
#[utoipa::path(post, path = "/classes/{id}/members", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = MembersDto,
    responses((status = 200, body = ClassDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_assign(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<MembersDto>,
) -> Result<Json<ClassDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let scope = user.0.scope(Permission::RegistryView);
    match Classes(&state.db)
        .assign(
            actor(&user, &ctx),
            &scope,
            id,
            &b.students,
            b.from_on.as_deref().unwrap_or(""),
        )
        .await
    {
        Ok(_) => {
            // The size on today, or on the nearest day of the class's school year.
            let classes = Classes(&state.db);
            let probe = classes
                .class(&scope, id, today())
                .await?
                .ok_or_else(AppError::not_found)?;
            let on = day_in(SchoolYear(probe.school_year), &Params::new())?;
            classes
                .class(&scope, id, on)
                .await?
                .map(|c| Json((&c).into()))
                .ok_or_else(AppError::not_found)
        }
        Err(e) => Err(audited(&state, &ctx, &user, "class.assign", &id.to_string(), e).await),
    }
}
