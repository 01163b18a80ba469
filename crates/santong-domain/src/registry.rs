//! The education management information system's code sets and identifiers: 办学类型 and
//! 城乡类型 (GB/T 33782-2017 tables 4 and 5), grades, and the resident ID number (GB 11643).

use serde::{Deserialize, Serialize};

/// 办学类型: what kind of institution a school is (GB/T 33782-2017, table 4; the pre-school,
/// K-12 and special-education rows. The 119/319/349 and 51x names follow the education
/// statistics' 学校(机构)类别 table; check them against the standard's text before relying on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchoolKind {
    Kindergarten,
    Primary,
    /// 小学教学点: a teaching point, always under a parent school.
    TeachingPoint,
    AttachedPrimaryClasses,
    JuniorSecondary,
    NineYear,
    CompleteSecondary,
    SeniorSecondary,
    TwelveYear,
    AdjustedVocational,
    TechnicalSecondary,
    NormalSecondary,
    AdultSpecialisedSecondary,
    VocationalHigh,
    SkilledWorkers,
    AttachedKindergartenClasses,
    AttachedJuniorClasses,
    AttachedSeniorClasses,
    SchoolForTheBlind,
    SchoolForTheDeaf,
    SchoolForIntellectualDisability,
    OtherSpecialEducation,
    AttachedSpecialEducationClasses,
}

impl SchoolKind {
    pub const ALL: [SchoolKind; 23] = [
        SchoolKind::Kindergarten,
        SchoolKind::Primary,
        SchoolKind::TeachingPoint,
        SchoolKind::AttachedPrimaryClasses,
        SchoolKind::JuniorSecondary,
        SchoolKind::NineYear,
        SchoolKind::CompleteSecondary,
        SchoolKind::SeniorSecondary,
        SchoolKind::TwelveYear,
        SchoolKind::AdjustedVocational,
        SchoolKind::TechnicalSecondary,
        SchoolKind::NormalSecondary,
        SchoolKind::AdultSpecialisedSecondary,
        SchoolKind::VocationalHigh,
        SchoolKind::SkilledWorkers,
        SchoolKind::AttachedKindergartenClasses,
        SchoolKind::AttachedJuniorClasses,
        SchoolKind::AttachedSeniorClasses,
        SchoolKind::SchoolForTheBlind,
        SchoolKind::SchoolForTheDeaf,
        SchoolKind::SchoolForIntellectualDisability,
        SchoolKind::OtherSpecialEducation,
        SchoolKind::AttachedSpecialEducationClasses,
    ];

