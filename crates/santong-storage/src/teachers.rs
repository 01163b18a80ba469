//! Teachers and staff (教职工): the record, and the events that place a person at a school
//! (appoint) or take them off its staff (leave). As for students, a school's staff on a date is
//! the people whose latest event by then is an appointment there; reads go through the scope
//! filter on that school; ID numbers are shown masked.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use santong_domain::identity::Scope;
use santong_domain::registry::{Ethnicity, ResidentId, SchoolStatus, Sex, parse_person_name};
use santong_domain::staff::teacher_number;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::DynQuery;
use crate::identity::Actor;
use crate::registry::{Registry, RegistryError, SchoolRow, refused, rule, today};
use crate::{Db, Page, Tx, db_query};

/// A member of staff where they are on a date. (`Debug` by hand: it holds an ID number.)
#[derive(Clone, sqlx::FromRow)]
pub struct StaffRow {
    pub id: Uuid,
    pub teacher_number: String,
    pub name: String,
    pub sex: String,
    pub birth_date: NaiveDate,
    pub ethnicity: String,
    pub id_number: String,
    pub qualification: String,
    pub title: String,
    pub subjects: String,
    pub post: String,
    pub created_at: DateTime<Utc>,
    pub school_code: String,
    /// `appoint` (on the staff) or `leave`.
    pub kind: String,
    pub since: NaiveDate,
}

impl std::fmt::Debug for StaffRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffRow")
            .field("id", &self.id)
            .field("teacher_number", &self.teacher_number)
            .finish_non_exhaustive()
    }
}

impl StaffRow {
    pub fn id_masked(&self) -> String {
        ResidentId::parse(&self.id_number)
            .map(|i| i.masked())
            .unwrap_or_else(|_| "****".into())
    }
}

/// A person appointed at a school: raw text, checked by [`Teachers::appoint`]. (No `Debug`
/// derive: it holds an ID number.)
#[derive(Clone, Default, serde::Deserialize)]
pub struct NewTeacher {
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    #[serde(default)]
    pub ethnicity: String,
    pub id_number: String,
    pub qualification: String,
    pub title: String,
    #[serde(default)]
    pub subjects: String,
    pub post: String,
    /// `YYYY-MM-DD`; empty: today.
    #[serde(default)]
    pub appointed_on: String,
}

impl std::fmt::Debug for NewTeacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTeacher").finish_non_exhaustive()
    }
}

const STAFF_SELECT: &str = "SELECT t.id, t.teacher_number, t.name, t.sex, t.birth_date, \
    t.ethnicity, t.id_number, t.qualification, t.title, t.subjects, t.post, t.created_at, \
    e.school_code, e.kind, e.effective_on AS since FROM teacher t \
    JOIN teacher_event e ON e.teacher_id = t.id JOIN school s ON s.code = e.school_code WHERE";

/// `e` is the teacher's latest event effective by `on`.
fn push_latest(q: &mut DynQuery, on: NaiveDate) {
    q.push(
        " e.id = (SELECT e2.id FROM teacher_event e2 WHERE e2.teacher_id = t.id \
        AND e2.effective_on <= ",
    )
    .bind(on)
    .push(" ORDER BY e2.effective_on DESC, e2.recorded_at DESC, e2.id DESC LIMIT 1)");
}

/// The record with this ID number, locked for the transaction on PostgreSQL (SQLite's write
/// transactions are exclusive): (id, name).
async fn lock_by_id_number(tx: &mut Tx, id_number: &str) -> crate::Result<Option<(Uuid, String)>> {
    Ok(match tx {
        Tx::Sqlite(t) => {
            sqlx::query_as("SELECT id, name FROM teacher WHERE id_number = ?1")
                .bind(id_number)
                .fetch_optional(&mut **t)
                .await?
        }
        Tx::Postgres(t) => {
            sqlx::query_as("SELECT id, name FROM teacher WHERE id_number = $1 FOR UPDATE")
                .bind(id_number)
                .fetch_optional(&mut **t)
                .await?
        }
    })
}

