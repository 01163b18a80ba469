//! Staff imports (导入教职工): a school's staff list. A row is matched by ID number (one person,
//! one record for life): a person new to the register is recorded and appointed at the school;
//! one on the school's staff has their post fields brought up to date; one who left a school is
//! appointed again. A person on another school's staff is a rejected row (that is a staff move).
//! Every write is logged in `import_change` under the batch, which is how the batch is undone.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::import::{self as parse, Column, TeacherColumn};
use uuid::Uuid;

use super::{Carry, Conn, ImportError, Problem, Reject, Tally};
use crate::Tx;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::SchoolRow;
use crate::teachers::{CheckedTeacher, NewTeacher, check_teacher, highest_number};

/// The fields of a record an import may change.
const POST_FIELDS: [&str; 4] = ["qualification", "title", "subjects", "post"];

#[derive(sqlx::FromRow)]
struct Known {
    id: Uuid,
    id_number: String,
    name: String,
    qualification: String,
    title: String,
    subjects: String,
    post: String,
    last_kind: Option<String>,
    last_school: Option<String>,
    last_on: Option<NaiveDate>,
}

impl Known {
    fn field(&self, f: &str) -> &str {
        match f {
            "qualification" => &self.qualification,
            "title" => &self.title,
            "subjects" => &self.subjects,
            _ => &self.post,
        }
    }
}

fn field_of<'c>(c: &'c CheckedTeacher, f: &str) -> &'c str {
    match f {
        "qualification" => c.qualification,
        "title" => c.title,
        "subjects" => &c.subjects,
        _ => c.post,
    }
}

/// What a valid row does.
pub(super) enum TeacherAction {
    New(Box<CheckedTeacher>),
    /// Off every staff now: appointed here again, post fields brought up to date.
    Return(Uuid, Box<CheckedTeacher>, Vec<Change>),
    Update(Uuid, Vec<Change>),
    Unchanged,
}

/// (field, old, new)
pub(super) type Change = (&'static str, String, String);

/// One run over a staff sheet.
pub(super) struct TeacherRun<'a> {
    school: &'a SchoolRow,
    cols: Vec<Option<TeacherColumn>>,
    today: NaiveDate,
    pg: bool,
    seen: HashMap<String, u64>,
    pub(super) tally: Tally,
}

impl<'a> TeacherRun<'a> {
    pub(super) fn start(
        school: &'a SchoolRow,
        headers: &[String],
        today: NaiveDate,
        pg: bool,
    ) -> Result<Self, ImportError> {
        let cols = parse::columns::<TeacherColumn, _>(headers)
            .map_err(|s| ImportError::SameField(s.first, s.second))?;
        for c in TeacherColumn::ALL {
            if c.required() && !cols.contains(&Some(c)) {
                return Err(ImportError::MissingColumn(c.field()));
            }
        }
        Ok(TeacherRun {
            school,
            cols,
            today,
            pg,
            seen: HashMap::new(),
            tally: Tally::default(),
        })
    }

    fn index(&self, field: &str) -> Option<usize> {
        self.cols
            .iter()
            .position(|c| c.is_some_and(|c| c.field() == field))
    }

