//! Transfers (转学): the receiving school starts one for a student it names by national student
//! number and name; each party of the chain approves in turn within ten working days, or rejects
//! with a reason; on the last approval the student gets a `transfer_in` event at the new school
//! and the whole history travels with them.
//!
//! Staff moves (教师调动) go along the same chain ([`Subject::Staff`]): the receiving school names
//! the person by staff number and name, and the last approval appoints them at the new school.
//!
//! Each step is decided by someone holding `registry_manage` *at that step's node* (the school,
//! the county or the province itself): a superior sees the transfer but does not sign for the
//! level below. Decisions read and change the transfer inside one transaction (PostgreSQL locks
//! its row), so of two approvers acting at once one wins and the other is told the step moved on.

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::identity::{Node, Permission, Scope};
use santong_domain::lifecycle::{
    EventKind, Status, TRANSFER_STEP_WORKING_DAYS, TransferStep, add_working_days,
};
use santong_domain::region::RegionCode;
use santong_domain::registry::{Grades, SchoolStatus};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::lifecycle::{Write, in_force, lock_student, write_events};
use crate::registry::{Registry, RegistryError, SchoolRow, refused, rule, today};
use crate::students::mask_number;
use crate::{Db, Page, Tx, db_query};

fn province_of(county: &str) -> String {
    format!("{}0000", county.get(..2).unwrap_or("00"))
}

/// What goes along an approval chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// 转学: a student changes school.
    Student,
    /// 调动: a member of staff changes school.
    Staff,
}

impl Subject {
    fn table(self) -> &'static str {
        match self {
            Subject::Student => "transfer",
            Subject::Staff => "staff_move",
        }
    }

    fn steps(self) -> &'static str {
        match self {
            Subject::Student => "transfer_step",
            Subject::Staff => "staff_move_step",
        }
    }

    /// The steps' column naming their chain.
    fn key(self) -> &'static str {
        match self {
            Subject::Student => "transfer_id",
            Subject::Staff => "move_id",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Subject::Student => TRANSFER_SELECT,
            Subject::Staff => MOVE_SELECT,
        }
    }

    /// The audit event of `action` (start, lookup, approve, reject, complete).
    fn audit(self, action: &str) -> &'static str {
        match (self, action) {
            (Subject::Student, "start") => "transfer.start",
            (Subject::Student, "lookup") => "transfer.lookup",
            (Subject::Student, "approve") => "transfer.approve",
            (Subject::Student, "reject") => "transfer.reject",
            (Subject::Student, _) => "transfer.complete",
            (Subject::Staff, "start") => "staff_move.start",
            (Subject::Staff, "lookup") => "staff_move.lookup",
            (Subject::Staff, "approve") => "staff_move.approve",
            (Subject::Staff, "reject") => "staff_move.reject",
            (Subject::Staff, _) => "staff_move.complete",
        }
    }
}

/// A transfer as lists and pages show it (the student number masked). For a staff move the
/// `student_*` fields are the person's record, name and staff number, and `grade` is 0.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TransferRow {
    pub id: Uuid,
    pub student_id: Uuid,
    pub student_name: String,
    #[serde(skip)]
    pub student_number: String,
    pub from_school: String,
    pub from_name: String,
    pub from_county: String,
    pub to_school: String,
    pub to_name: String,
    pub to_county: String,
    pub grade: i32,
    pub reason: String,
    pub status: String,
    pub current_step: Option<i32>,
    pub step_role: Option<String>,
    pub step_due: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub decided_at: Option<DateTime<Utc>>,
}

impl TransferRow {
    pub fn number_masked(&self) -> String {
        mask_number(&self.student_number)
    }

    /// Waiting past its step's deadline.
    pub fn overdue(&self) -> bool {
        self.status == "pending" && self.step_due.is_some_and(|d| today() > d)
    }
}

/// One step of a transfer's chain.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub seq: i32,
    pub role: String,
    pub region: String,
    pub school_code: Option<String>,
    pub opened_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
    pub decision: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub note: String,
}

impl StepRow {
    pub fn node(&self) -> Option<Node> {
        let region = RegionCode::parse(&self.region).ok()?;
        Some(match &self.school_code {
            Some(code) => Node::School {
                code: santong_domain::identity::SchoolCode::parse(code)?,
                county: region,
            },
            None => Node::Region(region),
        })
    }

