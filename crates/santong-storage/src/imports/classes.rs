//! Class imports (导入班级): a school's classes for a school year, by grade and name, with their
//! head teachers (by user name). A class that exists (same year, grade and name) has its head
//! teacher brought up to date; a new one is opened. Writes are logged in `import_change` for undo.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::import::{self as parse, ClassColumn, Column};
use uuid::Uuid;

use super::{Carry, Conn, ImportError, Problem, Reject, Tally};
use crate::Tx;
use crate::classes::{CheckedClass, NewClass, check_class};
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::SchoolRow;

pub(super) enum ClassAction {
    New(Box<CheckedClass>),
    /// The class exists: its head teacher changes (old, new).
    Head(Uuid, Option<Uuid>, Option<Uuid>),
    Unchanged,
}

/// One run over a class sheet: the school's classes and the accounts that may head one, loaded
/// once (a school has hundreds at most).
pub(super) struct ClassRun<'a> {
    school: &'a SchoolRow,
    cols: Vec<Option<ClassColumn>>,
    today: NaiveDate,
    /// (year, grade, name) → (id, head teacher)
    classes: HashMap<(i32, i32, String), (Uuid, Option<Uuid>)>,
    staff: HashMap<String, Uuid>,
    seen: HashMap<(i32, i32, String), u64>,
    pub(super) tally: Tally,
}