    fn cell<'r>(&self, row: &'r [String], c: TeacherColumn) -> &'r str {
        self.cols
            .iter()
            .position(|x| *x == Some(c))
            .and_then(|i| row.get(i))
            .map_or("", String::as_str)
    }

    /// The row as the appointment form, read the forgiving way (a cell that does not parse is
    /// passed on as written, so the check names it).
    fn input(&self, row: &[String]) -> NewTeacher {
        let cell = |c| parse::normalize(self.cell(row, c));
        let date =
            |raw: String| parse::parse_date(&raw).map_or(raw, |d| d.format("%Y-%m-%d").to_string());
        NewTeacher {
            name: cell(TeacherColumn::Name),
            sex: parse::sex(&cell(TeacherColumn::Sex))
                .map_or_else(|| cell(TeacherColumn::Sex), |s| s.code().into()),
            birth_date: date(cell(TeacherColumn::BirthDate)),
            ethnicity: match cell(TeacherColumn::Ethnicity) {
                e if e.is_empty() => e,
                e => parse::ethnicity(&e).map_or(e, |x| x.code()),
            },
            id_number: parse::id_number(self.cell(row, TeacherColumn::IdNumber)),
            qualification: cell(TeacherColumn::Qualification),
            title: cell(TeacherColumn::Title),
            subjects: cell(TeacherColumn::Subjects),
            post: cell(TeacherColumn::Post),
            appointed_on: match cell(TeacherColumn::AppointedOn) {
                d if d.is_empty() => d,
                d => date(d),
            },
        }
    }

    /// Checks a chunk of rows against the rules, the file so far and the register.
    pub(super) async fn check(
        &mut self,
        conn: &mut Conn<'_>,
        rows: Vec<(u64, Vec<String>)>,
    ) -> crate::Result<(Vec<TeacherAction>, Vec<Reject>)> {
        let mut parsed = Vec::with_capacity(rows.len());
        for (line, cells) in rows {
            let mut problems = vec![];
            let checked = match check_teacher(self.school, &self.input(&cells), self.today) {
                Ok(c) => Some(c),
                Err(errors) => {
                    for e in errors {
                        let key = match e.kind.key() {
                            "registry-bad-date" | "student-bad-enrol-date" => "import-bad-date",
                            k => k,
                        };
                        problems.push(Problem::at(self.index(&e.field), key));
                    }
                    None
                }
            };
            if let Some(c) = &checked {
                match self.seen.get(c.id.as_str()) {
                    Some(first) => problems.push(Problem {
                        col: None,
                        key: "import-dup-in-file".into(),
                        line: Some(*first),
                    }),
                    None => {
                        self.seen.insert(c.id.as_str().to_owned(), line);
                    }
                }
            }
            parsed.push((line, cells, checked, problems));
        }
        // One query for the records the chunk's ID numbers name, with their latest event.
        let ids: Vec<String> = parsed
            .iter()
            .filter(|p| p.3.is_empty())
            .filter_map(|p| p.2.as_ref().map(|c| c.id.as_str().to_owned()))
            .collect();
        let mut known: HashMap<String, Known> = HashMap::new();
        if !ids.is_empty() {
            let mut q = DynQuery::new(self.pg);
            let last = |col: &str| {
                format!(
                    "(SELECT e.{col} FROM teacher_event e WHERE e.teacher_id = t.id \
                    ORDER BY e.effective_on DESC, e.recorded_at DESC, e.id DESC LIMIT 1)"
                )
            };
            q.push(
                "SELECT t.id, t.id_number, t.name, t.qualification, t.title, t.subjects, t.post, ",
            )
            .push(&last("kind"))
            .push(" AS last_kind, ")
            .push(&last("school_code"))
            .push(" AS last_school, ")
            .push(&last("effective_on"))
            .push(" AS last_on FROM teacher t WHERE t.id_number IN")
            .push_in(&ids);
            for k in conn.fetch::<Known>(q).await? {
                known.insert(k.id_number.clone(), k);
            }
        }
        let mut actions = vec![];
        let mut rejects = vec![];
        for (line, cells, checked, mut problems) in parsed {
            self.tally.rows += 1;
            let action = match (checked, problems.is_empty()) {
                (Some(c), true) => match known.get(c.id.as_str()) {
                    None => Some(TeacherAction::New(Box::new(c))),
                    Some(k) if k.name != c.name => {
                        problems.push(Problem::at(self.index("name"), "teacher-name-mismatch"));
                        None
                    }
                    Some(k) => {
                        let changes: Vec<Change> = POST_FIELDS
                            .iter()
                            .filter(|f| k.field(f) != field_of(&c, f))
                            .map(|f| (*f, k.field(f).to_owned(), field_of(&c, f).to_owned()))
                            .collect();
                        match (k.last_kind.as_deref(), k.last_school.as_deref()) {
                            (Some("appoint"), Some(at)) if at == self.school.code => {
                                Some(if changes.is_empty() {
                                    TeacherAction::Unchanged
                                } else {
                                    TeacherAction::Update(k.id, changes)
                                })
                            }
                            (Some("appoint"), _) => {
                                problems.push(Problem::at(
                                    self.index("id_number"),
                                    "teacher-elsewhere",
                                ));
                                None
                            }
                            _ if k.last_on.is_some_and(|d| c.on < d) => {
                                problems.push(Problem::at(
                                    self.index("appointed_on"),
                                    "student-event-before-last",
                                ));
                                None
                            }
                            _ => Some(TeacherAction::Return(k.id, Box::new(c), changes)),
                        }
                    }
                },
                _ => None,
            };
            match action {
                Some(a) => {
                    match &a {
                        TeacherAction::New(_) | TeacherAction::Return(..) => self.tally.new += 1,
                        TeacherAction::Update(..) => self.tally.updated += 1,
                        TeacherAction::Unchanged => self.tally.unchanged += 1,
                    }
                    actions.push(a);
                }
                None => {
                    self.tally.rejected += 1;
                    rejects.push(Reject {
                        line,
                        cells,
                        problems,
                    });
                }
            }
        }
        Ok((actions, rejects))
    }
}

