//! Data quality (数据质量): the rules of [`santong_domain::quality`] applied to the registry as
//! it is today — computed on each request from the records themselves, so a fixed record leaves
//! the list at once — with a score per school rolled up to whatever region the reader asks for.
//! Every read goes through the scope filter on the school.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use santong_domain::identity::{Scope, region_prefix_pattern};
use santong_domain::quality::{self, QualityPolicy, Rule};
use santong_domain::region::RegionCode;
use santong_domain::registry::{SchoolYear, Sex};
use serde::Serialize;
use uuid::Uuid;

use crate::Db;
use crate::dynsql::DynQuery;
use crate::students::push_placing;

/// The policy key (`santong policy set quality '{…}'`).
pub const POLICY_KEY: &str = "policy.quality";

pub async fn policy(db: &Db) -> crate::Result<QualityPolicy> {
    crate::identity::policy(db, POLICY_KEY).await
}

/// One school's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SchoolQuality {
    pub code: String,
    pub name: String,
    pub county: String,
    pub students: u64,
    pub classes: u64,
    pub teachers: u64,
    /// Problems per rule (rules with none are absent).
    pub issues: BTreeMap<Rule, u64>,
}

impl SchoolQuality {
    /// What the score is taken over: every student and class, and the school itself.
    pub fn records(&self) -> u64 {
        self.students + self.classes + 1
    }

    pub fn issue_count(&self) -> u64 {
        self.issues.values().sum()
    }

    pub fn score(&self) -> Option<f64> {
        quality::score(self.records(), self.issue_count())
    }
}

/// The figures of a set of schools added up (a county, a city, a province).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollup {
    pub schools: u64,
    pub records: u64,
    pub issues: BTreeMap<Rule, u64>,
}

impl Rollup {
    pub fn of<'a>(schools: impl IntoIterator<Item = &'a SchoolQuality>) -> Rollup {
        let mut r = Rollup::default();
        for s in schools {
            r.schools += 1;
            r.records += s.records();
            for (rule, n) in &s.issues {
                *r.issues.entry(*rule).or_default() += n;
            }
        }
        r
    }

    pub fn issue_count(&self) -> u64 {
        self.issues.values().sum()
    }

    pub fn score(&self) -> Option<f64> {
        quality::score(self.records, self.issue_count())
    }
}

/// A record to fix: which one (a student's id, a class's id or a school's code), how lists
/// name it, and the figure that broke the rule (an age, a class size, a ratio).
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub rule: Rule,
    pub subject: String,
    pub label: String,
    pub grade: Option<i32>,
    pub value: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SchoolRow {
    code: String,
    name: String,
    county: String,
    kind: String,
    parent_code: Option<String>,
    /// The parent school's status: a teaching point under a closed school has no parent now.
    parent_status: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PupilRow {
    id: Uuid,
    name: String,
    sex: String,
    birth_date: NaiveDate,
    id_number: Option<String>,
    school_code: String,
    grade: i32,
}

#[derive(sqlx::FromRow)]
struct ClassRow {
    id: Uuid,
    school_code: String,
    grade: i32,
    name: String,
    size: i64,
}

/// Which schools: those in `scope`, under `region` if given, or the one `school`.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Region(Option<RegionCode>),
    School(&'a str),
}

fn push_target(q: &mut DynQuery, scope: &Scope, target: Target<'_>) {
    q.push(" s.status = 'open'");
    match target {
        Target::Region(Some(r)) => {
            q.push(" AND s.county LIKE ").bind(region_prefix_pattern(r));
        }
        Target::Region(None) => {}
        Target::School(code) => {
            q.push(" AND s.code = ").bind(code.to_owned());
        }
    }
    q.push(" AND");
    crate::scope::push(q, scope, "s.county", "s.code");
}

pub struct Quality<'a>(pub &'a Db);

/// Everything one run of the rules found.
struct Found {
    schools: Vec<SchoolQuality>,
    issues: Vec<(String, Issue)>,
}