    /// Waiting past its deadline.
    pub fn overdue(&self) -> bool {
        self.decision.is_none() && self.due_on.is_some_and(|d| today() > d)
    }
}

/// A transfer with its chain.
#[derive(Debug, Clone, Serialize)]
pub struct TransferDetail {
    pub transfer: TransferRow,
    pub steps: Vec<StepRow>,
}

/// A transfer as asked for by the receiving school: raw text, checked by [`Transfers::start`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NewTransfer {
    /// 全国学籍号 (or the ID number behind a G-number).
    pub student_number: String,
    /// The student's name, which must match the record.
    pub name: String,
    pub to_school: String,
    pub reason: String,
}

/// A staff move as asked for by the receiving school: raw text, checked by
/// [`Transfers::start_move`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NewMove {
    /// 教职工编号 (T…).
    pub teacher_number: String,
    /// The person's name, which must match the record.
    pub name: String,
    pub to_school: String,
    pub reason: String,
}

/// Which transfers a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferBox {
    /// Waiting for a decision at one of the nodes where the user signs.
    Inbox,
    /// Every transfer into or out of the user's schools and regions.
    All,
}

const TRANSFER_SELECT: &str = "SELECT t.id, t.student_id, st.name AS student_name, \
    st.student_number, t.from_school, fs.name AS from_name, t.from_county, t.to_school, \
    ts.name AS to_name, t.to_county, t.grade, t.reason, t.status, t.current_step, \
    cs.role AS step_role, cs.due_on AS step_due, t.created_at, t.created_by, t.decided_at \
    FROM transfer t JOIN student st ON st.id = t.student_id \
    JOIN school fs ON fs.code = t.from_school JOIN school ts ON ts.code = t.to_school \
    LEFT JOIN transfer_step cs ON cs.transfer_id = t.id AND cs.seq = t.current_step";

const MOVE_SELECT: &str = "SELECT t.id, t.teacher_id AS student_id, tc.name AS student_name, \
    tc.teacher_number AS student_number, t.from_school, fs.name AS from_name, t.from_county, \
    t.to_school, ts.name AS to_name, t.to_county, 0 AS grade, t.reason, t.status, \
    t.current_step, cs.role AS step_role, cs.due_on AS step_due, t.created_at, t.created_by, \
    t.decided_at FROM staff_move t JOIN teacher tc ON tc.id = t.teacher_id \
    JOIN school fs ON fs.code = t.from_school JOIN school ts ON ts.code = t.to_school \
    LEFT JOIN staff_move_step cs ON cs.move_id = t.id AND cs.seq = t.current_step";

/// The nodes where the actor signs transfer steps: where they hold `registry_manage` by a grant
/// of their own (`None`: anywhere, for the command line).
fn signing_nodes(actor: &Actor<'_>) -> Option<Vec<Node>> {
    match actor {
        Actor::Cli => None,
        Actor::System | Actor::OnBehalf { .. } => Some(vec![]),
        Actor::User { principal, .. } => Some(if principal.allows(Permission::RegistryManage) {
            principal
                .roles()
                .into_iter()
                .filter(|(r, _)| r.permissions().contains(&Permission::RegistryManage))
                .map(|(_, n)| n)
                .collect()
        } else {
            vec![]
        }),
    }
}

fn push_involving(q: &mut DynQuery, scope: &Scope) {
    q.push(" (");
    crate::scope::push(q, scope, "t.from_county", "t.from_school");
    q.push(" OR");
    crate::scope::push(q, scope, "t.to_county", "t.to_school");
    q.push(")");
}

/// The checks every start shares: the actor signs the receiving school's own step (its people
/// start, not a superior, who would then sign two steps of the chain); a reason; an open school.
/// Returns the field errors so far and the trimmed reason.
fn start_checks<'r>(
    actor: &Actor<'_>,
    to: &SchoolRow,
    reason: &'r str,
) -> Result<(Vec<santong_domain::paging::FieldError>, &'r str), RegistryError> {
    let own = match signing_nodes(actor) {
        None => true,
        Some(nodes) => nodes.iter().any(|n| *n == to.node() || *n == Node::Nation),
    };
    if !own {
        return Err(RegistryError::Forbidden);
    }
    let mut errors = vec![];
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        errors.push(rule("reason", "transfer-reason-required"));
    } else if crate::registry::holds_number(reason) {
        // Every school and office of the chain reads it, and it goes into exports.
        errors.push(rule("reason", "student-reason-no-numbers"));
    }
    if to.status() != Some(SchoolStatus::Open) {
        errors.push(rule("to_school", "registry-not-open"));
    }
    Ok((errors, reason))
}

