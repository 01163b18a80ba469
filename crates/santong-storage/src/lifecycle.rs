//! A student's lifecycle after enrolment: events recorded by hand (repeat, skip, suspend, resume,
//! drop out, death, abroad, graduate), undo by a compensating event, and the year-end batch that
//! promotes a school's or a county's students and can be undone as a whole.
//!
//! Each write reads the student's event in force inside its transaction (PostgreSQL locks the
//! student row first), so two people acting on one student at once are serialised and the second
//! is judged against what the first wrote.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use santong_domain::identity::{Node, Permission, Scope};
use santong_domain::lifecycle::{EventKind, Status};
use santong_domain::registry::{Grades, SchoolStatus, SchoolYear};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::{Registry, RegistryError, SchoolRow, refused, rule, today};
use crate::students::{Students, push_placing};
use crate::{Db, Tx, db_query};

/// One event of a student's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: Uuid,
    pub student_id: Uuid,
    pub kind: String,
    pub code: String,
    pub status: String,
    pub school_code: String,
    pub grade: i32,
    pub from_school: Option<String>,
    pub from_grade: Option<i32>,
    pub effective_on: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    pub approval_ref: Option<String>,
    pub undone_by: Option<Uuid>,
    pub undoes: Option<Uuid>,
    pub batch_id: Option<Uuid>,
}

const EVENT_COLUMNS: &str = "id, student_id, kind, code, status, school_code, grade, from_school, \
    from_grade, effective_on, recorded_at, actor, reason, approval_ref, undone_by, undoes, batch_id";

/// An event as entered on a student's page: raw text, checked by [`Students::record`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NewEvent {
    pub kind: String,
    /// `YYYY-MM-DD`; empty: today.
    #[serde(default)]
    pub effective_on: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub approval_ref: String,
}

/// A row to write into `student_event`.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) id: Uuid,
    pub(crate) student_id: Uuid,
    pub(crate) kind: EventKind,
    pub(crate) status: Status,
    pub(crate) school_code: String,
    pub(crate) grade: i32,
    pub(crate) from_school: Option<String>,
    pub(crate) from_grade: Option<i32>,
    pub(crate) effective_on: NaiveDate,
    pub(crate) reason: String,
    pub(crate) approval_ref: Option<String>,
    pub(crate) undoes: Option<Uuid>,
    pub(crate) batch_id: Option<Uuid>,
}

pub(crate) async fn write_events(
    tx: &mut Tx,
    rows: &[Write],
    now: DateTime<Utc>,
    actor: &Actor<'_>,
) -> crate::Result<()> {
    let (name, actor_id) = (actor.name(), actor.id());
    insert_batched(
        tx,
        "INSERT INTO student_event (id, student_id, kind, code, status, school_code, grade, \
        from_school, from_grade, effective_on, recorded_at, actor, actor_id, reason, approval_ref, \
        undoes, batch_id) VALUES ",
        "",
        rows,
        |w| {
            vec![
                Val::Uuid(w.id),
                Val::Uuid(w.student_id),
                Val::Text(w.kind.as_str().into()),
                Val::Text(w.kind.code().into()),
                Val::Text(w.status.as_str().into()),
                Val::Text(w.school_code.clone()),
                Val::Int(w.grade),
                Val::OptText(w.from_school.clone()),
                Val::OptInt(w.from_grade),
                Val::Date(w.effective_on),
                Val::Time(now),
                Val::Text(name.clone()),
                Val::OptUuid(actor_id),
                Val::Text(w.reason.clone()),
                Val::OptText(w.approval_ref.clone()),
                Val::OptUuid(w.undoes),
                Val::OptUuid(w.batch_id),
            ]
        },
    )
    .await
}

