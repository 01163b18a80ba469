//! Data quality (数据质量): the rules that flag records to fix, their thresholds (a policy an
//! operator sets), and the score of a school, a county or a province.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::registry::{ResidentId, Sex};

/// Thresholds of the rules (`santong policy set quality '{…}'`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityPolicy {
    /// Years a pupil may be off the usual age of the grade (grade + 5) before being flagged.
    pub age_gap: u8,
    /// 大班额: a class with more pupils than this.
    pub large_class: u32,
    /// 超大班额.
    pub huge_class: u32,
    /// Pupils per full-time teacher above this is an outlier…
    pub max_pupil_teacher_ratio: f64,
    /// …and below this too.
    pub min_pupil_teacher_ratio: f64,
    /// Schools with fewer pupils are not judged by their ratio (a small teaching point).
    pub ratio_min_pupils: u32,
    /// Rules switched off, by name (`"missing-id"`).
    pub disabled: Vec<String>,
}

impl Default for QualityPolicy {
    fn default() -> Self {
        Self {
            age_gap: 2,
            large_class: 56,
            huge_class: 66,
            max_pupil_teacher_ratio: 30.0,
            min_pupil_teacher_ratio: 5.0,
            ratio_min_pupils: 60,
            disabled: vec![],
        }
    }
}

impl QualityPolicy {
    /// Problems with the thresholds themselves, as message keys.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut p = vec![];
        if self.large_class == 0 || self.huge_class < self.large_class {
            p.push("quality-policy-classes");
        }
        if !(self.min_pupil_teacher_ratio >= 0.0
            && self.max_pupil_teacher_ratio > self.min_pupil_teacher_ratio
            && self.max_pupil_teacher_ratio.is_finite())
        {
            p.push("quality-policy-ratio");
        }
        if self.disabled.iter().any(|d| Rule::parse(d).is_none()) {
            p.push("quality-policy-rule");
        }
        p
    }

    pub fn enabled(&self, rule: Rule) -> bool {
        !self.disabled.iter().any(|d| d == rule.as_str())
    }
}

/// A data-quality rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Age far from the grade's usual age.
    AgeGrade,
    MissingId,
    /// An ID number that fails its checks (shape, date, check character).
    InvalidId,
    /// The ID number's birth date or sex differs from the record's.
    IdMismatch,
    /// Same name and birth date twice in one school.
    SameNameBirth,
    /// 大班额 (over `large_class`, up to `huge_class`).
    LargeClass,
    /// 超大班额 (over `huge_class`).
    HugeClass,
    PupilTeacherRatio,
    /// A teaching point (办学类型 218) with no parent school.
    OrphanTeachingPoint,
}

