//! Classes (班级): per school and school year, in one grade, with a head teacher; membership with
//! dates. A class list on a day shows the members of that day who are still at the school then
//! (a student who left or moved away drops out of it without anyone editing the class).

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::identity::Scope;
use santong_domain::registry::{Grades, SchoolStatus, SchoolYear};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::{Registry, RegistryError, refused, rule, today};
use crate::students::{mask_number, push_placing};
use crate::{Db, db_query};

/// A class, with how many students it has on the day asked about.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ClassRow {
    pub id: Uuid,
    pub school_code: String,
    pub county: String,
    pub school_year: i32,
    pub grade: i32,
    pub name: String,
    pub head_teacher: Option<Uuid>,
    pub head_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub members: i64,
}

/// A member of a class on a day (the student number masked when it holds an ID number).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MemberRow {
    pub student_id: Uuid,
    pub name: String,
    #[serde(skip)]
    pub student_number: String,
    pub sex: String,
    pub status: String,
    pub from_on: NaiveDate,
    pub until_on: Option<NaiveDate>,
}

impl MemberRow {
    pub fn number_masked(&self) -> String {
        mask_number(&self.student_number)
    }
}

/// A class as entered: raw text, checked by [`Classes::create`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NewClass {
    /// `2025` or `2025-2026`; empty: the current school year.
    #[serde(default)]
    pub school_year: String,
    pub grade: String,
    /// `1班`, `(2)班`…
    pub name: String,
    /// The head teacher's user name; empty: none yet.
    #[serde(default)]
    pub head_teacher: String,
}

const CLASS_SELECT: &str = "SELECT c.id, c.school_code, s.county, c.school_year, c.grade, c.name, \
    c.head_teacher, u.display_name AS head_name, c.created_at, ";

/// Appends the members of class `c` on `on` who are at its school that day: membership dates,
/// and the student's event in force placing them there.
fn push_members(q: &mut DynQuery, on: NaiveDate) {
    q.push(
        " FROM class_member m JOIN student st ON st.id = m.student_id \
        JOIN student_event e ON e.student_id = st.id WHERE m.class_id = c.id AND m.from_on <= ",
    )
    .bind(on)
    .push(" AND (m.until_on IS NULL OR m.until_on > ")
    .bind(on)
    .push(") AND");
    push_placing(q, on);
    q.push(" AND e.school_code = c.school_code AND e.status <> 'out'");
}

/// The most students placed in one go (a grade of a large school).
pub const MAX_PLACED: usize = 500;

/// A class as entered, every field checked.
pub(crate) struct CheckedClass {
    pub(crate) year: SchoolYear,
    pub(crate) grade: u8,
    pub(crate) name: String,
    pub(crate) head: Option<Uuid>,
}

/// Checks a class as entered (a form or a sheet's row) for `school`: every problem is reported,
/// each with its field. `head` answers for a head teacher's user name: the account, if it may
/// head a class at the school (a teacher or administrator there).
pub(crate) fn check_class(
    school: &crate::registry::SchoolRow,
    input: &NewClass,
    today: NaiveDate,
    head: impl Fn(&str) -> Option<Uuid>,
) -> Result<CheckedClass, Vec<santong_domain::paging::FieldError>> {
    let mut errors = vec![];
    let year = match input.school_year.trim() {
        "" => Some(SchoolYear::of_date(today)),
        y => SchoolYear::parse(y),
    }
    .filter(|y| y.end() >= school.opened_on && y.0 <= SchoolYear::of_date(today).0 + 1);
    if year.is_none() {
        errors.push(rule("school_year", "class-bad-year"));
    }
    let grade = input
        .grade
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|g| Grades::parse(&school.grades).is_some_and(|r| r.contains(*g)));
    if grade.is_none() {
        errors.push(rule("grade", "student-bad-grade"));
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 20 {
        errors.push(rule("name", "class-bad-name"));
    }
    let head = match input.head_teacher.trim() {
        "" => None,
        username => {
            let found = head(username);
            if found.is_none() {
                errors.push(rule("head_teacher", "class-bad-teacher"));
            }
            found
        }
    };
    if school.status() != Some(SchoolStatus::Open) {
        errors.push(rule("school", "registry-not-open"));
    }
    match (year, grade) {
        (Some(year), Some(grade)) if errors.is_empty() => Ok(CheckedClass {
            year,
            grade,
            name: name.to_owned(),
            head,
        }),
        _ => Err(errors),
    }
}

pub struct Classes<'a>(pub &'a Db);