impl<'a> ClassRun<'a> {
    pub(super) async fn start(
        conn: &mut Conn<'_>,
        school: &'a SchoolRow,
        headers: &[String],
        today: NaiveDate,
        pg: bool,
    ) -> Result<ClassRun<'a>, ImportError> {
        let cols = parse::columns::<ClassColumn, _>(headers)
            .map_err(|s| ImportError::SameField(s.first, s.second))?;
        for c in ClassColumn::ALL {
            if c.required() && !cols.contains(&Some(c)) {
                return Err(ImportError::MissingColumn(c.field()));
            }
        }
        let mut q = DynQuery::new(pg);
        q.push("SELECT id, school_year, grade, name, head_teacher FROM school_class WHERE school_code = ")
            .bind(school.code.clone());
        let rows: Vec<(Uuid, i32, i32, String, Option<Uuid>)> = conn.fetch(q).await?;
        let mut q = DynQuery::new(pg);
        q.push(
            "SELECT DISTINCT u.username, u.id FROM app_user u JOIN role_grant g ON g.user_id = u.id \
            WHERE g.node_school = ",
        )
        .bind(school.code.clone())
        .push(" AND u.disabled_at IS NULL AND g.role IN ('teacher', 'school_admin')");
        let staff: Vec<(String, Uuid)> = conn.fetch(q).await?;
        Ok(ClassRun {
            school,
            cols,
            today,
            classes: rows
                .into_iter()
                .map(|(id, y, g, n, h)| ((y, g, n), (id, h)))
                .collect(),
            staff: staff.into_iter().collect(),
            seen: HashMap::new(),
            tally: Tally::default(),
        })
    }

    fn index(&self, field: &str) -> Option<usize> {
        // The form calls the class's name `name`.
        let field = if field == "name" { "class_name" } else { field };
        self.cols
            .iter()
            .position(|c| c.is_some_and(|c| c.field() == field))
    }

    fn cell(&self, row: &[String], c: ClassColumn) -> String {
        self.cols
            .iter()
            .position(|x| *x == Some(c))
            .and_then(|i| row.get(i))
            .map_or_else(String::new, |v| parse::normalize(v))
    }

    pub(super) fn check(
        &mut self,
        rows: Vec<(u64, Vec<String>)>,
    ) -> (Vec<ClassAction>, Vec<Reject>) {
        let mut actions = vec![];
        let mut rejects = vec![];
        for (line, cells) in rows {
            self.tally.rows += 1;
            let grade = self.cell(&cells, ClassColumn::Grade);
            let input = NewClass {
                school_year: self.cell(&cells, ClassColumn::SchoolYear),
                grade: parse::grade(&grade).map_or(grade, |g| g.to_string()),
                name: self.cell(&cells, ClassColumn::Name),
                head_teacher: self.cell(&cells, ClassColumn::HeadTeacher),
            };
            let mut problems = vec![];
            let action = match check_class(self.school, &input, self.today, |u| {
                self.staff.get(u).copied()
            }) {
                Err(errors) => {
                    for e in errors {
                        problems.push(Problem::at(self.index(&e.field), e.kind.key()));
                    }
                    None
                }
                Ok(c) => {
                    let key = (c.year.0, i32::from(c.grade), c.name.clone());
                    if let Some(first) = self.seen.get(&key) {
                        problems.push(Problem {
                            col: None,
                            key: "import-dup-in-file".into(),
                            line: Some(*first),
                        });
                        None
                    } else {
                        self.seen.insert(key.clone(), line);
                        Some(match self.classes.get(&key) {
                            None => ClassAction::New(Box::new(c)),
                            // An empty head teacher cell leaves the class's as it is.
                            Some((_, old)) if c.head.is_none() || c.head == *old => {
                                ClassAction::Unchanged
                            }
                            Some((id, old)) => ClassAction::Head(*id, *old, c.head),
                        })
                    }
                }
            };
            match action {
                Some(a) => {
                    match &a {
                        ClassAction::New(_) => self.tally.new += 1,
                        ClassAction::Head(..) => self.tally.updated += 1,
                        ClassAction::Unchanged => self.tally.unchanged += 1,
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
        (actions, rejects)
    }
}

pub(super) async fn apply(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    school: &SchoolRow,
    actions: Vec<ClassAction>,
    now: DateTime<Utc>,
    carry: &mut Carry,
) -> Result<(), ImportError> {
    let pg = matches!(tx, Tx::Postgres(_));
    let mut new = vec![];
    for a in actions {
        match a {
            ClassAction::New(c) => new.push((Uuid::now_v7(), *c)),
            ClassAction::Head(id, old, head) => {
                let mut u = DynQuery::new(pg);
                u.push("UPDATE school_class SET head_teacher = ")
                    .bind_val(Val::OptUuid(head))
                    .push(" WHERE id = ")
                    .bind(id);
                u.execute_in(tx).await?;
                let text = |v: Option<Uuid>| v.map_or_else(String::new, |u| u.to_string());
                carry.log.changed(
                    "school_class",
                    id.to_string(),
                    "head_teacher",
                    &text(old),
                    &text(head),
                );
            }
            ClassAction::Unchanged => {}
        }
    }
    insert_batched(
        tx,
        "INSERT INTO school_class (id, school_code, school_year, grade, name, head_teacher, \
        created_at, created_by) VALUES ",
        "",
        &new,
        |(id, c)| {
            vec![
                Val::Uuid(*id),
                Val::Text(school.code.clone()),
                Val::Int(c.year.0),
                Val::Int(i32::from(c.grade)),
                Val::Text(c.name.clone()),
                Val::OptUuid(c.head),
                Val::Time(now),
                Val::Text(actor.name()),
            ]
        },
    )
    .await?;
    for (id, _) in &new {
        carry.log.created("school_class", id.to_string());
    }
    carry.log.write(tx, batch).await?;
    Ok(())
}

/// Undoes a class batch inside the caller's transaction: head teachers restored unless changed
/// since, the classes it opened removed unless students were placed in them since.
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
        WHERE table_name = 'school_class' AND batch_id = ",
    )
    .bind(batch)
    .push(" ORDER BY seq DESC");
    let logged: Vec<Logged> = q.fetch_all_in(tx).await?;
    let uuid = |v: &Option<String>| v.as_deref().and_then(|s| Uuid::parse_str(s).ok());
    let mut created = vec![];
    let mut touched = HashSet::new();
    for l in &logged {
        let Ok(record) = Uuid::parse_str(&l.record_id) else {
            continue;
        };
        touched.insert(record);
        if l.field.is_none() {
            created.push(record);
            continue;
        }
        let mut u = DynQuery::new(pg);
        u.push("UPDATE school_class SET head_teacher = ")
            .bind_val(Val::OptUuid(uuid(&l.old_value)))
            .push(" WHERE id = ")
            .bind(record)
            .push(if pg {
                " AND head_teacher IS NOT DISTINCT FROM "
            } else {
                " AND head_teacher IS "
            })
            .bind_val(Val::OptUuid(uuid(&l.new_value)));
        if u.execute_in(tx).await? == 0 {
            return Err(refused());
        }
    }
    for chunk in created.chunks(200) {
        let mut m = DynQuery::new(pg);
        m.push("SELECT COUNT(*) FROM class_member WHERE class_id IN")
            .push_in(chunk);
        let placed: Vec<(i64,)> = m.fetch_all_in(tx).await?;
        if placed.first().is_some_and(|r| r.0 > 0) {
            return Err(refused());
        }
        let mut d = DynQuery::new(pg);
        d.push("DELETE FROM school_class WHERE id IN")
            .push_in(chunk);
        d.execute_in(tx).await?;
    }
    Ok(touched.len() as u64)
}
