//! Schools and teaching points: the list (filters, sorting, pages), a school's page with its
//! teaching points and history, and the forms to open, edit, close and merge — plus the same in
//! the JSON API. Everything is read through the caller's `registry_view` scope; changes are
//! checked again in storage.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use santong_domain::identity::Permission;
use santong_domain::paging::{FieldError, PageRequest, parse_page};
use santong_domain::region::RegionCode;
use santong_domain::registry::{SchoolKind, SchoolStatus, UrbanRural};
use santong_storage::registry::{
    Registry, RegistryError, SchoolEventRow, SchoolFilter, SchoolInput, SchoolRow, SchoolSort,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::admin::actor;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, percent_encode, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/schools", get(list).post(create))
        .route("/schools/new", get(new_form))
        .route("/schools/export.csv", get(export))
        .route("/schools/export.xlsx", get(export))
        .route("/schools/{code}", get(detail).post(edit))
        .route("/schools/{code}/close", post(close))
        .route("/schools/{code}/conditions", post(record_conditions))
}

pub(crate) type Params = HashMap<String, String>;

/// The `page` and `size` parameters of a list, refused together when wrong.
pub(crate) fn page_of(q: &Params) -> Result<santong_domain::paging::PageRequest, AppError> {
    let mut errors = vec![];
    let page = santong_domain::paging::parse_page(
        q.get("page").map(String::as_str),
        q.get("size").map(String::as_str),
        &mut errors,
    );
    if errors.is_empty() {
        Ok(page)
    } else {
        Err(AppError::bad_params(errors))
    }
}

/// The `on` parameter of a page that shows a day (default today in China).
pub(crate) fn parse_on(q: &Params) -> Result<chrono::NaiveDate, AppError> {
    match p(q, "on") {
        "" => Ok(santong_storage::registry::today()),
        d => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            AppError::bad_params(vec![FieldError::new(
                "on",
                santong_domain::paging::FieldErrorKind::InvalidValue,
            )])
        }),
    }
}

pub(crate) fn p<'a>(q: &'a Params, k: &str) -> &'a str {
    q.get(k).map(String::as_str).unwrap_or("").trim()
}

/// The list's filters, sort and page, parsed once for the page and the API.
fn parse_list(q: &Params) -> Result<(SchoolFilter, PageRequest), AppError> {
    let mut errors = vec![];
    let page = parse_page(
        q.get("page").map(String::as_str),
        q.get("size").map(String::as_str),
        &mut errors,
    );
    let mut f = SchoolFilter {
        text: Some(p(q, "q").to_owned()).filter(|t| !t.is_empty()),
        ..Default::default()
    };
    let bad =
        |field: &str| FieldError::new(field, santong_domain::paging::FieldErrorKind::InvalidValue);
    match p(q, "region") {
        "" => {}
        r => match RegionCode::parse(r) {
            Ok(c) => f.region = Some(c),
            Err(_) => errors.push(bad("region")),
        },
    }
    match p(q, "kind") {
        "" => {}
        k => match SchoolKind::parse(k) {
            Some(k) => f.kind = Some(k),
            None => errors.push(bad("kind")),
        },
    }
    match p(q, "status") {
        "" => {}
        s => match SchoolStatus::parse(s) {
            Some(s) => f.status = Some(s),
            None => errors.push(bad("status")),
        },
    }
    let sort = santong_domain::paging::parse_sort(
        q.get("sort").map(String::as_str),
        &[
            ("code", SchoolSort::Code),
            ("name", SchoolSort::Name),
            ("opened", SchoolSort::Opened),
        ],
        &mut errors,
    );
    if let Some(s) = sort {
        f.sort = s.field;
        f.descending = s.descending;
    }
    if errors.is_empty() {
        Ok((f, page))
    } else {
        Err(AppError::bad_params(errors))
    }
}

pub(crate) fn registry_error(e: RegistryError) -> AppError {
    match e {
        RegistryError::Fields(f) => AppError::bad_params(f),
        RegistryError::Forbidden => {
            AppError::new(StatusCode::FORBIDDEN, "forbidden", "error-forbidden")
        }
        RegistryError::NotFound => AppError::not_found(),
        RegistryError::Stale => AppError::new(StatusCode::CONFLICT, "stale", "registry-stale"),
        RegistryError::Storage(s) => s.into(),
    }
}

