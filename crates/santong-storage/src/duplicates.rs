//! Duplicate records (重复学籍): one ID number on two records that both hold a place. Enrolment
//! does not refuse the second school (the child sits in its classroom and must be on a roll); the
//! new record gets a temporary L-number and a case opens here, visible to both schools and their
//! counties.
//!
//! A case is resolved in one of two ways, each undoable:
//! - **merge**: the temporary record ends with a `merge` event (the record holding the official
//!   number keeps the child's history; if the child really studies at the second school, that
//!   school then starts a transfer of the kept record);
//! - **correct**: one record's ID number was wrong and is corrected through the ordinary
//!   correction (更正) with its lineage; the case closes by itself, and a temporary record whose ID
//!   number is now its own gets its official G-number (L upgraded to G).
//!
//! Writers lock the student rows before the case row (corrections lock their student first too), and
//! change the case by compare-and-set on its status, so of two people resolving at once one wins.

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::identity::{Permission, Scope};
use santong_domain::lifecycle::{EventKind, Status};
use santong_domain::region::RegionCode;
use santong_domain::registry::{ResidentId, StudentNumber};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::lifecycle::{Write, in_force, lock_student, write_events};
use crate::registry::{Registry, RegistryError, SchoolRow, refused, today};
use crate::students::{mask_number, push_placing_of};
use crate::{Db, Page, Tx, db_query};

/// A case with both records where they are today.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRow {
    pub id: Uuid,
    /// `open`, `merged` or `corrected`.
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub opened_by: String,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    #[serde(skip)]
    pub merge_event: Option<Uuid>,
    /// The record whose ID number was corrected (status `corrected`).
    pub corrected_id: Option<Uuid>,
    /// The record enrolled second (temporary number when the case opened).
    pub student: CaseRecord,
    /// The record it clashes with.
    pub other: CaseRecord,
}

/// One side of a case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRecord {
    pub id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub number: String,
    pub birth_date: NaiveDate,
    pub school_code: String,
    pub school_name: String,
    #[serde(skip)]
    pub school_county: String,
    pub grade: i32,
    /// `in`, `suspended` or `out`.
    pub status: String,
    /// The kind of the event in force (`merge` once merged).
    pub kind: String,
}

impl CaseRecord {
    /// The record's school as a node, to tell whether a viewer's scope covers this side.
    pub fn node(&self) -> Option<santong_domain::identity::Node> {
        Some(santong_domain::identity::Node::School {
            code: santong_domain::identity::SchoolCode::parse(&self.school_code)?,
            county: RegionCode::parse(&self.school_county).ok()?,
        })
    }

    /// The number as the other side sees it: letter and area, the rest hidden but the last four
    /// (a J- or L-number holds the birth date, a G-number the ID number).
    pub fn number_for_other(&self) -> String {
        let n: Vec<char> = self.number.chars().collect();
        if n.len() < 11 {
            return "*".repeat(n.len());
        }
        let head: String = n[..7].iter().collect();
        let tail: String = n[n.len() - 4..].iter().collect();
        format!("{head}{}{tail}", "*".repeat(n.len() - 11))
    }

    /// The name with all but its first character hidden, for a viewer from the other side.
    pub fn name_masked(&self) -> String {
        let mut c = self.name.chars();
        let first: String = c.next().into_iter().collect();
        format!("{first}{}", "*".repeat(c.count()))
    }

    /// The national student number masked as in lists.
    pub fn number_masked(&self) -> String {
        mask_number(&self.number)
    }

    pub fn is_temporary(&self) -> bool {
        self.number.starts_with('L')
    }
}

/// Reads one side of a case from the columns prefixed `a_` (the temporary record) or `b_`.
macro_rules! side_from_row {
    ($row:expr, $p:literal) => {
        CaseRecord {
            id: $row.try_get(concat!($p, "_id"))?,
            name: $row.try_get(concat!($p, "_name"))?,
            number: $row.try_get(concat!($p, "_number"))?,
            birth_date: $row.try_get(concat!($p, "_birth"))?,
            school_code: $row.try_get(concat!($p, "_school"))?,
            school_name: $row.try_get(concat!($p, "_school_name"))?,
            school_county: $row.try_get(concat!($p, "_county"))?,
            grade: $row.try_get(concat!($p, "_grade"))?,
            status: $row.try_get(concat!($p, "_status"))?,
            kind: $row.try_get(concat!($p, "_kind"))?,
        }
    };
}

