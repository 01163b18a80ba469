//! Students (学籍): the record, and the events that place a student at a school and grade.
//!
//! Where a student is on a date is derived from the latest event effective on or before it that
//! no later event undid; a roster is therefore answerable for any past date. Reads go through
//! the scope filter on the school of that event; a student's full ID number and guardian's phone
//! are shown only through [`Students::view_full`], which is audited with its purpose.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use santong_domain::identity::{Node, Permission, Scope, parse_mobile};
use santong_domain::region::RegionCode;
use santong_domain::registry::{
    Ethnicity, ResidentId, SchoolStatus, Sex, StudentNumber, parse_person_name,
};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::duplicates::{Clash, clash_of, temporary_number};
use crate::dynsql::DynQuery;
use crate::identity::Actor;
use crate::registry::{Registry, RegistryError, SchoolRow, refused, rule, today};
use crate::{Db, Page, db_query};

/// A student as stored. Not `Serialize`, and `Debug` masks: the full ID number and phone leave
/// only through the views that are meant to show them.
#[derive(Clone, sqlx::FromRow)]
pub struct StudentRow {
    pub id: Uuid,
    pub student_number: String,
    pub name: String,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub ethnicity: String,
    pub id_number: Option<String>,
    pub id_region_retired: bool,
    pub household_region: Option<String>,
    pub guardian_name: String,
    pub guardian_relation: String,
    pub guardian_phone: String,
    pub left_behind: bool,
    pub migrant: bool,
    pub disability: bool,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for StudentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudentRow")
            .field("id", &self.id)
            .field("student_number", &self.number_masked())
            .finish_non_exhaustive()
    }
}

impl StudentRow {
    /// `440305********123X`, or nothing.
    pub fn id_masked(&self) -> Option<String> {
        self.id_number
            .as_deref()
            .and_then(|i| ResidentId::parse(i).ok())
            .map(|i| i.masked())
    }

    /// The national student number for lists: a G-number holds the ID number, so it is masked
    /// like one; J and L numbers are shown whole.
    pub fn number_masked(&self) -> String {
        mask_number(&self.student_number)
    }

    pub fn phone_masked(&self) -> String {
        santong_domain::identity::mask_phone(&self.guardian_phone)
    }
}

/// A national student number as lists show it: a G-number holds the ID number, so it is masked
/// like one; J and L numbers are shown whole.
pub fn mask_number(number: &str) -> String {
    match number.strip_prefix('G') {
        Some(id) => match ResidentId::parse(id) {
            Ok(id) => format!("G{}", id.masked()),
            Err(_) => "G****".into(),
        },
        None => number.to_owned(),
    }
}

/// A student where they are on a date: the record with the school and grade of that day.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Placed {
    #[sqlx(flatten)]
    pub student: StudentRow,
    pub school_code: String,
    pub grade: i32,
    pub since: NaiveDate,
    /// `in`, `suspended` or `out` ([`santong_domain::lifecycle::Status`]).
    pub status: String,
    /// The kind of the event in force.
    pub kind: String,
}

/// Students of one school and grade on a date.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EnrolmentRow {
    pub school_code: String,
    pub grade: i32,
    pub students: i64,
}

/// A student as entered: raw text, checked by [`Students::enrol`]. (`Debug` by hand: it holds
/// an ID number and a phone.)
#[derive(Clone, Default, serde::Deserialize)]
pub struct NewStudent {
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub ethnicity: String,
    #[serde(default)]
    pub id_number: String,
    #[serde(default)]
    pub household_region: String,
    pub guardian_name: String,
    pub guardian_relation: String,
    pub guardian_phone: String,
    #[serde(default)]
    pub left_behind: bool,
    #[serde(default)]
    pub migrant: bool,
    #[serde(default)]
    pub disability: bool,
    pub grade: String,
    /// `YYYY-MM-DD`; empty: today.
    #[serde(default)]
    pub enrolled_on: String,
}