/// Serialises writers on one student (PostgreSQL; SQLite's write transactions are exclusive).
pub(crate) async fn lock_student(tx: &mut Tx, id: Uuid) -> crate::Result<bool> {
    let found: Option<Uuid> = match tx {
        Tx::Sqlite(t) => {
            sqlx::query_scalar("SELECT id FROM student WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut **t)
                .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_scalar("SELECT id FROM student WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut **t)
                .await?
        }
    };
    Ok(found.is_some())
}

/// The student's event in force now, read inside the writing transaction.
pub(crate) async fn in_force(tx: &mut Tx, student: Uuid) -> crate::Result<Option<EventRow>> {
    let rows: Vec<EventRow> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT id, student_id, kind, code, status, school_code, grade, from_school, \
            from_grade, effective_on, recorded_at, actor, reason, approval_ref, undone_by, undoes, \
            batch_id FROM student_event WHERE student_id = $1 AND undone_by IS NULL \
            AND kind <> 'undo' ORDER BY effective_on DESC, recorded_at DESC, id DESC LIMIT 1",
        ))
        .bind(student)
        .fetch_all(ex)
        .await?
    });
    Ok(rows.into_iter().next())
}

fn parse_date(raw: &str, today: NaiveDate) -> Option<NaiveDate> {
    match raw.trim() {
        "" => Some(today),
        d => NaiveDate::parse_from_str(d, "%Y-%m-%d").ok(),
    }
}

/// One event at a school, with whom it concerns (the school's 学籍变动 list).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchoolEventRow {
    pub id: Uuid,
    pub student_id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub student_number: String,
    pub kind: String,
    pub code: String,
    pub status: String,
    pub school_code: String,
    pub grade: i32,
    pub from_school: Option<String>,
    pub effective_on: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    pub undone_by: Option<Uuid>,
}

impl SchoolEventRow {
    pub fn number_masked(&self) -> String {
        crate::students::mask_number(&self.student_number)
    }
}

fn grades_of(school: &SchoolRow) -> Option<Grades> {
    Grades::parse(&school.grades)
}

