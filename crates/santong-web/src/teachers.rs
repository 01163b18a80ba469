//! Teachers and staff on the pages and in the API: a school's staff on any date, appointing
//! someone, a person's record (ID number masked) and their leaving.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use santong_domain::identity::Permission;
use santong_domain::staff::{POSTS, QUALIFICATIONS, TITLES};
use santong_storage::registry::{Registry, RegistryError};
use santong_storage::teachers::{NewTeacher, StaffFilter, StaffRow, Teachers};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::schools::{FormState, Params, audited, p, page_of, parse_on};
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/teachers", get(list).post(appoint))
        .route("/schools/{code}/teachers/new", get(new_form))
        .route("/schools/{code}/teachers/export.csv", get(export))
        .route("/schools/{code}/teachers/export.xlsx", get(export))
        .route("/teachers/{id}", get(detail))
        .route("/teachers/{id}/leave", post(leave))
}

fn label(tr: &Tr, kind: &str, code: &str) -> String {
    tr.t(&format!("teacher-{kind}-{code}"))
}

struct Row {
    id: String,
    number: String,
    name: String,
    sex: String,
    title: String,
    post: String,
    subjects: String,
    id_masked: String,
}

fn row_of(t: &StaffRow, tr: &Tr) -> Row {
    Row {
        id: t.id.to_string(),
        number: t.teacher_number.clone(),
        name: t.name.clone(),
        sex: tr.t(&format!("sex-{}", t.sex)),
        title: label(tr, "title", &t.title),
        post: label(tr, "post", &t.post),
        subjects: t.subjects.clone(),
        id_masked: t.id_masked(),
    }
}

#[derive(Template)]
#[template(path = "teachers.html")]
struct ListPage {
    c: Chrome,
    code: String,
    school: String,
    on: String,
    q: String,
    sort: String,
    sorts: Vec<(&'static str, String)>,
    export: String,
    rows: Vec<Row>,
    pager: Pager,
    manage: bool,
}

/// A staff list's filter from the query: `q` (part of a name or subject, or a whole staff number)
/// and `sort` (`name` or `number`; `-` first for descending).
fn staff_filter_of(q: &Params) -> Result<StaffFilter, AppError> {
    let mut errors = vec![];
    let sort = santong_domain::paging::parse_sort(
        q.get("sort").map(String::as_str),
        &[("name", false), ("number", true)],
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    Ok(StaffFilter {
        text: Some(p(q, "q").trim().to_owned()).filter(|t| !t.is_empty()),
        by_number: sort.is_some_and(|s| s.field),
        descending: sort.is_some_and(|s| s.descending),
    })
}

/// The staff list as a CSV download (same date, filter and order as the page), streamed. ID
/// numbers are masked unless `full=1` with a `purpose` (sensitive-data permission at the school).
/// Every export is audited with its row count.
async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let format = crate::export::ListFormat::of_path(uri.path());
    let crate::export::Gate {
        scope,
        school,
        full,
        purpose,
    } = crate::export::gate(&state, &user, &code, &q, false).await?;
    let on = parse_on(&q)?;
    let filter = staff_filter_of(&q)?;
    let db = state.db.clone();
    let total = Teachers(&db)
        .staff_filtered(&scope, &code, on, &filter, 1, 0)
        .await?
        .total;
    let detail = serde_json::json!({
        "rows": total,
        "on": on.to_string(),
        "q": crate::export::logged_text(filter.text.as_deref().unwrap_or("")),
        "full": full,
        "purpose": purpose,
        "format": format.ext(),
    })
    .to_string();
    santong_storage::students::Students(&state.db)
        .record_export(actor(&user, &ctx), "teacher.export", &code, detail)
        .await?;
    let tr = ctx.tr();
    let head: Vec<String> = [
        "teacher-number",
        "student-name",
        "student-sex",
        "student-birth",
        "teacher-qualification",
        "teacher-title",
        "teacher-post",
        "teacher-subjects",
        "student-id",
        "teacher-appointed-on",
    ]
    .iter()
    .map(|k| tr.t(k))
    .collect();
    let name = format!("staff-{}-{on}", school.code);
    Ok(crate::export::stream_list(
        format,
        &name,
        head,
        move |offset| {
            let (db, scope, filter, code) =
                (db.clone(), scope.clone(), filter.clone(), code.clone());
            async move {
                let page = Teachers(&db)
                    .staff_filtered(&scope, &code, on, &filter, crate::export::PAGE, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.teacher_number.clone(),
                            t.name.clone(),
                            tr.t(&format!("sex-{}", t.sex)),
                            t.birth_date.to_string(),
                            label(&tr, "qualification", &t.qualification),
                            label(&tr, "title", &t.title),
                            label(&tr, "post", &t.post),
                            t.subjects.clone(),
                            if full {
                                crate::export::id_as_text(&t.id_number)
                            } else {
                                t.id_masked()
                            },
                            t.since.to_string(),
                        ]
                    })
                    .collect())
            }
        },
    ))
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    let school = Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = parse_on(&q)?;
    let page = page_of(&q)?;
    let filter = staff_filter_of(&q)?;
    let tr = ctx.tr();
    let staff = Teachers(&state.db)
        .staff_filtered(&scope, &code, on, &filter, page.limit(), page.offset())
        .await?;
    let pages = page.page_count(staff.total);
    let (text, sort) = (p(&q, "q"), p(&q, "sort"));
    let href = |n: u32| {
        format!(
            "/schools/{code}/teachers?on={on}&q={}&sort={}&page={n}",
            crate::views::percent_encode(text),
            crate::views::percent_encode(sort)
        )
    };
    html(&ListPage {
        c: ctx.chrome(tr.f("teachers-title", &[("school", school.name.clone().into())])),
        code: code.clone(),
        school: school.name.clone(),
        on: on.to_string(),
        q: text.to_owned(),
        sort: sort.to_owned(),
        export: format!(
            "/schools/{code}/teachers/export.csv?on={on}&q={}&sort={}",
            crate::views::percent_encode(text),
            crate::views::percent_encode(sort)
        ),
        sorts: [
            ("name", "students-sort-name"),
            ("-name", "students-sort-name-desc"),
            ("number", "teachers-sort-number"),
        ]
        .into_iter()
        .map(|(v, k)| (v, tr.t(k)))
        .collect(),
        rows: staff.items.iter().map(|t| row_of(t, &tr)).collect(),
        pager: Pager::new(&tr, page.page, pages, staff.total, href),
        manage: user
            .0
            .scope(Permission::RegistryManage)
            .contains(&school.node()),
    })
}