impl std::fmt::Debug for NewStudent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewStudent")
            .field("grade", &self.grade)
            .finish_non_exhaustive()
    }
}

const STUDENT_COLUMNS: &str = "st.id, st.student_number, st.name, st.sex, st.birth_date, \
    st.ethnicity, st.id_number, st.id_region_retired, st.household_region, st.guardian_name, \
    st.guardian_relation, st.guardian_phone, st.left_behind, st.migrant, st.disability, \
    st.created_at";

pub(crate) const PLACED_COLUMNS: &str =
    ", e.school_code, e.grade, e.effective_on AS since, e.status, e.kind";

/// Appends the condition that `e` is the event in force for student `st` on `on`: the latest one
/// effective by then that no later event undid (undo events themselves never are). Whether it
/// leaves the student in school is `e.status`; rosters add [`ON_ROSTER`].
pub(crate) fn push_placing(q: &mut DynQuery, on: NaiveDate) {
    push_placing_of(q, on, "e", "st");
}

/// [`push_placing`] for event alias `e` and student alias `st` of the caller's choosing (a query
/// that places two students at once).
pub(crate) fn push_placing_of(q: &mut DynQuery, on: NaiveDate, e: &'static str, st: &'static str) {
    q.push(" ")
        .push(e)
        .push(".id = (SELECT e2.id FROM student_event e2 WHERE e2.student_id = ")
        .push(st)
        .push(".id AND e2.effective_on <= ")
        .bind(on)
        .push(
            " AND e2.undone_by IS NULL AND e2.kind <> 'undo' \
        ORDER BY e2.effective_on DESC, e2.recorded_at DESC, e2.id DESC LIMIT 1)",
        );
}

/// Students who hold a place at the school: in school or suspended (休学 keeps the place).
pub(crate) const ON_ROSTER: &str = " AND e.status <> 'out'";

/// How a roster is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RosterSort {
    /// By grade, then name.
    #[default]
    Grade,
    Name,
    Birth,
}

/// A roster's filters and order.
#[derive(Debug, Clone, Default)]
pub struct RosterFilter {
    pub grade: Option<i32>,
    /// Part of the name.
    pub text: Option<String>,
    pub sort: RosterSort,
    pub descending: bool,
}

/// The stated purpose of seeing or exporting full personal data, as it goes into the audit log:
/// 2 to 200 characters, and no ID or phone number pasted into it.
pub fn check_purpose(purpose: &str) -> Result<&str, RegistryError> {
    let purpose = purpose.trim();
    if purpose.chars().count() < 2 || purpose.chars().count() > 200 {
        return Err(refused("purpose", "student-purpose-required"));
    }
    if crate::registry::holds_number(purpose) {
        return Err(refused("purpose", "student-purpose-no-numbers"));
    }
    Ok(purpose)
}

pub struct Students<'a>(pub &'a Db);