    /// The three-digit code of the standard.
    pub fn code(self) -> &'static str {
        match self {
            SchoolKind::Kindergarten => "111",
            SchoolKind::Primary => "211",
            SchoolKind::TeachingPoint => "218",
            SchoolKind::AttachedPrimaryClasses => "219",
            SchoolKind::JuniorSecondary => "311",
            SchoolKind::NineYear => "312",
            SchoolKind::CompleteSecondary => "341",
            SchoolKind::SeniorSecondary => "342",
            SchoolKind::TwelveYear => "345",
            SchoolKind::AdjustedVocational => "361",
            SchoolKind::TechnicalSecondary => "362",
            SchoolKind::NormalSecondary => "363",
            SchoolKind::AdultSpecialisedSecondary => "364",
            SchoolKind::VocationalHigh => "365",
            SchoolKind::SkilledWorkers => "366",
            SchoolKind::AttachedKindergartenClasses => "119",
            SchoolKind::AttachedJuniorClasses => "319",
            SchoolKind::AttachedSeniorClasses => "349",
            SchoolKind::SchoolForTheBlind => "511",
            SchoolKind::SchoolForTheDeaf => "512",
            SchoolKind::SchoolForIntellectualDisability => "513",
            SchoolKind::OtherSpecialEducation => "514",
            SchoolKind::AttachedSpecialEducationClasses => "519",
        }
    }

    pub fn parse(code: &str) -> Option<SchoolKind> {
        SchoolKind::ALL
            .into_iter()
            .find(|k| k.code() == code.trim())
    }

    /// The grades such a school offers unless told otherwise (0 = pre-school).
    pub fn default_grades(self) -> Grades {
        let (from, to) = match self {
            SchoolKind::Kindergarten | SchoolKind::AttachedKindergartenClasses => (0, 0),
            SchoolKind::AttachedJuniorClasses => (7, 9),
            SchoolKind::AttachedSeniorClasses => (10, 12),
            SchoolKind::SchoolForTheBlind
            | SchoolKind::SchoolForTheDeaf
            | SchoolKind::SchoolForIntellectualDisability
            | SchoolKind::OtherSpecialEducation
            | SchoolKind::AttachedSpecialEducationClasses => (1, 12),
            SchoolKind::Primary
            | SchoolKind::TeachingPoint
            | SchoolKind::AttachedPrimaryClasses => (1, 6),
            SchoolKind::JuniorSecondary => (7, 9),
            SchoolKind::NineYear => (1, 9),
            SchoolKind::CompleteSecondary => (7, 12),
            SchoolKind::SeniorSecondary
            | SchoolKind::AdjustedVocational
            | SchoolKind::TechnicalSecondary
            | SchoolKind::NormalSecondary
            | SchoolKind::AdultSpecialisedSecondary
            | SchoolKind::VocationalHigh
            | SchoolKind::SkilledWorkers => (10, 12),
            SchoolKind::TwelveYear => (1, 12),
        };
        Grades { from, to }
    }

    pub fn is_teaching_point(self) -> bool {
        self == SchoolKind::TeachingPoint
    }
}

/// 城乡类型: where a school lies between city and village (GB/T 33782-2017, table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UrbanRural {
    MainUrban,
    UrbanFringe,
    TownCentre,
    TownFringe,
    Special,
    TownshipCentre,
    Village,
}

impl UrbanRural {
    pub const ALL: [UrbanRural; 7] = [
        UrbanRural::MainUrban,
        UrbanRural::UrbanFringe,
        UrbanRural::TownCentre,
        UrbanRural::TownFringe,
        UrbanRural::Special,
        UrbanRural::TownshipCentre,
        UrbanRural::Village,
    ];

    pub fn code(self) -> &'static str {
        match self {
            UrbanRural::MainUrban => "111",
            UrbanRural::UrbanFringe => "112",
            UrbanRural::TownCentre => "121",
            UrbanRural::TownFringe => "122",
            UrbanRural::Special => "123",
            UrbanRural::TownshipCentre => "210",
            UrbanRural::Village => "220",
        }
    }

    pub fn parse(code: &str) -> Option<UrbanRural> {
        UrbanRural::ALL
            .into_iter()
            .find(|k| k.code() == code.trim())
    }

    /// Rural for the "rural schools" indicators: township centres and villages.
    pub fn is_rural(self) -> bool {
        matches!(self, UrbanRural::TownshipCentre | UrbanRural::Village)
    }
}

/// The grades a school offers, a contiguous range: 0 pre-school, 1–6 primary, 7–9 junior
/// secondary, 10–12 senior secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grades {
    pub from: u8,
    pub to: u8,
}

impl Grades {
    /// `1-6`, `7-9`, `10`, `0`.
    pub fn parse(s: &str) -> Option<Grades> {
        let s = s.trim();
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let from: u8 = a.trim().parse().ok()?;
        let to: u8 = b.trim().parse().ok()?;
        (from <= to && to <= 12).then_some(Grades { from, to })
    }

    pub fn contains(self, grade: u8) -> bool {
        (self.from..=self.to).contains(&grade)
    }

    /// Within what a school of `kind` may offer.
    pub fn fits(self, kind: SchoolKind) -> bool {
        let d = kind.default_grades();
        d.from <= self.from && self.to <= d.to
    }
}

impl std::fmt::Display for Grades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// Whether a school teaches: open, closed, or merged into another (whose code it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchoolStatus {
    Open,
    Closed,
    Merged,
}