macro_rules! case_from_row {
    ($row_ty:ty) => {
        impl<'r> sqlx::FromRow<'r, $row_ty> for CaseRow {
            fn from_row(row: &'r $row_ty) -> Result<Self, sqlx::Error> {
                use sqlx::Row;
                Ok(CaseRow {
                    id: row.try_get("id")?,
                    status: row.try_get("status")?,
                    opened_at: row.try_get("opened_at")?,
                    opened_by: row.try_get("opened_by")?,
                    resolved_at: row.try_get("resolved_at")?,
                    resolved_by: row.try_get("resolved_by")?,
                    merge_event: row.try_get("merge_event")?,
                    corrected_id: row.try_get("corrected_id")?,
                    student: side_from_row!(row, "a"),
                    other: side_from_row!(row, "b"),
                })
            }
        }
    };
}

case_from_row!(sqlx::sqlite::SqliteRow);
case_from_row!(sqlx::postgres::PgRow);

/// One step of a case's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CaseStep {
    /// `open`, `merge`, `correct` or `undo`.
    pub action: String,
    pub actor: String,
    pub note: String,
    pub recorded_at: DateTime<Utc>,
}

/// Which cases a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseFilter {
    Open,
    All,
}

/// Appends the case query up to `WHERE` conditions: both records placed today, and the case
/// visible when either record's school is in `scope`.
fn push_cases(q: &mut DynQuery, scope: &Scope) {
    q.push(
        " FROM duplicate_case c \
        JOIN student a ON a.id = c.student_id JOIN student_event ea ON ea.student_id = a.id \
        JOIN school sa ON sa.code = ea.school_code \
        JOIN student b ON b.id = c.other_id JOIN student_event eb ON eb.student_id = b.id \
        JOIN school sb ON sb.code = eb.school_code WHERE",
    );
    let on = today();
    push_placing_of(q, on, "ea", "a");
    q.push(" AND");
    push_placing_of(q, on, "eb", "b");
    q.push(" AND (");
    crate::scope::push(q, scope, "sa.county", "sa.code");
    q.push(" OR");
    crate::scope::push(q, scope, "sb.county", "sb.code");
    q.push(")");
}

const CASE_COLUMNS: &str = "SELECT c.id, c.status, c.opened_at, c.opened_by, c.resolved_at, \
    c.resolved_by, c.merge_event, c.corrected_id, \
    a.id AS a_id, a.name AS a_name, a.student_number AS a_number, a.birth_date AS a_birth, \
    ea.school_code AS a_school, sa.name AS a_school_name, sa.county AS a_county, \
    ea.grade AS a_grade, \
    ea.status AS a_status, ea.kind AS a_kind, \
    b.id AS b_id, b.name AS b_name, b.student_number AS b_number, b.birth_date AS b_birth, \
    eb.school_code AS b_school, sb.name AS b_school_name, sb.county AS b_county, \
    eb.grade AS b_grade, \
    eb.status AS b_status, eb.kind AS b_kind";

/// Who else holds an ID number, as enrolment needs to know.
pub(crate) enum Clash {
    /// Nobody: the child gets G + the ID number.
    None,
    /// A record that holds a place: the new record is temporary and a case opens against it.
    Active(Uuid),
    /// Only records that left school (graduated, dropped out…): the child is not enrolled again.
    Left(Uuid),
}

/// Reads, inside the enrolling transaction, the records that carry `id_number` and where they
/// are today. A record with the official number is preferred as the one to clash with.
pub(crate) async fn clash_of(tx: &mut Tx, id_number: &str, pg: bool) -> crate::Result<Clash> {
    clash_of_locked(tx, id_number, pg, false).await
}