impl Students<'_> {
    /// The student's whole history, oldest first, if the student is in `scope`. (Events at
    /// earlier schools are part of the dossier and shown with it.)
    pub async fn events(&self, scope: &Scope, student: Uuid) -> crate::Result<Vec<EventRow>> {
        if self.student(scope, student).await?.is_none() {
            return Ok(vec![]);
        }
        db_query!(self.0, read, |sql, ex| {
            Ok(sqlx::query_as(sql(
                "SELECT id, student_id, kind, code, status, school_code, grade, from_school, \
                from_grade, effective_on, recorded_at, actor, reason, approval_ref, undone_by, \
                undoes, batch_id FROM student_event WHERE student_id = $1 \
                ORDER BY effective_on, recorded_at, id",
            ))
            .bind(student)
            .fetch_all(ex)
            .await?)
        })
    }

    /// The events at `school` (recorded there, or leaving it) effective from `from` to `until`,
    /// newest first, if the school is in `scope`.
    pub async fn school_events(
        &self,
        scope: &Scope,
        school: &str,
        from: NaiveDate,
        until: NaiveDate,
        limit: u64,
        offset: u64,
    ) -> crate::Result<crate::Page<SchoolEventRow>> {
        let filter = |q: &mut DynQuery| {
            q.push(
                " FROM student_event e JOIN student st ON st.id = e.student_id \
                JOIN school s ON s.code = ",
            )
            .bind(school.to_owned())
            .push(
                " WHERE (e.school_code = s.code OR e.from_school = s.code) AND e.effective_on >= ",
            )
            .bind(from)
            .push(" AND e.effective_on <= ")
            .bind(until)
            .push(" AND");
            crate::scope::push(q, scope, "s.county", "s.code");
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT e.id, e.student_id, st.name, st.student_number, e.kind, e.code, e.status, \
            e.school_code, e.grade, e.from_school, e.effective_on, e.recorded_at, e.actor, \
            e.reason, e.undone_by",
        );
        filter(&mut q);
        q.push(" ORDER BY e.effective_on DESC, e.recorded_at DESC, e.id LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*)");
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(crate::Page { items, total })
    }

    /// The student's current school, for a writer who must hold `registry_manage` there.
    async fn managed_school(
        &self,
        actor: &Actor<'_>,
        scope: &Scope,
        student: Uuid,
    ) -> Result<SchoolRow, RegistryError> {
        let placed = self
            .student(scope, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let school = Registry(self.0)
            .school(&Scope::everything(), &placed.school_code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        Ok(school)
    }

    /// Records a change of status by hand (one of [`EventKind::MANUAL`]): checked against the
    /// event in force, written with its type code, audited.
    pub async fn record(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        student: Uuid,
        input: &NewEvent,
    ) -> Result<EventRow, RegistryError> {
        let school = self.managed_school(&actor, scope, student).await?;
        let today = today();
        let mut errors = vec![];
        let kind = EventKind::parse(input.kind.trim()).filter(|k| EventKind::MANUAL.contains(k));
        if kind.is_none() {
            errors.push(rule("kind", "student-event-bad-kind"));
        }
        let on = parse_date(&input.effective_on, today).filter(|d| *d <= today);
        if on.is_none() {
            errors.push(rule("effective_on", "student-event-bad-date"));
        }
        let reason = input.reason.trim();
        if reason.is_empty() || reason.chars().count() > 100 {
            errors.push(rule("reason", "student-event-reason"));
        }
        let approval = input.approval_ref.trim();
        if approval.chars().count() > 50 {
            errors.push(rule("approval_ref", "student-event-approval"));
        }
        let (Some(kind), Some(on)) = (kind, on) else {
            return Err(RegistryError::Fields(errors));
        };
        if !errors.is_empty() {
            return Err(RegistryError::Fields(errors));
        }
        let mut tx = self.0.begin().await?;
        if !lock_student(&mut tx, student).await? {
            return Err(RegistryError::NotFound);
        }
        let last = in_force(&mut tx, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let last_kind = EventKind::parse(&last.kind).unwrap_or(EventKind::Enrol);
        let status = Status::parse(&last.status).unwrap_or(Status::Out);
        if last.school_code != school.code {
            // Moved since the page was read.
            return Err(RegistryError::Stale);
        }
        if !kind.may_follow(status, last_kind) {
            return Err(refused("kind", "student-event-not-now"));
        }
        // History stays linear: nothing is slipped in before the event in force.
        if on < last.effective_on {
            return Err(refused("effective_on", "student-event-before-last"));
        }
        let grade = u8::try_from(last.grade).unwrap_or(0);
        let after = kind.grade_after(grade);
        let grades = grades_of(&school);
        match kind {
            EventKind::Graduate if grades.is_some_and(|g| g.to != grade) => {
                return Err(refused("kind", "student-graduate-not-last"));
            }
            EventKind::Skip | EventKind::Promote if !grades.is_some_and(|g| g.contains(after)) => {
                return Err(refused("kind", "student-event-grade"));
            }
            _ => {}
        }
        if kind.leaves() == Status::In && school.status() != Some(SchoolStatus::Open) {
            return Err(refused("kind", "registry-not-open"));
        }
        let w = Write {
            id: Uuid::now_v7(),
            student_id: student,
            kind,
            status: kind.leaves(),
            school_code: school.code.clone(),
            grade: i32::from(after),
            from_school: None,
            from_grade: Some(last.grade),
            effective_on: on,
            reason: reason.to_owned(),
            approval_ref: (!approval.is_empty()).then(|| approval.to_owned()),
            undoes: None,
            batch_id: None,
        };
        let now = Utc::now();
        write_events(&mut tx, std::slice::from_ref(&w), now, &actor).await?;
        let mut e = actor.entry(
            "student.event",
            &student.to_string(),
            "success",
            &school.node(),
        );
        e.detail = kind.as_str().to_owned();
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.event(w.id).await?.ok_or(RegistryError::NotFound)
    }

    async fn event(&self, id: Uuid) -> crate::Result<Option<EventRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT ")
            .push(EVENT_COLUMNS)
            .push(" FROM student_event WHERE id = ")
            .bind(id);
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// Undoes the student's event in force (a mistake) by writing a compensating event and
    /// marking the original undone; nothing is deleted. Only the latest event can be undone, and
    /// never the enrolment (a wrong record is corrected, not unborn).
    pub async fn undo(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        student: Uuid,
        event: Uuid,
        reason: &str,
    ) -> Result<EventRow, RegistryError> {
        let school = self.managed_school(&actor, scope, student).await?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 100 {
            return Err(refused("reason", "student-event-reason"));
        }
        let mut tx = self.0.begin().await?;
        if !lock_student(&mut tx, student).await? {
            return Err(RegistryError::NotFound);
        }
        let last = in_force(&mut tx, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if last.id != event {
            return Err(refused("event", "student-undo-not-latest"));
        }
        if last.kind == EventKind::Enrol.as_str() {
            return Err(refused("event", "student-undo-enrol"));
        }
        // A completed transfer was approved by both sides; it is reversed by another transfer.
        if last.kind == EventKind::TransferIn.as_str() {
            return Err(refused("event", "student-undo-transfer"));
        }
        // A merge is undone from its duplicate case, which reopens with it.
        if last.kind == EventKind::Merge.as_str() {
            return Err(refused("event", "student-undo-merge"));
        }
        let undo_id = Uuid::now_v7();
        let now = Utc::now();
        let w = Write {
            id: undo_id,
            student_id: student,
            kind: EventKind::Undo,
            status: Status::parse(&last.status).unwrap_or(Status::Out),
            school_code: last.school_code.clone(),
            grade: last.grade,
            from_school: None,
            from_grade: None,
            effective_on: today().max(last.effective_on),
            reason: reason.to_owned(),
            approval_ref: None,
            undoes: Some(last.id),
            batch_id: None,
        };
        write_events(&mut tx, std::slice::from_ref(&w), now, &actor).await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE student_event SET undone_by = $1 WHERE id = $2 AND undone_by IS NULL",
            ))
            .bind(undo_id)
            .bind(last.id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        let mut e = actor.entry(
            "student.undo",
            &student.to_string(),
            "success",
            &school.node(),
        );
        e.detail = last.kind.clone();
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.event(undo_id).await?.ok_or(RegistryError::NotFound)
    }
}

// ----- Year-end batch ---------------------------------------------------------------------------

/// What a year-end batch covers: one school, or every school of a county.
#[derive(Debug, Clone)]
pub enum BatchTarget {
    School(String),
    County(String),
}

/// The batch as asked for: raw text, checked by [`YearEnd::plan`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct YearEndInput {
    /// `YYYY-MM-DD`; empty: 1 September of the current school year.
    #[serde(default)]
    pub effective_on: String,
    /// For a school's batch: the school its last grade goes on to (empty: they graduate).
    #[serde(default)]
    pub receiving_school: String,
}

/// Why a student is listed in the dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exception {
    /// Suspended: left where they are.
    Suspended,
    /// Has an event on or after the batch date already: left where they are.
    AlreadyMoved,
    /// A transfer is waiting: left where they are until it is decided.
    PendingTransfer,
    /// More than two years older or younger than the grade they go to: moved, but worth a look.
    AgeOutlier,
}