impl Classes<'_> {
    /// The classes of `school` in `year`, by grade and name, with their size on `on`.
    pub async fn list(
        &self,
        scope: &Scope,
        school: &str,
        year: SchoolYear,
        on: NaiveDate,
    ) -> crate::Result<Vec<ClassRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(CLASS_SELECT).push("(SELECT COUNT(*)");
        push_members(&mut q, on);
        q.push(
            ") AS members FROM school_class c JOIN school s ON s.code = c.school_code \
            LEFT JOIN app_user u ON u.id = c.head_teacher WHERE c.school_code = ",
        )
        .bind(school.to_owned())
        .push(" AND c.school_year = ")
        .bind(i64::from(year.0))
        .push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" ORDER BY c.grade, c.name");
        q.fetch_all(self.0).await
    }

    /// One class with its size on `on`, if its school is in `scope`.
    pub async fn class(
        &self,
        scope: &Scope,
        id: Uuid,
        on: NaiveDate,
    ) -> crate::Result<Option<ClassRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(CLASS_SELECT).push("(SELECT COUNT(*)");
        push_members(&mut q, on);
        q.push(
            ") AS members FROM school_class c JOIN school s ON s.code = c.school_code \
            LEFT JOIN app_user u ON u.id = c.head_teacher WHERE c.id = ",
        )
        .bind(id)
        .push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// The class list on `on`, by name.
    pub async fn members(
        &self,
        scope: &Scope,
        id: Uuid,
        on: NaiveDate,
    ) -> crate::Result<Vec<MemberRow>> {
        // `c` and `s` for the scope and the member filter.
        let sql_from = " FROM school_class c JOIN school s ON s.code = c.school_code, ";
        let mut full = DynQuery::for_db(self.0);
        full.push(
            "SELECT st.id AS student_id, st.name, st.student_number, st.sex, e.status, m.from_on, \
            m.until_on",
        )
        .push(sql_from)
        .push(
            "class_member m JOIN student st ON st.id = m.student_id \
            JOIN student_event e ON e.student_id = st.id WHERE m.class_id = c.id AND m.from_on <= ",
        )
        .bind(on)
        .push(" AND (m.until_on IS NULL OR m.until_on > ")
        .bind(on)
        .push(") AND");
        push_placing(&mut full, on);
        full.push(" AND e.school_code = c.school_code AND e.status <> 'out' AND c.id = ")
            .bind(id)
            .push(" AND");
        crate::scope::push(&mut full, scope, "s.county", "s.code");
        full.push(" ORDER BY st.name, st.id");
        full.fetch_all(self.0).await
    }

    /// The class a student is in on `on` at `school` (a class of that day's school year), if
    /// any: (class id, name).
    pub async fn class_of(
        &self,
        student: Uuid,
        school: &str,
        on: NaiveDate,
    ) -> crate::Result<Option<(Uuid, String)>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT c.id, c.name FROM class_member m JOIN school_class c ON c.id = m.class_id \
                WHERE m.student_id = $1 AND m.from_on <= $2 AND c.school_year = $3 \
                AND c.school_code = $4 AND (m.until_on IS NULL OR m.until_on > $2) \
                ORDER BY m.from_on DESC LIMIT 1",
            ))
            .bind(student)
            .bind(on)
            .bind(SchoolYear::of_date(on).0)
            .bind(school)
            .fetch_optional(ex)
            .await?
        }))
    }

    /// Students at the class's school and in its grade on `on` who are in no class of that
    /// school year then: the ones to place.
    pub async fn unplaced(
        &self,
        scope: &Scope,
        class: &ClassRow,
        on: NaiveDate,
        limit: u64,
    ) -> crate::Result<Vec<MemberRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT st.id AS student_id, st.name, st.student_number, st.sex, e.status, \
            e.effective_on AS from_on, NULL AS until_on FROM student st \
            JOIN student_event e ON e.student_id = st.id \
            JOIN school s ON s.code = e.school_code WHERE",
        );
        push_placing(&mut q, on);
        q.push(" AND e.status <> 'out' AND e.school_code = ")
            .bind(class.school_code.clone())
            .push(" AND e.grade = ")
            .bind(i64::from(class.grade))
            .push(
                " AND NOT EXISTS (SELECT 1 FROM class_member m \
                JOIN school_class c2 ON c2.id = m.class_id WHERE m.student_id = st.id \
                AND c2.school_code = e.school_code AND c2.school_year = ",
            )
            .bind(i64::from(class.school_year))
            .push(" AND m.from_on <= ")
            .bind(on)
            .push(" AND (m.until_on IS NULL OR m.until_on > ")
            .bind(on)
            .push(")) AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" ORDER BY st.name, st.id LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(200));
        q.fetch_all(self.0).await
    }

    /// Opens a class (needs `registry_manage` at the school).
    pub async fn create(
        &self,
        actor: Actor<'_>,
        school: &str,
        input: &NewClass,
    ) -> Result<ClassRow, RegistryError> {
        let school = Registry(self.0).managed_school(&actor, school).await?;
        let today = today();
        let found: Option<Uuid> = match input.head_teacher.trim() {
            "" => None,
            username => db_query!(self.0, read, |sql, ex| {
                sqlx::query_scalar(sql(
                    "SELECT u.id FROM app_user u JOIN role_grant g ON g.user_id = u.id \
                    WHERE u.username = $1 AND g.node_school = $2 \
                    AND u.disabled_at IS NULL AND g.role IN ('teacher', 'school_admin') LIMIT 1",
                ))
                .bind(username)
                .bind(&school.code)
                .fetch_optional(ex)
                .await?
            }),
        };
        let CheckedClass {
            year,
            grade,
            name,
            head,
        } = check_class(&school, input, today, |_| found).map_err(RegistryError::Fields)?;
        let name = name.as_str();
        let id = Uuid::now_v7();
        let mut tx = self.0.begin().await?;
        let inserted = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO school_class (id, school_code, school_year, grade, name, \
                head_teacher, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                ON CONFLICT (school_code, school_year, grade, name) DO NOTHING",
            ))
            .bind(id)
            .bind(&school.code)
            .bind(year.0)
            .bind(i32::from(grade))
            .bind(name)
            .bind(head)
            .bind(Utc::now())
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(refused("name", "class-name-taken"));
        }
        audit::append(
            &mut tx,
            &actor.entry("class.create", &id.to_string(), "success", &school.node()),
        )
        .await?;
        tx.commit().await?;
        self.class(
            &Scope::everything(),
            id,
            year.start().max(today.min(year.end())),
        )
        .await?
        .ok_or(RegistryError::NotFound)
    }

    /// Places students in a class from `from_on` (a day of its school year), ending any other
    /// class membership of theirs that year the same day. All or nothing: every student must be
    /// at the school, in the class's grade, that day.
    pub async fn assign(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        class: Uuid,
        students: &[Uuid],
        from_on: &str,
    ) -> Result<u64, RegistryError> {
        let today = today();
        let c = self
            .class(scope, class, today)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let school = Registry(self.0)
            .managed_school(&actor, &c.school_code)
            .await?;
        let year = SchoolYear(c.school_year);
        let on = match from_on.trim() {
            "" => Some(today.clamp(year.start(), year.end())),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d").ok(),
        }
        .filter(|d| (year.start()..=year.end()).contains(d));
        let Some(on) = on else {
            return Err(refused("from_on", "class-bad-date"));
        };
        let wanted: Vec<Uuid> = {
            let mut v = students.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        if wanted.is_empty() {
            return Err(refused("students", "class-no-students"));
        }
        if wanted.len() > MAX_PLACED {
            return Err(refused("students", "class-too-many"));
        }
        let pg = self.0.is_postgres();
        let in_list = |q: &mut DynQuery| {
            q.push(" (");
            for (i, s) in wanted.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(*s);
            }
            q.push(")");
        };
        let mut tx = self.0.begin().await?;
        if pg {
            // Held (in id order, so two placements cannot deadlock) until the memberships are
            // written: two placements of one student, or a transfer meanwhile, wait their turn.
            let mut l = DynQuery::new(pg);
            l.push("SELECT id FROM student WHERE id IN");
            in_list(&mut l);
            l.push(" ORDER BY id FOR UPDATE");
            let _: Vec<(Uuid,)> = l.fetch_all_in(&mut tx).await?;
        }
        // Every student must be at the school in the class's grade that day.
        let mut q = DynQuery::new(pg);
        q.push(
            "SELECT COUNT(*) FROM student st JOIN student_event e ON e.student_id = st.id WHERE",
        );
        push_placing(&mut q, on);
        q.push(" AND e.status <> 'out' AND e.school_code = ")
            .bind(c.school_code.clone())
            .push(" AND e.grade = ")
            .bind(i64::from(c.grade))
            .push(" AND st.id IN");
        in_list(&mut q);
        let (here,): (i64,) = q
            .fetch_all_in(&mut tx)
            .await?
            .into_iter()
            .next()
            .unwrap_or((0,));
        if usize::try_from(here).unwrap_or(0) != wanted.len() {
            return Err(refused("students", "class-student-not-here"));
        }
        // Every membership of theirs that year still running that day ends then (one starting
        // later never starts), this class's included: the row written below is the one in force.
        let mut u = DynQuery::new(pg);
        u.push("UPDATE class_member SET until_on = CASE WHEN from_on < ")
            .bind(on)
            .push(" THEN ")
            .bind(on)
            .push(" ELSE from_on END WHERE (until_on IS NULL OR until_on > ")
            .bind(on)
            .push(") AND class_id IN (SELECT id FROM school_class WHERE school_code = ")
            .bind(c.school_code.clone())
            .push(" AND school_year = ")
            .bind(i64::from(c.school_year))
            .push(") AND student_id IN");
        in_list(&mut u);
        u.execute_in(&mut tx).await?;
        insert_batched(
            &mut tx,
            "INSERT INTO class_member (class_id, student_id, from_on, until_on) VALUES ",
            " ON CONFLICT (class_id, student_id, from_on) DO UPDATE SET until_on = NULL",
            &wanted,
            |s| {
                vec![
                    Val::Uuid(class),
                    Val::Uuid(*s),
                    Val::Date(on),
                    Val::OptDate(None),
                ]
            },
        )
        .await?;
        let rows = wanted;
        let mut e = actor.entry(
            "class.assign",
            &class.to_string(),
            "success",
            &school.node(),
        );
        e.detail = format!("students={}", rows.len());
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
