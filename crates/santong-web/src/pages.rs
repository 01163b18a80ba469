//! Server-rendered pages: home, the region browser, the language switch, health and assets.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use santong_domain::paging::{
    FieldError, FieldErrorKind, PageRequest, Sort, parse_page, parse_sort,
};
use santong_domain::region::RegionCode;
use santong_storage::regions::{Region, RegionFilter, RegionSort, Regions};

use crate::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr, n, s};
use crate::shell::{Ctx, template_error};
use crate::views::{self, Card, Crumb, HomePage, Pager, RegionRowView, RegionsPage};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/regions", get(regions_index))
        .route("/regions/{code}", get(region_page))
        .route("/lang/{tag}", get(switch_language))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/static/{file}", get(crate::assets::serve))
}

fn page(html: String) -> Response {
    let mut res = Html(html).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn home(State(state): State<AppState>, ctx: Ctx) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let regions = Regions(&state.db);
    let count = regions.count().await?;
    let mut cards = vec![Card {
        title: tr.t("home-regions-title"),
        body: tr.f("home-regions-body", &[("count", n(count as f64))]),
        link: tr.t("home-regions-link"),
        href: "/regions".into(),
    }];
    let demo = match santong_storage::demo::county(&state.db).await? {
        Some(code) => regions.get(code).await?,
        None => None,
    };
    if let Some(r) = demo {
        cards.push(Card {
            title: tr.t("home-demo-title"),
            body: tr.f(
                "home-demo-body",
                &[("name", s(r.name.as_str())), ("code", s(r.code.as_str()))],
            ),
            link: tr.t("home-demo-link"),
            href: format!("/regions/{}", r.code),
        });
    }
    cards.push(Card {
        title: tr.t("home-api-title"),
        body: tr.t("home-api-body"),
        link: tr.t("home-api-link"),
        href: "/api/v1/openapi.json".into(),
    });
    let view = HomePage {
        c: ctx.chrome(tr.t("home-title")),
        intro: tr.t("home-intro"),
        cards,
    };
    Ok(page(views::render(&view).map_err(template_error)?))
}

/// Parsed `q`, `page`, `size` and `sort` of a region list (pages and API alike).
pub struct RegionListParams {
    pub q: Option<String>,
    pub page: PageRequest,
    pub sort: Option<Sort<RegionSort>>,
}

impl RegionListParams {
    pub fn parse(params: &HashMap<String, String>) -> (Self, Vec<FieldError>) {
        let mut errors = vec![];
        let get = |k: &str| params.get(k).map(String::as_str);
        let page = parse_page(get("page"), get("size"), &mut errors);
        let sort = parse_sort(get("sort"), &RegionSort::ALLOWED, &mut errors);
        let q = get("q")
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        if q.as_ref().is_some_and(|q| q.chars().count() > 40) {
            errors.push(FieldError::new("q", FieldErrorKind::TooLong));
        }
        (Self { q, page, sort }, errors)
    }
}

pub fn level_label(tr: &Tr, level: &str) -> String {
    match level {
        "province" => tr.t("regions-level-province"),
        "prefecture" => tr.t("regions-level-prefecture"),
        "county" => tr.t("regions-level-county"),
        other => other.to_owned(),
    }
}

fn row_view(tr: &Tr, r: Region) -> RegionRowView {
    RegionRowView {
        level: level_label(tr, &r.level),
        parent: r.parent_name.unwrap_or_default(),
        code: r.code,
        name: r.name,
        children: r.child_count,
    }
}

/// Builds `base?…` keeping `q` and `sort`, with the given page.
fn list_href(base: &str, p: &RegionListParams, sort: Option<&str>, page: u32) -> String {
    let mut parts = vec![];
    if let Some(q) = &p.q {
        parts.push(format!("q={}", views::percent_encode(q)));
    }
    if let Some(s) = sort {
        parts.push(format!("sort={s}"));
    }
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    if p.page.size != santong_domain::paging::DEFAULT_PAGE_SIZE {
        parts.push(format!("size={}", p.page.size));
    }
    if parts.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", parts.join("&"))
    }
}

