//! The JSON API under `/api/v1`. Its OpenAPI 3.1 document is generated from these handlers
//! (utoipa) and served at `/api/v1/openapi.json`; a snapshot test keeps it honest.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use santong_domain::paging::{FieldError, FieldErrorKind};
use santong_domain::region::RegionCode;
use santong_storage::regions::{Region, RegionFilter, Regions};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::AppState;
use crate::error::AppError;
use crate::pages::{RegionListParams, parse_code_in_path, region_not_found};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/regions", get(list_regions))
        .route("/regions/{code}", get(get_region))
        .route("/me", get(me))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route(
            "/schools",
            get(crate::schools::api_list).post(crate::schools::api_create),
        )
        .route(
            "/schools/{code}",
            get(crate::schools::api_get).put(crate::schools::api_edit),
        )
        .route(
            "/schools/{code}/close",
            axum::routing::post(crate::schools::api_close),
        )
        .route(
            "/schools/{code}/students",
            get(crate::students::api_roster).post(crate::students::api_enrol),
        )
        .route("/students/{id}", get(crate::students::api_student))
        .route(
            "/students/{id}/events",
            get(crate::lifecycle::api_events).post(crate::lifecycle::api_record),
        )
        .route(
            "/students/{id}/events/{event}/undo",
            axum::routing::post(crate::lifecycle::api_undo),
        )
        .route(
            "/year-end",
            axum::routing::post(crate::lifecycle::api_apply),
        )
        .route(
            "/year-end/plan",
            axum::routing::post(crate::lifecycle::api_plan),
        )
        .route(
            "/transfers",
            get(crate::transfers::api_list).post(crate::transfers::api_start),
        )
        .route("/transfers/{id}", get(crate::transfers::api_detail))
        .route(
            "/transfers/{id}/decide",
            axum::routing::post(crate::transfers::api_decide),
        )
        .route(
            "/moves",
            get(crate::transfers::api_move_list).post(crate::transfers::api_move_start),
        )
        .route("/moves/{id}", get(crate::transfers::api_move_detail))
        .route(
            "/moves/{id}/decide",
            axum::routing::post(crate::transfers::api_move_decide),
        )
        .route("/duplicates", get(crate::duplicates::api_list))
        .route("/duplicates/{id}", get(crate::duplicates::api_detail))
        .route(
            "/duplicates/{id}/merge",
            axum::routing::post(crate::duplicates::api_merge),
        )
        .route(
            "/duplicates/{id}/undo",
            axum::routing::post(crate::duplicates::api_undo),
        )
        .route(
            "/schools/{code}/classes",
            get(crate::classes::api_list).post(crate::classes::api_create),
        )
        .route("/classes/{id}", get(crate::classes::api_detail))
        .route(
            "/classes/{id}/members",
            axum::routing::post(crate::classes::api_assign),
        )
        .route(
            "/schools/{code}/teachers",
            get(crate::teachers::api_list).post(crate::teachers::api_appoint),
        )
        .route("/teachers/{id}", get(crate::teachers::api_teacher))
        .route(
            "/students/{id}/corrections",
            axum::routing::post(crate::students::api_correct),
        )
        .route("/year-end/batches/{id}", get(crate::lifecycle::api_batch))
        .route(
            "/year-end/batches/{id}/undo",
            axum::routing::post(crate::lifecycle::api_batch_undo),
        )
        .route(
            "/schools/{code}/conditions",
            axum::routing::post(crate::schools::api_conditions),
        )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Santong API",
        description = "三通 education informatization platform. Errors are RFC 9457 \
            `application/problem+json` with a stable `code` and a `detail` in the language of \
            `Accept-Language` (zh-CN by default, or en).",
        license(name = "AGPL-3.0-or-later")
    ),
    paths(
        list_regions,
        get_region,
        me,
        list_users,
        get_user,
        crate::schools::api_list,
        crate::schools::api_get,
        crate::schools::api_create,
        crate::schools::api_edit,
        crate::schools::api_close,
        crate::schools::api_conditions,
        crate::students::api_roster,
        crate::students::api_student,
        crate::students::api_enrol,
        crate::lifecycle::api_events,
        crate::lifecycle::api_record,
        crate::lifecycle::api_undo,
        crate::lifecycle::api_plan,
        crate::lifecycle::api_apply,
        crate::lifecycle::api_batch,
        crate::lifecycle::api_batch_undo,
        crate::transfers::api_list,
        crate::transfers::api_start,
        crate::transfers::api_detail,
        crate::transfers::api_decide,
        crate::transfers::api_move_list,
        crate::transfers::api_move_start,
        crate::transfers::api_move_detail,
        crate::transfers::api_move_decide,
        crate::duplicates::api_list,
        crate::duplicates::api_detail,
        crate::duplicates::api_merge,
        crate::duplicates::api_undo,
        crate::classes::api_list,
        crate::classes::api_create,
        crate::classes::api_detail,
        crate::classes::api_assign,
        crate::teachers::api_list,
        crate::teachers::api_appoint,
        crate::teachers::api_teacher,
        crate::students::api_correct
    ),
    components(schemas(
        RegionDto,
        RegionList,
        RegionDetail,
        SuccessorDto,
        HistoryDto,
        Problem,
        ProblemField,
        UserDto,
        UserList,
        GrantDto,
        MeDto,
        crate::schools::SchoolDto,
        crate::schools::SchoolList,
        crate::schools::SchoolDetail,
        crate::schools::SchoolEventDto,
        crate::schools::NewSchool,
        crate::schools::SchoolChange,
        crate::schools::SchoolClosure,
        crate::schools::ConditionDto,
        crate::students::StudentDto,
        crate::students::StudentList,
        crate::students::NewStudentDto,
        crate::lifecycle::EventDto,
        crate::lifecycle::NewEventDto,
        crate::lifecycle::UndoDto,
        crate::lifecycle::YearEndDto,
        crate::lifecycle::PlanDto,
        crate::lifecycle::ExceptionDto,
        crate::lifecycle::BatchDto,
        crate::transfers::TransferDto,
        crate::transfers::StepDto,
        crate::transfers::TransferDetailDto,
        crate::transfers::TransferList,
        crate::transfers::NewTransferDto,
        crate::transfers::DecisionDto,
        crate::transfers::NewMoveDto,
        crate::duplicates::CaseRecordDto,
        crate::duplicates::CaseDto,
        crate::duplicates::CaseList,
        crate::duplicates::CaseActionDto,
        crate::classes::ClassDto,
        crate::classes::MemberDto,
        crate::classes::ClassDetailDto,
        crate::classes::NewClassDto,
        crate::classes::MembersDto,
        crate::teachers::TeacherDto,
        crate::teachers::TeacherList,
        crate::teachers::NewTeacherDto,
        crate::students::CorrectionDto
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The OpenAPI document as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    doc
}

async fn openapi_json() -> Response {
    let mut res = openapi()
        .to_pretty_json()
        .unwrap_or_default()
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A region in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionDto {
    /// GB/T 2260 six-digit code.
    #[schema(example = "440305")]
    pub code: String,
    #[schema(example = "南山区")]
    pub name: String,
    /// `province`, `prefecture` or `county`.
    #[schema(example = "county")]
    pub level: String,
    pub parent_code: Option<String>,
    pub parent_name: Option<String>,
    /// Number of regions directly under this one.
    pub child_count: i64,
}

impl From<Region> for RegionDto {
    fn from(r: Region) -> Self {
        Self {
            code: r.code,
            name: r.name,
            level: r.level,
            parent_code: r.parent_code,
            parent_name: r.parent_name,
            child_count: r.child_count,
        }
    }
}

/// One page of regions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionList {
    pub items: Vec<RegionDto>,
    pub page: u32,
    pub size: u32,
    pub total: u64,
    pub pages: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessorDto {
    pub code: String,
    pub name: String,
    /// Year of the change as the history file records it.
    pub year: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryDto {
    pub code: String,
    pub name: String,
    pub level: String,
    /// `current`, `retired` or `changed`.
    pub status: String,
    pub start_year: i32,
    /// First year the code was no longer used (exclusive).
    pub end_year: Option<i32>,
}

/// A code, current or retired, with its place in the tree and its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionDetail {
    #[schema(example = "371200")]
    pub code: String,
    /// False for a code no longer in the current list.
    pub current: bool,
    /// The region, when the code is current.
    pub region: Option<RegionDto>,
    /// From the province down to the parent.
    pub ancestors: Vec<RegionDto>,
    /// The current regions that took over a retired code.
    pub successors: Vec<SuccessorDto>,
    pub history: Vec<HistoryDto>,
}

/// An RFC 9457 problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, e.g. `region_not_found`, `invalid_parameters`.
    pub code: String,
    /// Human-readable, in the caller's language.
    pub detail: String,
    pub request_id: String,
    pub errors: Option<Vec<ProblemField>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    /// `not-a-number`, `out-of-range`, `unknown-sort-field`, `invalid-value`, `too-long`.
    pub code: String,
    pub detail: String,
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the query string; parsing is by hand for field errors"
)]
pub struct RegionListQuery {
    /// Parent code; omitted lists the provinces.
    parent: Option<String>,
    /// Name fragment or code prefix; searches the whole tree.
    q: Option<String>,
    /// 1-based page number.
    page: Option<u32>,
    /// Rows per page, 1–100 (default 20).
    size: Option<u32>,
    /// `code`, `-code`, `name` or `-name`.
    sort: Option<String>,
}