fn kind_label(tr: &Tr, code: &str) -> String {
    tr.t(&format!("school-kind-{code}"))
}

fn urban_label(tr: &Tr, code: &str) -> String {
    tr.t(&format!("urban-rural-{code}"))
}

fn status_label(tr: &Tr, s: &str) -> String {
    tr.t(&format!("school-status-{s}"))
}

// ----- pages ------------------------------------------------------------------------------------

struct Row {
    code: String,
    name: String,
    kind: String,
    county: String,
    status: String,
    opened: String,
    point: bool,
}

#[derive(Template)]
#[template(path = "schools.html")]
struct ListPage {
    c: Chrome,
    q: String,
    region: String,
    kind: String,
    status: String,
    sort: String,
    kinds: Vec<(&'static str, String)>,
    statuses: Vec<(&'static str, String)>,
    rows: Vec<Row>,
    pager: Pager,
    can_create: bool,
    /// Counties whose schools the caller may import: (code, name).
    import_counties: Vec<(String, String)>,
    export: String,
}

/// The school list as CSV, with the page's filters and order (all pages), streamed. No personal
/// data in it; audited with its row count, filters and the caller's scope all the same.
async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let format = crate::export::ListFormat::of_path(uri.path());
    let (f, _) = parse_list(&q)?;
    let scope = user.0.scope(Permission::RegistryView);
    let db = state.db.clone();
    let total = Registry(&db).list_schools(&scope, &f, 1, 0).await?.total;
    let node = f
        .region
        .map(santong_domain::identity::Node::Region)
        .unwrap_or(santong_domain::identity::Node::Nation);
    let detail = serde_json::json!({
        "rows": total,
        "q": crate::export::logged_text(f.text.as_deref().unwrap_or("")),
        "region": f.region.map(|r| r.to_string()),
        "kind": f.kind.map(|k| k.code()),
        "status": f.status.map(|s| s.as_str()),
        "scope": format!("{scope:?}"),
        "format": format.ext(),
    })
    .to_string();
    Registry(&state.db)
        .record_export(actor(&user, &ctx), "school.export", &node, detail)
        .await?;
    let tr = ctx.tr();
    let head: Vec<String> = [
        "code",
        "name",
        "kind",
        "urban_rural",
        "county",
        "parent_code",
        "grades",
        "status",
        "opened_on",
        "merged_into",
    ]
    .iter()
    .map(|k| tr.t(&format!("school-field-{k}")))
    .collect();
    Ok(crate::export::stream_list(
        format,
        "schools",
        head,
        move |offset| {
            let (db, scope, f) = (db.clone(), scope.clone(), f.clone());
            async move {
                let page = Registry(&db)
                    .list_schools(&scope, &f, crate::export::PAGE, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page
                    .items
                    .iter()
                    .map(|s| {
                        vec![
                            s.code.clone(),
                            s.name.clone(),
                            kind_label(&tr, &s.kind),
                            urban_label(&tr, &s.urban_rural),
                            s.county.clone(),
                            s.parent_code.clone().unwrap_or_default(),
                            s.grades.clone(),
                            status_label(&tr, &s.status),
                            s.opened_on.to_string(),
                            s.merged_into.clone().unwrap_or_default(),
                        ]
                    })
                    .collect())
            }
        },
    ))
}

fn may_create(user: &User) -> bool {
    // Schools are opened at the county or above: a grant at a region, not at a school.
    user.0.roles().iter().any(|(r, n)| {
        r.permissions().contains(&Permission::RegistryManage)
            && !matches!(n, santong_domain::identity::Node::School { .. })
    })
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let (f, page) = parse_list(&q)?;
    let tr = ctx.tr();
    let list = Registry(&state.db)
        .list_schools(
            &user.0.scope(Permission::RegistryView),
            &f,
            page.limit(),
            page.offset(),
        )
        .await?;
    let keep = |extra: &str| {
        format!(
            "/schools?q={}&region={}&kind={}&status={}&sort={}{extra}",
            percent_encode(p(&q, "q")),
            percent_encode(p(&q, "region")),
            percent_encode(p(&q, "kind")),
            percent_encode(p(&q, "status")),
            percent_encode(p(&q, "sort")),
        )
    };
    let pages = page.page_count(list.total);
    let rows = list
        .items
        .iter()
        .map(|s| Row {
            code: s.code.clone(),
            name: s.name.clone(),
            kind: kind_label(&tr, &s.kind),
            county: s.county.clone(),
            status: status_label(&tr, &s.status),
            opened: s.opened_on.to_string(),
            point: s.parent_code.is_some(),
        })
        .collect();
    html(&ListPage {
        c: ctx.chrome(tr.t("schools-title")),
        q: p(&q, "q").to_owned(),
        region: p(&q, "region").to_owned(),
        kind: p(&q, "kind").to_owned(),
        status: p(&q, "status").to_owned(),
        sort: p(&q, "sort").to_owned(),
        kinds: SchoolKind::ALL
            .iter()
            .map(|k| (k.code(), kind_label(&tr, k.code())))
            .collect(),
        statuses: SchoolStatus::ALL
            .iter()
            .map(|s| (s.as_str(), status_label(&tr, s.as_str())))
            .collect(),
        rows,
        pager: Pager::new(&tr, page.page, pages, list.total, |n| {
            keep(&format!("&page={n}"))
        }),
        can_create: may_create(&user),
        import_counties: import_counties(&state, &user).await?,
        export: keep("").replacen("/schools?", "/schools/export.csv?", 1),
    })
}

/// The counties the caller holds a grant at and manages, for the schools import.
async fn import_counties(state: &AppState, user: &User) -> Result<Vec<(String, String)>, AppError> {
    let manage = user.0.scope(Permission::RegistryManage);
    let mut out = vec![];
    for (_, node) in &user.0.grants {
        let santong_domain::identity::Node::Region(r) = node else {
            continue;
        };
        if r.is_province_shaped() || r.is_prefecture_shaped() || !manage.contains(node) {
            continue;
        }
        if let Some(region) = santong_storage::regions::Regions(&state.db).get(*r).await? {
            let pair = (r.to_string(), region.name);
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
    }
    Ok(out)
}

/// A registry form's values and its field messages, kept across a refusal.
#[derive(Default)]
pub(crate) struct FormState {
    pub(crate) v: HashMap<String, String>,
    pub(crate) errors: Vec<(String, String)>,
}

impl FormState {
    pub(crate) fn val(&self, k: &str) -> &str {
        self.v.get(k).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn err(&self, k: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, m)| m.as_str())
    }

    /// A checkbox that was ticked.
    pub(crate) fn checked(&self, k: &str) -> bool {
        self.v.get(k).is_some_and(|v| v == "on")
    }

    fn of(s: &SchoolRow) -> FormState {
        let mut v = HashMap::new();
        v.insert("code".into(), s.code.clone());
        v.insert("name".into(), s.name.clone());
        v.insert("kind".into(), s.kind.clone());
        v.insert("urban_rural".into(), s.urban_rural.clone());
        v.insert("county".into(), s.county.clone());
        v.insert(
            "parent_code".into(),
            s.parent_code.clone().unwrap_or_default(),
        );
        v.insert("grades".into(), s.grades.clone());
        v.insert("opened_on".into(), s.opened_on.to_string());
        v.insert("version".into(), s.version.to_string());
        FormState { v, errors: vec![] }
    }

    pub(crate) fn with_errors(v: &Params, tr: &Tr, errors: &[FieldError]) -> FormState {
        FormState {
            v: v.clone(),
            errors: errors
                .iter()
                .map(|e| (e.field.clone(), tr.t(e.kind.key())))
                .collect(),
        }
    }
}

fn input_of(f: &Params) -> SchoolInput {
    SchoolInput {
        code: p(f, "code").into(),
        name: p(f, "name").into(),
        kind: p(f, "kind").into(),
        urban_rural: p(f, "urban_rural").into(),
        county: p(f, "county").into(),
        parent_code: p(f, "parent_code").into(),
        grades: p(f, "grades").into(),
        opened_on: p(f, "opened_on").into(),
    }
}

/// A select's options: (value, label).
type Options = Vec<(&'static str, String)>;

/// The kind and urban/rural options of the school forms.
fn choices(tr: &Tr) -> (Options, Options) {
    (
        SchoolKind::ALL
            .iter()
            .map(|k| {
                (
                    k.code(),
                    format!("{} {}", k.code(), kind_label(tr, k.code())),
                )
            })
            .collect(),
        UrbanRural::ALL
            .iter()
            .map(|u| {
                (
                    u.code(),
                    format!("{} {}", u.code(), urban_label(tr, u.code())),
                )
            })
            .collect(),
    )
}

#[derive(Template)]
#[template(path = "school_new.html")]
struct NewPage {
    c: Chrome,
    form: FormState,
    kinds: Vec<(&'static str, String)>,
    urban: Vec<(&'static str, String)>,
}

fn render_new(ctx: &Ctx, form: FormState, status: StatusCode) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let (kinds, urban) = choices(&tr);
    let mut res = html(&NewPage {
        c: ctx.chrome(tr.t("schools-new")),
        form,
        kinds,
        urban,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn new_form(ctx: Ctx, user: User) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    render_new(&ctx, FormState::default(), StatusCode::OK)
}

async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryManage)?;
    match Registry(&state.db)
        .create_school(actor(&user, &ctx), &input_of(&f))
        .await
    {
        Ok(s) => Ok(Redirect::to(&format!("/schools/{}", s.code)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_new(&ctx, form, StatusCode::BAD_REQUEST)
        }
        Err(e) => Err(audited(&state, &ctx, &user, "school.create", p(&f, "code"), e).await),
    }
}

struct EventView {
    kind: String,
    on: String,
    at: String,
    actor: String,
    reason: String,
    changes: String,
}

#[derive(Template)]
#[template(path = "school.html")]
struct DetailPage {
    c: Chrome,
    s: SchoolRow,
    kind: String,
    urban: String,
    status: String,
    points: Vec<(String, String, String)>,
    history: Vec<EventView>,
    can_manage: bool,
    open: bool,
    form: FormState,
    close_errors: Vec<String>,
    /// A refusal that belongs to no field (stale form, closed school).
    banner: Option<String>,
    /// The version the close form carries: the one it was loaded with, kept across a refusal.
    close_version: String,
    conditions: Vec<ConditionView>,
    can_report: bool,
    cond_form: FormState,
    broadbands: Options,
    kinds: Vec<(&'static str, String)>,
    urban_choices: Vec<(&'static str, String)>,
}

fn event_view(tr: &Tr, e: SchoolEventRow) -> EventView {
    let changes: serde_json::Value = serde_json::from_str(&e.changes).unwrap_or_default();
    let text = changes
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let show = |x: &serde_json::Value| match x {
                        serde_json::Value::Null => "—".to_owned(),
                        serde_json::Value::String(s) if s.is_empty() => "—".to_owned(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!(
                        "{}: {} → {}",
                        tr.t(&format!("school-field-{k}")),
                        show(&v[0]),
                        show(&v[1])
                    )
                })
                .collect::<Vec<_>>()
                .join("；")
        })
        .unwrap_or_default();
    EventView {
        kind: tr.t(&format!("school-event-{}", e.kind)),
        on: e.effective_on.to_string(),
        at: e.recorded_at.format("%Y-%m-%d %H:%M").to_string(),
        actor: e.actor,
        reason: e.reason,
        changes: text,
    }
}

/// What a refused change shows again on the school's page.
#[derive(Default)]
struct Refused {
    form: Option<FormState>,
    close_errors: Vec<String>,
    banner: Option<String>,
    close_version: Option<String>,
    conditions: Option<FormState>,
}

struct ConditionView {
    year: String,
    area: i32,
    classrooms: i32,
    multimedia: i32,
    computers: i32,
    terminals: i32,
    broadband: String,
    bandwidth: String,
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    code: &str,
    refused: Refused,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let reg = Registry(&state.db);
    let scope = user.0.scope(Permission::RegistryView);
    let s = reg
        .school(&scope, code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let points = reg
        .list_schools(
            &scope,
            &SchoolFilter {
                parent: Some(s.code.clone()),
                ..Default::default()
            },
            100,
            0,
        )
        .await?
        .items
        .into_iter()
        .map(|p| (p.code, p.name, status_label(&tr, &p.status)))
        .collect();
    let history = reg
        .history(&s.code)
        .await?
        .into_iter()
        .map(|e| event_view(&tr, e))
        .collect();
    let county = s
        .node()
        .region()
        .map(santong_domain::identity::Node::Region);
    let can_manage = county.is_some_and(|n| user.0.scope(Permission::RegistryManage).contains(&n));
    let can_report = user.0.scope(Permission::RegistryManage).contains(&s.node());
    let conditions = reg
        .conditions(&s.code)
        .await?
        .into_iter()
        .map(|c| ConditionView {
            year: santong_domain::registry::SchoolYear(c.school_year).to_string(),
            area: c.building_area_m2,
            classrooms: c.classrooms,
            multimedia: c.multimedia_classrooms,
            computers: c.computers,
            terminals: c.student_terminals,
            broadband: tr.t(&format!("broadband-{}", c.broadband)),
            bandwidth: c
                .bandwidth_mbps
                .map(|b| format!("{b} Mbps"))
                .unwrap_or_default(),
        })
        .collect();
    let broadbands = santong_domain::registry::Broadband::ALL
        .iter()
        .map(|b| (b.as_str(), tr.t(&format!("broadband-{}", b.as_str()))))
        .collect();
    let (kinds, urban_choices) = choices(&tr);
    let mut res = html(&DetailPage {
        c: ctx.chrome(s.name.clone()),
        kind: kind_label(&tr, &s.kind),
        urban: urban_label(&tr, &s.urban_rural),
        status: status_label(&tr, &s.status),
        open: s.status() == Some(SchoolStatus::Open),
        points,
        history,
        can_manage,
        form: refused.form.unwrap_or_else(|| FormState::of(&s)),
        close_errors: refused.close_errors,
        banner: refused.banner,
        close_version: refused
            .close_version
            .unwrap_or_else(|| s.version.to_string()),
        conditions,
        can_report,
        cond_form: refused.conditions.unwrap_or_default(),
        broadbands,
        kinds,
        urban_choices,
        s,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    render_detail(
        &state,
        &ctx,
        &user,
        &code,
        Refused::default(),
        StatusCode::OK,
    )
    .await
}

async fn edit(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let version = p(&f, "version").parse::<i32>().unwrap_or(-1);
    let outcome = Registry(&state.db)
        .edit_school(
            actor(&user, &ctx),
            &code,
            version,
            &input_of(&f),
            p(&f, "reason"),
        )
        .await;
    let tr = ctx.tr();
    // The form comes back as submitted, with the version it was loaded with: saving it again
    // after a refusal must not overwrite what someone else changed.
    let refused = match outcome {
        Ok(()) => return Ok(Redirect::to(&format!("/schools/{code}")).into_response()),
        Err(RegistryError::Fields(errors)) => Refused {
            banner: errors
                .iter()
                .find(|e| e.field == "status")
                .map(|e| tr.t(e.kind.key())),
            form: Some(FormState::with_errors(&f, &tr, &errors)),
            ..Default::default()
        },
        Err(RegistryError::Stale) => Refused {
            banner: Some(tr.t("registry-stale")),
            form: Some(FormState::with_errors(&f, &tr, &[])),
            ..Default::default()
        },
        Err(e) => return Err(audited(&state, &ctx, &user, "school.edit", &code, e).await),
    };
    let status = if refused.form.as_ref().is_some_and(|f| f.errors.is_empty()) {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    render_detail(&state, &ctx, &user, &code, refused, status).await
}

/// A refusal for want of permission or scope, recorded in the audit log before it is answered.
pub(crate) async fn audited(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    event: &'static str,
    target: &str,
    e: RegistryError,
) -> AppError {
    if matches!(e, RegistryError::Forbidden | RegistryError::NotFound) {
        crate::admin::record_refusal(state, ctx, user, event, target, &e.to_string()).await;
    }
    registry_error(e)
}

async fn close(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let version = p(&f, "version").parse::<i32>().unwrap_or(-1);
    let into = Some(p(&f, "into")).filter(|i| !i.is_empty());
    let outcome = Registry(&state.db)
        .close_school(
            actor(&user, &ctx),
            &code,
            version,
            p(&f, "on"),
            into,
            p(&f, "reason"),
        )
        .await;
    let tr = ctx.tr();
    let (refused, status) = match outcome {
        Ok(()) => return Ok(Redirect::to(&format!("/schools/{code}")).into_response()),
        Err(RegistryError::Fields(errors)) => (
            Refused {
                close_errors: errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            tr.t(&format!("school-close-field-{}", e.field)),
                            tr.t(e.kind.key())
                        )
                    })
                    .collect(),
                banner: errors
                    .iter()
                    .find(|e| e.kind.key() == "registry-not-open")
                    .map(|e| tr.t(e.kind.key())),
                close_version: Some(p(&f, "version").to_owned()),
                ..Default::default()
            },
            StatusCode::BAD_REQUEST,
        ),
        Err(RegistryError::Stale) => (
            Refused {
                banner: Some(tr.t("registry-stale")),
                close_version: Some(p(&f, "version").to_owned()),
                ..Default::default()
            },
            StatusCode::CONFLICT,
        ),
        Err(e) => return Err(audited(&state, &ctx, &user, "school.close", &code, e).await),
    };
    render_detail(&state, &ctx, &user, &code, refused, status).await
}

async fn record_conditions(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    match Registry(&state.db)
        .record_conditions(actor(&user, &ctx), &code, &condition_input(&f))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/schools/{code}#conditions")).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let refused = Refused {
                conditions: Some(FormState::with_errors(&f, &ctx.tr(), &errors)),
                ..Default::default()
            };
            render_detail(&state, &ctx, &user, &code, refused, StatusCode::BAD_REQUEST).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, "school.conditions", &code, e).await),
    }
}

fn condition_input(f: &Params) -> santong_storage::registry::ConditionInput {
    santong_storage::registry::ConditionInput {
        school_year: p(f, "school_year").into(),
        building_area_m2: p(f, "building_area_m2").into(),
        classrooms: p(f, "classrooms").into(),
        multimedia_classrooms: p(f, "multimedia_classrooms").into(),
        computers: p(f, "computers").into(),
        student_terminals: p(f, "student_terminals").into(),
        broadband: p(f, "broadband").into(),
        bandwidth_mbps: p(f, "bandwidth_mbps").into(),
        broadband_since: p(f, "broadband_since").into(),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// A school or teaching point.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchoolDto {
    /// 学校标识码, 10 digits.
    pub code: String,
    pub name: String,
    /// 办学类型 (GB/T 33782-2017), e.g. `211` primary, `218` teaching point.
    pub kind: String,
    /// 城乡类型 (GB/T 33782-2017), e.g. `111` main urban, `220` village.
    pub urban_rural: String,
    /// County-level region code (GB/T 2260).
    pub county: String,
    pub parent_code: Option<String>,
    /// Grades offered, `1-6`.
    pub grades: String,
    /// `open`, `closed` or `merged`.
    pub status: String,
    pub opened_on: String,
    pub closed_on: Option<String>,
    pub merged_into: Option<String>,
    /// Send it back when changing the school; a stale one is refused with 409.
    pub version: i32,
}

impl From<SchoolRow> for SchoolDto {
    fn from(s: SchoolRow) -> Self {
        Self {
            code: s.code,
            name: s.name,
            kind: s.kind,
            urban_rural: s.urban_rural,
            county: s.county,
            parent_code: s.parent_code,
            grades: s.grades,
            status: s.status,
            opened_on: s.opened_on.to_string(),
            closed_on: s.closed_on.map(|d| d.to_string()),
            merged_into: s.merged_into,
            version: s.version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchoolList {
    pub items: Vec<SchoolDto>,
    pub page: u32,
    pub size: u32,
    pub pages: u64,
    pub total: u64,
}

/// A change in a school's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchoolEventDto {
    /// `create`, `edit`, `close` or `merge`.
    pub kind: String,
    pub effective_on: String,
    pub recorded_at: String,
    pub actor: String,
    pub reason: String,
    /// `{"field": [before, after]}`
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchoolDetail {
    #[serde(flatten)]
    pub school: SchoolDto,
    pub history: Vec<SchoolEventDto>,
    /// 办学条件 by school year, newest first.
    pub conditions: Vec<ConditionDto>,
}

/// A school's conditions in one school year (also the body to record them).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ConditionDto {
    /// The year the school year starts (2025 = 2025–26).
    pub school_year: i32,
    pub building_area_m2: i32,
    pub classrooms: i32,
    pub multimedia_classrooms: i32,
    pub computers: i32,
    pub student_terminals: i32,
    /// `none`, `fibre`, `dsl`, `wireless` or `satellite`.
    pub broadband: String,
    #[serde(default)]
    pub bandwidth_mbps: Option<i32>,
    /// `YYYY-MM-DD`
    #[serde(default)]
    pub broadband_since: Option<String>,
}

impl From<santong_storage::registry::ConditionRow> for ConditionDto {
    fn from(c: santong_storage::registry::ConditionRow) -> Self {
        Self {
            school_year: c.school_year,
            building_area_m2: c.building_area_m2,
            classrooms: c.classrooms,
            multimedia_classrooms: c.multimedia_classrooms,
            computers: c.computers,
            student_terminals: c.student_terminals,
            broadband: c.broadband,
            bandwidth_mbps: c.bandwidth_mbps,
            broadband_since: c.broadband_since.map(|d| d.to_string()),
        }
    }
}

/// A new school.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct NewSchool {
    // Missing fields are empty, so they are reported with the others, field by field.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub urban_rural: String,
    #[serde(default)]
    pub county: String,
    #[serde(default)]
    pub parent_code: Option<String>,
    /// Omitted: the kind's usual grades.
    #[serde(default)]
    pub grades: Option<String>,
    /// `YYYY-MM-DD`; omitted: today.
    #[serde(default)]
    pub opened_on: Option<String>,
}

/// Schools in the caller's scope.
#[utoipa::path(get, path = "/schools", tag = "registry", security(("token" = [])),
    params(("q" = Option<String>, Query, description = "part of the name or code"),
           ("region" = Option<String>, Query, description = "under this region code"),
           ("kind" = Option<String>, Query, description = "办学类型 code"),
           ("status" = Option<String>, Query, description = "open, closed or merged"),
           ("sort" = Option<String>, Query, description = "code, name or opened; prefix - for descending"),
           ("page" = Option<u32>, Query), ("size" = Option<u32>, Query, description = "1–100")),
    responses((status = 200, body = SchoolList),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_list(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<Params>,
) -> Result<Json<SchoolList>, AppError> {
    user.require(Permission::RegistryView)?;
    let (f, page) = parse_list(&q)?;
    let list = Registry(&state.db)
        .list_schools(
            &user.0.scope(Permission::RegistryView),
            &f,
            page.limit(),
            page.offset(),
        )
        .await?;
    Ok(Json(SchoolList {
        pages: page.page_count(list.total),
        items: list.items.into_iter().map(SchoolDto::from).collect(),
        page: page.page,
        size: page.size,
        total: list.total,
    }))
}

/// One school with its history (404 outside the caller's scope).
#[utoipa::path(get, path = "/schools/{code}", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)),
    responses((status = 200, body = SchoolDetail),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_get(
    State(state): State<AppState>,
    user: User,
    Path(code): Path<String>,
) -> Result<Json<SchoolDetail>, AppError> {
    user.require(Permission::RegistryView)?;
    let reg = Registry(&state.db);
    let s = reg
        .school(&user.0.scope(Permission::RegistryView), &code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let history = reg
        .history(&s.code)
        .await?
        .into_iter()
        .map(|e| SchoolEventDto {
            kind: e.kind,
            effective_on: e.effective_on.to_string(),
            recorded_at: e.recorded_at.to_rfc3339(),
            actor: e.actor,
            reason: e.reason,
            changes: serde_json::from_str(&e.changes).unwrap_or_default(),
        })
        .collect();
    let conditions = reg
        .conditions(&s.code)
        .await?
        .into_iter()
        .map(ConditionDto::from)
        .collect();
    Ok(Json(SchoolDetail {
        school: s.into(),
        history,
        conditions,
    }))
}

/// Opens a school or teaching point (needs `registry_manage` at its county).
#[utoipa::path(post, path = "/schools", tag = "registry", security(("token" = [])),
    request_body = NewSchool,
    responses((status = 201, body = SchoolDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json",
               description = "every refused field, each with its own code and message"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_create(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Json(body): Json<NewSchool>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let input = SchoolInput {
        code: body.code,
        name: body.name,
        kind: body.kind,
        urban_rural: body.urban_rural,
        county: body.county,
        parent_code: body.parent_code.unwrap_or_default(),
        grades: body.grades.unwrap_or_default(),
        opened_on: body.opened_on.unwrap_or_default(),
    };
    let s = Registry(&state.db)
        .create_school(actor(&user, &ctx), &input)
        .await
        .map_err(registry_error)?;
    Ok((StatusCode::CREATED, Json(SchoolDto::from(s))).into_response())
}

/// A change of a school's details.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct SchoolChange {
    /// The `version` the change is based on; 409 when the school changed since.
    pub version: i32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub urban_rural: String,
    #[serde(default)]
    pub parent_code: Option<String>,
    #[serde(default)]
    pub grades: Option<String>,
    #[serde(default)]
    pub opened_on: Option<String>,
    #[serde(default)]
    pub reason: String,
}

/// A closure, or a merger when `into` names the receiving school.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct SchoolClosure {
    pub version: i32,
    /// `YYYY-MM-DD`, not in the future.
    #[serde(default)]
    pub on: String,
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub reason: String,
}

/// Changes a school's details (needs `registry_manage` at its county).
#[utoipa::path(put, path = "/schools/{code}", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = SchoolChange,
    responses((status = 200, body = SchoolDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 409, body = crate::api::Problem, content_type = "application/problem+json",
               description = "the school changed since `version`")))]
pub async fn api_edit(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(body): Json<SchoolChange>,
) -> Result<Json<SchoolDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let input = SchoolInput {
        name: body.name,
        kind: body.kind,
        urban_rural: body.urban_rural,
        parent_code: body.parent_code.unwrap_or_default(),
        grades: body.grades.unwrap_or_default(),
        opened_on: body.opened_on.unwrap_or_default(),
        ..Default::default()
    };
    let reg = Registry(&state.db);
    if let Err(e) = reg
        .edit_school(
            actor(&user, &ctx),
            &code,
            body.version,
            &input,
            &body.reason,
        )
        .await
    {
        return Err(audited(&state, &ctx, &user, "school.edit", &code, e).await);
    }
    reg.school(&user.0.scope(Permission::RegistryView), &code)
        .await?
        .map(|s| Json(s.into()))
        .ok_or_else(AppError::not_found)
}

/// Closes a school, or merges it into another open school of its county.
#[utoipa::path(post, path = "/schools/{code}/close", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = SchoolClosure,
    responses((status = 200, body = SchoolDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 409, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_close(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(body): Json<SchoolClosure>,
) -> Result<Json<SchoolDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let reg = Registry(&state.db);
    if let Err(e) = reg
        .close_school(
            actor(&user, &ctx),
            &code,
            body.version,
            &body.on,
            body.into.as_deref().filter(|i| !i.is_empty()),
            &body.reason,
        )
        .await
    {
        return Err(audited(&state, &ctx, &user, "school.close", &code, e).await);
    }
    reg.school(&user.0.scope(Permission::RegistryView), &code)
        .await?
        .map(|s| Json(s.into()))
        .ok_or_else(AppError::not_found)
}

/// Records (or corrects) a school's conditions for a school year: the school's administrator or
/// the county.
#[utoipa::path(post, path = "/schools/{code}/conditions", tag = "registry", security(("token" = [])),
    params(("code" = String, Path)), request_body = ConditionDto,
    responses((status = 200, body = ConditionDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_conditions(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Json(body): Json<ConditionDto>,
) -> Result<Json<ConditionDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let input = santong_storage::registry::ConditionInput {
        school_year: body.school_year.to_string(),
        building_area_m2: body.building_area_m2.to_string(),
        classrooms: body.classrooms.to_string(),
        multimedia_classrooms: body.multimedia_classrooms.to_string(),
        computers: body.computers.to_string(),
        student_terminals: body.student_terminals.to_string(),
        broadband: body.broadband,
        bandwidth_mbps: body
            .bandwidth_mbps
            .map(|b| b.to_string())
            .unwrap_or_default(),
        broadband_since: body.broadband_since.unwrap_or_default(),
    };
    match Registry(&state.db)
        .record_conditions(actor(&user, &ctx), &code, &input)
        .await
    {
        Ok(row) => Ok(Json(row.into())),
        Err(e) => Err(audited(&state, &ctx, &user, "school.conditions", &code, e).await),
    }
}