impl Students<'_> {
    /// The students at `school` on `on`, by grade and name.
    pub async fn roster(
        &self,
        scope: &Scope,
        school: &str,
        on: NaiveDate,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<Placed>> {
        self.roster_filtered(scope, school, on, &RosterFilter::default(), limit, offset)
            .await
    }

    /// [`Students::roster`] filtered by grade and name, in the order asked for.
    pub async fn roster_filtered(
        &self,
        scope: &Scope,
        school: &str,
        on: NaiveDate,
        f: &RosterFilter,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<Placed>> {
        let filter = |q: &mut DynQuery| {
            q.push(
                " FROM student st JOIN student_event e ON e.student_id = st.id \
                JOIN school s ON s.code = e.school_code WHERE",
            );
            push_placing(q, on);
            q.push(ON_ROSTER);
            q.push(" AND e.school_code = ").bind(school.to_owned());
            if let Some(g) = f.grade {
                q.push(" AND e.grade = ")
                    .bind_val(crate::dynsql::Val::Int(g));
            }
            // By name only: a number in a link or a log line may be an ID number.
            if let Some(text) = f.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                let pattern = format!("%{}%", crate::identity::like_escape(text));
                q.push(" AND st.name LIKE ")
                    .bind(pattern)
                    .push(" ESCAPE '\\'");
            }
            q.push(" AND");
            crate::scope::push(q, scope, "s.county", "s.code");
        };
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT ").push(STUDENT_COLUMNS).push(PLACED_COLUMNS);
        filter(&mut q);
        let dir = if f.descending { " DESC" } else { "" };
        q.push(" ORDER BY ");
        match f.sort {
            RosterSort::Grade => q.push("e.grade").push(dir).push(", st.name"),
            RosterSort::Name => q.push("st.name").push(dir),
            RosterSort::Birth => q.push("st.birth_date").push(dir).push(", st.name"),
        };
        q.push(", st.id LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*)");
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// How many students attend each school under `region` per grade on `on` (within `scope`):
    /// the as-of enrolment of a county, a city or a province.
    pub async fn enrolment(
        &self,
        scope: &Scope,
        region: RegionCode,
        on: NaiveDate,
    ) -> crate::Result<Vec<EnrolmentRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT e.school_code, e.grade, COUNT(*) AS students FROM student st \
            JOIN student_event e ON e.student_id = st.id \
            JOIN school s ON s.code = e.school_code WHERE",
        );
        push_placing(&mut q, on);
        // Enrolment counts who attends: a suspended student keeps the place but is not counted.
        q.push(" AND e.status = 'in'");
        q.push(" AND s.county LIKE ")
            .bind(santong_domain::identity::region_prefix_pattern(region))
            .push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" GROUP BY e.school_code, e.grade ORDER BY e.school_code, e.grade");
        q.fetch_all(self.0).await
    }

    /// A student where they are today, if that is in `scope`.
    pub async fn student(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<Placed>> {
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT ")
            .push(STUDENT_COLUMNS)
            .push(PLACED_COLUMNS)
            .push(
                " FROM student st JOIN student_event e ON e.student_id = st.id \
                JOIN school s ON s.code = e.school_code WHERE",
            );
        push_placing(&mut q, today());
        q.push(" AND st.id = ").bind(id).push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        Ok(q.fetch_all::<Placed>(self.0).await?.into_iter().next())
    }

    /// Records an export (`event`, e.g. `student.export`) of a list of `school` in the audit log,
    /// with what it held (row count, date, filters, purpose) in `detail`.
    pub async fn record_export(
        &self,
        actor: Actor<'_>,
        event: &'static str,
        school: &str,
        detail: String,
    ) -> crate::Result<()> {
        let mut e = actor.entry(
            event,
            school,
            "success",
            &school_node(school, self.0).await?,
        );
        e.detail = detail;
        audit::record(self.0, &e).await?;
        Ok(())
    }

    /// The full record, for someone who states why: the view is audited with the purpose.
    pub async fn view_full(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        purpose: &str,
    ) -> Result<Placed, RegistryError> {
        let purpose = check_purpose(purpose)?;
        let placed = self
            .student(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        // The record's id, not its number: a G-number is the ID number behind a letter.
        let mut e = actor.entry(
            "student.view_full",
            &placed.student.id.to_string(),
            "success",
            &school_node(&placed.school_code, self.0).await?,
        );
        e.detail = purpose.to_owned();
        audit::record(self.0, &e).await?;
        Ok(placed)
    }

    /// Enrols a new student at `school` (needs `registry_manage` there): checks every field,
    /// gives the national student number (G with an ID number, J without), and records the
    /// enrolment as the student's first event.
    pub async fn enrol(
        &self,
        actor: Actor<'_>,
        school_code: &str,
        input: &NewStudent,
    ) -> Result<Placed, RegistryError> {
        let today = today();
        let school = Registry(self.0)
            .school(&Scope::everything(), school_code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryView, &school.node()) && !matches!(actor, Actor::Cli) {
            return Err(RegistryError::NotFound);
        }
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        let c = self.check(&school, input, today).await?;
        let sid = Uuid::now_v7();
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        // An ID number on a record that holds a place elsewhere: this record is temporary and a
        // duplicate case opens; on records that all left school, the child is not enrolled anew.
        let mut clash = match &c.id {
            Some(id) => clash_of(&mut tx, id.as_str(), self.0.is_postgres()).await?,
            None => Clash::None,
        };
        // A J-number takes the next free sequence of its prefix. Of two enrolments racing for
        // the same one (PostgreSQL), the loser tries the next.
        let mut attempt = 0;
        let mut tried: Option<u16> = None;
        loop {
            if let Clash::Left(existing) = clash {
                drop(tx);
                // Audited against the existing record (never by the number).
                audit::record(
                    self.0,
                    &actor.entry(
                        "student.duplicate",
                        &existing.to_string(),
                        "denied",
                        &school.node(),
                    ),
                )
                .await?;
                return Err(refused("id_number", "student-already-enrolled"));
            }
            let number = match (&c.id, &clash) {
                (Some(_), Clash::Active(_)) => {
                    temporary_number(&school.county, c.birth).ok_or(RegistryError::NotFound)?
                }
                (Some(id), _) => StudentNumber::official(id),
                (None, _) => {
                    let (n, seq) = next_j_number(&mut tx, &school.county, c.birth, tried).await?;
                    tried = Some(seq);
                    n
                }
            };
            let inserted = db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "INSERT INTO student (id, student_number, name, sex, birth_date, ethnicity, \
                    id_number, id_region_retired, household_region, guardian_name, \
                    guardian_relation, guardian_phone, left_behind, migrant, disability, \
                    created_at) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                    ON CONFLICT (student_number) DO NOTHING",
                ))
                .bind(sid)
                .bind(number.as_str())
                .bind(&c.name)
                .bind(c.sex.code())
                .bind(c.birth_date)
                .bind(c.ethnicity.code())
                .bind(c.id.as_ref().map(|i| i.as_str().to_owned()))
                .bind(c.id_region_retired)
                .bind(&c.household)
                .bind(&c.guardian_name)
                .bind(&c.guardian_relation)
                .bind(&c.guardian_phone)
                .bind(input.left_behind)
                .bind(input.migrant)
                .bind(input.disability)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            if inserted == 1 {
                break;
            }
            // The official number was taken meanwhile (PostgreSQL): judged again against the
            // record that took it.
            if let (Some(id), Clash::None) = (&c.id, &clash) {
                clash = clash_of(&mut tx, id.as_str(), self.0.is_postgres()).await?;
                if matches!(clash, Clash::None) {
                    return Err(RegistryError::Stale);
                }
                continue;
            }
            attempt += 1;
            if attempt > 20 {
                return Err(refused("birth_date", "student-no-number-left"));
            }
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO student_event (id, student_id, kind, school_code, grade, \
                effective_on, recorded_at, actor, actor_id, reason) \
                VALUES ($1, $2, 'enrol', $3, $4, $5, $6, $7, $8, '')",
            ))
            .bind(Uuid::now_v7())
            .bind(sid)
            .bind(&school.code)
            .bind(i32::from(c.grade))
            .bind(c.enrolled_on)
            .bind(now)
            .bind(actor.name())
            .bind(actor.id())
            .execute(ex)
            .await?
            .rows_affected()
        });
        // The record's id goes into the audit log, never the number (a G-number holds the ID).
        audit::append(
            &mut tx,
            &actor.entry("student.enrol", &sid.to_string(), "success", &school.node()),
        )
        .await?;
        if let Clash::Active(other) = clash {
            crate::duplicates::open(&mut tx, sid, other, &actor, &school.node(), now).await?;
        }
        tx.commit().await?;
        self.student(&Scope::everything(), sid)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    async fn check(
        &self,
        school: &SchoolRow,
        input: &NewStudent,
        today: NaiveDate,
    ) -> Result<Checked, RegistryError> {
        // The two region codes the record names, looked up before the synchronous check.
        let regions = crate::regions::Regions(self.0);
        let mut known = std::collections::HashMap::new();
        let id_prefix = ResidentId::parse(input.id_number.trim())
            .ok()
            .map(|i| i.region_prefix().to_owned());
        for raw in [id_prefix.as_deref(), Some(input.household_region.trim())]
            .into_iter()
            .flatten()
        {
            if let Ok(code) = RegionCode::parse(raw) {
                let k = if regions.get(code).await?.is_some() {
                    RegionKnown::Current
                } else if !regions.history(code).await?.is_empty() {
                    RegionKnown::Retired
                } else {
                    RegionKnown::Unknown
                };
                known.insert(raw.to_owned(), k);
            }
        }
        check_student(
            school,
            input,
            today,
            &|c| known.get(c).copied().unwrap_or(RegionKnown::Unknown),
            false,
        )
        .map_err(RegistryError::Fields)
    }
}