/// Writes a chunk's actions: new records with the next staff numbers of the county and year,
/// appointments carrying the batch, updated fields; every write logged for undo.
pub(super) async fn apply(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    school: &SchoolRow,
    actions: Vec<TeacherAction>,
    now: DateTime<Utc>,
    carry: &mut Carry,
) -> Result<(), ImportError> {
    let Carry {
        staff_numbers: numbers,
        log,
        ..
    } = carry;
    use chrono::Datelike;
    if matches!(tx, Tx::Postgres(_)) && actions.iter().any(|a| matches!(a, TeacherAction::New(_))) {
        // Staff numbers run per county and year: two imports of one county take turns.
        let mut l = DynQuery::new(true);
        l.push("SELECT code FROM region WHERE code = ")
            .bind(school.county.clone())
            .push(" FOR UPDATE");
        let _: Vec<(String,)> = l.fetch_all_in(tx).await?;
    }
    let mut records: Vec<(Uuid, String, CheckedTeacher)> = vec![];
    let mut appointments: Vec<(Uuid, Uuid, NaiveDate)> = vec![];
    let mut updates: Vec<(Uuid, Vec<Change>)> = vec![];
    for a in actions {
        match a {
            TeacherAction::New(c) => {
                let year = c.on.year();
                let next = match numbers.get(&year) {
                    Some(n) => *n + 1,
                    None => highest_number(tx, &school.county, year).await? + 1,
                };
                numbers.insert(year, next);
                let number = santong_domain::staff::teacher_number(&school.county, year, next)
                    .ok_or_else(|| crate::registry::refused("school", "teacher-no-number"))?;
                let id = Uuid::now_v7();
                appointments.push((Uuid::now_v7(), id, c.on));
                records.push((id, number, *c));
            }
            TeacherAction::Return(id, c, changes) => {
                appointments.push((Uuid::now_v7(), id, c.on));
                if !changes.is_empty() {
                    updates.push((id, changes));
                }
            }
            TeacherAction::Update(id, changes) => updates.push((id, changes)),
            TeacherAction::Unchanged => {}
        }
    }
    insert_batched(
        tx,
        "INSERT INTO teacher (id, teacher_number, name, sex, birth_date, ethnicity, id_number, \
        qualification, title, subjects, post, created_at) VALUES ",
        "",
        &records,
        |(id, number, c)| {
            vec![
                Val::Uuid(*id),
                Val::Text(number.clone()),
                Val::Text(c.name.clone()),
                Val::Text(c.sex.code().to_owned()),
                Val::Date(c.birth),
                Val::Text(c.ethnicity.code()),
                Val::Text(c.id.as_str().to_owned()),
                Val::Text(c.qualification.to_owned()),
                Val::Text(c.title.to_owned()),
                Val::Text(c.subjects.clone()),
                Val::Text(c.post.to_owned()),
                Val::Time(now),
            ]
        },
    )
    .await?;
    for (id, ..) in &records {
        log.created("teacher", id.to_string());
    }
    insert_batched(
        tx,
        "INSERT INTO teacher_event (id, teacher_id, kind, school_code, effective_on, \
        recorded_at, actor, reason, batch_id) VALUES ",
        "",
        &appointments,
        |(id, teacher, on)| {
            vec![
                Val::Uuid(*id),
                Val::Uuid(*teacher),
                Val::Text("appoint".into()),
                Val::Text(school.code.clone()),
                Val::Date(*on),
                Val::Time(now),
                Val::Text(actor.name()),
                Val::Text("import".into()),
                Val::Uuid(batch),
            ]
        },
    )
    .await?;
    for (id, changes) in &updates {
        for (field, old, new) in changes {
            // The field names come from POST_FIELDS, never from the file.
            let mut u = DynQuery::new(matches!(tx, Tx::Postgres(_)));
            u.push("UPDATE teacher SET ")
                .push(field)
                .push(" = ")
                .bind(new.clone())
                .push(" WHERE id = ")
                .bind(*id);
            u.execute_in(tx).await?;
            log.changed("teacher", id.to_string(), field, old, new);
        }
    }
    log.write(tx, batch).await?;
    Ok(())
}