impl Quality<'_> {
    /// Every open school in `scope` (under `region`), with its problems per rule, by code.
    pub async fn schools(
        &self,
        scope: &Scope,
        region: Option<RegionCode>,
        on: NaiveDate,
    ) -> crate::Result<Vec<SchoolQuality>> {
        let policy = policy(self.0).await?;
        Ok(self
            .run(scope, Target::Region(region), on, &policy, None)
            .await?
            .schools)
    }

    /// The records of one school (in `scope`) that break `rule` (every rule when `None`), in
    /// the order of the rules, then by grade and name.
    pub async fn issues(
        &self,
        scope: &Scope,
        school: &str,
        rule: Option<Rule>,
        on: NaiveDate,
    ) -> crate::Result<Option<(SchoolQuality, Vec<Issue>)>> {
        let policy = policy(self.0).await?;
        let found = self
            .run(scope, Target::School(school), on, &policy, Some(rule))
            .await?;
        let Some(s) = found.schools.into_iter().next() else {
            return Ok(None);
        };
        let mut issues: Vec<Issue> = found.issues.into_iter().map(|(_, i)| i).collect();
        issues.sort_by(|a, b| {
            (a.rule, a.grade, &a.label, &a.subject).cmp(&(b.rule, b.grade, &b.label, &b.subject))
        });
        Ok(Some((s, issues)))
    }

    /// Applies the rules; `keep` collects the issues themselves (of one rule, or all).
    async fn run(
        &self,
        scope: &Scope,
        target: Target<'_>,
        on: NaiveDate,
        policy: &QualityPolicy,
        keep: Option<Option<Rule>>,
    ) -> crate::Result<Found> {
        let db = self.0;
        let mut q = DynQuery::for_db(db);
        q.push(
            "SELECT s.code, s.name, s.county, s.kind, s.parent_code, p.status AS parent_status \
            FROM school s LEFT JOIN school p ON p.code = s.parent_code WHERE",
        );
        push_target(&mut q, scope, target);
        q.push(" ORDER BY s.code");
        let schools: Vec<SchoolRow> = q.fetch_all(db).await?;

        let mut q = DynQuery::for_db(db);
        q.push(
            "SELECT st.id, st.name, st.sex, st.birth_date, st.id_number, e.school_code, e.grade \
            FROM student st JOIN student_event e ON e.student_id = st.id \
            JOIN school s ON s.code = e.school_code WHERE",
        );
        push_placing(&mut q, on);
        q.push(crate::students::ON_ROSTER).push(" AND");
        push_target(&mut q, scope, target);
        let pupils: Vec<PupilRow> = q.fetch_all(db).await?;

        let year = SchoolYear::of_date(on);
        let mut q = DynQuery::for_db(db);
        q.push(
            "SELECT c.id, c.school_code, c.grade, c.name, COUNT(m.student_id) AS size \
            FROM school_class c JOIN school s ON s.code = c.school_code \
            LEFT JOIN class_member m ON m.class_id = c.id AND m.from_on <= ",
        )
        .bind(on)
        .push(" AND (m.until_on IS NULL OR m.until_on > ")
        .bind(on)
        .push(") WHERE c.school_year = ")
        .bind(i64::from(year.0))
        .push(" AND");
        push_target(&mut q, scope, target);
        q.push(" GROUP BY c.id, c.school_code, c.grade, c.name");
        let classes: Vec<ClassRow> = q.fetch_all(db).await?;

        let mut q = DynQuery::for_db(db);
        q.push(
            "SELECT e.school_code, COUNT(*) AS n FROM teacher t \
            JOIN teacher_event e ON e.teacher_id = t.id JOIN school s ON s.code = e.school_code \
            WHERE e.id = (SELECT e2.id FROM teacher_event e2 WHERE e2.teacher_id = t.id \
            AND e2.effective_on <= ",
        )
        .bind(on)
        .push(
            " ORDER BY e2.effective_on DESC, e2.recorded_at DESC, e2.id DESC LIMIT 1) \
            AND e.kind = 'appoint' AND",
        );
        push_target(&mut q, scope, target);
        q.push(" GROUP BY e.school_code");
        let teachers: Vec<(String, i64)> = q.fetch_all(db).await?;
        let teachers: HashMap<String, u64> = teachers
            .into_iter()
            .map(|(c, n)| (c, u64::try_from(n).unwrap_or(0)))
            .collect();

        let mut by_code: BTreeMap<String, SchoolQuality> = schools
            .iter()
            .map(|s| {
                (
                    s.code.clone(),
                    SchoolQuality {
                        code: s.code.clone(),
                        name: s.name.clone(),
                        county: s.county.clone(),
                        students: 0,
                        classes: 0,
                        teachers: teachers.get(&s.code).copied().unwrap_or(0),
                        issues: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let mut issues = vec![];
        let wanted = |r: Rule| matches!(keep, Some(None)) || keep == Some(Some(r));
        let mut flag = |by_code: &mut BTreeMap<String, SchoolQuality>, school: &str, i: Issue| {
            if let Some(s) = by_code.get_mut(school) {
                *s.issues.entry(i.rule).or_default() += 1;
            }
            if wanted(i.rule) {
                issues.push((school.to_owned(), i));
            }
        };

        let mut same: HashMap<(&str, &str, NaiveDate), Vec<&PupilRow>> = HashMap::new();
        for p in &pupils {
            if let Some(s) = by_code.get_mut(&p.school_code) {
                s.students += 1;
            }
            for rule in quality::student_flags(
                policy,
                on,
                p.birth_date,
                Sex::parse(&p.sex),
                p.grade,
                p.id_number.as_deref(),
            ) {
                let value = match rule {
                    Rule::AgeGrade => on.years_since(p.birth_date).map(|a| a.to_string()),
                    _ => None,
                };
                flag(
                    &mut by_code,
                    &p.school_code,
                    Issue {
                        rule,
                        subject: p.id.to_string(),
                        label: p.name.clone(),
                        grade: Some(p.grade),
                        value,
                    },
                );
            }
            same.entry((p.school_code.as_str(), p.name.as_str(), p.birth_date))
                .or_default()
                .push(p);
        }
        if policy.enabled(Rule::SameNameBirth) {
            for ((school, _, _), group) in same.iter().filter(|(_, g)| g.len() > 1) {
                for p in group {
                    flag(
                        &mut by_code,
                        school,
                        Issue {
                            rule: Rule::SameNameBirth,
                            subject: p.id.to_string(),
                            label: p.name.clone(),
                            grade: Some(p.grade),
                            value: Some(p.birth_date.to_string()),
                        },
                    );
                }
            }
        }
        for c in &classes {
            if let Some(s) = by_code.get_mut(&c.school_code) {
                s.classes += 1;
            }
            let size = u32::try_from(c.size).unwrap_or(u32::MAX);
            if let Some(rule) = quality::class_flag(policy, size) {
                flag(
                    &mut by_code,
                    &c.school_code,
                    Issue {
                        rule,
                        subject: c.id.to_string(),
                        label: c.name.clone(),
                        grade: Some(c.grade),
                        value: Some(size.to_string()),
                    },
                );
            }
        }
        for s in &schools {
            let (pupils, staff) = by_code
                .get(&s.code)
                .map_or((0, 0), |q| (q.students, q.teachers));
            if quality::ratio_flag(policy, pupils, staff) {
                let value = quality::pupil_teacher_ratio(pupils, staff)
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| format!("{pupils}:0"));
                flag(
                    &mut by_code,
                    &s.code,
                    Issue {
                        rule: Rule::PupilTeacherRatio,
                        subject: s.code.clone(),
                        label: s.name.clone(),
                        grade: None,
                        value: Some(value),
                    },
                );
            }
            let teaching_point = santong_domain::registry::SchoolKind::parse(&s.kind)
                .is_some_and(|k| k.is_teaching_point());
            let parent_open = s.parent_code.is_some() && s.parent_status.as_deref() == Some("open");
            if teaching_point && !parent_open && policy.enabled(Rule::OrphanTeachingPoint) {
                flag(
                    &mut by_code,
                    &s.code,
                    Issue {
                        rule: Rule::OrphanTeachingPoint,
                        subject: s.code.clone(),
                        label: s.name.clone(),
                        grade: None,
                        value: None,
                    },
                );
            }
        }
        Ok(Found {
            schools: by_code.into_values().collect(),
            issues,
        })
    }
}