/// Whether a GB/T 2260 code is in use, was in use once, or never was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionKnown {
    Current,
    Retired,
    Unknown,
}

/// Checks a student as entered against the school and the region codes (`region` answers for a
/// six-digit code): every problem is reported, each with its field.
pub(crate) fn check_student(
    school: &SchoolRow,
    input: &NewStudent,
    today: NaiveDate,
    region: &dyn Fn(&str) -> RegionKnown,
    grade_is_current: bool,
) -> Result<Checked, Vec<santong_domain::paging::FieldError>> {
    {
        let mut errors = vec![];
        let name = parse_person_name(&input.name);
        if name.is_none() {
            errors.push(rule("name", "student-bad-name"));
        }
        let sex = Sex::parse(&input.sex);
        if sex.is_none() {
            errors.push(rule("sex", "student-bad-sex"));
        }
        let birth_date = NaiveDate::parse_from_str(input.birth_date.trim(), "%Y-%m-%d")
            .ok()
            .filter(|d| *d <= today && d.year() >= 1900);
        if birth_date.is_none() {
            errors.push(rule("birth_date", "registry-bad-date"));
        }
        let ethnicity = Ethnicity::parse(&input.ethnicity);
        if ethnicity.is_none() {
            errors.push(rule("ethnicity", "student-bad-ethnicity"));
        }
        let id = match input.id_number.trim() {
            "" => None,
            raw => match ResidentId::parse(raw) {
                Ok(id) => Some(id),
                Err(e) => {
                    errors.push(rule(
                        "id_number",
                        match e {
                            santong_domain::registry::IdProblem::Shape => "student-id-shape",
                            santong_domain::registry::IdProblem::BirthDate => "student-id-date",
                            santong_domain::registry::IdProblem::CheckDigit => "student-id-check",
                        },
                    ));
                    None
                }
            },
        };
        // The number and the record must agree on birth date and sex.
        if let (Some(id), Some(b)) = (&id, birth_date)
            && id.birth_date() != (b.year(), b.month(), b.day())
        {
            errors.push(rule("id_number", "student-id-birth-mismatch"));
        }
        if let (Some(id), Some(s)) = (&id, sex)
            && id.sex() != s
        {
            errors.push(rule("id_number", "student-id-sex-mismatch"));
        }
        // A prefix no longer current is accepted and flagged; one never used is refused.
        let id_region_retired = match &id {
            Some(i) => match region(i.region_prefix()) {
                RegionKnown::Current => false,
                RegionKnown::Retired => true,
                RegionKnown::Unknown => {
                    errors.push(rule("id_number", "student-id-unknown-region"));
                    false
                }
            },
            None => false,
        };
        let household = match input.household_region.trim() {
            "" => None,
            h => match RegionCode::parse(h) {
                Ok(code) if region(h) == RegionKnown::Current => Some(code.to_string()),
                _ => {
                    errors.push(rule("household_region", "student-bad-region"));
                    None
                }
            },
        };
        let guardian_name = parse_person_name(&input.guardian_name);
        if guardian_name.is_none() {
            errors.push(rule("guardian_name", "student-bad-guardian"));
        }
        let relation = input.guardian_relation.trim();
        if relation.is_empty() || relation.chars().count() > 10 {
            errors.push(rule("guardian_relation", "student-bad-relation"));
        }
        let phone = parse_mobile(&input.guardian_phone);
        if phone.is_none() {
            errors.push(rule("guardian_phone", "account-bad-phone"));
        }
        let grades = school.grades.parse_grades();
        let grade = input
            .grade
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|g| grades.is_some_and(|r| r.contains(*g)));
        if grade.is_none() {
            errors.push(rule("grade", "student-bad-grade"));
        }
        let enrolled_on = match input.enrolled_on.trim() {
            "" => Some(today),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .ok()
                .filter(|d| *d <= today && *d >= school.opened_on),
        };
        if enrolled_on.is_none() {
            errors.push(rule("enrolled_on", "student-bad-enrol-date"));
        }
        // A first-grader is about six: more than three years off either way is a typo, not a
        // child (a 40-year-old in grade 1 is refused here).
        // An import gives the grade a pupil is in now, whenever they enrolled: judged today.
        let judged_on = if grade_is_current {
            Some(today)
        } else {
            enrolled_on
        };
        if let (Some(b), Some(g), Some(on)) = (birth_date, grade, judged_on) {
            let age = on.years_since(b).map(i64::from).unwrap_or(-1);
            let expected = i64::from(g) + 5;
            if (age - expected).abs() > 3 {
                errors.push(rule("birth_date", "student-age-outlier"));
            }
        }
        if school.status() != Some(SchoolStatus::Open) {
            errors.push(rule("school", "registry-not-open"));
        }
        match (
            name,
            sex,
            birth_date,
            ethnicity,
            guardian_name,
            phone,
            grade,
            enrolled_on,
        ) {
            (
                Some(name),
                Some(sex),
                Some(birth_date),
                Some(ethnicity),
                Some(guardian_name),
                Some(guardian_phone),
                Some(grade),
                Some(enrolled_on),
            ) if errors.is_empty() => Ok(Checked {
                name,
                sex,
                birth: (birth_date.year(), birth_date.month(), birth_date.day()),
                birth_date,
                ethnicity,
                id,
                id_region_retired,
                household,
                guardian_name,
                guardian_relation: relation.to_owned(),
                guardian_phone,
                grade,
                enrolled_on,
            }),
            _ => Err(errors),
        }
    }
}