async fn clash_of_locked(
    tx: &mut Tx,
    id_number: &str,
    pg: bool,
    locked: bool,
) -> crate::Result<Clash> {
    #[derive(sqlx::FromRow)]
    struct Holder {
        id: Uuid,
        student_number: String,
        status: String,
    }
    let mut q = DynQuery::new(pg);
    q.push(
        "SELECT st.id, st.student_number, e.status FROM student st \
        JOIN student_event e ON e.student_id = st.id WHERE st.id_number = ",
    )
    .bind(id_number.to_owned())
    .push(" AND");
    push_placing_of(&mut q, today(), "e", "st");
    q.push(" ORDER BY st.created_at, st.id");
    let holders: Vec<Holder> = q.fetch_all_in(tx).await?;
    let active = |h: &&Holder| h.status != Status::Out.as_str();
    let chosen = holders
        .iter()
        .filter(active)
        .find(|h| h.student_number.starts_with('G'))
        .or_else(|| holders.iter().find(active));
    // The record clashed with is locked, and read again under the lock: a correction of its ID
    // number committed meanwhile must not leave a case between two different numbers.
    if let Some(h) = chosen
        && !locked
    {
        lock_student(tx, h.id).await?;
        return Box::pin(clash_of_locked(tx, id_number, pg, true)).await;
    }
    Ok(
        match holders
            .iter()
            .filter(active)
            .find(|h| h.student_number.starts_with('G'))
            .or_else(|| holders.iter().find(active))
        {
            Some(h) => Clash::Active(h.id),
            None => match holders.first() {
                Some(h) => Clash::Left(h.id),
                None => Clash::None,
            },
        },
    )
}

/// A random temporary number (L + area + birth date + 4 digits) for a record enrolled while its
/// ID number sits on another record.
pub(crate) fn temporary_number(area: &str, birth: (i32, u32, u32)) -> Option<StudentNumber> {
    let b = Uuid::new_v4();
    let r = u16::from_le_bytes([b.as_bytes()[0], b.as_bytes()[1]]);
    StudentNumber::temporary(area, birth, r)
}

async fn step(
    tx: &mut Tx,
    case: Uuid,
    action: &str,
    actor: &str,
    note: &str,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO duplicate_step (id, case_id, action, actor, note, recorded_at) \
            VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(Uuid::now_v7())
        .bind(case)
        .bind(action)
        .bind(actor)
        .bind(note)
        .bind(now)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(())
}

/// Opens a case for `student` (just enrolled with a temporary number) against `other`.
pub(crate) async fn open(
    tx: &mut Tx,
    student: Uuid,
    other: Uuid,
    actor: &Actor<'_>,
    node: &santong_domain::identity::Node,
    now: DateTime<Utc>,
) -> crate::Result<Uuid> {
    let id = Uuid::now_v7();
    let who = actor.name();
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO duplicate_case (id, student_id, other_id, status, opened_at, opened_by) \
            VALUES ($1, $2, $3, 'open', $4, $5)",
        ))
        .bind(id)
        .bind(student)
        .bind(other)
        .bind(now)
        .bind(&who)
        .execute(ex)
        .await?
        .rows_affected()
    });
    step(tx, id, "open", &who, "", now).await?;
    audit::append(
        tx,
        &actor.entry("duplicate.open", &id.to_string(), "success", node),
    )
    .await?;
    Ok(id)
}

/// What a correction changed on a record's identity, for [`after_correction`].
pub(crate) struct IdChange<'a> {
    pub(crate) student: Uuid,
    pub(crate) old_id_number: Option<&'a str>,
    pub(crate) old_number: &'a str,
    pub(crate) new_number: &'a str,
    pub(crate) reason: &'a str,
}

