//! Transfers on the pages and in the API: the inbox of steps waiting for the user, every transfer
//! involving their schools and regions, starting one at the receiving school, and deciding a step.
//! Staff moves (调动) use the same pages and chain under `/moves`.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use santong_domain::identity::Permission;
use santong_domain::paging::FieldErrorKind;
use santong_storage::registry::RegistryError;
use santong_storage::transfers::{
    NewMove, NewTransfer, StepRow, Subject, TransferBox, TransferDetail, TransferRow, Transfers,
};
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
        .route("/transfers", get(list).post(start))
        .route("/transfers/new", get(new_form))
        .route("/transfers/export.csv", get(export))
        .route("/transfers/export.xlsx", get(export))
        .route("/transfers/{id}", get(detail))
        .route("/transfers/{id}/decide", post(decide))
        .route("/moves", get(list).post(start))
        .route("/moves/new", get(new_form))
        .route("/moves/export.csv", get(export))
        .route("/moves/export.xlsx", get(export))
        .route("/moves/{id}", get(detail))
        .route("/moves/{id}/decide", post(decide))
}

/// What the pages say and link for a kind of chain.
pub(crate) struct Kind {
    subject: Subject,
    /// `/transfers` or `/moves`.
    base: &'static str,
    title: String,
    item: String,
    inbox: String,
    all: String,
    inbox_empty: String,
    none: String,
    new: String,
    new_help: String,
    number_field: &'static str,
    number_label: String,
    name_label: String,
    /// The record's page once the chain is complete (`/students/` or `/teachers/`).
    record: &'static str,
    record_label: String,
    audit_start: &'static str,
    audit_decide: &'static str,
    /// Students change school in their grade; staff have none.
    grade: bool,
}

impl Kind {
    fn of(subject: Subject, tr: &Tr) -> Kind {
        let (base, p, number_field, number_label, name_label, record, record_label) = match subject
        {
            Subject::Student => (
                "/transfers",
                "transfers",
                "student_number",
                "student-number",
                "student-name",
                "/students/",
                "transfer-dossier",
            ),
            Subject::Staff => (
                "/moves",
                "moves",
                "teacher_number",
                "teacher-number",
                "moves-name",
                "/teachers/",
                "moves-record",
            ),
        };
        let t = |k: &str| tr.t(&format!("{p}-{k}"));
        Kind {
            subject,
            base,
            title: t("title"),
            item: t("item"),
            inbox: t("inbox"),
            all: t("all"),
            inbox_empty: t("inbox-empty"),
            none: t("none"),
            new: t("new"),
            new_help: t("new-help"),
            number_field,
            number_label: tr.t(number_label),
            name_label: tr.t(name_label),
            record,
            record_label: tr.t(record_label),
            audit_start: match subject {
                Subject::Student => "transfer.start",
                Subject::Staff => "staff_move.start",
            },
            audit_decide: match subject {
                Subject::Student => "transfer.decide",
                Subject::Staff => "staff_move.decide",
            },
            grade: subject == Subject::Student,
        }
    }

    /// The kind a page path belongs to.
    fn at(path: &str, tr: &Tr) -> Kind {
        let subject = if path.starts_with("/moves") {
            Subject::Staff
        } else {
            Subject::Student
        };
        Kind::of(subject, tr)
    }
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::not_found())
}

fn box_of(q: &Params) -> TransferBox {
    if p(q, "box") == "all" {
        TransferBox::All
    } else {
        TransferBox::Inbox
    }
}

struct Row {
    id: String,
    student: String,
    number: String,
    from: String,
    to: String,
    grade: i32,
    status: String,
    step: String,
    due: String,
    overdue: bool,
}

fn row_of(t: &TransferRow, tr: &Tr) -> Row {
    Row {
        id: t.id.to_string(),
        student: t.student_name.clone(),
        number: t.number_masked(),
        from: t.from_name.clone(),
        to: t.to_name.clone(),
        grade: t.grade,
        status: tr.t(&format!("transfer-status-{}", t.status)),
        step: t
            .step_role
            .as_deref()
            .map(|r| tr.t(&format!("transfer-step-{r}")))
            .unwrap_or_default(),
        due: t.step_due.map(|d| d.to_string()).unwrap_or_default(),
        overdue: t.overdue(),
    }
}