impl Rule {
    pub const ALL: [Rule; 9] = [
        Rule::AgeGrade,
        Rule::MissingId,
        Rule::InvalidId,
        Rule::IdMismatch,
        Rule::SameNameBirth,
        Rule::LargeClass,
        Rule::HugeClass,
        Rule::PupilTeacherRatio,
        Rule::OrphanTeachingPoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AgeGrade => "age-grade",
            Rule::MissingId => "missing-id",
            Rule::InvalidId => "invalid-id",
            Rule::IdMismatch => "id-mismatch",
            Rule::SameNameBirth => "same-name-birth",
            Rule::LargeClass => "large-class",
            Rule::HugeClass => "huge-class",
            Rule::PupilTeacherRatio => "pupil-teacher-ratio",
            Rule::OrphanTeachingPoint => "orphan-teaching-point",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What a flagged record is: a student, a class or a school.
    pub fn subject(self) -> Subject {
        match self {
            Rule::AgeGrade
            | Rule::MissingId
            | Rule::InvalidId
            | Rule::IdMismatch
            | Rule::SameNameBirth => Subject::Student,
            Rule::LargeClass | Rule::HugeClass => Subject::Class,
            Rule::PupilTeacherRatio | Rule::OrphanTeachingPoint => Subject::School,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Student,
    Class,
    School,
}

/// The student rules that look at one record alone: which of them it breaks on `on`.
pub fn student_flags(
    policy: &QualityPolicy,
    on: NaiveDate,
    birth: NaiveDate,
    sex: Option<Sex>,
    grade: i32,
    id_number: Option<&str>,
) -> Vec<Rule> {
    let mut out = vec![];
    let age = on.years_since(birth).map_or(-1, i64::from);
    if (age - (i64::from(grade) + 5)).abs() > i64::from(policy.age_gap) {
        out.push(Rule::AgeGrade);
    }
    match id_number {
        None | Some("") => out.push(Rule::MissingId),
        Some(raw) => match ResidentId::parse(raw) {
            Err(_) => out.push(Rule::InvalidId),
            Ok(id) => {
                let b = id.birth_date();
                if b != (birth.year(), birth.month(), birth.day())
                    || sex.is_some_and(|s| s != id.sex())
                {
                    out.push(Rule::IdMismatch);
                }
            }
        },
    }
    out.retain(|r| policy.enabled(*r));
    out
}

/// The class rule a class of `size` pupils breaks, if any.
pub fn class_flag(policy: &QualityPolicy, size: u32) -> Option<Rule> {
    let r = if size > policy.huge_class {
        Rule::HugeClass
    } else if size > policy.large_class {
        Rule::LargeClass
    } else {
        return None;
    };
    policy.enabled(r).then_some(r)
}

/// Pupils per teacher, `None` without teachers.
pub fn pupil_teacher_ratio(pupils: u64, teachers: u64) -> Option<f64> {
    (teachers > 0).then(|| pupils as f64 / teachers as f64)
}

/// Whether a school's staffing is an outlier: a ratio outside the bounds, or pupils and no
/// teacher at all. Small schools are not judged.
pub fn ratio_flag(policy: &QualityPolicy, pupils: u64, teachers: u64) -> bool {
    if !policy.enabled(Rule::PupilTeacherRatio) || pupils < u64::from(policy.ratio_min_pupils) {
        return false;
    }
    match pupil_teacher_ratio(pupils, teachers) {
        None => true,
        Some(r) => r > policy.max_pupil_teacher_ratio || r < policy.min_pupil_teacher_ratio,
    }
}

/// The quality score, 0 to 100: the share of records with no problem (a record with two
/// problems counts once per problem, floored at 0). `None` when there is nothing to judge.
pub fn score(records: u64, issues: u64) -> Option<f64> {
    (records > 0).then(|| (100.0 * (1.0 - issues as f64 / records as f64)).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn students_are_flagged_by_age_and_id() {
        let p = QualityPolicy::default();
        let on = d(2026, 12, 1);
        // An eight-year-old in grade 3 with no ID number.
        assert_eq!(
            student_flags(&p, on, d(2018, 3, 1), Sex::parse("1"), 3, None),
            [Rule::MissingId]
        );
        // Twelve in grade 1.
        assert!(student_flags(&p, on, d(2014, 3, 1), None, 1, Some("")).contains(&Rule::AgeGrade));
        assert_eq!(
            student_flags(&p, on, d(2018, 3, 1), None, 3, Some("123")),
            [Rule::InvalidId]
        );
        let body = "44030520180301001";
        let id = format!(
            "{body}{}",
            char::from(crate::registry::id_check_char(body.as_bytes()))
        );
        assert!(student_flags(&p, on, d(2018, 3, 1), Sex::parse("1"), 3, Some(&id)).is_empty());
        assert_eq!(
            student_flags(&p, on, d(2018, 3, 2), Sex::parse("1"), 3, Some(&id)),
            [Rule::IdMismatch]
        );
        assert_eq!(
            student_flags(&p, on, d(2018, 3, 1), Sex::parse("2"), 3, Some(&id)),
            [Rule::IdMismatch]
        );
        let off = QualityPolicy {
            disabled: vec!["missing-id".into()],
            ..QualityPolicy::default()
        };
        assert!(student_flags(&off, on, d(2018, 3, 1), None, 3, None).is_empty());
    }

    #[test]
    fn classes_ratios_and_scores() {
        let p = QualityPolicy::default();
        assert_eq!(class_flag(&p, 56), None);
        assert_eq!(class_flag(&p, 57), Some(Rule::LargeClass));
        assert_eq!(class_flag(&p, 67), Some(Rule::HugeClass));
        assert!(ratio_flag(&p, 100, 0));
        assert!(ratio_flag(&p, 400, 10));
        assert!(!ratio_flag(&p, 200, 10));
        assert!(!ratio_flag(&p, 30, 0), "small schools are not judged");
        assert_eq!(score(0, 0), None);
        assert_eq!(score(200, 50), Some(75.0));
        assert_eq!(score(10, 30), Some(0.0));
        assert!(QualityPolicy::default().problems().is_empty());
        let bad = QualityPolicy {
            huge_class: 10,
            min_pupil_teacher_ratio: 40.0,
            disabled: vec!["nope".into()],
            ..QualityPolicy::default()
        };
        assert_eq!(bad.problems().len(), 3);
    }
}