/// Lists regions: the children of `parent`, or the provinces, or the matches of `q`.
#[utoipa::path(
    get,
    path = "/regions",
    tag = "regions",
    params(RegionListQuery),
    responses(
        (status = 200, description = "A page of regions", body = RegionList),
        (status = 400, description = "Invalid parameters, listed per field", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn list_regions(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RegionList>, AppError> {
    let (p, mut errors) = RegionListParams::parse(&params);
    let parent = match params
        .get("parent")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(raw) => match RegionCode::parse(raw) {
            Ok(c) => Some(c),
            Err(_) => {
                errors.push(FieldError::new("parent", FieldErrorKind::InvalidValue));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let filter = RegionFilter {
        parent,
        query: p.q.clone(),
    };
    let list = Regions(&state.db).list(&filter, p.page, p.sort).await?;
    Ok(Json(RegionList {
        pages: p.page.page_count(list.total),
        items: list.items.into_iter().map(RegionDto::from).collect(),
        page: p.page.page,
        size: p.page.size,
        total: list.total,
    }))
}

/// One code: the region with its ancestors, or for a retired code its successors and history.
#[utoipa::path(
    get,
    path = "/regions/{code}",
    tag = "regions",
    params(("code" = String, Path, description = "GB/T 2260 six-digit code")),
    responses(
        (status = 200, description = "The code", body = RegionDetail),
        (status = 404, description = "No such code, current or historical", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_region(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<RegionDetail>, AppError> {
    let code = parse_code_in_path(&raw)?;
    let regions = Regions(&state.db);
    let region = regions.get(code).await?;
    let history = regions.history(code).await?;
    if region.is_none() && history.is_empty() {
        return Err(region_not_found(code));
    }
    let (ancestors, successors) = match &region {
        Some(r) => (regions.ancestors(r).await?, vec![]),
        None => (vec![], regions.successors(code).await?),
    };
    Ok(Json(RegionDetail {
        code: code.to_string(),
        current: region.is_some(),
        region: region.map(RegionDto::from),
        ancestors: ancestors.into_iter().map(RegionDto::from).collect(),
        successors: successors
            .into_iter()
            .map(|s| SuccessorDto {
                code: s.code,
                name: s.name,
                year: s.year,
            })
            .collect(),
        history: history
            .into_iter()
            .map(|h| HistoryDto {
                code: h.code,
                name: h.name,
                level: h.level,
                status: h.status,
                start_year: h.start_year,
                end_year: h.end_year,
            })
            .collect(),
    }))
}

/// Adds the bearer-token security scheme (personal access tokens, `st_…`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A role granted at a node.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantDto {
    pub role: String,
    /// Region code, school code, or `000000` for the nation.
    pub node: String,
}

/// An account (never its password or secrets).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    pub id: uuid::Uuid,
    pub username: String,
    pub display_name: String,
    /// Where the account belongs: region or school code, `000000` for the nation.
    pub home: String,
    pub disabled: bool,
}

impl From<santong_storage::identity::UserRow> for UserDto {
    fn from(u: santong_storage::identity::UserRow) -> Self {
        Self {
            id: u.id,
            home: u.home().code(),
            disabled: u.disabled_at.is_some(),
            username: u.username,
            display_name: u.display_name,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeDto {
    pub user: UserDto,
    pub roles: Vec<GrantDto>,
    /// Permissions this credential may use (a token may carry fewer than the roles give).
    pub permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserDto>,
    pub page: u32,
    pub size: u32,
    pub total: u64,
    pub pages: u64,
}

/// The caller: account, roles and usable permissions.
#[utoipa::path(get, path = "/me", tag = "identity", security(("token" = [])),
    responses((status = 200, body = MeDto), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(user: crate::auth::User) -> Json<MeDto> {
    let p = &user.0;
    Json(MeDto {
        roles: p
            .roles()
            .into_iter()
            .map(|(r, n)| GrantDto {
                role: r.as_str().into(),
                node: n.code(),
            })
            .collect(),
        permissions: santong_domain::identity::Permission::ALL
            .into_iter()
            .filter(|x| p.has(*x))
            .map(|x| x.as_str().into())
            .collect(),
        user: UserDto::from(p.user.clone()),
    })
}

/// Accounts the caller may see (their school or region), by user name.
#[utoipa::path(get, path = "/users", tag = "identity", security(("token" = [])),
    params(("q" = Option<String>, Query, description = "part of the user name or name"),
           ("page" = Option<u32>, Query), ("size" = Option<u32>, Query, description = "1–100")),
    responses((status = 200, body = UserList), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(
    State(state): State<AppState>,
    user: crate::auth::User,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<UserList>, AppError> {
    use santong_domain::identity::Permission;
    user.require(Permission::UsersView)?;
    let mut errors = vec![];
    let page = santong_domain::paging::parse_page(
        params.get("page").map(String::as_str),
        params.get("size").map(String::as_str),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let list = santong_storage::identity::Identity(&state.db)
        .list_users(
            &user.0.scope(Permission::UsersView),
            params.get("q").map(String::as_str),
            page.limit(),
            page.offset(),
        )
        .await?;
    Ok(Json(UserList {
        pages: page.page_count(list.total),
        items: list.items.into_iter().map(UserDto::from).collect(),
        page: page.page,
        size: page.size,
        total: list.total,
    }))
}

/// One account, if it lies in the caller's scope (404 otherwise, as if it did not exist).
#[utoipa::path(get, path = "/users/{id}", tag = "identity", security(("token" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserDto), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_user(
    State(state): State<AppState>,
    user: crate::auth::User,
    Path(id): Path<String>,
) -> Result<Json<UserDto>, AppError> {
    use santong_domain::identity::Permission;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| AppError::not_found())?;
    santong_storage::identity::Identity(&state.db)
        .get_user(&user.0.scope(Permission::UsersView), id)
        .await?
        .map(|u| Json(UserDto::from(u)))
        .ok_or_else(AppError::not_found)
}