/// Inside a correction's transaction: settles the open cases of the corrected record whose two
/// records no longer share an ID number. If the temporary record's ID number still sits on
/// another record holding a place (three records of one child), the case turns to that record,
/// or closes when a case between the two is open already. Otherwise it closes, and a temporary
/// record whose ID number is now its own gets the official G-number (with a lineage row).
pub(crate) async fn after_correction(
    tx: &mut Tx,
    change: &IdChange<'_>,
    actor: &Actor<'_>,
    node: &santong_domain::identity::Node,
    now: DateTime<Utc>,
) -> crate::Result<usize> {
    #[derive(sqlx::FromRow)]
    struct Pair {
        id: Uuid,
        student_id: Uuid,
        other_id: Uuid,
    }
    let who = actor.name();
    let pg = matches!(tx, Tx::Postgres(_));
    let pairs: Vec<Pair> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT id, student_id, other_id FROM duplicate_case WHERE status = 'open' \
            AND (student_id = $1 OR other_id = $1) ORDER BY opened_at, id",
        ))
        .bind(change.student)
        .fetch_all(ex)
        .await?
    });
    let mut settled = 0;
    for pair in pairs {
        // The correction locked both records (and every other holder of the ID) already.
        let ids = identity_of(tx, &[pair.student_id, pair.other_id]).await?;
        let id_of = |s: Uuid| ids.iter().find(|r| r.id == s);
        let (Some(a), Some(b)) = (id_of(pair.student_id), id_of(pair.other_id)) else {
            continue;
        };
        if a.id_number.is_some() && a.id_number == b.id_number {
            continue;
        }
        // Who else, holding a place, still has the temporary record's ID number?
        let still = match a.id_number.as_deref() {
            Some(n) if a.id != change.student => other_holder(tx, n, a.id).await?,
            _ => None,
        };
        if let Some(holder) = still {
            let mut q = DynQuery::new(pg);
            q.push("SELECT COUNT(*) FROM duplicate_case WHERE status = 'open' AND id <> ")
                .bind(pair.id)
                .push(" AND ((student_id = ")
                .bind(a.id)
                .push(" AND other_id = ")
                .bind(holder)
                .push(") OR (student_id = ")
                .bind(holder)
                .push(" AND other_id = ")
                .bind(a.id)
                .push("))");
            let covered: Vec<(i64,)> = q.fetch_all_in(tx).await?;
            if covered.first().is_none_or(|c| c.0 == 0) {
                let n = db_query!(tx, tx, |sql, ex| {
                    sqlx::query(sql(
                        "UPDATE duplicate_case SET other_id = $1 WHERE id = $2 AND status = 'open'",
                    ))
                    .bind(holder)
                    .bind(pair.id)
                    .execute(ex)
                    .await?
                    .rows_affected()
                });
                if n == 1 {
                    step(tx, pair.id, "repoint", &who, change.reason, now).await?;
                    audit::append(
                        tx,
                        &actor.entry("duplicate.repoint", &pair.id.to_string(), "success", node),
                    )
                    .await?;
                }
                continue;
            }
        }
        // Compare-and-set first: a case merged or settled meanwhile is left alone.
        let closed = db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE duplicate_case SET status = 'corrected', resolved_at = $1, \
                resolved_by = $2, corrected_id = $3, corrected_old_id_number = $4, \
                corrected_old_number = $5, corrected_new_number = $6 \
                WHERE id = $7 AND status = 'open'",
            ))
            .bind(now)
            .bind(&who)
            .bind(change.student)
            .bind(change.old_id_number)
            .bind(change.old_number)
            .bind(change.new_number)
            .bind(pair.id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if closed == 0 {
            continue;
        }
        if still.is_none() && a.id != change.student {
            upgrade(tx, pair.id, a, change.reason, &who, now).await?;
        }
        step(tx, pair.id, "correct", &who, change.reason, now).await?;
        audit::append(
            tx,
            &actor.entry("duplicate.correct", &pair.id.to_string(), "success", node),
        )
        .await?;
        settled += 1;
    }
    Ok(settled)
}

/// The records a correction of `student` may touch besides it: the other records of its open
/// cases, and the records with its ID number (`id_number`), for locking in id order.
pub(crate) async fn related(
    tx: &mut Tx,
    student: Uuid,
    id_number: Option<&str>,
) -> crate::Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT CASE WHEN student_id = $1 THEN other_id ELSE student_id END \
            FROM duplicate_case WHERE status = 'open' AND (student_id = $1 OR other_id = $1) \
            UNION SELECT id FROM student WHERE id_number = $2 AND id <> $1",
        ))
        .bind(student)
        .bind(id_number)
        .fetch_all(ex)
        .await?
    });
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Another record than `except` holding a place with `id_number` today, the oldest first.
async fn other_holder(tx: &mut Tx, id_number: &str, except: Uuid) -> crate::Result<Option<Uuid>> {
    let mut q = DynQuery::new(matches!(tx, Tx::Postgres(_)));
    q.push(
        "SELECT st.id FROM student st JOIN student_event e ON e.student_id = st.id \
        WHERE st.id_number = ",
    )
    .bind(id_number.to_owned())
    .push(" AND st.id <> ")
    .bind(except)
    .push(" AND e.status <> 'out' AND");
    push_placing_of(&mut q, today(), "e", "st");
    q.push(" ORDER BY st.created_at, st.id");
    let rows: Vec<(Uuid,)> = q.fetch_all_in(tx).await?;
    Ok(rows.first().map(|r| r.0))
}

