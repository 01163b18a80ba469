//! Data quality on the pages (数据质量): the score of each school in the reader's scope (rolled up
//! for the region shown, and per county when the scope spans several), and for one school the
//! records that break each rule, each linked to where it is fixed.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use santong_domain::identity::Permission;
use santong_domain::quality::{Rule, Subject};
use santong_domain::region::RegionCode;
use santong_storage::quality::{Quality, Rollup, SchoolQuality};
use santong_storage::registry::today;

use crate::AppState;
use crate::auth::User;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::schools::{Params, p, page_of};
use crate::shell::Ctx;
use crate::views::{Chrome, Pager, private_page as html};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/quality", get(overview))
        .route("/quality/{code}", get(school))
}

/// A score as shown: one decimal, or "—" with nothing to judge.
fn shown(score: Option<f64>) -> String {
    score.map_or_else(|| "—".into(), |s| format!("{s:.1}"))
}

/// Traffic-light class of a score.
fn light(score: Option<f64>) -> &'static str {
    match score {
        Some(s) if s >= 98.0 => "good",
        Some(s) if s >= 90.0 => "fair",
        Some(_) => "poor",
        None => "none",
    }
}

struct Line {
    href: String,
    label: String,
    code: String,
    students: u64,
    issues: u64,
    score: String,
    light: &'static str,
}

#[derive(Template)]
#[template(path = "quality.html")]
struct OverviewPage {
    c: Chrome,
    region: String,
    total_score: String,
    total_light: &'static str,
    total_schools: u64,
    rules: Vec<(String, u64)>,
    counties: Vec<Line>,
    schools: Vec<Line>,
    pager: Pager,
}

fn rule_label(tr: &Tr, r: Rule) -> String {
    tr.t(&format!("quality-rule-{}", r.as_str()))
}

fn rule_lines(tr: &Tr, issues: &std::collections::BTreeMap<Rule, u64>) -> Vec<(String, u64)> {
    Rule::ALL
        .iter()
        .map(|r| (rule_label(tr, *r), issues.get(r).copied().unwrap_or(0)))
        .collect()
}

fn school_line(s: &SchoolQuality) -> Line {
    Line {
        href: format!("/quality/{}", s.code),
        label: s.name.clone(),
        code: s.code.clone(),
        students: s.students,
        issues: s.issue_count(),
        score: shown(s.score()),
        light: light(s.score()),
    }
}

/// Schools worst first; `?region=` narrows to a county, city or province.
async fn overview(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let tr = ctx.tr();
    let region = match p(&q, "region") {
        "" => None,
        r => Some(RegionCode::parse(r).map_err(|_| AppError::not_found())?),
    };
    let page = page_of(&q)?;
    let scope = user.0.scope(Permission::RegistryView);
    let mut schools = Quality(&state.db).schools(&scope, region, today()).await?;
    let total = Rollup::of(&schools);
    let mut by_county: std::collections::BTreeMap<String, Vec<&SchoolQuality>> =
        std::collections::BTreeMap::new();
    for s in &schools {
        by_county.entry(s.county.clone()).or_default().push(s);
    }
    let counties = if by_county.len() > 1 {
        by_county
            .iter()
            .map(|(county, list)| {
                let r = Rollup::of(list.iter().copied());
                Line {
                    href: format!("/quality?region={county}"),
                    label: county.clone(),
                    code: county.clone(),
                    students: 0,
                    issues: r.issue_count(),
                    score: shown(r.score()),
                    light: light(r.score()),
                }
            })
            .collect()
    } else {
        vec![]
    };
    schools.sort_by(|a, b| {
        a.score()
            .unwrap_or(100.0)
            .total_cmp(&b.score().unwrap_or(100.0))
            .then_with(|| a.code.cmp(&b.code))
    });
    let count = schools.len() as u64;
    let lines: Vec<Line> = schools
        .iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(page.limit()).unwrap_or(50))
        .map(school_line)
        .collect();
    let region_s = region.map(|r| r.to_string()).unwrap_or_default();
    let href = |n: u32| format!("/quality?region={region_s}&page={n}");
    html(&OverviewPage {
        c: ctx.chrome(tr.t("quality-title")),
        region: region_s.clone(),
        total_score: shown(total.score()),
        total_light: light(total.score()),
        total_schools: total.schools,
        rules: rule_lines(&tr, &total.issues),
        counties,
        schools: lines,
        pager: Pager::new(&tr, page.page, page.page_count(count), count, href),
    })
}

struct IssueLine {
    rule: String,
    href: String,
    label: String,
    grade: String,
    value: String,
}

#[derive(Template)]
#[template(path = "quality_school.html")]
struct SchoolPage {
    c: Chrome,
    code: String,
    name: String,
    score: String,
    light: &'static str,
    students: u64,
    classes: u64,
    teachers: u64,
    rules: Vec<(String, String, u64, bool)>,
    issues: Vec<IssueLine>,
    more: bool,
}

/// Issues a school page lists at most (the counts above are complete).
const ISSUES_SHOWN: usize = 200;

async fn school(
    State(state): State<AppState>,
    ctx: Ctx,
    user: User,
    Path(code): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, AppError> {
    user.require(Permission::RegistryView)?;
    let tr = ctx.tr();
    let rule = match p(&q, "rule") {
        "" => None,
        r => Some(Rule::parse(r).ok_or_else(AppError::not_found)?),
    };
    let scope = user.0.scope(Permission::RegistryView);
    let (s, issues) = Quality(&state.db)
        .issues(&scope, &code, rule, today())
        .await?
        .ok_or_else(AppError::not_found)?;
    let more = issues.len() > ISSUES_SHOWN;
    let lines = issues
        .iter()
        .take(ISSUES_SHOWN)
        .map(|i| IssueLine {
            rule: rule_label(&tr, i.rule),
            href: match i.rule.subject() {
                Subject::Student => format!("/students/{}", i.subject),
                Subject::Class => format!("/classes/{}", i.subject),
                Subject::School => format!("/schools/{}", i.subject),
            },
            label: i.label.clone(),
            grade: i.grade.map(|g| g.to_string()).unwrap_or_default(),
            value: match (i.rule, &i.value) {
                (Rule::AgeGrade, Some(v)) => {
                    tr.f("quality-age", &[("age", crate::i18n::s(v.clone()))])
                }
                (_, Some(v)) => v.clone(),
                (_, None) => String::new(),
            },
        })
        .collect();
    html(&SchoolPage {
        c: ctx.chrome(tr.t("quality-title")),
        code: s.code.clone(),
        name: s.name.clone(),
        score: shown(s.score()),
        light: light(s.score()),
        students: s.students,
        classes: s.classes,
        teachers: s.teachers,
        rules: Rule::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    rule_label(&tr, *r),
                    s.issues.get(r).copied().unwrap_or(0),
                    rule == Some(*r),
                )
            })
            .collect(),
        issues: lines,
        more,
    })
}