async fn lock_by_id(tx: &mut Tx, id: Uuid) -> crate::Result<()> {
    if let Tx::Postgres(t) = tx {
        let _: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM teacher WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **t)
            .await?;
    }
    Ok(())
}

/// The person's latest event: (kind, school, effective date).
async fn latest_event(
    tx: &mut Tx,
    teacher: Uuid,
) -> crate::Result<Option<(String, String, NaiveDate)>> {
    Ok(db_query!(tx, tx, |sql, ex| {
        sqlx::query_as(sql(
            "SELECT kind, school_code, effective_on FROM teacher_event WHERE teacher_id = $1 \
            ORDER BY effective_on DESC, recorded_at DESC, id DESC LIMIT 1",
        ))
        .bind(teacher)
        .fetch_optional(ex)
        .await?
    }))
}

/// Locks the person's record (PostgreSQL) and reads their latest event: (kind, school, date).
pub(crate) async fn lock_latest(
    tx: &mut Tx,
    teacher: Uuid,
) -> crate::Result<Option<(String, String, NaiveDate)>> {
    lock_by_id(tx, teacher).await?;
    latest_event(tx, teacher).await
}

/// The last approval of a staff move: the person, still on `from`'s staff, is appointed at `to`
/// today (which takes them off the old staff). Returns the appointment's event id.
pub(crate) async fn appoint_on_move(
    tx: &mut Tx,
    actor: &Actor<'_>,
    teacher: Uuid,
    from: &str,
    to: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Uuid, RegistryError> {
    let Some((kind, school, since)) = lock_latest(tx, teacher).await? else {
        return Err(RegistryError::NotFound);
    };
    if kind != "appoint" || school != from {
        return Err(refused("step", "move-teacher-changed"));
    }
    let event = Uuid::now_v7();
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO teacher_event (id, teacher_id, kind, school_code, effective_on, \
            recorded_at, actor, reason) VALUES ($1, $2, 'appoint', $3, $4, $5, $6, $7)",
        ))
        .bind(event)
        .bind(teacher)
        .bind(to)
        .bind(today().max(since))
        .bind(now)
        .bind(actor.name())
        .bind(reason)
        .execute(ex)
        .await?
        .rows_affected()
    });
    Ok(event)
}

/// A staff list's filter and order.
#[derive(Debug, Clone, Default)]
pub struct StaffFilter {
    /// Part of the name or of the subjects, or a whole staff number.
    pub text: Option<String>,
    /// By staff number instead of by name.
    pub by_number: bool,
    pub descending: bool,
}

/// The highest sequence of the staff numbers of `county` and `year` given so far (0: none).
pub(crate) async fn highest_number(tx: &mut Tx, county: &str, year: i32) -> crate::Result<u32> {
    let prefix = format!("T{county}{year:04}");
    let highest: Option<String> = db_query!(tx, tx, |sql, ex| {
        sqlx::query_scalar(sql(
            "SELECT MAX(teacher_number) FROM teacher WHERE teacher_number >= $1 \
            AND teacher_number < $2",
        ))
        .bind(&prefix)
        .bind(format!("{prefix}~"))
        .fetch_one(ex)
        .await?
    });
    Ok(highest
        .and_then(|h| h.get(11..).and_then(|s| s.parse::<u32>().ok()))
        .unwrap_or(0))
}

/// A staff record as entered, every field checked.
#[derive(Clone)]
pub(crate) struct CheckedTeacher {
    pub(crate) name: String,
    pub(crate) sex: Sex,
    pub(crate) birth: NaiveDate,
    pub(crate) ethnicity: Ethnicity,
    pub(crate) id: ResidentId,
    pub(crate) qualification: &'static str,
    pub(crate) title: &'static str,
    pub(crate) subjects: String,
    pub(crate) post: &'static str,
    pub(crate) on: NaiveDate,
}