/// Gives a temporary record whose ID number is now its own the official G-number (L upgraded to
/// G), with a lineage row, and notes it on `case` so that undoing the case gives it back.
async fn upgrade(
    tx: &mut Tx,
    case: Uuid,
    r: &Identity,
    reason: &str,
    who: &str,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    let Some(idn) = r
        .id_number
        .as_deref()
        .and_then(|i| ResidentId::parse(i).ok())
        .filter(|_| r.student_number.starts_with('L'))
    else {
        return Ok(());
    };
    let official = StudentNumber::official(&idn);
    let n = db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE student SET student_number = $1 WHERE id = $2 AND student_number = $3 \
            AND NOT EXISTS (SELECT 1 FROM student o WHERE o.student_number = $1)",
        ))
        .bind(official.as_str())
        .bind(r.id)
        .bind(&r.student_number)
        .execute(ex)
        .await?
        .rows_affected()
    });
    if n == 1 {
        lineage(
            tx,
            r.id,
            &[(
                "student_number",
                Some(r.student_number.clone()),
                Some(official.as_str().to_owned()),
            )],
            reason,
            who,
            now,
        )
        .await?;
        db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE duplicate_case SET upgraded_id = $1, upgraded_old_number = $2 WHERE id = $3",
            ))
            .bind(r.id)
            .bind(&r.student_number)
            .bind(case)
            .execute(ex)
            .await?
            .rows_affected()
        });
    }
    Ok(())
}

/// Undoes [`upgrade`]: the record gives its official number back, if it is still as the upgrade
/// left it (its ID number `id_number`, its number G + that). False when it changed since.
async fn downgrade(
    tx: &mut Tx,
    r: &Identity,
    id_number: Option<&str>,
    old_number: String,
    reason: &str,
    who: &str,
    now: DateTime<Utc>,
) -> crate::Result<bool> {
    let as_left = id_number.is_some()
        && r.id_number.as_deref() == id_number
        && id_number.map(|i| format!("G{i}")).as_deref() == Some(r.student_number.as_str());
    if !as_left {
        return Ok(false);
    }
    let n = db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE student SET student_number = $1 WHERE id = $2 AND student_number = $3 \
            AND NOT EXISTS (SELECT 1 FROM student o WHERE o.student_number = $1)",
        ))
        .bind(&old_number)
        .bind(r.id)
        .bind(&r.student_number)
        .execute(ex)
        .await?
        .rows_affected()
    });
    if n != 1 {
        return Ok(false);
    }
    lineage(
        tx,
        r.id,
        &[(
            "student_number",
            Some(r.student_number.clone()),
            Some(old_number),
        )],
        reason,
        who,
        now,
    )
    .await?;
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct Identity {
    id: Uuid,
    student_number: String,
    id_number: Option<String>,
    birth_date: NaiveDate,
    sex: String,
}

async fn identity_of(tx: &mut Tx, ids: &[Uuid]) -> crate::Result<Vec<Identity>> {
    let mut q = DynQuery::new(matches!(tx, Tx::Postgres(_)));
    q.push("SELECT id, student_number, id_number, birth_date, sex FROM student WHERE id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(*id);
    }
    q.push(")");
    q.fetch_all_in(tx).await
}

/// Writes correction lineage rows for `student`.
pub(crate) async fn lineage(
    tx: &mut Tx,
    student: Uuid,
    changes: &[(&str, Option<String>, Option<String>)],
    reason: &str,
    who: &str,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    insert_batched(
        tx,
        "INSERT INTO student_correction (id, student_id, field, old_value, new_value, reason, \
        actor, recorded_at) VALUES ",
        "",
        changes,
        |(field, old, new)| {
            vec![
                Val::Uuid(Uuid::now_v7()),
                Val::Uuid(student),
                Val::Text((*field).to_owned()),
                Val::OptText(old.clone()),
                Val::OptText(new.clone()),
                Val::Text(reason.to_owned()),
                Val::Text(who.to_owned()),
                Val::Time(now),
            ]
        },
    )
    .await
}

fn check_reason(reason: &str) -> Result<&str, RegistryError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 100 {
        return Err(refused("reason", "student-event-reason"));
    }
    // Both schools read the case's history.
    if crate::registry::holds_number(reason) {
        return Err(refused("reason", "student-reason-no-numbers"));
    }
    Ok(reason)
}

pub struct Duplicates<'a>(pub &'a Db);