impl Exception {
    pub fn key(self) -> &'static str {
        match self {
            Exception::Suspended => "batch-exc-suspended",
            Exception::AlreadyMoved => "batch-exc-already",
            Exception::AgeOutlier => "batch-exc-age",
            Exception::PendingTransfer => "batch-exc-transfer",
        }
    }

    /// Whether the student is left out of the batch.
    pub fn skips(self) -> bool {
        !matches!(self, Exception::AgeOutlier)
    }
}

/// A student the dry run lists.
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionRow {
    pub student_id: Uuid,
    pub name: String,
    pub school_code: String,
    pub grade: i32,
    pub exception: Exception,
}

/// What a batch would do (the dry run) or did.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub county: String,
    pub school_code: Option<String>,
    pub effective_on: NaiveDate,
    pub receiving_school: Option<String>,
    pub promoted: u64,
    pub graduated: u64,
    pub progressed: u64,
    pub skipped: u64,
    /// Students moving per grade they are in now.
    pub by_grade: Vec<(i32, u64)>,
    pub exceptions: Vec<ExceptionRow>,
    #[serde(skip)]
    writes: Vec<Write>,
}

/// A batch as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub county: String,
    pub school_code: Option<String>,
    pub effective_on: NaiveDate,
    pub receiving_school: Option<String>,
    pub promoted: i32,
    pub graduated: i32,
    pub progressed: i32,
    pub skipped: i32,
    pub created_at: DateTime<Utc>,
    pub actor: String,
    pub undone_at: Option<DateTime<Utc>>,
    pub undone_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    student_id: Uuid,
    name: String,
    birth_date: NaiveDate,
    school_code: String,
    grade: i32,
    status: String,
    effective_on: NaiveDate,
    grades: String,
    moved_this_year: bool,
}