#[derive(Template)]
#[template(path = "teacher_new.html")]
struct NewPage {
    c: Chrome,
    code: String,
    form: FormState,
    ethnicities: Vec<(String, String)>,
    qualifications: Vec<(&'static str, String)>,
    titles: Vec<(&'static str, String)>,
    posts: Vec<(&'static str, String)>,
}

fn render_new(
    ctx: &Ctx,
    code: &str,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let choices = |kind: &str, codes: &[&'static str]| {
        codes
            .iter()
            .map(|c| (*c, label(&tr, kind, c)))
            .collect::<Vec<_>>()
    };
    let mut res = html(&NewPage {
        c: ctx.chrome(tr.t("teachers-appoint")),
        code: code.to_owned(),
        form,
        ethnicities: crate::students::ethnicity_choices(),
        qualifications: choices("qualification", &QUALIFICATIONS),
        titles: choices("title", &TITLES),
        posts: choices("post", &POSTS),
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn new_form(ctx: Ctx, user: User, Path(code): Path<String>) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let mut form = FormState::default();
    form.v.insert("ethnicity".into(), "01".into());
    render_new(&ctx, &code, form, StatusCode::OK)
}

fn input_of(f: &Params) -> NewTeacher {
    NewTeacher {
        name: p(f, "name").into(),
        sex: p(f, "sex").into(),
        birth_date: p(f, "birth_date").into(),
        ethnicity: p(f, "ethnicity").into(),
        id_number: p(f, "id_number").into(),
        qualification: p(f, "qualification").into(),
        title: p(f, "title").into(),
        subjects: p(f, "subjects").into(),
        post: p(f, "post").into(),
        appointed_on: p(f, "appointed_on").into(),
    }
}

async fn appoint(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    match Teachers(&state.db)
        .appoint(actor(&user, &ctx), &code, &input_of(&f))
        .await
    {
        Ok(t) => Ok(Redirect::to(&format!("/teachers/{}", t.id)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_new(&ctx, &code, form, StatusCode::BAD_REQUEST)
        }
        Err(e) => Err(audited(&state, &ctx, &user, "teacher.appoint", &code, e).await),
    }
}

#[derive(Template)]
#[template(path = "teacher.html")]
struct DetailPage {
    c: Chrome,
    t: Row,
    school: String,
    since: String,
    on_staff: bool,
    qualification: String,
    ethnicity: String,
    birth: String,
    manage: bool,
    form: FormState,
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    id: Uuid,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let scope = user.0.scope(Permission::RegistryView);
    let t = Teachers(&state.db)
        .teacher(&scope, id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let school = Registry(&state.db)
        .school(&scope, &t.school_code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let tr = ctx.tr();
    let mut res = html(&DetailPage {
        c: ctx.chrome(t.name.clone()),
        t: row_of(&t, &tr),
        school: t.school_code.clone(),
        since: t.since.to_string(),
        on_staff: t.kind == "appoint",
        qualification: label(&tr, "qualification", &t.qualification),
        ethnicity: crate::students::ethnicity_label(ctx, &t.ethnicity),
        birth: t.birth_date.to_string(),
        manage: user
            .0
            .scope(Permission::RegistryManage)
            .contains(&school.node()),
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
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    render_detail(
        &state,
        &ctx,
        &user,
        id,
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

async fn leave(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    match Teachers(&state.db)
        .leave(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            p(&f, "effective_on"),
            p(&f, "reason"),
        )
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/teachers/{id}")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_detail(&state, &ctx, &user, id, form, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "teacher.leave", &id.to_string(), e).await),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// A member of staff (ID number masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct TeacherDto {
    pub id: Uuid,
    /// One person, one number: `T` + county of first appointment + year + sequence.
    pub teacher_number: String,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub ethnicity: String,
    pub id_number_masked: String,
    /// `kindergarten`, `primary`, `junior`, `senior`, `vocational` or `none`.
    pub qualification: String,
    /// `senior_full`, `senior`, `first`, `second`, `third` or `none`.
    pub title: String,
    pub subjects: String,
    /// `teaching`, `admin`, `support` or `service`.
    pub post: String,
    pub school_code: String,
    /// `appoint` (on the staff) or `leave`.
    pub status: String,
    pub since: String,
}

impl From<&StaffRow> for TeacherDto {
    fn from(t: &StaffRow) -> Self {
        TeacherDto {
            id: t.id,
            teacher_number: t.teacher_number.clone(),
            name: t.name.clone(),
            sex: t.sex.clone(),
            birth_date: t.birth_date.to_string(),
            ethnicity: t.ethnicity.clone(),
            id_number_masked: t.id_masked(),
            qualification: t.qualification.clone(),
            title: t.title.clone(),
            subjects: t.subjects.clone(),
            post: t.post.clone(),
            school_code: t.school_code.clone(),
            status: t.kind.clone(),
            since: t.since.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeacherList {
    pub items: Vec<TeacherDto>,
    pub page: u32,
    pub size: u32,
    pub pages: u64,
    pub total: u64,
    pub on: String,
}

/// Someone to appoint. (No `Debug`: it holds an ID number.)
#[derive(Deserialize, ToSchema)]
pub struct NewTeacherDto {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sex: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub ethnicity: Option<String>,
    #[serde(default)]
    pub id_number: String,
    #[serde(default)]
    pub qualification: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub subjects: Option<String>,
    #[serde(default)]
    pub post: String,
    #[serde(default)]
    pub appointed_on: Option<String>,
}

/// The school's staff on a date (default today), by name.
#[utoipa::path(get, path = "/schools/{code}/teachers", tag = "registry", security(("token" = [])),
    params(("code" = String, Path), ("on" = Option<String>, Query, description = "YYYY-MM-DD"),
           ("q" = Option<String>, Query,
            description = "part of a name or subject, or a whole staff number"),
           ("sort" = Option<String>, Query, description = "name or number; - for descending"),
           ("page" = Option<u32>, Query), ("size" = Option<u32>, Query)),
    responses((status = 200, body = TeacherList),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_list(
    State(state): State<AppState>,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<TeacherList>, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = parse_on(&q)?;
    let page = page_of(&q)?;
    let filter = staff_filter_of(&q)?;
    let staff = Teachers(&state.db)
        .staff_filtered(&scope, &code, on, &filter, page.limit(), page.offset())
        .await?;
    Ok(Json(TeacherList {
        pages: page.page_count(staff.total),
        items: staff.items.iter().map(TeacherDto::from).collect(),
        page: page.page,
        size: page.size,
        total: staff.total,
        on: on.to_string(),
    }))
}

/// Appoints someone at the school (needs `registry_manage` there). Every refused field is
/// reported; someone on another school's staff is refused.
#[utoipa::path(post, path = "/schools/{code}/teachers", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = NewTeacherDto,
    responses((status = 201, body = TeacherDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_appoint(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(b): Json<NewTeacherDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let input = NewTeacher {
        name: b.name,
        sex: b.sex,
        birth_date: b.birth_date,
        ethnicity: b.ethnicity.unwrap_or_default(),
        id_number: b.id_number,
        qualification: b.qualification,
        title: b.title,
        subjects: b.subjects.unwrap_or_default(),
        post: b.post,
        appointed_on: b.appointed_on.unwrap_or_default(),
    };
    match Teachers(&state.db)
        .appoint(actor(&user, &ctx), &code, &input)
        .await
    {
        Ok(t) => Ok((StatusCode::CREATED, Json(TeacherDto::from(&t))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "teacher.appoint", &code, e).await),
    }
}

/// One member of staff, masked (404 outside the caller's scope).
#[utoipa::path(get, path = "/teachers/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TeacherDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_teacher(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<TeacherDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    Teachers(&state.db)
        .teacher(&user.0.scope(Permission::RegistryView), id)
        .await?
        .map(|t| Json((&t).into()))
        .ok_or_else(AppError::not_found)
}
