//! Students on the pages and in the API: a school's roster on any date, enrolment, a student's
//! record with ID and phone masked, and the full record for a stated purpose (audited).

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use santong_domain::identity::Permission;
use santong_domain::registry::Ethnicity;
use santong_storage::registry::{Registry, RegistryError};
use santong_storage::students::{
    Correction, NewStudent, Placed, RosterFilter, RosterSort, Students,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::admin::actor;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools/{code}/students", get(roster).post(enrol))
        .route("/schools/{code}/students/new", get(new_form))
        .route(
            "/schools/{code}/students/export.csv",
            get(export).post(export_full),
        )
        .route(
            "/schools/{code}/students/export.xlsx",
            get(export).post(export_full),
        )
        .route("/students/{id}", get(detail))
        .route("/students/{id}/full", post(full))
        .route("/students/{id}/corrections", post(correct))
}

use crate::schools::{FormState, Params, audited, p, page_of, parse_on};

fn today() -> NaiveDate {
    santong_storage::registry::today()
}

/// An ethnic group's name in the page's language (romanised in English).
pub(crate) fn ethnicity_label(ctx: &Ctx, code: &str) -> String {
    Ethnicity::parse(code)
        .map(|e| {
            if ctx.lang.tag() == "en" {
                e.name_roman().to_owned()
            } else {
                e.name_zh().to_owned()
            }
        })
        .unwrap_or_default()
}

/// The GB/T 3304 choices of a form: (code, "code 汉字 romanised").
pub(crate) fn ethnicity_choices() -> Vec<(String, String)> {
    Ethnicity::all()
        .iter()
        .map(|(c, name, roman)| (c.clone(), format!("{c} {name} {roman}")))
        .collect()
}

fn sex_label(tr: &Tr, code: &str) -> String {
    tr.t(&format!("sex-{code}"))
}

struct RosterRow {
    id: String,
    number: String,
    name: String,
    sex: String,
    grade: i32,
    birth: String,
    id_masked: String,
    /// Shown for a suspended student only.
    suspended: Option<String>,
}