pub struct YearEnd<'a>(pub &'a Db);

impl YearEnd<'_> {
    /// Where the target is, and whether the actor may run a batch there.
    async fn resolve(
        &self,
        actor: &Actor<'_>,
        target: &BatchTarget,
    ) -> Result<(String, Option<SchoolRow>, Node), RegistryError> {
        match target {
            BatchTarget::School(code) => {
                let school = Registry(self.0)
                    .school(&Scope::everything(), code)
                    .await?
                    .ok_or(RegistryError::NotFound)?;
                let node = school.node();
                if !actor.may(Permission::RegistryView, &node) {
                    return Err(RegistryError::NotFound);
                }
                if !actor.may(Permission::RegistryManage, &node) {
                    return Err(RegistryError::Forbidden);
                }
                Ok((school.county.clone(), Some(school), node))
            }
            BatchTarget::County(code) => {
                let region = santong_domain::region::RegionCode::parse(code)
                    .map_err(|_| RegistryError::NotFound)?;
                // Batches run per county (a county's officials promote its schools); a city or a
                // province code is refused rather than matching nothing.
                match crate::regions::Regions(self.0).get(region).await? {
                    None => return Err(RegistryError::NotFound),
                    Some(r) if r.level != "county" => {
                        return Err(refused("county", "batch-not-county"));
                    }
                    Some(_) => {}
                }
                let node = Node::Region(region);
                if !actor.may(Permission::RegistryView, &node) {
                    return Err(RegistryError::NotFound);
                }
                if !actor.may(Permission::RegistryManage, &node) {
                    return Err(RegistryError::Forbidden);
                }
                Ok((region.to_string(), None, node))
            }
        }
    }

    /// The dry run: what applying would do, and the students it leaves alone or flags.
    pub async fn plan(
        &self,
        actor: &Actor<'_>,
        target: &BatchTarget,
        input: &YearEndInput,
    ) -> Result<Plan, RegistryError> {
        let (county, school, _) = self.resolve(actor, target).await?;
        let (on, receiving) = self.check(actor, school.as_ref(), input).await?;
        build_plan(
            self.0,
            None,
            &county,
            school.as_ref(),
            on,
            receiving.as_ref(),
        )
        .await
        .map_err(Into::into)
    }

    async fn check(
        &self,
        actor: &Actor<'_>,
        school: Option<&SchoolRow>,
        input: &YearEndInput,
    ) -> Result<(NaiveDate, Option<SchoolRow>), RegistryError> {
        let today = today();
        let mut errors = vec![];
        let on = match input.effective_on.trim() {
            "" => NaiveDate::from_ymd_opt(SchoolYear::of(today.year(), today.month()).0, 9, 1),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d").ok(),
        }
        .filter(|d| *d <= today);
        if on.is_none() {
            errors.push(rule("effective_on", "student-event-bad-date"));
        }
        let receiving = match input.receiving_school.trim() {
            "" => None,
            code => {
                // Sending pupils on puts them on the receiving school's roster: that takes the
                // right to manage it, and a school out of sight is simply not found.
                let r = Registry(self.0)
                    .school(&Scope::everything(), code)
                    .await?
                    .filter(|r| actor.may(Permission::RegistryManage, &r.node()));
                let last = school.and_then(grades_of).map(|g| g.to);
                match (r, last) {
                    (Some(r), Some(last))
                        if r.status() == Some(SchoolStatus::Open)
                            && grades_of(&r).is_some_and(|g| g.contains(last + 1)) =>
                    {
                        Some(r)
                    }
                    (Some(r), _) if r.status() != Some(SchoolStatus::Open) => {
                        errors.push(rule("receiving_school", "registry-not-open"));
                        None
                    }
                    _ => {
                        errors.push(rule("receiving_school", "batch-bad-receiving"));
                        None
                    }
                }
            }
        };
        match on {
            Some(on) if errors.is_empty() => Ok((on, receiving)),
            _ => Err(RegistryError::Fields(errors)),
        }
    }

    /// Applies the batch in one transaction: every event carries the batch, so it can be undone.
    pub async fn apply(
        &self,
        actor: Actor<'_>,
        target: &BatchTarget,
        input: &YearEndInput,
    ) -> Result<BatchRow, RegistryError> {
        let (county, school, node) = self.resolve(&actor, target).await?;
        let (on, receiving) = self.check(&actor, school.as_ref(), input).await?;
        let mut tx = self.0.begin().await?;
        let mut plan = build_plan(
            self.0,
            Some(&mut tx),
            &county,
            school.as_ref(),
            on,
            receiving.as_ref(),
        )
        .await?;
        if plan.writes.is_empty() {
            return Err(refused("batch", "batch-nothing"));
        }
        let batch = Uuid::now_v7();
        let now = Utc::now();
        for w in &mut plan.writes {
            w.batch_id = Some(batch);
        }
        let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO student_batch (id, county, school_code, effective_on, \
                receiving_school, promoted, graduated, progressed, skipped, created_at, actor) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            ))
            .bind(batch)
            .bind(&county)
            .bind(&plan.school_code)
            .bind(on)
            .bind(&plan.receiving_school)
            .bind(count(plan.promoted))
            .bind(count(plan.graduated))
            .bind(count(plan.progressed))
            .bind(count(plan.skipped))
            .bind(now)
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        write_events(&mut tx, &plan.writes, now, &actor).await?;
        let mut e = actor.entry("student.batch", &batch.to_string(), "success", &node);
        e.detail = format!(
            "promoted={} graduated={} progressed={} skipped={}",
            plan.promoted, plan.graduated, plan.progressed, plan.skipped
        );
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.batch(&Scope::everything(), batch)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// A batch, if its county (or school) is in `scope`.
    pub async fn batch(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<BatchRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT b.id, b.county, b.school_code, b.effective_on, b.receiving_school, \
            b.promoted, b.graduated, b.progressed, b.skipped, b.created_at, b.actor, b.undone_at, \
            b.undone_by FROM student_batch b WHERE b.id = ",
        )
        .bind(id)
        .push(" AND");
        crate::scope::push(&mut q, scope, "b.county", "b.school_code");
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// The latest batches in `scope`, newest first.
    pub async fn batches(&self, scope: &Scope, limit: u64) -> crate::Result<Vec<BatchRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT b.id, b.county, b.school_code, b.effective_on, b.receiving_school, \
            b.promoted, b.graduated, b.progressed, b.skipped, b.created_at, b.actor, b.undone_at, \
            b.undone_by FROM student_batch b WHERE",
        );
        crate::scope::push(&mut q, scope, "b.county", "b.school_code");
        q.push(" ORDER BY b.created_at DESC LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(100));
        q.fetch_all(self.0).await
    }

    /// Undoes a whole batch: a compensating event for each of its events still in force. Refused
    /// (nothing written) while any of its students has a later event: undo that first.
    pub async fn undo(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
    ) -> Result<BatchRow, RegistryError> {
        let batch = self
            .batch(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let target = match &batch.school_code {
            Some(s) => BatchTarget::School(s.clone()),
            None => BatchTarget::County(batch.county.clone()),
        };
        let (_, _, node) = self.resolve(&actor, &target).await?;
        let mut tx = self.0.begin().await?;
        // Marks the batch first: of two undos at once, the second finds it undone.
        let now = Utc::now();
        let marked = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE student_batch SET undone_at = $1, undone_by = $2 \
                WHERE id = $3 AND undone_at IS NULL",
            ))
            .bind(now)
            .bind(actor.name())
            .bind(id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if marked == 0 {
            return Err(refused("batch", "batch-already-undone"));
        }
        if self.0.is_postgres() {
            // Hold the batch's students still while checking that nothing came after it.
            let mut l = DynQuery::new(true);
            l.push("SELECT id FROM student WHERE id IN (SELECT student_id FROM student_event WHERE batch_id = ")
                .bind(id)
                .push(") ORDER BY id FOR UPDATE");
            let _: Vec<(Uuid,)> = l.fetch_all_in(&mut tx).await?;
        }
        let later: i64 = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM student_event b WHERE b.batch_id = $1 \
                AND b.kind <> 'undo' AND b.undone_by IS NULL AND EXISTS (\
                SELECT 1 FROM student_event l WHERE l.student_id = b.student_id \
                AND l.undone_by IS NULL AND l.kind <> 'undo' AND l.id <> b.id \
                AND (l.effective_on > b.effective_on OR (l.effective_on = b.effective_on \
                AND l.recorded_at > b.recorded_at)))",
            ))
            .bind(id)
            .fetch_one(ex)
            .await?
        });
        if later > 0 {
            return Err(refused("batch", "batch-later-events"));
        }
        let undone = undo_batch_events(&mut tx, id, "batch", now, &actor).await?;
        let mut e = actor.entry("student.batch_undo", &id.to_string(), "success", &node);
        e.detail = format!("events={undone}");
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.batch(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }
}