/// A correction of a student's personal data (更正): empty fields stay as they are; the reason is
/// required. (`Debug` by hand: it may hold an ID number.)
#[derive(Clone, Default, serde::Deserialize)]
pub struct Correction {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub sex: String,
    #[serde(default)]
    pub birth_date: String,
    #[serde(default)]
    pub ethnicity: String,
    #[serde(default)]
    pub id_number: String,
    #[serde(default)]
    pub reason: String,
}

impl std::fmt::Debug for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correction").finish_non_exhaustive()
    }
}

/// One corrected field, with its values before and after. (Not `Debug`-printed whole: the
/// values of an ID number or a G-number are shown through [`CorrectionRow::shown`].)
#[derive(Clone, sqlx::FromRow)]
pub struct CorrectionRow {
    pub id: Uuid,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub reason: String,
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
}

impl std::fmt::Debug for CorrectionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorrectionRow")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl CorrectionRow {
    /// The values before and after as lists show them (ID numbers and G-numbers masked).
    pub fn shown(&self) -> (String, String) {
        let show = |v: &Option<String>| match (self.field.as_str(), v) {
            (_, None) => String::new(),
            ("id_number", Some(v)) => ResidentId::parse(v)
                .map(|i| i.masked())
                .unwrap_or_else(|_| "****".into()),
            ("student_number", Some(v)) => mask_number(v),
            (_, Some(v)) => v.clone(),
        };
        (show(&self.old_value), show(&self.new_value))
    }
}