/// Writes the chain of a new transfer or move `id` from `from` to `to`: the receiving school's
/// own step signed by the starter, the next one open with its deadline, the rest waiting.
async fn insert_chain(
    tx: &mut Tx,
    subject: Subject,
    id: Uuid,
    from: &SchoolRow,
    to: &SchoolRow,
    actor: &Actor<'_>,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    let day = today();
    let cross = from.county.get(..2) != to.county.get(..2);
    let steps: Vec<(i32, TransferStep, String, Option<String>)> = TransferStep::chain(cross)
        .into_iter()
        .zip(0..)
        .map(|(s, seq)| {
            let (region, school) = match s {
                TransferStep::ReceivingSchool => (to.county.clone(), Some(to.code.clone())),
                TransferStep::ReceivingCounty => (to.county.clone(), None),
                TransferStep::ReceivingProvince => (province_of(&to.county), None),
                TransferStep::SendingProvince => (province_of(&from.county), None),
                TransferStep::SendingSchool => (from.county.clone(), Some(from.code.clone())),
                TransferStep::SendingCounty => (from.county.clone(), None),
            };
            (seq, s, region, school)
        })
        .collect();
    let who = actor.name();
    let head = format!(
        "INSERT INTO {} ({}, seq, role, region, school_code, opened_on, due_on, decision, \
            decided_at, decided_by, note) VALUES ",
        subject.steps(),
        subject.key()
    );
    insert_batched(tx, &head, "", &steps, |(seq, role, region, school)| {
        // Starting is the receiving school's own step; the next one opens now.
        let (opened, due, decision, at, by) = match seq {
            0 => (
                Some(day),
                Some(day),
                Some("approved".to_owned()),
                Some(now),
                Some(who.clone()),
            ),
            1 => (
                Some(day),
                Some(add_working_days(day, TRANSFER_STEP_WORKING_DAYS)),
                None,
                None,
                None,
            ),
            _ => (None, None, None, None, None),
        };
        vec![
            Val::Uuid(id),
            Val::Int(*seq),
            Val::Text(role.as_str().into()),
            Val::Text(region.clone()),
            Val::OptText(school.clone()),
            Val::OptDate(opened),
            Val::OptDate(due),
            Val::OptText(decision),
            Val::OptTime(at),
            Val::OptText(by),
            Val::Text(String::new()),
        ]
    })
    .await?;
    Ok(())
}

pub struct Transfers<'a>(pub &'a Db);