impl SchoolStatus {
    pub const ALL: [SchoolStatus; 3] = [
        SchoolStatus::Open,
        SchoolStatus::Closed,
        SchoolStatus::Merged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchoolStatus::Open => "open",
            SchoolStatus::Closed => "closed",
            SchoolStatus::Merged => "merged",
        }
    }

    pub fn parse(s: &str) -> Option<SchoolStatus> {
        SchoolStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s.trim())
    }
}

/// A school's name: 2–60 characters, no control characters, trimmed.
pub fn parse_school_name(s: &str) -> Option<String> {
    let n = s.trim();
    let len = n.chars().count();
    ((2..=60).contains(&len) && !n.chars().any(char::is_control)).then(|| n.to_owned())
}

/// A school year, named by the calendar year it starts in: 2025 is 2025–26, from September to
/// August.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SchoolYear(pub i32);

impl SchoolYear {
    /// The school year a date falls in.
    pub fn of(year: i32, month: u32) -> SchoolYear {
        SchoolYear(if month >= 9 { year } else { year - 1 })
    }

    pub fn parse(s: &str) -> Option<SchoolYear> {
        let y: i32 = s
            .trim()
            .split(['-', '–', '/'])
            .next()?
            .trim()
            .parse()
            .ok()?;
        (1949..=2100).contains(&y).then_some(SchoolYear(y))
    }

    /// The school year of a date.
    pub fn of_date(d: chrono::NaiveDate) -> SchoolYear {
        use chrono::Datelike;
        SchoolYear::of(d.year(), d.month())
    }

    /// 1 September.
    pub fn start(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(self.0, 9, 1).unwrap_or_default()
    }

    /// 31 August of the next calendar year.
    pub fn end(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(self.0 + 1, 8, 31).unwrap_or_default()
    }

    /// The term a date of this school year falls in: 1 (autumn, September to January) or 2
    /// (spring, February to August).
    pub fn term_of(d: chrono::NaiveDate) -> (SchoolYear, u8) {
        use chrono::Datelike;
        let term = if (2..=8).contains(&d.month()) { 2 } else { 1 };
        (SchoolYear::of_date(d), term)
    }
}

impl std::fmt::Display for SchoolYear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.0 + 1)
    }
}

/// How a school reaches the internet (“宽带网络校校通”).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadband {
    None,
    Fibre,
    Dsl,
    Wireless,
    Satellite,
}

impl Broadband {
    pub const ALL: [Broadband; 5] = [
        Broadband::None,
        Broadband::Fibre,
        Broadband::Dsl,
        Broadband::Wireless,
        Broadband::Satellite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Broadband::None => "none",
            Broadband::Fibre => "fibre",
            Broadband::Dsl => "dsl",
            Broadband::Wireless => "wireless",
            Broadband::Satellite => "satellite",
        }
    }

    pub fn parse(s: &str) -> Option<Broadband> {
        Broadband::ALL.into_iter().find(|b| b.as_str() == s.trim())
    }
}

const ETHNIC_CSV: &str = include_str!("../../../data/ethnic_groups_gbt3304.csv");

/// An ethnic group by its GB/T 3304 code (`01` 汉族 … `56` 基诺族, and `97`, `98`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ethnicity(pub u8);

impl Ethnicity {
    /// Every group: (code, Chinese name, romanised name) in code order.
    pub fn all() -> &'static [(String, String, String)] {
        static ALL: std::sync::OnceLock<Vec<(String, String, String)>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            ETHNIC_CSV
                .lines()
                .skip(1)
                .filter_map(|l| {
                    // The first three columns never hold quotes or commas.
                    let mut f = l.splitn(4, ',');
                    Some((
                        f.next()?.to_owned(),
                        f.next()?.to_owned(),
                        f.next()?.to_owned(),
                    ))
                })
                .collect()
        })
    }

    pub fn parse(s: &str) -> Option<Ethnicity> {
        let s = s.trim();
        Ethnicity::all()
            .iter()
            .find(|(code, name, _)| code == s || name == s)
            .and_then(|(code, _, _)| code.parse().ok().map(Ethnicity))
    }

    pub fn code(self) -> String {
        format!("{:02}", self.0)
    }

    /// The romanised name of GB/T 3304 (`Han`), or the Chinese one where the list has none.
    pub fn name_roman(self) -> &'static str {
        let code = self.code();
        Ethnicity::all()
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, n, r)| if r.is_empty() { n.as_str() } else { r.as_str() })
            .unwrap_or("")
    }

    pub fn name_zh(self) -> &'static str {
        let code = self.code();
        Ethnicity::all()
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, n, _)| n.as_str())
            .unwrap_or("")
    }
}