/// Undoes every event of batch `batch` still in force (a year-end batch, an import): a
/// compensating `undo` event each, carrying the batch, and the events marked undone by them.
/// Returns how many.
pub(crate) async fn undo_batch_events(
    tx: &mut Tx,
    batch: Uuid,
    reason: &str,
    now: DateTime<Utc>,
    actor: &Actor<'_>,
) -> crate::Result<usize> {
    #[derive(sqlx::FromRow)]
    struct Target {
        id: Uuid,
        student_id: Uuid,
        status: String,
        school_code: String,
        grade: i32,
        effective_on: NaiveDate,
    }
    let targets: Vec<Target> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT id, student_id, status, school_code, grade, effective_on \
            FROM student_event WHERE batch_id = $1 AND kind <> 'undo' AND undone_by IS NULL",
        ))
        .bind(batch)
        .fetch_all(ex)
        .await?
    });
    let today = today();
    let writes: Vec<Write> = targets
        .iter()
        .map(|t| Write {
            id: Uuid::now_v7(),
            student_id: t.student_id,
            kind: EventKind::Undo,
            status: Status::parse(&t.status).unwrap_or(Status::Out),
            school_code: t.school_code.clone(),
            grade: t.grade,
            from_school: None,
            from_grade: None,
            effective_on: today.max(t.effective_on),
            reason: reason.to_owned(),
            approval_ref: None,
            undoes: Some(t.id),
            batch_id: Some(batch),
        })
        .collect();
    write_events(tx, &writes, now, actor).await?;
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE student_event SET undone_by = (SELECT u.id FROM student_event u \
            WHERE u.undoes = student_event.id) \
            WHERE batch_id = $1 AND kind <> 'undo' AND undone_by IS NULL",
        ))
        .bind(batch)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(writes.len())
}