#[derive(Template)]
#[template(path = "transfers.html")]
struct ListPage {
    c: Chrome,
    k: Kind,
    inbox: bool,
    rows: Vec<Row>,
    pager: Pager,
    can_start: bool,
}

async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let which = box_of(&q);
    let page = page_of(&q)?;
    let tr = ctx.tr();
    let k = Kind::at(uri.path(), &tr);
    let a = actor(&user, &ctx);
    let list = Transfers(&state.db)
        .list_of(
            k.subject,
            &a,
            &user.0.scope(Permission::RegistryView),
            which,
            page.limit(),
            page.offset(),
        )
        .await?;
    let pages = page.page_count(list.total);
    let b = if which == TransferBox::All {
        "all"
    } else {
        "inbox"
    };
    let base = k.base;
    let href = |n: u32| format!("{base}?box={b}&page={n}");
    html(&ListPage {
        c: ctx.chrome(k.title.clone()),
        k,
        inbox: which == TransferBox::Inbox,
        rows: list.items.iter().map(|t| row_of(t, &tr)).collect(),
        pager: Pager::new(&tr, page.page, pages, list.total, href),
        can_start: user.0.user.home_school.is_some() && user.0.has(Permission::RegistryManage),
    })
}

/// The list (inbox or all) as CSV, streamed; numbers masked as on the page; audited with its
/// row count and the caller's scope.
async fn export(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let tr = ctx.tr();
    let k = Kind::at(uri.path(), &tr);
    let which = box_of(&q);
    let scope = user.0.scope(Permission::RegistryView);
    let a = actor(&user, &ctx);
    let db = state.db.clone();
    let total = Transfers(&db)
        .list_of(k.subject, &a, &scope, which, 1, 0)
        .await?
        .total;
    let event = match k.subject {
        Subject::Student => "transfer.export",
        Subject::Staff => "staff_move.export",
    };
    santong_storage::registry::Registry(&db)
        .record_export(
            actor(&user, &ctx),
            event,
            &santong_domain::identity::Node::Nation,
            serde_json::json!({
                "rows": total,
                "box": if which == TransferBox::All { "all" } else { "inbox" },
                "scope": format!("{scope:?}"),
            })
            .to_string(),
        )
        .await?;
    let mut head = vec![
        k.name_label.clone(),
        k.number_label.clone(),
        tr.t("transfer-from"),
        tr.t("transfer-to"),
    ];
    if k.grade {
        head.push(tr.t("student-grade"));
    }
    head.extend(
        [
            "transfer-status",
            "transfer-waiting",
            "transfer-due",
            "transfer-reason",
        ]
        .iter()
        .map(|x| tr.t(x)),
    );
    let (subject, grade) = (k.subject, k.grade);
    let principal = user.0.clone();
    let format = crate::export::ListFormat::of_path(uri.path());
    let name = k.base.trim_start_matches('/').to_owned();
    Ok(crate::export::stream_list(
        format,
        &name,
        head,
        move |offset| {
            let (db, scope, principal) = (db.clone(), scope.clone(), principal.clone());
            async move {
                let a = santong_storage::identity::Actor::User {
                    principal: &principal,
                    ip: "",
                };
                let page = Transfers(&db)
                    .list_of(subject, &a, &scope, which, crate::export::PAGE, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(page
                    .items
                    .iter()
                    .map(|t| {
                        let r = row_of(t, &tr);
                        let mut row = vec![r.student, r.number, r.from, r.to];
                        if grade {
                            row.push(r.grade.to_string());
                        }
                        let due = if r.overdue {
                            format!("{} {}", r.due, tr.t("transfer-overdue"))
                        } else {
                            r.due
                        };
                        row.extend([r.status, r.step, due, t.reason.clone()]);
                        row
                    })
                    .collect())
            }
        },
    ))
}

#[derive(Template)]
#[template(path = "transfer_new.html")]
struct NewPage {
    c: Chrome,
    k: Kind,
    form: FormState,
}

fn render_new(
    ctx: &Ctx,
    k: Kind,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let mut res = html(&NewPage {
        c: ctx.chrome(k.new.clone()),
        k,
        form,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn new_form(ctx: Ctx, user: User, uri: axum::http::Uri) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let mut form = FormState::default();
    form.v.insert(
        "to_school".into(),
        user.0.user.home_school.clone().unwrap_or_default(),
    );
    render_new(&ctx, Kind::at(uri.path(), &ctx.tr()), form, StatusCode::OK)
}

fn input_of(f: &Params) -> NewTransfer {
    NewTransfer {
        student_number: p(f, "student_number").into(),
        name: p(f, "name").into(),
        to_school: p(f, "to_school").into(),
        reason: p(f, "reason").into(),
    }
}

fn move_of(f: &Params) -> NewMove {
    NewMove {
        teacher_number: p(f, "teacher_number").into(),
        name: p(f, "name").into(),
        to_school: p(f, "to_school").into(),
        reason: p(f, "reason").into(),
    }
}

async fn start(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryManage)?;
    let k = Kind::at(uri.path(), &ctx.tr());
    let t = Transfers(&state.db);
    let started = match k.subject {
        Subject::Student => t.start(actor(&user, &ctx), &input_of(&f)).await,
        Subject::Staff => t.start_move(actor(&user, &ctx), &move_of(&f)).await,
    };
    match started {
        Ok(d) => Ok(Redirect::to(&format!("{}/{}", k.base, d.transfer.id)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            render_new(&ctx, k, form, StatusCode::BAD_REQUEST)
        }
        Err(e) => Err(audited(&state, &ctx, &user, k.audit_start, p(&f, "to_school"), e).await),
    }
}

struct StepView {
    seq: i32,
    role: String,
    node: String,
    opened: String,
    due: String,
    overdue: bool,
    decision: String,
    by: String,
    note: String,
}

fn step_of(s: &StepRow, tr: &Tr) -> StepView {
    StepView {
        seq: s.seq,
        role: tr.t(&format!("transfer-step-{}", s.role)),
        node: s.school_code.clone().unwrap_or_else(|| s.region.clone()),
        opened: s.opened_on.map(|d| d.to_string()).unwrap_or_default(),
        due: s.due_on.map(|d| d.to_string()).unwrap_or_default(),
        overdue: s.overdue(),
        decision: s
            .decision
            .as_deref()
            .map(|d| tr.t(&format!("transfer-decision-{d}")))
            .unwrap_or_default(),
        by: s.decided_by.clone().unwrap_or_default(),
        note: s.note.clone(),
    }
}

#[derive(Template)]
#[template(path = "transfer.html")]
struct DetailPage {
    c: Chrome,
    k: Kind,
    t: Row,
    reason: String,
    from_code: String,
    to_code: String,
    student_id: String,
    completed: bool,
    steps: Vec<StepView>,
    /// The step this user may decide now.
    sign: Option<i32>,
    form: FormState,
}

async fn render_detail(
    state: &AppState,
    ctx: &Ctx,
    user: &User,
    k: Kind,
    id: Uuid,
    form: FormState,
    status: StatusCode,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let d: TransferDetail = Transfers(&state.db)
        .detail_of(k.subject, &user.0.scope(Permission::RegistryView), id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let a = actor(user, ctx);
    let sign = d
        .transfer
        .current_step
        .filter(|_| d.transfer.status == "pending")
        .and_then(|seq| d.steps.iter().find(|s| s.seq == seq))
        .filter(|s| Transfers::may_sign(&a, s))
        .map(|s| s.seq);
    let scope = user.0.scope(Permission::RegistryView);
    // The record is linked for those who can open it (the new school, not the old one).
    let completed = d.transfer.status == "completed"
        && match k.subject {
            Subject::Student => santong_storage::students::Students(&state.db)
                .student(&scope, d.transfer.student_id)
                .await?
                .is_some(),
            Subject::Staff => santong_storage::teachers::Teachers(&state.db)
                .teacher(&scope, d.transfer.student_id)
                .await?
                .is_some(),
        };
    let mut res = html(&DetailPage {
        c: ctx.chrome(k.item.clone()),
        k,
        t: row_of(&d.transfer, &tr),
        reason: d.transfer.reason.clone(),
        from_code: d.transfer.from_school.clone(),
        to_code: d.transfer.to_school.clone(),
        student_id: d.transfer.student_id.to_string(),
        completed,
        steps: d.steps.iter().map(|s| step_of(s, &tr)).collect(),
        sign,
        form,
    })?;
    *res.status_mut() = status;
    Ok(res)
}

async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let k = Kind::at(uri.path(), &ctx.tr());
    render_detail(
        &state,
        &ctx,
        &user,
        k,
        parse_id(&id)?,
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

async fn decide(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Form(f): Form<Params>,
) -> Result<Response, AppError> {
    user.check_form(&f)?;
    user.require(Permission::RegistryView)?;
    let k = Kind::at(uri.path(), &ctx.tr());
    let id = parse_id(&id)?;
    let seq = p(&f, "seq").parse::<i32>().unwrap_or(-1);
    let approve = p(&f, "decision") == "approve";
    match Transfers(&state.db)
        .decide_of(
            k.subject,
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            seq,
            approve,
            p(&f, "note"),
        )
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("{}/{id}", k.base)).into_response()),
        Err(RegistryError::Fields(errors)) => {
            let form = FormState::with_errors(&f, &ctx.tr(), &errors);
            let status = if errors.iter().any(|e| e.field == "step") {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            render_detail(&state, &ctx, &user, k, id, form, status).await
        }
        Err(e) => Err(audited(&state, &ctx, &user, k.audit_decide, &id.to_string(), e).await),
    }
}

// ----- API --------------------------------------------------------------------------------------

/// A transfer (the student number masked when it holds an ID number).
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferDto {
    pub id: Uuid,
    pub student_id: Uuid,
    pub student_name: String,
    pub student_number: String,
    pub from_school: String,
    pub from_name: String,
    pub to_school: String,
    pub to_name: String,
    pub grade: i32,
    pub reason: String,
    /// `pending`, `completed` or `rejected`.
    pub status: String,
    /// The step waiting for a decision.
    pub current_step: Option<i32>,
    pub step_role: Option<String>,
    /// When the waiting step is due (ten working days after it opened).
    pub step_due: Option<String>,
    pub overdue: bool,
    pub created_at: String,
    pub created_by: String,
}

impl From<&TransferRow> for TransferDto {
    fn from(t: &TransferRow) -> Self {
        TransferDto {
            id: t.id,
            student_id: t.student_id,
            student_name: t.student_name.clone(),
            student_number: t.number_masked(),
            from_school: t.from_school.clone(),
            from_name: t.from_name.clone(),
            to_school: t.to_school.clone(),
            to_name: t.to_name.clone(),
            grade: t.grade,
            reason: t.reason.clone(),
            status: t.status.clone(),
            current_step: t.current_step,
            step_role: t.step_role.clone(),
            step_due: t.step_due.map(|d| d.to_string()),
            overdue: t.overdue(),
            created_at: t.created_at.to_rfc3339(),
            created_by: t.created_by.clone(),
        }
    }
}

/// One step of the approval chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepDto {
    pub seq: i32,
    /// `receiving_school`, `receiving_county`, `receiving_province`, `sending_province`,
    /// `sending_school` or `sending_county`.
    pub role: String,
    /// The school or region that decides it.
    pub node: String,
    pub opened_on: Option<String>,
    pub due_on: Option<String>,
    pub overdue: bool,
    /// `approved` or `rejected`; absent while waiting or not reached.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub note: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferDetailDto {
    pub transfer: TransferDto,
    pub steps: Vec<StepDto>,
}

impl From<TransferDetail> for TransferDetailDto {
    fn from(d: TransferDetail) -> Self {
        TransferDetailDto {
            transfer: (&d.transfer).into(),
            steps: d
                .steps
                .iter()
                .map(|s| StepDto {
                    seq: s.seq,
                    role: s.role.clone(),
                    node: s.school_code.clone().unwrap_or_else(|| s.region.clone()),
                    opened_on: s.opened_on.map(|d| d.to_string()),
                    due_on: s.due_on.map(|d| d.to_string()),
                    overdue: s.overdue(),
                    decision: s.decision.clone(),
                    decided_by: s.decided_by.clone(),
                    note: s.note.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    pub items: Vec<TransferDto>,
    pub page: u32,
    pub size: u32,
    pub pages: u64,
    pub total: u64,
}

/// A transfer into the caller's school.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewTransferDto {
    /// 全国学籍号 (or the ID number behind a G-number).
    #[serde(default)]
    pub student_number: String,
    /// Must match the record.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub to_school: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionDto {
    /// The step being decided, as the caller saw it.
    #[serde(default)]
    pub seq: Option<i32>,
    #[serde(default)]
    pub approve: Option<bool>,
    /// Required when rejecting.
    #[serde(default)]
    pub note: String,
}

async fn list_api(
    state: AppState,
    ctx: Ctx,
    user: User,
    q: Params,
    subject: Subject,
) -> Result<Json<TransferList>, AppError> {
    user.require(Permission::RegistryView)?;
    let page = page_of(&q)?;
    let list = Transfers(&state.db)
        .list_of(
            subject,
            &actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            box_of(&q),
            page.limit(),
            page.offset(),
        )
        .await?;
    Ok(Json(TransferList {
        pages: page.page_count(list.total),
        items: list.items.iter().map(TransferDto::from).collect(),
        page: page.page,
        size: page.size,
        total: list.total,
    }))
}

async fn detail_api(
    state: AppState,
    user: User,
    id: String,
    subject: Subject,
) -> Result<Json<TransferDetailDto>, AppError> {
    user.require(Permission::RegistryView)?;
    Transfers(&state.db)
        .detail_of(
            subject,
            &user.0.scope(Permission::RegistryView),
            parse_id(&id)?,
        )
        .await?
        .map(|d| Json(d.into()))
        .ok_or_else(AppError::not_found)
}

async fn decide_api(
    state: AppState,
    ctx: Ctx,
    user: User,
    id: String,
    b: DecisionDto,
    subject: Subject,
) -> Result<Json<TransferDetailDto>, AppError> {
    user.require(Permission::RegistryView)?;
    let id = parse_id(&id)?;
    let missing =
        |f: &str| santong_domain::paging::FieldError::new(f, FieldErrorKind::InvalidValue);
    let (seq, approve) = match (b.seq, b.approve) {
        (Some(s), Some(a)) => (s, a),
        (s, a) => {
            let mut errors = vec![];
            if s.is_none() {
                errors.push(missing("seq"));
            }
            if a.is_none() {
                errors.push(missing("approve"));
            }
            return Err(AppError::bad_params(errors));
        }
    };
    match Transfers(&state.db)
        .decide_of(
            subject,
            actor(&user, &ctx),
            &user.0.scope(Permission::RegistryView),
            id,
            seq,
            approve,
            &b.note,
        )
        .await
    {
        Ok(d) => Ok(Json(d.into())),
        Err(e) => {
            let k = Kind::of(subject, &ctx.tr());
            Err(audited(&state, &ctx, &user, k.audit_decide, &id.to_string(), e).await)
        }
    }
}

/// Transfers waiting for the caller (`box=inbox`, default) or all involving their schools and
/// regions (`box=all`), newest first.
#[utoipa::path(get, path = "/transfers", tag = "registry", security(("token" = [])),
    params(("box" = Option<String>, Query), ("page" = Option<u32>, Query),
           ("size" = Option<u32>, Query)),
    responses((status = 200, body = TransferList)))]
pub async fn api_list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Json<TransferList>, AppError> {
    list_api(state, ctx, user, q, Subject::Student).await
}

/// Starts a transfer into `to_school` (needs `registry_manage` there).
#[utoipa::path(post, path = "/transfers", tag = "registry", security(("token" = [])),
    request_body = NewTransferDto,
    responses((status = 201, body = TransferDetailDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_start(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Json(b): Json<NewTransferDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let input = NewTransfer {
        student_number: b.student_number,
        name: b.name,
        to_school: b.to_school,
        reason: b.reason,
    };
    match Transfers(&state.db).start(actor(&user, &ctx), &input).await {
        Ok(d) => Ok((StatusCode::CREATED, Json(TransferDetailDto::from(d))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "transfer.start", &input.to_school, e).await),
    }
}

/// A transfer with its chain (404 unless it involves the caller's schools or regions).
#[utoipa::path(get, path = "/transfers/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TransferDetailDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_detail(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<TransferDetailDto>, AppError> {
    detail_api(state, user, id, Subject::Student).await
}

/// Decides the waiting step (approve, or reject with a note). A step that moved on meanwhile
/// answers 400 with code `transfer-changed`.
#[utoipa::path(post, path = "/transfers/{id}/decide", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = DecisionDto,
    responses((status = 200, body = TransferDetailDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_decide(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<DecisionDto>,
) -> Result<Json<TransferDetailDto>, AppError> {
    decide_api(state, ctx, user, id, b, Subject::Student).await
}

/// A staff move into the caller's school.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewMoveDto {
    /// 教职工号 (T…).
    #[serde(default)]
    pub teacher_number: String,
    /// Must match the record.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub to_school: String,
    #[serde(default)]
    pub reason: String,
}

/// Staff moves (调动) waiting for the caller (`box=inbox`, default) or all involving their
/// schools and regions (`box=all`), newest first. `student_*` fields name the person.
#[utoipa::path(get, path = "/moves", tag = "registry", security(("token" = [])),
    params(("box" = Option<String>, Query), ("page" = Option<u32>, Query),
           ("size" = Option<u32>, Query)),
    responses((status = 200, body = TransferList)))]
pub async fn api_move_list(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Json<TransferList>, AppError> {
    list_api(state, ctx, user, q, Subject::Staff).await
}

/// Starts a staff move into `to_school` (needs `registry_manage` there); the chain is a
/// transfer's.
#[utoipa::path(post, path = "/moves", tag = "registry", security(("token" = [])),
    request_body = NewMoveDto,
    responses((status = 201, body = TransferDetailDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_move_start(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Json(b): Json<NewMoveDto>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryManage)?;
    let input = NewMove {
        teacher_number: b.teacher_number,
        name: b.name,
        to_school: b.to_school,
        reason: b.reason,
    };
    match Transfers(&state.db)
        .start_move(actor(&user, &ctx), &input)
        .await
    {
        Ok(d) => Ok((StatusCode::CREATED, Json(TransferDetailDto::from(d))).into_response()),
        Err(e) => Err(audited(&state, &ctx, &user, "staff_move.start", &input.to_school, e).await),
    }
}

/// A staff move with its chain (404 unless it involves the caller's schools or regions).
#[utoipa::path(get, path = "/moves/{id}", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = TransferDetailDto),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_move_detail(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<TransferDetailDto>, AppError> {
    detail_api(state, user, id, Subject::Staff).await
}

/// Decides the waiting step of a staff move; the last approval appoints the person at the new
/// school.
#[utoipa::path(post, path = "/moves/{id}/decide", tag = "registry", security(("token" = [])),
    params(("id" = Uuid, Path)), request_body = DecisionDto,
    responses((status = 200, body = TransferDetailDto),
              (status = 400, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::api::Problem, content_type = "application/problem+json"),
              (status = 404, body = crate::api::Problem, content_type = "application/problem+json")))]
pub async fn api_move_decide(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(id): Path<String>,
    Json(b): Json<DecisionDto>,
) -> Result<Json<TransferDetailDto>, AppError> {
    decide_api(state, ctx, user, id, b, Subject::Staff).await
}