/// Checks a person appointed at `school` as entered (a form or a sheet's row: coded fields by
/// code or name): every problem is reported, each with its field.
pub(crate) fn check_teacher(
    school: &SchoolRow,
    input: &NewTeacher,
    today: NaiveDate,
) -> Result<CheckedTeacher, Vec<santong_domain::paging::FieldError>> {
    let mut errors = vec![];
    let name = parse_person_name(&input.name);
    if name.is_none() {
        errors.push(rule("name", "student-bad-name"));
    }
    let sex = Sex::parse(&input.sex);
    if sex.is_none() {
        errors.push(rule("sex", "student-bad-sex"));
    }
    let birth = NaiveDate::parse_from_str(input.birth_date.trim(), "%Y-%m-%d")
        .ok()
        .filter(|b| {
            let age = today.years_since(*b).unwrap_or(0);
            (18..=75).contains(&age)
        });
    if birth.is_none() {
        errors.push(rule("birth_date", "teacher-bad-birth"));
    }
    let ethnicity = match input.ethnicity.trim() {
        "" => Ethnicity::parse("01"),
        e => Ethnicity::parse(e),
    };
    if ethnicity.is_none() {
        errors.push(rule("ethnicity", "student-bad-ethnicity"));
    }
    let id = match ResidentId::parse(input.id_number.trim()) {
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
    };
    if let (Some(id), Some(b)) = (&id, birth)
        && id.birth_date() != (b.year(), b.month(), b.day())
    {
        errors.push(rule("id_number", "student-id-birth-mismatch"));
    }
    if let (Some(id), Some(s)) = (&id, sex)
        && id.sex() != s
    {
        errors.push(rule("id_number", "student-id-sex-mismatch"));
    }
    let qualification = santong_domain::staff::qualification(&input.qualification);
    if qualification.is_none() {
        errors.push(rule("qualification", "teacher-bad-code"));
    }
    let title = santong_domain::staff::title(&input.title);
    if title.is_none() {
        errors.push(rule("title", "teacher-bad-code"));
    }
    let post = santong_domain::staff::post(&input.post);
    if post.is_none() {
        errors.push(rule("post", "teacher-bad-code"));
    }
    let subjects = input.subjects.trim();
    if subjects.chars().count() > 50 {
        errors.push(rule("subjects", "teacher-bad-subjects"));
    }
    let on = match input.appointed_on.trim() {
        "" => Some(today),
        d => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .filter(|d| *d <= today && *d >= school.opened_on),
    };
    if on.is_none() {
        errors.push(rule("appointed_on", "student-bad-enrol-date"));
    }
    if school.status() != Some(SchoolStatus::Open) {
        errors.push(rule("school", "registry-not-open"));
    }
    let (
        Some(name),
        Some(sex),
        Some(birth),
        Some(ethnicity),
        Some(id),
        Some(qualification),
        Some(title),
        Some(post),
        Some(on),
    ) = (
        name,
        sex,
        birth,
        ethnicity,
        id,
        qualification,
        title,
        post,
        on,
    )
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CheckedTeacher {
        name,
        sex,
        birth,
        ethnicity,
        id,
        qualification,
        title,
        subjects: subjects.to_owned(),
        post,
        on,
    })
}

pub struct Teachers<'a>(pub &'a Db);