fn sort_name(sort: Option<Sort<RegionSort>>) -> Option<&'static str> {
    sort.map(|s| match (s.field, s.descending) {
        (RegionSort::Code, false) => "code",
        (RegionSort::Code, true) => "-code",
        (RegionSort::Name, false) => "name",
        (RegionSort::Name, true) => "-name",
    })
}

struct ListView {
    rows: Vec<RegionRowView>,
    sort_links: Vec<(String, String, bool)>,
    pager: Pager,
}

async fn list_view(
    state: &AppState,
    tr: &Tr,
    base: &str,
    filter: &RegionFilter,
    p: &RegionListParams,
) -> Result<(ListView, u64), AppError> {
    let list = Regions(&state.db).list(filter, p.page, p.sort).await?;
    let current = sort_name(p.sort);
    let pages = p.page.page_count(list.total);
    let sort_links = [("code", "regions-col-code"), ("name", "regions-col-name")]
        .into_iter()
        .map(|(key, label)| {
            let active = current.unwrap_or("code").trim_start_matches('-') == key;
            (list_href(base, p, Some(key), 1), tr.t(label), active)
        })
        .collect();
    let pager = Pager {
        summary: tr.f(
            "pager-summary",
            &[
                ("page", n(p.page.page)),
                ("pages", n(pages as f64)),
                ("total", n(list.total as f64)),
            ],
        ),
        prev: (p.page.page > 1).then(|| {
            (
                list_href(base, p, current, p.page.page - 1),
                tr.t("pager-prev"),
            )
        }),
        next: (u64::from(p.page.page) < pages).then(|| {
            (
                list_href(base, p, current, p.page.page + 1),
                tr.t("pager-next"),
            )
        }),
    };
    let total = list.total;
    let rows = list.items.into_iter().map(|r| row_view(tr, r)).collect();
    Ok((
        ListView {
            rows,
            sort_links,
            pager,
        },
        total,
    ))
}

async fn regions_index(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let (p, errors) = RegionListParams::parse(&params);
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let filter = RegionFilter {
        parent: None,
        query: p.q.clone(),
    };
    let (list, total) = list_view(&state, &tr, "/regions", &filter, &p).await?;
    let list_title = match &p.q {
        Some(q) => tr.f(
            "regions-search-results",
            &[("q", s(q.as_str())), ("count", n(total as f64))],
        ),
        None => tr.t("regions-children"),
    };
    let view = RegionsPage {
        c: ctx.chrome(tr.t("regions-title")),
        crumbs: vec![Crumb {
            label: tr.t("regions-nation"),
            href: None,
        }],
        heading: tr.t("regions-title"),
        facts: vec![],
        notice: None,
        successors: vec![],
        history: vec![],
        list_title,
        q: p.q.clone().unwrap_or_default(),
        search_action: "/regions".into(),
        rows: list.rows,
        empty: tr.t("regions-none"),
        sort_links: list.sort_links,
        pager: list.pager,
    };
    Ok(page(views::render(&view).map_err(template_error)?))
}

pub(crate) fn parse_code_in_path(raw: &str) -> Result<RegionCode, AppError> {
    RegionCode::parse(raw).map_err(|_| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "region_not_found",
            "error-invalid-region-code",
        )
        .arg("value", raw.chars().take(20).collect::<String>())
    })
}

pub(crate) fn region_not_found(code: RegionCode) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "region_not_found",
        "error-region-not-found",
    )
    .arg("code", code.to_string())
}

fn history_views(
    tr: &Tr,
    rows: Vec<santong_storage::regions::HistoryRow>,
) -> Vec<(String, String, String, String)> {
    rows.into_iter()
        .map(|h| {
            let years = match h.end_year {
                Some(end) => tr.f(
                    "regions-history-years",
                    &[("start", n(h.start_year)), ("end", n(end))],
                ),
                None => tr.f("regions-history-years-open", &[("start", n(h.start_year))]),
            };
            let status = tr.t(&format!("regions-status-{}", h.status));
            (h.code, h.name, years, status)
        })
        .collect()
}