/// A national student number (全国学籍号): 19 characters, for life.
/// - `G` + the resident ID number: the official number;
/// - `J` + an ID-shaped number (area code, birth date, 3-digit sequence, check character) for a
///   student without an ID number;
/// - `L` + area code, birth date and 4 random digits: temporary, until an ID is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StudentNumber(String);

impl StudentNumber {
    pub fn official(id: &ResidentId) -> StudentNumber {
        StudentNumber(format!("G{}", id.as_str()))
    }

    /// A J-number from the school's area code, the birth date and a sequence (0–999).
    pub fn without_id(area: &str, birth: (i32, u32, u32), seq: u16) -> Option<StudentNumber> {
        let body = format!("{area}{:04}{:02}{:02}{:03}", birth.0, birth.1, birth.2, seq);
        (body.len() == 17 && body.bytes().all(|b| b.is_ascii_digit()) && seq < 1000).then(|| {
            let c = id_check_char(body.as_bytes());
            StudentNumber(format!("J{body}{}", char::from(c)))
        })
    }

    pub fn temporary(area: &str, birth: (i32, u32, u32), random4: u16) -> Option<StudentNumber> {
        let n = format!(
            "L{area}{:04}{:02}{:02}{:04}",
            birth.0,
            birth.1,
            birth.2,
            random4 % 10_000
        );
        (n.len() == 19 && n[1..].bytes().all(|b| b.is_ascii_digit())).then_some(StudentNumber(n))
    }

    pub fn parse(s: &str) -> Option<StudentNumber> {
        let s = s.trim().to_ascii_uppercase();
        let ok = match s.as_bytes().first() {
            Some(b'G') => ResidentId::parse(&s[1..]).is_ok(),
            Some(b'J') => {
                s.len() == 19
                    && s[1..18].bytes().all(|b| b.is_ascii_digit())
                    && id_check_char(&s.as_bytes()[1..18]) == s.as_bytes()[18]
            }
            Some(b'L') => s.len() == 19 && s[1..].bytes().all(|b| b.is_ascii_digit()),
            _ => false,
        };
        ok.then_some(StudentNumber(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_temporary(&self) -> bool {
        self.0.starts_with('L')
    }
}

/// A mainland person's name as written in the registry: 1–40 characters, no digits or controls
/// (middle dots of minority names allowed).
pub fn parse_person_name(s: &str) -> Option<String> {
    let n = s.trim();
    let len = n.chars().count();
    ((1..=40).contains(&len) && !n.chars().any(|c| c.is_control() || c.is_ascii_digit()))
        .then(|| n.to_owned())
}

/// Sex per GB/T 2261.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "1",
            Sex::Female => "2",
        }
    }

    pub fn parse(s: &str) -> Option<Sex> {
        match s.trim() {
            "1" | "男" => Some(Sex::Male),
            "2" | "女" => Some(Sex::Female),
            _ => None,
        }
    }
}

/// Why a resident ID number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    #[error("an ID number has 18 characters: 17 digits and a digit or X")]
    Shape,
    #[error("the birth date in the ID number is not a real date")]
    BirthDate,
    #[error("the check digit does not match")]
    CheckDigit,
}

/// A resident identity card number (GB 11643-1999): a 6-digit region code (which may have been
/// retired since), the birth date, a sequence whose last digit gives the sex, and an ISO 7064
/// MOD 11-2 check character.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResidentId(String);