#[derive(Template)]
#[template(path = "students.html")]
struct RosterPage {
    c: Chrome,
    code: String,
    school: String,
    on: String,
    grade: String,
    q: String,
    sort: String,
    sorts: Vec<(&'static str, String)>,
    /// The CSV of what the page shows (all pages).
    export: String,
    /// May export full data (sensitive-data permission at the school).
    can_full: bool,
    rows: Vec<RosterRow>,
    pager: Pager,
    can_enrol: bool,
}

/// A roster's filters from the query: `grade`, `q` (part of a name) and
/// `sort` (`grade`, `name`, `birth`; `-` first for descending).
fn roster_filter_of(q: &Params) -> Result<RosterFilter, AppError> {
    use santong_domain::paging::{FieldError, FieldErrorKind, parse_sort};
    let mut errors = vec![];
    let grade = match p(q, "grade").trim() {
        "" => None,
        g => match g.parse::<i32>().ok().filter(|g| (1..=12).contains(g)) {
            Some(g) => Some(g),
            None => {
                errors.push(FieldError::new("grade", FieldErrorKind::InvalidValue));
                None
            }
        },
    };
    let sort = parse_sort(
        q.get("sort").map(String::as_str),
        &[
            ("grade", RosterSort::Grade),
            ("name", RosterSort::Name),
            ("birth", RosterSort::Birth),
        ],
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    Ok(RosterFilter {
        grade,
        text: Some(p(q, "q").trim().to_owned()).filter(|t| !t.is_empty()),
        sort: sort.map(|s| s.field).unwrap_or_default(),
        descending: sort.is_some_and(|s| s.descending),
    })
}

/// The roster as a CSV download (same date, filters and order as the page), streamed in batches,
/// with the page's columns (ID numbers and G-numbers masked).
async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    let format = crate::export::ListFormat::of_path(uri.path());
    export_list(state, ctx, user, code, q, false, format).await
}

/// Today's roster in full — ID numbers, guardians and their phones, household region and the
/// sensitive flags — posted from the form with a purpose (sensitive-data permission at the school).
async fn export_full(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    uri: axum::http::Uri,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    let format = crate::export::ListFormat::of_path(uri.path());
    export_list(state, ctx, user, code, f, true, format).await
}

/// Every export is audited with its row count, date, filters and purpose.
async fn export_list(
    state: AppState,
    ctx: Ctx,
    user: User,
    code: String,
    q: Params,
    posted: bool,
    format: crate::export::ListFormat,
) -> Result<Response, AppError> {
    let crate::export::Gate {
        scope,
        school,
        full,
        purpose,
    } = crate::export::gate(&state, &user, &code, &q, posted).await?;
    let on = parse_on(&q)?;
    let filter = roster_filter_of(&q)?;
    let db = state.db.clone();
    let total = Students(&db)
        .roster_filtered(&scope, &code, on, &filter, 1, 0)
        .await?
        .total;
    let detail = serde_json::json!({
        "rows": total,
        "on": on.to_string(),
        "grade": filter.grade,
        "q": crate::export::logged_text(filter.text.as_deref().unwrap_or("")),
        "full": full,
        "purpose": purpose,
        "format": format.ext(),
    })
    .to_string();
    Students(&state.db)
        .record_export(actor(&user, &ctx), "student.export", &code, detail)
        .await?;

    let tr = ctx.tr();
    let labels: std::collections::HashMap<String, String> = ["1", "2"]
        .iter()
        .map(|c| (format!("sex{c}"), sex_label(&tr, c)))
        .chain(
            ["in", "suspended", "out"]
                .iter()
                .map(|s| (format!("status{s}"), tr.t(&format!("student-status-{s}")))),
        )
        .chain(
            Ethnicity::all()
                .iter()
                .map(|(c, _, _)| (format!("eth{c}"), ethnicity_label(&ctx, c))),
        )
        .collect();
    let mut head: Vec<String> = [
        "student-number",
        "student-name",
        "student-sex",
        "student-birth",
        "student-ethnicity",
        "student-id",
        "student-grade",
        "student-status",
    ]
    .iter()
    .map(|k| tr.t(k))
    .collect();
    if full {
        head.extend(
            [
                "student-household",
                "student-guardian",
                "student-guardian-relation",
                "student-guardian-phone",
                "student-left-behind",
                "student-migrant",
                "student-disability",
            ]
            .iter()
            .map(|k| tr.t(k)),
        );
    }
    let yes = tr.t("export-yes");
    let labels = std::sync::Arc::new(labels);
    let name = format!("students-{}-{on}", school.code);
    Ok(crate::export::stream_list(
        format,
        &name,
        head,
        move |offset| {
            let (db, scope, filter, code) =
                (db.clone(), scope.clone(), filter.clone(), code.clone());
            let (labels, yes) = (labels.clone(), yes.clone());
            async move {
                let label = |k: String| labels.get(&k).cloned().unwrap_or_default();
                let page = Students(&db)
                    .roster_filtered(&scope, &code, on, &filter, crate::export::PAGE, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page
                    .items
                    .iter()
                    .map(|x| {
                        let st = &x.student;
                        let mut row = vec![
                            if full {
                                st.student_number.clone()
                            } else {
                                st.number_masked()
                            },
                            st.name.clone(),
                            label(format!("sex{}", st.sex)),
                            st.birth_date.to_string(),
                            label(format!("eth{}", st.ethnicity)),
                            if full {
                                crate::export::id_as_text(st.id_number.as_deref().unwrap_or(""))
                            } else {
                                st.id_masked().unwrap_or_default()
                            },
                            x.grade.to_string(),
                            label(format!("status{}", x.status)),
                        ];
                        if full {
                            row.extend([
                                st.household_region.clone().unwrap_or_default(),
                                st.guardian_name.clone(),
                                st.guardian_relation.clone(),
                                crate::export::national_phone(&st.guardian_phone),
                            ]);
                            for flag in [st.left_behind, st.migrant, st.disability] {
                                row.push(if flag { yes.clone() } else { String::new() });
                            }
                        }
                        row
                    })
                    .collect())
            }
        },
    ))
}

async fn roster(
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
    let filter = roster_filter_of(&q)?;
    let tr = ctx.tr();
    let list = Students(&state.db)
        .roster_filtered(&scope, &code, on, &filter, page.limit(), page.offset())
        .await?;
    let pages = page.page_count(list.total);
    let (grade, text, sort) = (p(&q, "grade"), p(&q, "q"), p(&q, "sort"));
    let href = |n: u32| {
        format!(
            "/schools/{code}/students?on={on}&grade={}&q={}&sort={}&page={n}",
            crate::views::percent_encode(grade),
            crate::views::percent_encode(text),
            crate::views::percent_encode(sort)
        )
    };
    let rows = list
        .items
        .iter()
        .map(|x| RosterRow {
            id: x.student.id.to_string(),
            number: x.student.number_masked(),
            name: x.student.name.clone(),
            sex: sex_label(&tr, &x.student.sex),
            grade: x.grade,
            birth: x.student.birth_date.to_string(),
            id_masked: x.student.id_masked().unwrap_or_default(),
            suspended: (x.status == "suspended").then(|| tr.t("student-status-suspended")),
        })
        .collect();
    html(&RosterPage {
        c: ctx.chrome(tr.f("students-title", &[("school", school.name.clone().into())])),
        code: code.clone(),
        school: school.name,
        on: on.to_string(),
        grade: grade.to_owned(),
        q: text.to_owned(),
        sort: sort.to_owned(),
        export: format!(
            "/schools/{code}/students/export.csv?on={on}&grade={}&q={}&sort={}",
            crate::views::percent_encode(grade),
            crate::views::percent_encode(text),
            crate::views::percent_encode(sort)
        ),
        can_full: on == today()
            && user
                .0
                .scope(Permission::SensitiveView)
                .contains(&school_node(&state, &code).await?),
        sorts: [
            ("grade", "students-sort-grade"),
            ("name", "students-sort-name"),
            ("-name", "students-sort-name-desc"),
            ("birth", "students-sort-birth"),
            ("-birth", "students-sort-birth-desc"),
        ]
        .into_iter()
        .map(|(v, k)| (v, tr.t(k)))
        .collect(),
        rows,
        pager: Pager::new(&tr, page.page, pages, list.total, href),
        can_enrol: user
            .0
            .scope(Permission::RegistryManage)
            .contains(&school_node(&state, &code).await?),
    })
}

async fn school_node(
    state: &AppState,
    code: &str,
) -> Result<santong_domain::identity::Node, AppError> {
    Ok(Registry(&state.db)
        .school(&santong_domain::identity::Scope::everything(), code)
        .await?
        .map(|s| s.node())
        .unwrap_or(santong_domain::identity::Node::Nation))
}

#[derive(Template)]
#[template(path = "student_new.html")]
struct NewPage {
    c: Chrome,
    code: String,
    form: FormState,
    ethnicities: Vec<(String, String)>,
}

fn render_new(
    ctx: &Ctx,
    code: &str,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let mut res = html(&NewPage {
        c: ctx.chrome(tr.t("students-enrol")),
        code: code.to_owned(),
        form,
        ethnicities: ethnicity_choices(),
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

fn input_of(f: &Params) -> NewStudent {
    NewStudent {
        name: p(f, "name").into(),
        sex: p(f, "sex").into(),
        birth_date: p(f, "birth_date").into(),
        ethnicity: p(f, "ethnicity").into(),
        id_number: p(f, "id_number").into(),
        household_region: p(f, "household_region").into(),
        guardian_name: p(f, "guardian_name").into(),
        guardian_relation: p(f, "guardian_relation").into(),
        guardian_phone: p(f, "guardian_phone").into(),
        left_behind: p(f, "left_behind") == "on",
        migrant: p(f, "migrant") == "on",
        disability: p(f, "disability") == "on",
        grade: p(f, "grade").into(),
        enrolled_on: p(f, "enrolled_on").into(),
    }
}

async fn enrol(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    match Students(&state.db)
        .enrol(actor(&user, &ctx), &code, &input_of(&f))
        .await
    {
        Ok(s) => Ok(Redirect::to(&format!("/students/{}", s.student.id)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let tr = ctx.tr();
            let form = FormState::with_errors(&f, &tr, &errors);
            render_new(&ctx, &code, form, StatusCode::BAD_REQUEST)
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.enrol", &code, e).await),
    }
}

#[derive(Template)]
#[template(path = "student.html")]
struct DetailPage {
    c: Chrome,
    s: Placed,
    number: String,
    sex: String,
    ethnicity: String,
    id_number: String,
    phone: String,
    full: bool,
    sensitive: bool,
    error: Option<String>,
    status: String,
    history: Vec<crate::lifecycle::EventView>,
    /// May record changes (holds `registry_manage` at the student's school).
    manage: bool,
    kinds: Vec<(&'static str, String)>,
    event_form: FormState,
    /// The class today: (id, name).
    class: Option<(String, String)>,
    /// Corrections: (field label, before, after, reason, when, who).
    corrections: Vec<(String, String, String, String, String, String)>,
    correct_form: FormState,
    /// Open duplicate cases this record is part of.
    duplicates: Vec<String>,
}

/// How the student page is shown: masked or full, and any refusal to show at its form.
#[derive(Default)]
pub(crate) struct Shown {
    pub(crate) full: bool,
    pub(crate) error: Option<String>,
    pub(crate) event_form: FormState,
    pub(crate) correct_form: FormState,
}

pub(crate) async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    s: Placed,
    shown: Shown,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let Shown {
        full,
        error,
        event_form,
        correct_form,
    } = shown;
    let node = school_node(state, &s.school_code).await?;
    let sensitive = user.0.scope(Permission::SensitiveView).contains(&node);
    let manage = user.0.scope(Permission::RegistryManage).contains(&node);
    let history = crate::lifecycle::history(state, ctx, user, s.student.id).await?;
    let corrections = Students(&state.db)
        .corrections(&user.0.scope(Permission::RegistryView), s.student.id)
        .await?
        .iter()
        .map(|c| {
            let (before, after) = c.shown();
            (
                tr.t(&format!("correction-field-{}", c.field)),
                before,
                after,
                c.reason.clone(),
                (c.recorded_at + chrono::Duration::hours(8))
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
                c.actor.clone(),
            )
        })
        .collect();
    let duplicates = santong_storage::duplicates::Duplicates(&state.db)
        .open_of(&user.0.scope(Permission::RegistryView), s.student.id)
        .await?
        .iter()
        .map(Uuid::to_string)
        .collect();
    let class = santong_storage::classes::Classes(&state.db)
        .class_of(s.student.id, &s.school_code, today())
        .await?
        .filter(|_| s.status != "out")
        .map(|(id, name)| (id.to_string(), name));
    let (number, id_number, phone) = if full {
        (
            s.student.student_number.clone(),
            s.student.id_number.clone().unwrap_or_default(),
            s.student.guardian_phone.clone(),
        )
    } else {
        (
            s.student.number_masked(),
            s.student.id_masked().unwrap_or_default(),
            s.student.phone_masked(),
        )
    };
    let mut res = html(&DetailPage {
        c: ctx.chrome(s.student.name.clone()),
        sex: sex_label(&tr, &s.student.sex),
        ethnicity: ethnicity_label(ctx, &s.student.ethnicity),
        number,
        id_number,
        phone,
        full,
        sensitive,
        error,
        status: tr.t(&format!("student-status-{}", s.status)),
        history,
        manage,
        kinds: santong_domain::lifecycle::EventKind::MANUAL
            .iter()
            .map(|k| (k.as_str(), tr.t(&format!("event-kind-{}", k.as_str()))))
            .collect(),
        event_form,
        class,
        corrections,
        correct_form,
        duplicates,
        s,
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
    let s = Students(&state.db)
        .student(&user.0.scope(Permission::RegistryView), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    render_detail(&state, &ctx, &user, s, Shown::default(), StatusCode::OK).await
}

async fn full(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    let scope = user.0.scope(Permission::RegistryView);
    let students = Students(&state.db);
    match students
        .view_full(actor(&user, &ctx), &scope, id, p(&f, "purpose"))
        .await
    {
        Ok(s) => {
            let shown = Shown {
                full: true,
                ..Shown::default()
            };
            render_detail(&state, &ctx, &user, s, shown, StatusCode::OK).await
        }
        Err(RegistryError::Fields(errors)) => {
            let s = students
                .student(&scope, id)
                .await?
                .ok_or_else(AppError::not_found)?;
            let msg = errors.first().map(|e| ctx.tr().t(e.kind.key()));
            let shown = Shown {
                error: msg,
                ..Shown::default()
            };
            render_detail(&state, &ctx, &user, s, shown, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.view_full", &id.to_string(), e).await),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// A student as lists show them: ID number, G-number and guardian's phone masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudentDto {
    pub id: Uuid,
    /// 全国学籍号, masked when it holds the ID number (G-numbers).
    pub student_number: String,
    pub name: String,
    /// GB/T 2261.1: `1` male, `2` female.
    pub sex: String,
    pub birth_date: String,
    /// GB/T 3304 code.
    pub ethnicity: String,
    pub id_number_masked: Option<String>,
    /// The ID's region code is no longer current (accepted, flagged).
    pub id_region_retired: bool,
    pub guardian_name: String,
    pub guardian_relation: String,
    pub guardian_phone_masked: String,
    pub school_code: String,
    pub grade: i32,
    pub since: String,
    /// `in` (在校), `suspended` (休学) or `out` (left: graduated, dropped out, …).
    pub status: String,
}

impl From<Placed> for StudentDto {
    fn from(p: Placed) -> Self {
        Self {
            student_number: p.student.number_masked(),
            id_number_masked: p.student.id_masked(),
            guardian_phone_masked: p.student.phone_masked(),
            id: p.student.id,
            name: p.student.name,
            sex: p.student.sex,
            birth_date: p.student.birth_date.to_string(),
            ethnicity: p.student.ethnicity,
            id_region_retired: p.student.id_region_retired,
            guardian_name: p.student.guardian_name,
            guardian_relation: p.student.guardian_relation,
            school_code: p.school_code,
            grade: p.grade,
            since: p.since.to_string(),
            status: p.status,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StudentList {
    pub items: Vec<StudentDto>,
    pub page: u32,
    pub size: u32,
    pub pages: u64,
    pub total: u64,
    /// The date the roster is for.
    pub on: String,
}

/// A new student, enrolled at the school of the path. (No `Debug`: it holds an ID number and a
/// phone.)
#[derive(serde::Deserialize, ToSchema)]
pub struct NewStudentDto {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sex: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub ethnicity: String,
    #[serde(default)]
    pub id_number: Option<String>,
    #[serde(default)]
    pub household_region: Option<String>,
    #[serde(default)]
    pub guardian_name: String,
    #[serde(default)]
    pub guardian_relation: String,
    #[serde(default)]
    pub guardian_phone: String,
    #[serde(default)]
    pub left_behind: bool,
    #[serde(default)]
    pub migrant: bool,
    #[serde(default)]
    pub disability: bool,
    #[serde(default)]
    pub grade: String,
    #[serde(default)]
    pub enrolled_on: Option<String>,
}

/// The school's students on a date (default today), by grade and name.
#[utoipa::path(get, path = "/schools/{code}/students", tag = "registry", security(("token" = [])),
    params(("code" = String, Path), ("on" = Option<String>, Query, description = "YYYY-MM-DD"),
           ("grade" = Option<u32>, Query), ("q" = Option<String>, Query,
            description = "part of the name"),
           ("sort" = Option<String>, Query, description = "grade, name or birth; - for descending"),
           ("page" = Option<u32>, Query), ("size" = Option<u32>, Query)),
    responses((status = 200, body = StudentList),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_roster(
    State(state): State<AppState>,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<StudentList>, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    Registry(&state.db)
        .school(&scope, &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let on = parse_on(&q)?;
    let page = page_of(&q)?;
    let filter = roster_filter_of(&q)?;
    let list = Students(&state.db)
        .roster_filtered(&scope, &code, on, &filter, page.limit(), page.offset())
        .await?;
    Ok(Json(StudentList {
        pages: page.page_count(list.total),
        items: list.items.into_iter().map(StudentDto::from).collect(),
        page: page.page,
        size: page.size,
        total: list.total,
        on: on.to_string(),
    }))
}

/// One student, masked (404 outside the caller's scope).
#[utoipa::path(get, path = "/students/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = StudentDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_student(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<StudentDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    Students(&state.db)
        .student(&user.0.scope(Permission::RegistryView), id)
        .await?
        .map(|s| Json(s.into()))
        .ok_or_else(AppError::not_found)
}

/// Enrols a student (needs `registry_manage` at the school). Every refused field is reported.
#[utoipa::path(post, path = "/schools/{code}/students", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = NewStudentDto,
    responses((status = 201, body = StudentDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_enrol(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(b): Json<NewStudentDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let input = NewStudent {
        name: b.name,
        sex: b.sex,
        birth_date: b.birth_date,
        ethnicity: b.ethnicity,
        id_number: b.id_number.unwrap_or_default(),
        household_region: b.household_region.unwrap_or_default(),
        guardian_name: b.guardian_name,
        guardian_relation: b.guardian_relation,
        guardian_phone: b.guardian_phone,
        left_behind: b.left_behind,
        migrant: b.migrant,
        disability: b.disability,
        grade: b.grade,
        enrolled_on: b.enrolled_on.unwrap_or_default(),
    };
    match Students(&state.db)
        .enrol(actor(&user, &ctx), &code, &input)
        .await
    {
        Ok(s) => Ok((StatusCode::CREATED, Json(StudentDto::from(s))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "student.enrol", &code, e).await),
    }
}

async fn correct(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    let scope = user.0.scope(Permission::RegistryView);
    let students = Students(&state.db);
    match students
        .correct(actor(&user, &ctx), &scope, id, &correction_of(&f))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/students/{id}#corrections")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let s = students
                .student(&scope, id)
                .await?
                .ok_or_else(AppError::not_found)?;
            let shown = Shown {
                correct_form: FormState::with_errors(&f, &ctx.tr(), &errors),
                ..Shown::default()
            };
            render_detail(&state, &ctx, &user, s, shown, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "student.correct", &id.to_string(), e).await),
    }
}

fn correction_of(f: &Params) -> Correction {
    Correction {
        name: p(f, "name").into(),
        sex: p(f, "sex").into(),
        birth_date: p(f, "birth_date").into(),
        ethnicity: p(f, "ethnicity").into(),
        id_number: p(f, "id_number").into(),
        reason: p(f, "reason").into(),
    }
}

/// A correction of personal data: empty fields stay as they are. (No `Debug`: it may hold an ID
/// number.)
#[derive(serde::Deserialize, ToSchema)]
pub struct CorrectionDto {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub ethnicity: Option<String>,
    #[serde(default)]
    pub id_number: Option<String>,
    #[serde(default)]
    pub reason: String,
}

/// Corrects a student's personal data (needs `registry_manage` at the school); every changed
/// field keeps its old value; an ID number makes the student number G + that number.
#[utoipa::path(post, path = "/students/{id}/corrections", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = CorrectionDto,
    responses((status = 200, body = StudentDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_correct(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<CorrectionDto>,
) -> Result<Json<StudentDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    let input = Correction {
        name: b.name.unwrap_or_default(),
        sex: b.sex.unwrap_or_default(),
        birth_date: b.birth_date.unwrap_or_default(),
        ethnicity: b.ethnicity.unwrap_or_default(),
        id_number: b.id_number.unwrap_or_default(),
        reason: b.reason,
    };
    match Students(&state.db)
        .correct(
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            &input,
        )
        .await
    {
        Ok(s) => Ok(Json(s.into())),
        Err(e) => Err(audited(&state, &ctx, &user, "student.correct", &id.to_string(), e).await),
    }
}