impl Duplicates<'_> {
    /// Cases where either record's school is in `scope`: open ones first, newest first.
    pub async fn list(
        &self,
        scope: &Scope,
        filter: CaseFilter,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<CaseRow>> {
        let conditions = |q: &mut DynQuery| {
            push_cases(q, scope);
            if filter == CaseFilter::Open {
                q.push(" AND c.status = 'open'");
            }
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(CASE_COLUMNS);
        conditions(&mut q);
        q.push(
            " ORDER BY CASE WHEN c.status = 'open' THEN 0 ELSE 1 END, c.opened_at DESC, c.id \
            LIMIT ",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*)");
        conditions(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// A case if either record's school is in `scope`.
    pub async fn case(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<CaseRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(CASE_COLUMNS);
        push_cases(&mut q, scope);
        q.push(" AND c.id = ").bind(id);
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// The history of a case (call after [`Duplicates::case`] found it in scope).
    pub async fn steps(&self, id: Uuid) -> crate::Result<Vec<CaseStep>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT action, actor, note, recorded_at FROM duplicate_step WHERE case_id = $1 \
                ORDER BY recorded_at, id",
            ))
            .bind(id)
            .fetch_all(ex)
            .await?
        }))
    }

    /// The open cases a student's record is part of, within `scope`.
    pub async fn open_of(&self, scope: &Scope, student: Uuid) -> crate::Result<Vec<Uuid>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(CASE_COLUMNS);
        push_cases(&mut q, scope);
        q.push(" AND c.status = 'open' AND (c.student_id = ")
            .bind(student)
            .push(" OR c.other_id = ")
            .bind(student)
            .push(")");
        let rows: Vec<CaseRow> = q.fetch_all(self.0).await?;
        Ok(rows.into_iter().map(|c| c.id).collect())
    }

    async fn managing(
        &self,
        actor: &Actor<'_>,
        scope: &Scope,
        id: Uuid,
        school_of: impl Fn(&CaseRow) -> &str,
    ) -> Result<(CaseRow, SchoolRow), RegistryError> {
        let case = self.case(scope, id).await?.ok_or(RegistryError::NotFound)?;
        let school = Registry(self.0)
            .school(&Scope::everything(), school_of(&case))
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        Ok((case, school))
    }

    /// Merges the temporary record into the other one (needs `registry_manage` at the temporary
    /// record's school): a `merge` event ends it today. Refused unless the other record still
    /// holds a place with the same ID number.
    pub async fn merge(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        reason: &str,
    ) -> Result<CaseRow, RegistryError> {
        let reason = check_reason(reason)?;
        let (case, school) = self
            .managing(&actor, scope, id, |c| &c.student.school_code)
            .await?;
        let student = case.student.id;
        let now = Utc::now();
        let who = actor.name();
        let mut tx = self.0.begin().await?;
        let mut pair = [student, case.other.id];
        pair.sort();
        for s in pair {
            lock_student(&mut tx, s).await?;
        }
        if !set_status(&mut tx, id, "open", "merged", Some((now, &who))).await? {
            return Err(refused("case", "duplicate-not-open"));
        }
        let last = in_force(&mut tx, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if last.school_code != school.code {
            return Err(RegistryError::Stale);
        }
        // The kept record must still hold a place and the same ID number: merging into a record
        // that left would end the child's only record.
        let other = in_force(&mut tx, case.other.id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if other.status == Status::Out.as_str() {
            return Err(refused("case", "duplicate-other-left"));
        }
        let ids = identity_of(&mut tx, &pair).await?;
        if ids.len() != 2 || ids[0].id_number.is_none() || ids[0].id_number != ids[1].id_number {
            return Err(refused("case", "duplicate-ids-differ"));
        }
        let last_kind = EventKind::parse(&last.kind).unwrap_or(EventKind::Enrol);
        let status = Status::parse(&last.status).unwrap_or(Status::Out);
        if !EventKind::Merge.may_follow(status, last_kind) {
            return Err(refused("case", "duplicate-merge-left"));
        }
        let w = Write {
            id: Uuid::now_v7(),
            student_id: student,
            kind: EventKind::Merge,
            status: Status::Out,
            school_code: last.school_code.clone(),
            grade: last.grade,
            from_school: None,
            from_grade: Some(last.grade),
            effective_on: today().max(last.effective_on),
            reason: reason.to_owned(),
            approval_ref: Some(format!("duplicate:{id}")),
            undoes: None,
            batch_id: None,
        };
        // The class place is left as it is (class lists show only students who hold a place), so
        // undoing the merge puts the child back in their class.
        write_events(&mut tx, std::slice::from_ref(&w), now, &actor).await?;
        // The kept record's temporary number becomes official once nobody else holds its ID.
        if let Some(kept) = ids.iter().find(|r| r.id == case.other.id)
            && let Some(n) = kept.id_number.as_deref()
            && other_holder(&mut tx, n, kept.id).await?.is_none()
        {
            upgrade(&mut tx, id, kept, reason, &who, now).await?;
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE duplicate_case SET merge_event = $1 WHERE id = $2",
            ))
            .bind(w.id)
            .bind(id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        step(&mut tx, id, "merge", &who, reason, now).await?;
        audit::append(
            &mut tx,
            &actor.entry(
                "duplicate.merge",
                &id.to_string(),
                "success",
                &school.node(),
            ),
        )
        .await?;
        tx.commit().await?;
        self.case(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// Undoes a resolution and opens the case again: a merge by a compensating event (needs
    /// `registry_manage` at the merged record's school), a correction by restoring the ID number
    /// and student number it changed, with lineage (needs it at the corrected record's school).
    /// Refused when either record changed since in a way the undo would overwrite.
    pub async fn undo(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        reason: &str,
    ) -> Result<CaseRow, RegistryError> {
        let reason = check_reason(reason)?;
        let visible = self.case(scope, id).await?.ok_or(RegistryError::NotFound)?;
        match visible.status.as_str() {
            "merged" => self.undo_merge(actor, scope, id, reason).await?,
            "corrected" => self.undo_correction(actor, scope, id, reason).await?,
            _ => return Err(refused("case", "duplicate-not-resolved")),
        }
        self.case(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    async fn undo_merge(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let (case, school) = self
            .managing(&actor, scope, id, |c| &c.student.school_code)
            .await?;
        let student = case.student.id;
        let now = Utc::now();
        let who = actor.name();
        let mut tx = self.0.begin().await?;
        let mut pair = [student, case.other.id];
        pair.sort();
        for s in pair {
            lock_student(&mut tx, s).await?;
        }
        // Read before reopening clears it: the kept record the merge gave its official number.
        let upgraded: Option<(Option<Uuid>, Option<String>)> = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT upgraded_id, upgraded_old_number FROM duplicate_case WHERE id = $1",
            ))
            .bind(id)
            .fetch_optional(ex)
            .await?
        });
        if !set_status(&mut tx, id, "merged", "open", None).await? {
            return Err(refused("case", "duplicate-not-resolved"));
        }
        if let Some((Some(up), Some(old_number))) = upgraded {
            let ids = identity_of(&mut tx, &pair).await?;
            let merged_id = ids
                .iter()
                .find(|r| r.id == student)
                .and_then(|r| r.id_number.clone());
            let kept = ids
                .iter()
                .find(|r| r.id == up)
                .ok_or(RegistryError::NotFound)?;
            if !downgrade(
                &mut tx,
                kept,
                merged_id.as_deref(),
                old_number,
                reason,
                &who,
                now,
            )
            .await?
            {
                return Err(refused("case", "duplicate-undo-changed"));
            }
        }
        let last = in_force(&mut tx, student)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if Some(last.id) != case.merge_event {
            return Err(refused("case", "duplicate-undo-changed"));
        }
        let undo_id = Uuid::now_v7();
        let w = Write {
            id: undo_id,
            student_id: student,
            kind: EventKind::Undo,
            status: Status::Out,
            school_code: last.school_code.clone(),
            grade: last.grade,
            from_school: None,
            from_grade: None,
            effective_on: today().max(last.effective_on),
            reason: reason.to_owned(),
            approval_ref: Some(format!("duplicate:{id}")),
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
        step(&mut tx, id, "undo", &who, reason, now).await?;
        audit::append(
            &mut tx,
            &actor.entry("duplicate.undo", &id.to_string(), "success", &school.node()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn undo_correction(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        reason: &str,
    ) -> Result<(), RegistryError> {
        #[derive(sqlx::FromRow)]
        struct Undo {
            corrected_id: Option<Uuid>,
            corrected_old_id_number: Option<String>,
            corrected_old_number: Option<String>,
            corrected_new_number: Option<String>,
            upgraded_id: Option<Uuid>,
            upgraded_old_number: Option<String>,
        }
        let (case, school) = self
            .managing(&actor, scope, id, |c| {
                if c.corrected_id == Some(c.other.id) {
                    &c.other.school_code
                } else {
                    &c.student.school_code
                }
            })
            .await?;
        let now = Utc::now();
        let who = actor.name();
        let mut tx = self.0.begin().await?;
        let mut pair = [case.student.id, case.other.id];
        pair.sort();
        for s in pair {
            lock_student(&mut tx, s).await?;
        }
        let u: Option<Undo> = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT corrected_id, corrected_old_id_number, corrected_old_number, \
                corrected_new_number, upgraded_id, upgraded_old_number FROM duplicate_case \
                WHERE id = $1 AND status = 'corrected'",
            ))
            .bind(id)
            .fetch_optional(ex)
            .await?
        });
        let Some(Undo {
            corrected_id: Some(corrected),
            corrected_old_id_number: old_id,
            corrected_old_number: Some(old_number),
            corrected_new_number: Some(new_number),
            upgraded_id,
            upgraded_old_number,
        }) = u
        else {
            return Err(refused("case", "duplicate-not-resolved"));
        };
        let now_ids = identity_of(&mut tx, &pair).await?;
        let current = |s: Uuid| now_ids.iter().find(|r| r.id == s);
        let c = current(corrected).ok_or(RegistryError::NotFound)?;
        // Restoring the old ID number must still agree with the record's birth date and sex.
        let old = old_id.as_deref().and_then(|i| ResidentId::parse(i).ok());
        let agrees = old.as_ref().is_none_or(|i| {
            i.birth_date()
                == (
                    chrono::Datelike::year(&c.birth_date),
                    chrono::Datelike::month(&c.birth_date),
                    chrono::Datelike::day(&c.birth_date),
                )
                && santong_domain::registry::Sex::parse(&c.sex) == Some(i.sex())
        });
        if c.student_number != new_number || !agrees {
            return Err(refused("case", "duplicate-undo-changed"));
        }
        // The upgraded record gives its official number back first: it is the one restored.
        if let (Some(up), Some(up_old)) = (upgraded_id, upgraded_old_number) {
            let r = current(up).ok_or(RegistryError::NotFound)?;
            if !downgrade(&mut tx, r, old_id.as_deref(), up_old, reason, &who, now).await? {
                return Err(refused("case", "duplicate-undo-changed"));
            }
        }
        let retired = match &old {
            Some(i) => match RegionCode::parse(i.region_prefix()) {
                Ok(code) => crate::regions::Regions(self.0).get(code).await?.is_none(),
                Err(_) => true,
            },
            None => false,
        };
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE student SET id_number = $1, student_number = $2, id_region_retired = $3 \
                WHERE id = $4 AND student_number = $5 AND NOT EXISTS (SELECT 1 FROM student o \
                WHERE o.student_number = $2 AND o.id <> $4)",
            ))
            .bind(&old_id)
            .bind(&old_number)
            .bind(retired)
            .bind(corrected)
            .bind(&new_number)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n != 1 {
            return Err(refused("case", "duplicate-undo-changed"));
        }
        lineage(
            &mut tx,
            corrected,
            &[
                ("id_number", c.id_number.clone(), old_id.clone()),
                ("student_number", Some(new_number), Some(old_number)),
            ],
            reason,
            &who,
            now,
        )
        .await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE duplicate_case SET status = 'open', resolved_at = NULL, \
                resolved_by = NULL, corrected_id = NULL, corrected_old_id_number = NULL, \
                corrected_old_number = NULL, corrected_new_number = NULL, upgraded_id = NULL, \
                upgraded_old_number = NULL WHERE id = $1 AND status = 'corrected'",
            ))
            .bind(id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        step(&mut tx, id, "undo", &who, reason, now).await?;
        audit::append(
            &mut tx,
            &actor.entry("duplicate.undo", &id.to_string(), "success", &school.node()),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Moves a case from `from` to `to` status if it is still in `from` (compare-and-set: of two
/// people resolving at once, one finds it moved on). Resolving stamps who and when; reopening
/// clears them.
async fn set_status(
    tx: &mut Tx,
    id: Uuid,
    from: &str,
    to: &str,
    resolved: Option<(DateTime<Utc>, &str)>,
) -> crate::Result<bool> {
    let n = db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "UPDATE duplicate_case SET status = $1, resolved_at = $2, resolved_by = $3, \
            merge_event = NULL, upgraded_id = NULL, upgraded_old_number = NULL \
            WHERE id = $4 AND status = $5",
        ))
        .bind(to)
        .bind(resolved.map(|r| r.0))
        .bind(resolved.map(|r| r.1.to_owned()))
        .bind(id)
        .bind(from)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