impl Students<'_> {
    /// The corrections of a student's record, oldest first, if the student is in `scope`.
    pub async fn corrections(&self, scope: &Scope, id: Uuid) -> crate::Result<Vec<CorrectionRow>> {
        if self.student(scope, id).await?.is_none() {
            return Ok(vec![]);
        }
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT id, field, old_value, new_value, reason, actor, recorded_at \
                FROM student_correction WHERE student_id = $1 ORDER BY recorded_at, id",
            ))
            .bind(id)
            .fetch_all(ex)
            .await?
        }))
    }

    /// Corrects a student's personal data (needs `registry_manage` at the student's school):
    /// the merged record is checked like an enrolment, each changed field is kept with its old
    /// value, and an ID number makes the national student number G + that number (refused if
    /// another record has it: the same child is not registered twice).
    pub async fn correct(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        input: &Correction,
    ) -> Result<Placed, RegistryError> {
        let placed = self
            .student(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let school = Registry(self.0)
            .school(&Scope::everything(), &placed.school_code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        let reason = input.reason.trim();
        if reason.is_empty() || reason.chars().count() > 100 {
            return Err(refused("reason", "student-event-reason"));
        }
        // The reason is shown with the lineage and to the other school of a duplicate case.
        if crate::registry::holds_number(reason) {
            return Err(refused("reason", "student-reason-no-numbers"));
        }
        let st = &placed.student;
        let or = |v: &str, current: &str| {
            if v.trim().is_empty() {
                current.to_owned()
            } else {
                v.trim().to_owned()
            }
        };
        // The merged record, checked as a whole (the grade as now, the age against today).
        let merged = NewStudent {
            name: or(&input.name, &st.name),
            sex: or(&input.sex, &st.sex),
            birth_date: or(&input.birth_date, &st.birth_date.to_string()),
            ethnicity: or(&input.ethnicity, &st.ethnicity),
            id_number: or(&input.id_number, st.id_number.as_deref().unwrap_or("")),
            household_region: st.household_region.clone().unwrap_or_default(),
            guardian_name: st.guardian_name.clone(),
            guardian_relation: st.guardian_relation.clone(),
            guardian_phone: st.guardian_phone.clone(),
            grade: placed.grade.to_string(),
            enrolled_on: String::new(),
            ..Default::default()
        };
        let c = self.check(&school, &merged, today()).await?;
        let new_id = c.id.as_ref().map(|i| i.as_str().to_owned());
        // A temporary number stays while its ID number is unchanged: it becomes official when the
        // duplicate case it came from is resolved.
        let new_number = match &c.id {
            Some(_) if new_id == st.id_number && st.student_number.starts_with('L') => {
                st.student_number.clone()
            }
            Some(i) => StudentNumber::official(i).as_str().to_owned(),
            None => st.student_number.clone(),
        };
        let changes: Vec<(&str, Option<String>, Option<String>)> = [
            ("name", Some(st.name.clone()), Some(c.name.clone())),
            ("sex", Some(st.sex.clone()), Some(c.sex.code().to_owned())),
            (
                "birth_date",
                Some(st.birth_date.to_string()),
                Some(c.birth_date.to_string()),
            ),
            (
                "ethnicity",
                Some(st.ethnicity.clone()),
                Some(c.ethnicity.code()),
            ),
            ("id_number", st.id_number.clone(), new_id.clone()),
            (
                "student_number",
                Some(st.student_number.clone()),
                Some(new_number.clone()),
            ),
        ]
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .collect();
        if changes.is_empty() {
            return Err(refused("reason", "student-nothing-to-correct"));
        }
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        // The record, the records of its open duplicate cases and the others with its ID number
        // (a case may turn to one of them), locked in id order like every writer of students.
        let mut lock = crate::duplicates::related(&mut tx, id, st.id_number.as_deref()).await?;
        lock.push(id);
        lock.sort();
        lock.dedup();
        for s in lock {
            crate::lifecycle::lock_student(&mut tx, s).await?;
        }
        let updated = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE student SET name = $1, sex = $2, birth_date = $3, ethnicity = $4, \
                id_number = $5, id_region_retired = $6, student_number = $7 \
                WHERE id = $8 AND student_number = $9 AND NOT EXISTS (SELECT 1 FROM student o \
                WHERE o.student_number = $7 AND o.id <> $8)",
            ))
            .bind(&c.name)
            .bind(c.sex.code())
            .bind(c.birth_date)
            .bind(c.ethnicity.code())
            .bind(&new_id)
            .bind(c.id_region_retired)
            .bind(&new_number)
            .bind(id)
            .bind(&st.student_number)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            drop(tx);
            audit::record(
                self.0,
                &actor.entry(
                    "student.duplicate",
                    &id.to_string(),
                    "denied",
                    &school.node(),
                ),
            )
            .await?;
            return Err(refused("id_number", "student-already-enrolled"));
        }
        let who = actor.name();
        crate::duplicates::lineage(&mut tx, id, &changes, reason, &who, now).await?;
        if new_id != st.id_number {
            let change = crate::duplicates::IdChange {
                student: id,
                old_id_number: st.id_number.as_deref(),
                old_number: &st.student_number,
                new_number: &new_number,
                reason,
            };
            crate::duplicates::after_correction(&mut tx, &change, &actor, &school.node(), now)
                .await?;
        }
        // The fields, never their values: those may be an ID number.
        let mut e = actor.entry(
            "student.correct",
            &id.to_string(),
            "success",
            &school.node(),
        );
        e.detail = changes
            .iter()
            .map(|(f, _, _)| *f)
            .collect::<Vec<_>>()
            .join(",");
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.student(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }
}