impl std::fmt::Debug for ResidentId {
    // The number never reaches a log line whole.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResidentId({})", self.masked())
    }
}

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// The check character of 17 digits.
pub fn id_check_char(digits17: &[u8]) -> u8 {
    let sum: u32 = digits17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

impl ResidentId {
    pub fn parse(s: &str) -> Result<ResidentId, IdProblem> {
        let id = s.trim().to_ascii_uppercase();
        let b = id.as_bytes();
        if b.len() != 18
            || !b[..17].iter().all(u8::is_ascii_digit)
            || !(b[17].is_ascii_digit() || b[17] == b'X')
        {
            return Err(IdProblem::Shape);
        }
        if birth_date_of(&id).is_none() {
            return Err(IdProblem::BirthDate);
        }
        if id_check_char(&b[..17]) != b[17] {
            return Err(IdProblem::CheckDigit);
        }
        Ok(ResidentId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region code it was issued under (possibly retired since).
    pub fn region_prefix(&self) -> &str {
        &self.0[..6]
    }

    /// (year, month, day)
    pub fn birth_date(&self) -> (i32, u32, u32) {
        birth_date_of(&self.0).unwrap_or((1900, 1, 1))
    }

    pub fn sex(&self) -> Sex {
        if (self.0.as_bytes()[16] - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// For lists: the region code and the check character only, `440305***********X`. The
    /// birth date is shown beside it in lists, so the sequence must stay hidden too, or the two
    /// together would give the whole number back.
    pub fn masked(&self) -> String {
        format!("{}***********{}", &self.0[..6], &self.0[17..])
    }
}

fn birth_date_of(id: &str) -> Option<(i32, u32, u32)> {
    let y: i32 = id.get(6..10)?.parse().ok()?;
    let m: u32 = id.get(10..12)?.parse().ok()?;
    let d: u32 = id.get(12..14)?.parse().ok()?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    ((1900..=2100).contains(&y) && (1..=days).contains(&d)).then_some((y, m, d))
}

#[cfg(test)]
mod school_year_tests {
    use super::SchoolYear;

    #[test]
    fn years_and_terms() {
        let d = |y, m, dd| chrono::NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(SchoolYear::of_date(d(2026, 8, 31)), SchoolYear(2025));
        assert_eq!(SchoolYear::of_date(d(2026, 9, 1)), SchoolYear(2026));
        assert_eq!(SchoolYear::term_of(d(2027, 1, 20)), (SchoolYear(2026), 1));
        assert_eq!(SchoolYear::term_of(d(2027, 2, 20)), (SchoolYear(2026), 2));
        assert_eq!(SchoolYear(2026).end(), d(2027, 8, 31));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_standards_example() {
        let id = ResidentId::parse("11010519491231002x").unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.birth_date(), (1949, 12, 31));
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(id.region_prefix(), "110105");
        assert_eq!(id.masked(), "110105***********X");
        assert!(!format!("{id:?}").contains("19491231"));
        assert_eq!(
            ResidentId::parse("110105194912310021"),
            Err(IdProblem::CheckDigit)
        );
        assert_eq!(
            ResidentId::parse("110105194902300021"),
            Err(IdProblem::BirthDate)
        );
        assert_eq!(ResidentId::parse("1101051949123100"), Err(IdProblem::Shape));
    }

    #[test]
    fn school_years() {
        assert_eq!(SchoolYear::of(2025, 9), SchoolYear(2025));
        assert_eq!(SchoolYear::of(2026, 8), SchoolYear(2025));
        assert_eq!(SchoolYear(2025).to_string(), "2025-2026");
        assert_eq!(SchoolYear::parse("2025-2026"), Some(SchoolYear(2025)));
        assert_eq!(SchoolYear::parse("2025"), Some(SchoolYear(2025)));
        assert_eq!(SchoolYear::parse("1800"), None);
        assert_eq!(Broadband::parse("fibre"), Some(Broadband::Fibre));
    }

    #[test]
    fn code_sets() {
        assert_eq!(SchoolKind::parse("218"), Some(SchoolKind::TeachingPoint));
        assert!(SchoolKind::TeachingPoint.is_teaching_point());
        assert_eq!(UrbanRural::parse("220"), Some(UrbanRural::Village));
        assert_eq!(SchoolKind::parse("999"), None);
        assert_eq!(Grades::parse("1-6"), Some(Grades { from: 1, to: 6 }));
        assert_eq!(Grades::parse("7-13"), None);
        assert_eq!(Grades::parse("9-7"), None);
        assert!(
            Grades::parse("1-4")
                .unwrap()
                .fits(SchoolKind::TeachingPoint)
        );
        assert!(!Grades::parse("1-9").unwrap().fits(SchoolKind::Primary));
        for k in SchoolKind::ALL {
            assert_eq!(SchoolKind::parse(k.code()), Some(k));
            assert!(k.default_grades().fits(k));
        }
    }

    #[test]
    fn ethnic_groups_and_student_numbers() {
        assert_eq!(Ethnicity::all().len(), 58);
        assert_eq!(Ethnicity::parse("01"), Some(Ethnicity(1)));
        assert_eq!(
            Ethnicity::parse("维吾尔族").map(|e| e.code()),
            Some("05".into())
        );
        assert_eq!(Ethnicity(56).name_zh(), "基诺族");
        assert_eq!(Ethnicity::parse("60"), None);
        let id = ResidentId::parse("11010519491231002X").unwrap();
        let g = StudentNumber::official(&id);
        assert_eq!(g.as_str(), "G11010519491231002X");
        assert_eq!(StudentNumber::parse(g.as_str()), Some(g));
        let j = StudentNumber::without_id("440305", (2018, 3, 5), 7).unwrap();
        assert_eq!(&j.as_str()[..18], "J44030520180305007");
        assert_eq!(StudentNumber::parse(j.as_str()), Some(j.clone()));
        let mut forged = j.as_str().to_owned();
        forged.replace_range(17..18, "9");
        assert_eq!(StudentNumber::parse(&forged), None);
        let l = StudentNumber::temporary("440305", (2018, 3, 5), 1234).unwrap();
        assert!(l.is_temporary() && StudentNumber::parse(l.as_str()).is_some());
        assert_eq!(
            parse_person_name(" 阿依古丽·买买提 ").as_deref(),
            Some("阿依古丽·买买提")
        );
        assert_eq!(parse_person_name("张3"), None);
    }

    proptest! {
        /// J-numbers always verify, whatever the area, date and sequence.
        #[test]
        fn j_numbers_verify(area in 110000u32..=659999, y in 2000i32..=2025, m in 1u32..=12, d in 1u32..=28, seq in 0u16..1000) {
            let j = StudentNumber::without_id(&area.to_string(), (y, m, d), seq).unwrap();
            prop_assert!(StudentNumber::parse(j.as_str()).is_some());
            prop_assert_eq!(j.as_str().len(), 19);
        }

        /// Any 17 digits with a real date and the computed check character parse, and every
        /// other check character is refused.
        #[test]
        fn check_digit_roundtrip(
            region in 110000u32..=659999,
            y in 1900i32..=2100,
            m in 1u32..=12,
            d in 1u32..=28,
            seq in 0u32..=999,
            wrong in 0usize..11,
        ) {
            let body = format!("{region:06}{y:04}{m:02}{d:02}{seq:03}");
            let c = id_check_char(body.as_bytes());
            let id = format!("{body}{}", char::from(c));
            let parsed = ResidentId::parse(&id).unwrap();
            prop_assert_eq!(parsed.birth_date(), (y, m, d));
            prop_assert_eq!(parsed.sex() == Sex::Male, seq % 2 == 1);
            let other = CHECK[wrong];
            if other != c {
                let bad = format!("{body}{}", char::from(other));
                prop_assert_eq!(ResidentId::parse(&bad), Err(IdProblem::CheckDigit));
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,30}") {
            let _ = ResidentId::parse(&s);
            let _ = Grades::parse(&s);
        }
    }
}