async fn region_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(raw): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let tr = ctx.tr();
    let code = parse_code_in_path(&raw)?;
    let regions = Regions(&state.db);
    let (p, errors) = RegionListParams::parse(&params);
    if !errors.is_empty() {
        return Err(AppError::bad_params(errors));
    }
    let nation = Crumb {
        label: tr.t("regions-nation"),
        href: Some("/regions".into()),
    };

    let Some(region) = regions.get(code).await? else {
        // A retired code: show where it went.
        let history = regions.history(code).await?;
        let Some(last) = history.last().cloned() else {
            return Err(region_not_found(code));
        };
        let successors = regions.successors(code).await?;
        let notice = tr.f(
            "regions-retired-body",
            &[
                ("code", s(code.to_string())),
                ("name", s(last.name.as_str())),
            ],
        );
        let view = RegionsPage {
            c: ctx.chrome(format!("{} {}", last.name, code)),
            crumbs: vec![
                nation,
                Crumb {
                    label: last.name.clone(),
                    href: None,
                },
            ],
            heading: format!("{} {}", last.name, code),
            facts: vec![],
            notice: Some(notice),
            successors: successors
                .into_iter()
                .map(|s_| {
                    let text = tr.f(
                        "regions-successor",
                        &[
                            ("year", n(s_.year)),
                            ("name", s(s_.name.as_str())),
                            ("code", s(s_.code.as_str())),
                        ],
                    );
                    (format!("/regions/{}", s_.code), text)
                })
                .collect(),
            history: history_views(&tr, history),
            list_title: String::new(),
            q: String::new(),
            search_action: "/regions".into(),
            rows: vec![],
            empty: String::new(),
            sort_links: vec![],
            pager: Pager {
                summary: String::new(),
                prev: None,
                next: None,
            },
        };
        return Ok(page(views::render(&view).map_err(template_error)?));
    };

    let ancestors = regions.ancestors(&region).await?;
    let mut crumbs = vec![nation];
    crumbs.extend(ancestors.iter().map(|a| Crumb {
        label: a.name.clone(),
        href: Some(format!("/regions/{}", a.code)),
    }));
    crumbs.push(Crumb {
        label: region.name.clone(),
        href: None,
    });

    let base = format!("/regions/{}", region.code);
    let filter = RegionFilter {
        parent: Some(code),
        query: None,
    };
    let (list, _) = list_view(&state, &tr, &base, &filter, &p).await?;
    let history = history_views(&tr, regions.history(code).await?);
    let view = RegionsPage {
        c: ctx.chrome(region.name.clone()),
        crumbs,
        heading: region.name.clone(),
        facts: vec![
            (tr.t("regions-code"), region.code.clone()),
            (tr.t("regions-level"), level_label(&tr, &region.level)),
        ],
        notice: None,
        successors: vec![],
        history: if history.len() > 1 { history } else { vec![] },
        list_title: tr.t("regions-children"),
        q: String::new(),
        search_action: "/regions".into(),
        rows: list.rows,
        empty: tr.t("regions-no-children"),
        sort_links: list.sort_links,
        pager: list.pager,
    };
    Ok(page(views::render(&view).map_err(template_error)?))
}

/// Sets the `lang` cookie and goes back to where the switch was pressed. Works without JavaScript.
async fn switch_language(
    Path(tag): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let lang = Lang::parse(&tag).ok_or_else(AppError::not_found)?;
    // Only local paths: never an open redirect to another site.
    let next = params
        .get("next")
        .map(String::as_str)
        .filter(|n| is_local_path(n))
        .unwrap_or("/");
    let mut res = Redirect::to(next).into_response();
    let cookie = format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.tag()
    );
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| AppError::internal())?,
    );
    Ok(res)
}

/// A path on this site: starts with one `/`, and only visible ASCII without `\\`. Browsers drop
/// tabs and newlines from `Location`, so `/\t/evil.example` would become `//evil.example`.
pub(crate) fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "database not reachable");
        AppError::from_status(StatusCode::SERVICE_UNAVAILABLE)
    })?;
    Ok("ready")
}