/// Undoes a committed staff batch inside the caller's transaction: refused (nothing written) if
/// anything was recorded since on a person it touched. Changed fields are restored, the
/// appointments it wrote deleted, and the records it created deleted with them. Returns the
/// number of people it touched.
pub(super) async fn undo(tx: &mut Tx, batch: Uuid) -> Result<u64, ImportError> {
    let pg = matches!(tx, Tx::Postgres(_));
    let refused = || ImportError::from(crate::registry::refused("batch", "import-later-changes"));
    #[derive(sqlx::FromRow)]
    struct Logged {
        record_id: String,
        field: Option<String>,
        old_value: Option<String>,
        new_value: Option<String>,
    }
    let mut q = DynQuery::new(pg);
    q.push(
        "SELECT record_id, field, old_value, new_value FROM import_change \
        WHERE table_name = 'teacher' AND batch_id = ",
    )
    .bind(batch)
    .push(" ORDER BY seq DESC");
    let logged: Vec<Logged> = q.fetch_all_in(tx).await?;
    let mut d = DynQuery::new(pg);
    d.push("SELECT teacher_id FROM teacher_event WHERE batch_id = ")
        .bind(batch);
    let appointed: Vec<(Uuid,)> = d.fetch_all_in(tx).await?;
    let mut touched: Vec<Uuid> = logged
        .iter()
        .filter_map(|l| Uuid::parse_str(&l.record_id).ok())
        .chain(appointed.iter().map(|r| r.0))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    // Anything recorded since the commit on someone the batch touched stands on top of it: an
    // event, or a staff move asked for.
    for chunk in touched.chunks(200) {
        let mut q = DynQuery::new(pg);
        q.push("SELECT COUNT(*) FROM staff_move WHERE teacher_id IN");
        q.push_in(chunk);
        q.push(" AND created_at > (SELECT committed_at FROM import_batch WHERE id = ")
            .bind(batch)
            .push(")");
        let n: Vec<(i64,)> = q.fetch_all_in(tx).await?;
        if n.first().is_some_and(|r| r.0 > 0) {
            return Err(refused());
        }
        let mut q = DynQuery::new(pg);
        q.push("SELECT COUNT(*) FROM teacher_event l WHERE l.teacher_id IN");
        q.push_in(chunk);
        q.push(" AND (l.batch_id IS NULL OR l.batch_id <> ")
            .bind(batch)
            .push(") AND l.recorded_at > (SELECT committed_at FROM import_batch WHERE id = ")
            .bind(batch)
            .push(")");
        let n: Vec<(i64,)> = q.fetch_all_in(tx).await?;
        if n.first().is_some_and(|r| r.0 > 0) {
            return Err(refused());
        }
    }
    let mut created = vec![];
    for l in &logged {
        let Ok(record) = Uuid::parse_str(&l.record_id) else {
            continue;
        };
        let Some(field) = &l.field else {
            created.push(record);
            continue;
        };
        // The column from the fixed list, never from the log's text.
        let Some(column) = POST_FIELDS.iter().find(|f| **f == field.as_str()) else {
            continue;
        };
        let mut u = DynQuery::new(pg);
        u.push("UPDATE teacher SET ")
            .push(column)
            .push(" = ")
            .bind_val(Val::OptText(l.old_value.clone()))
            .push(" WHERE id = ")
            .bind(record)
            .push(" AND ")
            .push(column)
            .push(" = ")
            .bind_val(Val::OptText(l.new_value.clone()));
        // Edited by hand since: that edit stands on the batch.
        if u.execute_in(tx).await? == 0 {
            return Err(refused());
        }
    }
    let mut d = DynQuery::new(pg);
    d.push("DELETE FROM teacher_event WHERE batch_id = ")
        .bind(batch);
    d.execute_in(tx).await?;
    for chunk in created.chunks(200) {
        let mut d = DynQuery::new(pg);
        d.push("DELETE FROM teacher WHERE id IN");
        d.push_in(chunk);
        d.execute_in(tx).await?;
    }
    Ok(touched.len() as u64)
}