impl Transfers<'_> {
    /// Starts a transfer into `to_school` (needs `registry_manage` there). The student is found
    /// anywhere on this node by number *and* name, so a number alone reveals nothing; every
    /// lookup is audited.
    pub async fn start(
        &self,
        actor: Actor<'_>,
        input: &NewTransfer,
    ) -> Result<TransferDetail, RegistryError> {
        let to = Registry(self.0)
            .school(&Scope::everything(), input.to_school.trim())
            .await?;
        let Some(to) = to.filter(|s| actor.may(Permission::RegistryView, &s.node())) else {
            return Err(refused("to_school", "transfer-bad-school"));
        };
        let (errors, reason) = start_checks(&actor, &to, &input.reason)?;
        let number = input.student_number.trim().to_uppercase();
        let number = if number.len() == 18 && !number.starts_with(['G', 'J', 'L']) {
            format!("G{number}")
        } else {
            number
        };
        let found: Option<(Uuid, String)> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT id, name FROM student WHERE student_number = $1",
            ))
            .bind(&number)
            .fetch_optional(ex)
            .await?
        });
        let student = self
            .matched(
                &actor,
                Subject::Student,
                &to,
                found,
                &input.name,
                "student_number",
                "transfer-no-student",
                errors,
            )
            .await?;
        let rules = crate::identity::transfer_policy(self.0).await?;
        let mut tx = self.0.begin().await?;
        lock_student(&mut tx, student).await?;
        let last = in_force(&mut tx, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        match Status::parse(&last.status) {
            Some(Status::In) => {}
            Some(Status::Suspended) => return Err(refused("student_number", "transfer-suspended")),
            _ => return Err(refused("student_number", "transfer-not-in-school")),
        }
        if last.school_code == to.code {
            return Err(refused("to_school", "transfer-same-school"));
        }
        let from = Registry(self.0)
            .school(&Scope::everything(), &last.school_code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let grade = u8::try_from(last.grade).unwrap_or(0);
        if !Grades::parse(&to.grades).is_some_and(|g| g.contains(grade)) {
            return Err(refused("to_school", "transfer-grade"));
        }
        if (rules.no_graduating_year(&from.county) || rules.no_graduating_year(&to.county))
            && Grades::parse(&from.grades).is_some_and(|g| g.to == grade)
        {
            return Err(refused("student_number", "transfer-graduating-year"));
        }
        let pending: i64 = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM transfer WHERE student_id = $1 AND status = 'pending'",
            ))
            .bind(student)
            .fetch_one(ex)
            .await?
        });
        if pending > 0 {
            return Err(refused("student_number", "transfer-pending"));
        }
        let id = Uuid::now_v7();
        let now = Utc::now();
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO transfer (id, student_id, from_school, from_county, to_school, \
                to_county, grade, reason, status, current_step, created_at, created_by) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 1, $9, $10)",
            ))
            .bind(id)
            .bind(student)
            .bind(&from.code)
            .bind(&from.county)
            .bind(&to.code)
            .bind(&to.county)
            .bind(last.grade)
            .bind(reason)
            .bind(now)
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        insert_chain(&mut tx, Subject::Student, id, &from, &to, &actor, now).await?;
        audit::append(
            &mut tx,
            &actor.entry("transfer.start", &id.to_string(), "success", &to.node()),
        )
        .await?;
        tx.commit().await?;
        self.detail(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// Starts a staff move into `to_school` (needs `registry_manage` there, as for a transfer).
    /// The person is found by staff number *and* name; the lookup is audited.
    pub async fn start_move(
        &self,
        actor: Actor<'_>,
        input: &NewMove,
    ) -> Result<TransferDetail, RegistryError> {
        let to = Registry(self.0)
            .school(&Scope::everything(), input.to_school.trim())
            .await?;
        let Some(to) = to.filter(|s| actor.may(Permission::RegistryView, &s.node())) else {
            return Err(refused("to_school", "transfer-bad-school"));
        };
        let (errors, reason) = start_checks(&actor, &to, &input.reason)?;
        let number = input.teacher_number.trim().to_uppercase();
        let found: Option<(Uuid, String)> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT id, name FROM teacher WHERE teacher_number = $1",
            ))
            .bind(&number)
            .fetch_optional(ex)
            .await?
        });
        let teacher = self
            .matched(
                &actor,
                Subject::Staff,
                &to,
                found,
                &input.name,
                "teacher_number",
                "move-no-teacher",
                errors,
            )
            .await?;
        let mut tx = self.0.begin().await?;
        let Some((kind, school, _)) = crate::teachers::lock_latest(&mut tx, teacher).await? else {
            return Err(RegistryError::NotFound);
        };
        if kind != "appoint" {
            return Err(refused("teacher_number", "move-not-on-staff"));
        }
        if school == to.code {
            return Err(refused("to_school", "transfer-same-school"));
        }
        let from = Registry(self.0)
            .school(&Scope::everything(), &school)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let pending: i64 = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM staff_move WHERE teacher_id = $1 AND status = 'pending'",
            ))
            .bind(teacher)
            .fetch_one(ex)
            .await?
        });
        if pending > 0 {
            return Err(refused("teacher_number", "move-pending"));
        }
        let id = Uuid::now_v7();
        let now = Utc::now();
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO staff_move (id, teacher_id, from_school, from_county, to_school, \
                to_county, reason, status, current_step, created_at, created_by) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 1, $8, $9)",
            ))
            .bind(id)
            .bind(teacher)
            .bind(&from.code)
            .bind(&from.county)
            .bind(&to.code)
            .bind(&to.county)
            .bind(reason)
            .bind(now)
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        insert_chain(&mut tx, Subject::Staff, id, &from, &to, &actor, now).await?;
        audit::append(
            &mut tx,
            &actor.entry(
                Subject::Staff.audit("start"),
                &id.to_string(),
                "success",
                &to.node(),
            ),
        )
        .await?;
        tx.commit().await?;
        self.detail_of(Subject::Staff, &Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// A transfer and its chain, if either school is in `scope`.
    pub async fn detail(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<TransferDetail>> {
        self.detail_of(Subject::Student, scope, id).await
    }

    /// A transfer or staff move and its chain, if either school is in `scope`.
    pub async fn detail_of(
        &self,
        subject: Subject,
        scope: &Scope,
        id: Uuid,
    ) -> crate::Result<Option<TransferDetail>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(subject.select())
            .push(" WHERE t.id = ")
            .bind(id)
            .push(" AND");
        push_involving(&mut q, scope);
        let Some(transfer) = q.fetch_all::<TransferRow>(self.0).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT seq, role, region, school_code, opened_on, due_on, decision, decided_at, \
            decided_by, note FROM ",
        )
        .push(subject.steps())
        .push(" WHERE ")
        .push(subject.key())
        .push(" = ")
        .bind(id)
        .push(" ORDER BY seq");
        let steps = q.fetch_all(self.0).await?;
        Ok(Some(TransferDetail { transfer, steps }))
    }

    /// Transfers for `actor`, newest first: those waiting at a node where they sign, or all
    /// that involve their schools and regions.
    pub async fn list(
        &self,
        actor: &Actor<'_>,
        scope: &Scope,
        which: TransferBox,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<TransferRow>> {
        self.list_of(Subject::Student, actor, scope, which, limit, offset)
            .await
    }

    /// [`Transfers::list`] of transfers or of staff moves.
    pub async fn list_of(
        &self,
        subject: Subject,
        actor: &Actor<'_>,
        scope: &Scope,
        which: TransferBox,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<TransferRow>> {
        let signing = signing_nodes(actor);
        let filter = |q: &mut DynQuery| {
            q.push(" WHERE");
            push_involving(q, scope);
            if which == TransferBox::Inbox {
                q.push(" AND t.status = 'pending' AND (");
                match &signing {
                    None => {
                        q.push("1 = 1");
                    }
                    Some(nodes) => {
                        q.push("1 = 0");
                        for n in nodes {
                            match n {
                                Node::Nation => {
                                    q.push(" OR 1 = 1");
                                }
                                Node::Region(r) => {
                                    q.push(" OR (cs.school_code IS NULL AND cs.region = ")
                                        .bind(r.to_string())
                                        .push(")");
                                }
                                Node::School { code, county } => {
                                    q.push(" OR (cs.school_code = ")
                                        .bind(code.to_string())
                                        .push(" AND cs.region = ")
                                        .bind(county.to_string())
                                        .push(")");
                                }
                            }
                        }
                    }
                }
                q.push(")");
            }
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(subject.select());
        filter(&mut q);
        q.push(" ORDER BY t.created_at DESC, t.id DESC LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*) FROM ")
            .push(subject.table())
            .push(" t LEFT JOIN ")
            .push(subject.steps())
            .push(" cs ON cs.")
            .push(subject.key())
            .push(" = t.id AND cs.seq = t.current_step");
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// Decides step `seq` of a transfer: approve, or reject with a reason. The last approval
    /// moves the student. `seq` is the step the decider saw: if it has moved on meanwhile, the
    /// decision is refused with a message saying so.
    pub async fn decide(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        seq: i32,
        approve: bool,
        note: &str,
    ) -> Result<TransferDetail, RegistryError> {
        self.decide_of(Subject::Student, actor, scope, id, seq, approve, note)
            .await
    }

    /// [`Transfers::decide`] for a transfer or a staff move; the last approval of a move
    /// appoints the person at the new school.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_of(
        &self,
        subject: Subject,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        seq: i32,
        approve: bool,
        note: &str,
    ) -> Result<TransferDetail, RegistryError> {
        let before = self
            .detail_of(subject, scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let note = note.trim();
        if !approve && note.is_empty() {
            return Err(refused("note", "transfer-reject-reason"));
        }
        if note.chars().count() > 200 {
            return Err(refused("note", "transfer-note-long"));
        }
        let mut tx = self.0.begin().await?;
        let current = lock_transfer(&mut tx, subject, id).await?;
        let Some((status, current)) = current else {
            return Err(RegistryError::NotFound);
        };
        if status != "pending" || current != Some(seq) {
            return Err(refused("step", "transfer-changed"));
        }
        let step = before
            .steps
            .iter()
            .find(|s| s.seq == seq)
            .ok_or(RegistryError::NotFound)?;
        let node = step.node().ok_or(RegistryError::NotFound)?;
        if !Self::may_sign(&actor, step) {
            return Err(RegistryError::Forbidden);
        }
        let now = Utc::now();
        let mut q = DynQuery::new(self.0.is_postgres());
        q.push("UPDATE ")
            .push(subject.steps())
            .push(" SET decision = ")
            .bind(if approve { "approved" } else { "rejected" })
            .push(", decided_at = ")
            .bind(now)
            .push(", decided_by = ")
            .bind(actor.name())
            .push(", note = ")
            .bind(note)
            .push(" WHERE ")
            .push(subject.key())
            .push(" = ")
            .bind(id)
            .push(" AND seq = ")
            .bind_val(Val::Int(seq))
            .push(" AND decision IS NULL");
        let decided = q.execute_in(&mut tx).await?;
        if decided == 0 {
            return Err(refused("step", "transfer-changed"));
        }
        let t = &before.transfer;
        let last = before.steps.iter().map(|s| s.seq).max() == Some(seq);
        let pg = self.0.is_postgres();
        let event = if !approve {
            set_transfer(&mut tx, subject, id, "rejected", None, now, None).await?;
            subject.audit("reject")
        } else if !last {
            let day = today();
            let mut q = DynQuery::new(pg);
            q.push("UPDATE ")
                .push(subject.steps())
                .push(" SET opened_on = ")
                .bind(day)
                .push(", due_on = ")
                .bind(add_working_days(day, TRANSFER_STEP_WORKING_DAYS))
                .push(" WHERE ")
                .push(subject.key())
                .push(" = ")
                .bind(id)
                .push(" AND seq = ")
                .bind_val(Val::Int(seq + 1));
            q.execute_in(&mut tx).await?;
            let mut q = DynQuery::new(pg);
            q.push("UPDATE ")
                .push(subject.table())
                .push(" SET current_step = ")
                .bind_val(Val::Int(seq + 1))
                .push(" WHERE id = ")
                .bind(id);
            q.execute_in(&mut tx).await?;
            subject.audit("approve")
        } else if subject == Subject::Staff {
            let to = Registry(self.0)
                .school(&Scope::everything(), &t.to_school)
                .await?
                .ok_or(RegistryError::NotFound)?;
            if to.status() != Some(SchoolStatus::Open) {
                return Err(refused("step", "registry-not-open"));
            }
            let event = crate::teachers::appoint_on_move(
                &mut tx,
                &actor,
                t.student_id,
                &t.from_school,
                &t.to_school,
                &t.reason,
                now,
            )
            .await?;
            set_transfer(&mut tx, subject, id, "completed", None, now, Some(event)).await?;
            subject.audit("complete")
        } else {
            // The last signature: the student must still be where the transfer found them.
            lock_student(&mut tx, t.student_id).await?;
            let placed = in_force(&mut tx, t.student_id)
                .await?
                .ok_or(RegistryError::NotFound)?;
            if placed.school_code != t.from_school || placed.status != Status::In.as_str() {
                return Err(refused("step", "transfer-student-changed"));
            }
            let to = Registry(self.0)
                .school(&Scope::everything(), &t.to_school)
                .await?
                .ok_or(RegistryError::NotFound)?;
            if to.status() != Some(SchoolStatus::Open) {
                return Err(refused("step", "registry-not-open"));
            }
            // A repeat or a skip while waiting may have left a grade the school lacks.
            let grade = u8::try_from(placed.grade).unwrap_or(0);
            if !Grades::parse(&to.grades).is_some_and(|g| g.contains(grade)) {
                return Err(refused("step", "transfer-grade"));
            }
            let w = Write {
                id: Uuid::now_v7(),
                student_id: t.student_id,
                kind: EventKind::TransferIn,
                status: Status::In,
                school_code: t.to_school.clone(),
                grade: placed.grade,
                from_school: Some(t.from_school.clone()),
                from_grade: Some(placed.grade),
                effective_on: today().max(placed.effective_on),
                reason: t.reason.clone(),
                approval_ref: Some(format!("transfer:{id}")),
                undoes: None,
                batch_id: None,
            };
            write_events(&mut tx, std::slice::from_ref(&w), now, &actor).await?;
            // The old school's class ends the day the pupil arrives at the new one.
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "UPDATE class_member SET until_on = CASE WHEN from_on < $1 THEN $1 \
                    ELSE from_on END WHERE student_id = $2 AND (until_on IS NULL OR until_on > $1)",
                ))
                .bind(w.effective_on)
                .bind(t.student_id)
                .execute(ex)
                .await?
                .rows_affected()
            });
            set_transfer(&mut tx, subject, id, "completed", None, now, Some(w.id)).await?;
            subject.audit("complete")
        };
        let mut e = actor.entry(event, &id.to_string(), "success", &node);
        e.detail = format!("step={}", step.role);
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.detail_of(subject, &Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// The record a start names, if its number *and* name match (so a number alone reveals
    /// nothing); the lookup is audited either way, by the record's id. `errors` are the start's
    /// other field errors, returned with a failed lookup or on their own.
    #[allow(clippy::too_many_arguments)]
    async fn matched(
        &self,
        actor: &Actor<'_>,
        subject: Subject,
        to: &SchoolRow,
        found: Option<(Uuid, String)>,
        name: &str,
        field: &str,
        key: &'static str,
        mut errors: Vec<santong_domain::paging::FieldError>,
    ) -> Result<Uuid, RegistryError> {
        let id = found.filter(|(_, n)| n == name.trim()).map(|(id, _)| id);
        audit::record(
            self.0,
            &actor.entry(
                subject.audit("lookup"),
                &id.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                if id.is_some() { "success" } else { "denied" },
                &to.node(),
            ),
        )
        .await?;
        let Some(id) = id else {
            errors.push(rule(field, key));
            return Err(RegistryError::Fields(errors));
        };
        if !errors.is_empty() {
            return Err(RegistryError::Fields(errors));
        }
        Ok(id)
    }

    /// Whether `actor` signs `step`: they hold `registry_manage` at its node itself.
    pub fn may_sign(actor: &Actor<'_>, step: &StepRow) -> bool {
        let Some(node) = step.node() else {
            return false;
        };
        match signing_nodes(actor) {
            None => true,
            Some(nodes) => nodes.iter().any(|n| *n == node || *n == Node::Nation),
        }
    }
}

/// Reads (and on PostgreSQL locks) a transfer's or move's status and current step.
async fn lock_transfer(
    tx: &mut Tx,
    subject: Subject,
    id: Uuid,
) -> crate::Result<Option<(String, Option<i32>)>> {
    let pg = matches!(tx, Tx::Postgres(_));
    let mut q = DynQuery::new(pg);
    q.push("SELECT status, current_step FROM ")
        .push(subject.table())
        .push(" WHERE id = ")
        .bind(id);
    if pg {
        q.push(" FOR UPDATE");
    }
    Ok(q.fetch_all_in(tx).await?.into_iter().next())
}

async fn set_transfer(
    tx: &mut Tx,
    subject: Subject,
    id: Uuid,
    status: &str,
    step: Option<i32>,
    at: DateTime<Utc>,
    event: Option<Uuid>,
) -> crate::Result<()> {
    let mut q = DynQuery::new(matches!(tx, Tx::Postgres(_)));
    q.push("UPDATE ")
        .push(subject.table())
        .push(" SET status = ")
        .bind(status)
        .push(", current_step = ")
        .bind_val(Val::OptInt(step))
        .push(", decided_at = ")
        .bind(at)
        .push(", event_id = ")
        .bind_val(Val::OptUuid(event))
        .push(" WHERE id = ")
        .bind(id);
    q.execute_in(tx).await?;
    Ok(())
}