/// Reads every student holding a place in the target on `on` (locking them on PostgreSQL) and
/// decides what happens to each.
async fn build_plan(
    db: &Db,
    tx: Option<&mut Tx>,
    county: &str,
    school: Option<&SchoolRow>,
    on: NaiveDate,
    receiving: Option<&SchoolRow>,
) -> crate::Result<Plan> {
    let pg = db.is_postgres();
    let year = SchoolYear::of_date(on);
    let where_target = |q: &mut DynQuery| {
        q.push(" s.county = ").bind(county.to_owned());
        if let Some(s) = school {
            q.push(" AND e.school_code = ").bind(s.code.clone());
        }
    };
    let mut q = DynQuery::new(pg);
    q.push(
        "SELECT st.id AS student_id, st.name, st.birth_date, e.school_code, \
        e.grade, e.status, e.effective_on, s.grades, \
        EXISTS (SELECT 1 FROM student_event p WHERE p.student_id = st.id \
        AND p.kind IN ('promote', 'progress', 'skip', 'repeat') AND p.undone_by IS NULL \
        AND p.effective_on >= ",
    )
    .bind(year.start())
    .push(" AND p.effective_on <= ")
    .bind(year.end())
    .push(
        ") AS moved_this_year FROM student st \
        JOIN student_event e ON e.student_id = st.id \
        JOIN school s ON s.code = e.school_code WHERE",
    );
    // In force today (not on the batch date): an event dated after the batch date must be seen.
    push_placing(&mut q, today().max(on));
    q.push(" AND e.status <> 'out' AND");
    where_target(&mut q);
    q.push(" ORDER BY e.school_code, e.grade, st.id");
    let mut p = DynQuery::new(pg);
    p.push("SELECT student_id FROM transfer WHERE status = 'pending' AND from_county = ")
        .bind(county.to_owned());
    let (rows, transferring): (Vec<Candidate>, Vec<(Uuid,)>) = match tx {
        // The dry run reads without locking anything.
        None => (q.fetch_all(db).await?, p.fetch_all(db).await?),
        Some(tx) => {
            if pg {
                // Lock first, read after: a statement that waited for a lock would otherwise
                // return the rows as they were before the other writer committed.
                let mut l = DynQuery::new(pg);
                l.push(
                    "SELECT st.id FROM student st WHERE st.id IN (SELECT e.student_id \
                    FROM student_event e JOIN school s ON s.code = e.school_code WHERE",
                );
                where_target(&mut l);
                // In id order: a school's batch and its county's batch cannot deadlock.
                l.push(") ORDER BY st.id FOR UPDATE");
                let _: Vec<(Uuid,)> = l.fetch_all_in(tx).await?;
            }
            (q.fetch_all_in(tx).await?, p.fetch_all_in(tx).await?)
        }
    };
    let transferring: std::collections::HashSet<Uuid> =
        transferring.into_iter().map(|(u,)| u).collect();
    let mut plan = Plan {
        county: county.to_owned(),
        school_code: school.map(|s| s.code.clone()),
        effective_on: on,
        receiving_school: receiving.map(|r| r.code.clone()),
        promoted: 0,
        graduated: 0,
        progressed: 0,
        skipped: 0,
        by_grade: vec![],
        exceptions: vec![],
        writes: Vec::with_capacity(rows.len()),
    };
    let mut by_grade: HashMap<i32, u64> = HashMap::new();
    for c in rows {
        let exception = |exception| ExceptionRow {
            student_id: c.student_id,
            name: c.name.clone(),
            school_code: c.school_code.clone(),
            grade: c.grade,
            exception,
        };
        // Moved on already: changed on or after the date, or promoted, kept back or sent on in
        // this school year (by another batch or by hand), whatever came after.
        if c.effective_on >= on || c.moved_this_year {
            plan.exceptions.push(exception(Exception::AlreadyMoved));
            plan.skipped += 1;
            continue;
        }
        if transferring.contains(&c.student_id) {
            plan.exceptions.push(exception(Exception::PendingTransfer));
            plan.skipped += 1;
            continue;
        }
        if c.status == Status::Suspended.as_str() {
            plan.exceptions.push(exception(Exception::Suspended));
            plan.skipped += 1;
            continue;
        }
        let last = Grades::parse(&c.grades).map_or(c.grade, |g| i32::from(g.to));
        let (kind, status, school_code, grade) = if c.grade < last {
            plan.promoted += 1;
            (
                EventKind::Promote,
                Status::In,
                c.school_code.clone(),
                c.grade + 1,
            )
        } else if let Some(r) = receiving {
            plan.progressed += 1;
            (EventKind::Progress, Status::In, r.code.clone(), c.grade + 1)
        } else {
            plan.graduated += 1;
            (
                EventKind::Graduate,
                Status::Out,
                c.school_code.clone(),
                c.grade,
            )
        };
        if status == Status::In {
            let age = on.years_since(c.birth_date).map_or(-1, i64::from);
            if (age - (i64::from(grade) + 5)).abs() > 2 {
                plan.exceptions.push(exception(Exception::AgeOutlier));
            }
        }
        *by_grade.entry(c.grade).or_default() += 1;
        plan.writes.push(Write {
            id: Uuid::now_v7(),
            student_id: c.student_id,
            kind,
            status,
            from_school: (school_code != c.school_code).then(|| c.school_code.clone()),
            school_code,
            grade,
            from_grade: Some(c.grade),
            effective_on: on,
            reason: "year-end".into(),
            approval_ref: None,
            undoes: None,
            batch_id: None,
        });
    }
    let mut by_grade: Vec<(i32, u64)> = by_grade.into_iter().collect();
    by_grade.sort_unstable();
    plan.by_grade = by_grade;
    Ok(plan)
}