pub(crate) struct Checked {
    pub(crate) name: String,
    pub(crate) sex: Sex,
    pub(crate) birth_date: NaiveDate,
    pub(crate) birth: (i32, u32, u32),
    pub(crate) ethnicity: Ethnicity,
    pub(crate) id: Option<ResidentId>,
    pub(crate) id_region_retired: bool,
    pub(crate) household: Option<String>,
    pub(crate) guardian_name: String,
    pub(crate) guardian_relation: String,
    pub(crate) guardian_phone: String,
    pub(crate) grade: u8,
    pub(crate) enrolled_on: NaiveDate,
}

async fn school_node(code: &str, db: &Db) -> crate::Result<Node> {
    Ok(Registry(db)
        .school(&Scope::everything(), code)
        .await?
        .map(|s| s.node())
        .unwrap_or(Node::Nation))
}

trait GradesText {
    fn parse_grades(&self) -> Option<santong_domain::registry::Grades>;
}

impl GradesText for String {
    fn parse_grades(&self) -> Option<santong_domain::registry::Grades> {
        santong_domain::registry::Grades::parse(self)
    }
}

/// The next J-number of an area and birth date: one after the highest in use (a range scan on the
/// unique index), and after `tried` when a concurrent enrolment took that one first.
pub(crate) async fn next_j_number(
    tx: &mut crate::Tx,
    area: &str,
    birth: (i32, u32, u32),
    tried: Option<u16>,
) -> Result<(StudentNumber, u16), RegistryError> {
    let prefix = format!("J{area}{:04}{:02}{:02}", birth.0, birth.1, birth.2);
    let highest: Option<String> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_scalar(sql(
            "SELECT MAX(student_number) FROM student WHERE student_number >= $1 \
            AND student_number < $2",
        ))
        .bind(&prefix)
        .bind(format!("{prefix}~"))
        .fetch_one(ex)
        .await?
    });
    let next = highest
        .and_then(|h| h.get(15..18).and_then(|s| s.parse::<u16>().ok()))
        .map_or(0, |n| n + 1)
        .max(tried.map_or(0, |t| t + 1));
    StudentNumber::without_id(area, birth, next)
        .map(|n| (n, next))
        .ok_or(refused("birth_date", "student-no-number-left"))
}