impl Teachers<'_> {
    /// The staff of `school` on `on`, by name.
    pub async fn staff(
        &self,
        scope: &Scope,
        school: &str,
        on: NaiveDate,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<StaffRow>> {
        self.staff_filtered(scope, school, on, &StaffFilter::default(), limit, offset)
            .await
    }

    /// [`Teachers::staff`] filtered by name, subject or number, in the order asked for.
    pub async fn staff_filtered(
        &self,
        scope: &Scope,
        school: &str,
        on: NaiveDate,
        f: &StaffFilter,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<StaffRow>> {
        let filter = |q: &mut DynQuery| {
            push_latest(q, on);
            q.push(" AND e.kind = 'appoint' AND e.school_code = ")
                .bind(school.to_owned());
            if let Some(text) = f.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                let pattern = format!("%{}%", crate::identity::like_escape(text));
                q.push(" AND (t.name LIKE ").bind(pattern.clone());
                q.push(" ESCAPE '\\' OR t.subjects LIKE ").bind(pattern);
                q.push(" ESCAPE '\\' OR t.teacher_number = ")
                    .bind(text.to_uppercase())
                    .push(")");
            }
            q.push(" AND");
            crate::scope::push(q, scope, "s.county", "s.code");
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(STAFF_SELECT);
        filter(&mut q);
        let dir = if f.descending { " DESC" } else { "" };
        q.push(if f.by_number {
            " ORDER BY t.teacher_number"
        } else {
            " ORDER BY t.name"
        })
        .push(dir)
        .push(", t.id LIMIT ")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push(
            "SELECT COUNT(*) FROM teacher t JOIN teacher_event e ON e.teacher_id = t.id \
            JOIN school s ON s.code = e.school_code WHERE",
        );
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// A member of staff where they are today (or the school they left), if in `scope`.
    pub async fn teacher(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<StaffRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(STAFF_SELECT);
        push_latest(&mut q, today());
        q.push(" AND t.id = ").bind(id).push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// Appoints a person at `school`: a new record with a new staff number, or — for someone
    /// registered before who is on no staff now — a new appointment of the same record. Someone
    /// on another school's staff is refused (a move between schools goes through approvals).
    pub async fn appoint(
        &self,
        actor: Actor<'_>,
        school: &str,
        input: &NewTeacher,
    ) -> Result<StaffRow, RegistryError> {
        let school = Registry(self.0).managed_school(&actor, school).await?;
        let today = today();
        let CheckedTeacher {
            name,
            sex,
            birth,
            ethnicity,
            id,
            qualification,
            title,
            subjects,
            post,
            on,
        } = check_teacher(&school, input, today).map_err(RegistryError::Fields)?;
        let subjects = subjects.as_str();
        let now = Utc::now();
        let mut tx = self.0.begin().await?;
        let mut tried: Option<u32> = None;
        let mut attempt = 0;
        let teacher = loop {
            if let Some((t, recorded)) = lock_by_id_number(&mut tx, id.as_str()).await? {
                // Registered before: the same person (the name must agree), on no staff now,
                // appointed no earlier than their last event.
                if recorded != name {
                    return Err(refused("name", "teacher-name-mismatch"));
                }
                let latest = latest_event(&mut tx, t).await?;
                if let Some((kind, at, since)) = &latest {
                    if kind == "appoint" {
                        drop(tx);
                        audit::record(
                            self.0,
                            &actor.entry(
                                "teacher.duplicate",
                                &t.to_string(),
                                "denied",
                                &school.node(),
                            ),
                        )
                        .await?;
                        let key = if *at == school.code {
                            "teacher-on-staff-here"
                        } else {
                            "teacher-elsewhere"
                        };
                        return Err(RegistryError::Fields(vec![rule("id_number", key)]));
                    }
                    if on < *since {
                        return Err(refused("appointed_on", "student-event-before-last"));
                    }
                }
                // What they hold now is what the new appointment says.
                db_query!(&mut tx, tx, |sql, ex| {
                    sqlx::query(sql(
                        "UPDATE teacher SET qualification = $1, title = $2, subjects = $3, \
                        post = $4 WHERE id = $5",
                    ))
                    .bind(qualification)
                    .bind(title)
                    .bind(subjects)
                    .bind(post)
                    .bind(t)
                    .execute(ex)
                    .await?
                    .rows_affected()
                });
                break t;
            }
            // A new record: the next free number of the county and year. Of two first
            // appointments racing for it (PostgreSQL), the loser tries the next; if the race was
            // for the same person, the loop finds their record at the top.
            let seq = (highest_number(&mut tx, &school.county, on.year()).await? + 1)
                .max(tried.map_or(0, |t| t + 1));
            let number = teacher_number(&school.county, on.year(), seq)
                .ok_or_else(|| refused("school", "teacher-no-number"))?;
            let tid = Uuid::now_v7();
            let inserted = db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "INSERT INTO teacher (id, teacher_number, name, sex, birth_date, \
                    ethnicity, id_number, qualification, title, subjects, post, created_at) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                    ON CONFLICT DO NOTHING",
                ))
                .bind(tid)
                .bind(&number)
                .bind(&name)
                .bind(sex.code())
                .bind(birth)
                .bind(ethnicity.code())
                .bind(id.as_str())
                .bind(qualification)
                .bind(title)
                .bind(subjects)
                .bind(post)
                .bind(now)
                .execute(ex)
                .await?
                .rows_affected()
            });
            if inserted == 1 {
                break tid;
            }
            tried = Some(seq);
            attempt += 1;
            if attempt > 20 {
                return Err(refused("school", "teacher-no-number"));
            }
        };
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO teacher_event (id, teacher_id, kind, school_code, effective_on, \
                recorded_at, actor, reason) VALUES ($1, $2, 'appoint', $3, $4, $5, $6, '')",
            ))
            .bind(Uuid::now_v7())
            .bind(teacher)
            .bind(&school.code)
            .bind(on)
            .bind(now)
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        // By the record's id, never the ID number.
        audit::append(
            &mut tx,
            &actor.entry(
                "teacher.appoint",
                &teacher.to_string(),
                "success",
                &school.node(),
            ),
        )
        .await?;
        tx.commit().await?;
        self.teacher(&Scope::everything(), teacher)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// Takes a member of staff off their school's staff from `on` (retirement, resignation…).
    pub async fn leave(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        on: &str,
        reason: &str,
    ) -> Result<StaffRow, RegistryError> {
        let t = self
            .teacher(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let school = Registry(self.0)
            .managed_school(&actor, &t.school_code)
            .await?;
        if t.kind != "appoint" {
            return Err(refused("kind", "teacher-not-on-staff"));
        }
        let today = today();
        let Some(on) = (match on.trim() {
            "" => Some(today),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d").ok(),
        })
        .filter(|d| *d <= today && *d >= t.since) else {
            return Err(refused("effective_on", "student-event-before-last"));
        };
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 100 {
            return Err(refused("reason", "student-event-reason"));
        }
        let mut tx = self.0.begin().await?;
        // The record locked, the latest event re-read: a second leave, or a move meanwhile, finds
        // the page it came from out of date.
        lock_by_id(&mut tx, id).await?;
        match latest_event(&mut tx, id).await? {
            Some((kind, at, _)) if kind == "appoint" && at == t.school_code => {}
            _ => return Err(RegistryError::Stale),
        }
        // A move in approval is decided along its chain (rejected there), not cut short here.
        let moving: i64 = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM staff_move WHERE teacher_id = $1 AND status = 'pending'",
            ))
            .bind(id)
            .fetch_one(ex)
            .await?
        });
        if moving > 0 {
            return Err(refused("reason", "teacher-move-pending"));
        }
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO teacher_event (id, teacher_id, kind, school_code, effective_on, \
                recorded_at, actor, reason) VALUES ($1, $2, 'leave', $3, $4, $5, $6, $7)",
            ))
            .bind(Uuid::now_v7())
            .bind(id)
            .bind(&t.school_code)
            .bind(on)
            .bind(Utc::now())
            .bind(actor.name())
            .bind(reason)
            .execute(ex)
            .await?
            .rows_affected()
        });
        audit::append(
            &mut tx,
            &actor.entry("teacher.leave", &id.to_string(), "success", &school.node()),
        )
        .await?;
        tx.commit().await?;
        self.teacher(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound)
    }
}
