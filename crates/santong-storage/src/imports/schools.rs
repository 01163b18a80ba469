//! School imports (导入学校): a county's schools and teaching points. A row is matched by school
//! code: a new code opens a school (a `create` event), a known school of the county gets the
//! fields that differ (an `edit` event). A code registered in another county, a closed school,
//! a teaching point whose parent is not an open school of the county (in the register or on an
//! earlier row) are rejected rows. Every write is logged for undo.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::identity::SchoolCode;
use santong_domain::import::{self as parse, Column, SchoolColumn};
use santong_domain::region::RegionCode;
use santong_domain::registry::SchoolKind;
use uuid::Uuid;

use super::{Carry, Conn, ImportError, Problem, Reject, Tally};
use crate::Tx;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::{Checked, SchoolInput, check_school};

/// A school of the county as it stands.
#[derive(Clone, sqlx::FromRow)]
struct Known {
    code: String,
    name: String,
    kind: String,
    urban_rural: String,
    parent_code: Option<String>,
    grades: String,
    status: String,
    opened_on: NaiveDate,
    version: i32,
    points: i64,
}

/// The fields an import may change, as stored: (field, value).
fn fields_of(c: &Checked) -> [(&'static str, String); 6] {
    [
        ("name", c.name.clone()),
        ("kind", c.kind.code().to_owned()),
        ("urban_rural", c.urban_rural.code().to_owned()),
        ("parent_code", c.parent.clone().unwrap_or_default()),
        ("grades", c.grades.to_string()),
        ("opened_on", c.opened_on.to_string()),
    ]
}

fn known_field(k: &Known, f: &str) -> String {
    match f {
        "name" => k.name.clone(),
        "kind" => k.kind.clone(),
        "urban_rural" => k.urban_rural.clone(),
        "parent_code" => k.parent_code.clone().unwrap_or_default(),
        "grades" => k.grades.clone(),
        _ => k.opened_on.to_string(),
    }
}

/// (field, old, new)
type Change = (&'static str, String, String);

pub(super) enum SchoolAction {
    New(Box<Checked>),
    Edit(Box<Checked>, i32, Vec<Change>),
    Unchanged,
}

/// What a school of the file or the register offers as a parent: (kind, opened on, open).
type ParentInfo = (String, NaiveDate, bool);

pub(super) struct SchoolRun {
    county: RegionCode,
    cols: Vec<Option<SchoolColumn>>,
    today: NaiveDate,
    pg: bool,
    known: HashMap<String, Known>,
    /// Schools opened by earlier rows of the file.
    earlier: HashMap<String, ParentInfo>,
    seen: HashMap<String, u64>,
    pub(super) tally: Tally,
}

impl SchoolRun {
    pub(super) async fn start(
        conn: &mut Conn<'_>,
        county: RegionCode,
        headers: &[String],
        today: NaiveDate,
        pg: bool,
    ) -> Result<SchoolRun, ImportError> {
        let cols = parse::columns::<SchoolColumn, _>(headers)
            .map_err(|s| ImportError::SameField(s.first, s.second))?;
        for c in SchoolColumn::ALL {
            if c.required() && !cols.contains(&Some(c)) {
                return Err(ImportError::MissingColumn(c.field()));
            }
        }
        // The county's schools, with how many open teaching points each has (a county has
        // hundreds: one query).
        let mut q = DynQuery::new(pg);
        q.push(
            "SELECT s.code, s.name, s.kind, s.urban_rural, s.parent_code, s.grades, s.status, \
            s.opened_on, s.version, (SELECT COUNT(*) FROM school p WHERE p.parent_code = s.code \
            AND p.status = 'open') AS points FROM school s WHERE s.county = ",
        )
        .bind(county.to_string());
        let known: Vec<Known> = conn.fetch(q).await?;
        Ok(SchoolRun {
            county,
            cols,
            today,
            pg,
            known: known.into_iter().map(|k| (k.code.clone(), k)).collect(),
            earlier: HashMap::new(),
            seen: HashMap::new(),
            tally: Tally::default(),
        })
    }

    fn index(&self, field: &str) -> Option<usize> {
        let field = if field == "name" {
            "school_name"
        } else {
            field
        };
        self.cols
            .iter()
            .position(|c| c.is_some_and(|c| c.field() == field))
    }

    fn cell(&self, row: &[String], c: SchoolColumn) -> String {
        self.cols
            .iter()
            .position(|x| *x == Some(c))
            .and_then(|i| row.get(i))
            .map_or_else(String::new, |v| parse::normalize(v))
    }

    /// The parent a teaching point names, if it can be one: an open school (not a teaching point
    /// or kindergarten) of the county, opened no later than the point.
    fn parent_ok(&self, c: &Checked) -> bool {
        let Some(p) = &c.parent else { return true };
        let info: Option<ParentInfo> = self.earlier.get(p).cloned().or_else(|| {
            self.known
                .get(p)
                .map(|k| (k.kind.clone(), k.opened_on, k.status == "open"))
        });
        info.is_some_and(|(kind, opened, open)| {
            let kind = SchoolKind::parse(&kind);
            open && p != &c.code
                && opened <= c.opened_on
                && kind.is_some_and(|k| !k.is_teaching_point() && k != SchoolKind::Kindergarten)
        })
    }

    pub(super) async fn check(
        &mut self,
        conn: &mut Conn<'_>,
        rows: Vec<(u64, Vec<String>)>,
    ) -> crate::Result<(Vec<SchoolAction>, Vec<Reject>)> {
        // Codes registered in other counties, for the chunk: one query.
        let codes: Vec<String> = rows
            .iter()
            .map(|(_, r)| self.cell(r, SchoolColumn::Code).replace(' ', ""))
            .filter(|c| SchoolCode::parse(c).is_some() && !self.known.contains_key(c))
            .collect();
        let mut elsewhere = std::collections::HashSet::new();
        if !codes.is_empty() {
            let mut q = DynQuery::new(self.pg);
            q.push("SELECT code FROM school WHERE code IN")
                .push_in(&codes);
            let found: Vec<(String,)> = conn.fetch(q).await?;
            elsewhere.extend(found.into_iter().map(|r| r.0));
        }
        let mut actions = vec![];
        let mut rejects = vec![];
        for (line, cells) in rows {
            self.tally.rows += 1;
            let kind = self.cell(&cells, SchoolColumn::Kind);
            let urban = self.cell(&cells, SchoolColumn::UrbanRural);
            let opened = self.cell(&cells, SchoolColumn::OpenedOn);
            let input = SchoolInput {
                code: self.cell(&cells, SchoolColumn::Code).replace(' ', ""),
                name: self.cell(&cells, SchoolColumn::Name),
                kind: parse::school_kind(&kind).map_or(kind, |k| k.code().to_owned()),
                urban_rural: parse::urban_rural(&urban).map_or(urban, |u| u.code().to_owned()),
                county: self.county.to_string(),
                parent_code: self.cell(&cells, SchoolColumn::ParentCode).replace(' ', ""),
                grades: self.cell(&cells, SchoolColumn::Grades),
                opened_on: parse::parse_date(&opened)
                    .map_or(opened, |d| d.format("%Y-%m-%d").to_string()),
            };
            let mut input = input;
            // A cell left empty (or a column left out) keeps what a known school has, as the
            // school form does: an empty date is not "opened today".
            if let Some(k) = self.known.get(&input.code) {
                if input.opened_on.is_empty() {
                    input.opened_on = k.opened_on.to_string();
                }
                if input.grades.is_empty() {
                    input.grades.clone_from(&k.grades);
                }
                let point =
                    SchoolKind::parse(&input.kind).is_some_and(SchoolKind::is_teaching_point);
                if input.parent_code.is_empty() && point {
                    input.parent_code = k.parent_code.clone().unwrap_or_default();
                }
            }
            let mut problems = vec![];
            let action = match check_school(&input, self.today, &|_| true) {
                Err(errors) => {
                    for e in errors {
                        let key = match e.kind.key() {
                            "registry-bad-date" => "import-bad-date",
                            k => k,
                        };
                        problems.push(Problem::at(self.index(&e.field), key));
                    }
                    None
                }
                Ok(c) => {
                    let at = |f: &str| self.index(f);
                    if let Some(first) = self.seen.get(&c.code) {
                        problems.push(Problem {
                            col: None,
                            key: "import-dup-in-file".into(),
                            line: Some(*first),
                        });
                    } else if elsewhere.contains(&c.code) {
                        problems.push(Problem::at(at("code"), "registry-code-taken"));
                    } else if !self.parent_ok(&c) {
                        problems.push(Problem::at(at("parent_code"), "registry-bad-parent"));
                    }
                    let known = self.known.get(&c.code);
                    if let Some(k) = known {
                        if k.status != "open" {
                            problems.push(Problem::at(at("code"), "registry-not-open"));
                        } else if k.points > 0
                            && (c.kind.is_teaching_point() || c.kind == SchoolKind::Kindergarten)
                        {
                            problems.push(Problem::at(at("kind"), "registry-has-points"));
                        }
                    }
                    if problems.is_empty() {
                        self.seen.insert(c.code.clone(), line);
                        // Later rows see this one: its parent has a point more, its own kind
                        // and parent are the new ones.
                        if let Some(p) = &c.parent
                            && known.and_then(|k| k.parent_code.as_ref()) != Some(p)
                            && let Some(pk) = self.known.get_mut(p)
                        {
                            pk.points += 1;
                        }
                        let known = self.known.get(&c.code).cloned();
                        if let Some(k) = self.known.get_mut(&c.code) {
                            k.kind = c.kind.code().to_owned();
                            k.parent_code.clone_from(&c.parent);
                            k.opened_on = c.opened_on;
                        }
                        let known = known.as_ref();
                        Some(match known {
                            None => {
                                self.earlier.insert(
                                    c.code.clone(),
                                    (c.kind.code().to_owned(), c.opened_on, true),
                                );
                                SchoolAction::New(Box::new(c))
                            }
                            Some(k) => {
                                let changes: Vec<Change> = fields_of(&c)
                                    .into_iter()
                                    .filter(|(f, v)| known_field(k, f) != *v)
                                    .map(|(f, v)| (f, known_field(k, f), v))
                                    .collect();
                                if changes.is_empty() {
                                    SchoolAction::Unchanged
                                } else {
                                    SchoolAction::Edit(Box::new(c), k.version, changes)
                                }
                            }
                        })
                    } else {
                        None
                    }
                }
            };
            match action {
                Some(a) => {
                    match &a {
                        SchoolAction::New(_) => self.tally.new += 1,
                        SchoolAction::Edit(..) => self.tally.updated += 1,
                        SchoolAction::Unchanged => self.tally.unchanged += 1,
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

pub(super) async fn apply(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    county: RegionCode,
    actions: Vec<SchoolAction>,
    now: DateTime<Utc>,
    carry: &mut Carry,
) -> Result<(), ImportError> {
    let pg = matches!(tx, Tx::Postgres(_));
    let mut new: Vec<Checked> = vec![];
    let mut edits: Vec<(Box<Checked>, i32, Vec<Change>)> = vec![];
    // (event id, school, kind, effective on, changes JSON)
    let mut events: Vec<(Uuid, String, &'static str, NaiveDate, String)> = vec![];
    for a in actions {
        match a {
            SchoolAction::New(c) => {
                let changes = serde_json::json!({
                    "name": [null, c.name],
                    "kind": [null, c.kind.code()],
                    "urban_rural": [null, c.urban_rural.code()],
                    "county": [null, county.to_string()],
                    "parent_code": [null, c.parent],
                    "grades": [null, c.grades.to_string()],
                });
                events.push((
                    Uuid::now_v7(),
                    c.code.clone(),
                    "create",
                    c.opened_on,
                    changes.to_string(),
                ));
                new.push(*c);
            }
            SchoolAction::Edit(c, version, changes) => edits.push((c, version, changes)),
            SchoolAction::Unchanged => {}
        }
    }
    // New schools first: an edit may make a school a teaching point of one of them.
    insert_batched(
        tx,
        "INSERT INTO school (code, name, kind, urban_rural, county, parent_code, grades, status, \
        opened_on, version, updated_at) VALUES ",
        "",
        &new,
        |c| {
            vec![
                Val::Text(c.code.clone()),
                Val::Text(c.name.clone()),
                Val::Text(c.kind.code().to_owned()),
                Val::Text(c.urban_rural.code().to_owned()),
                Val::Text(county.to_string()),
                Val::OptText(c.parent.clone()),
                Val::Text(c.grades.to_string()),
                Val::Text("open".into()),
                Val::Date(c.opened_on),
                Val::Int(1),
                Val::Time(now),
            ]
        },
    )
    .await?;
    for c in &new {
        carry.log.created("school", c.code.clone());
    }
    for (c, version, changes) in edits {
        let mut u = DynQuery::new(pg);
        u.push("UPDATE school SET name = ")
            .bind(c.name.clone())
            .push(", kind = ")
            .bind(c.kind.code())
            .push(", urban_rural = ")
            .bind(c.urban_rural.code())
            .push(", parent_code = ")
            .bind_val(Val::OptText(c.parent.clone()))
            .push(", grades = ")
            .bind(c.grades.to_string())
            .push(", opened_on = ")
            .bind(c.opened_on)
            .push(", version = version + 1, updated_at = ")
            .bind(now)
            .push(" WHERE code = ")
            .bind(c.code.clone())
            .push(" AND version = ")
            .bind_val(Val::Int(version));
        // Edited meanwhile by hand: the batch fails rather than overwrite it.
        if u.execute_in(tx).await? != 1 {
            return Err(crate::registry::RegistryError::Stale.into());
        }
        let mut json = serde_json::Map::new();
        for (f, old, new) in &changes {
            json.insert((*f).into(), serde_json::json!([old, new]));
            carry.log.changed("school", c.code.clone(), f, old, new);
        }
        events.push((
            Uuid::now_v7(),
            c.code.clone(),
            "edit",
            crate::registry::today(),
            serde_json::Value::Object(json).to_string(),
        ));
    }
    insert_batched(
        tx,
        "INSERT INTO school_event (id, school_code, kind, effective_on, recorded_at, actor, \
        actor_id, reason, changes) VALUES ",
        "",
        &events,
        |(id, code, kind, on, changes)| {
            vec![
                Val::Uuid(*id),
                Val::Text(code.clone()),
                Val::Text((*kind).to_owned()),
                Val::Date(*on),
                Val::Time(now),
                Val::Text(actor.name()),
                Val::OptUuid(actor.id()),
                Val::Text("import".into()),
                Val::Text(changes.clone()),
            ]
        },
    )
    .await?;
    for (id, ..) in &events {
        carry.log.created("school_event", id.to_string());
    }
    carry.log.write(tx, batch).await?;
    Ok(())
}

/// Undoes a school batch in the caller's transaction: its events removed, changed fields
/// restored (unless changed again since), the schools it opened removed (unless anything
/// refers to them since: pupils, staff, classes, conditions, teaching points, imports).
pub(super) async fn undo(tx: &mut Tx, batch: Uuid) -> Result<u64, ImportError> {
    let pg = matches!(tx, Tx::Postgres(_));
    let refused = || ImportError::from(crate::registry::refused("batch", "import-later-changes"));
    #[derive(sqlx::FromRow)]
    struct Logged {
        table_name: String,
        record_id: String,
        field: Option<String>,
        old_value: Option<String>,
        new_value: Option<String>,
    }
    let mut q = DynQuery::new(pg);
    q.push(
        "SELECT table_name, record_id, field, old_value, new_value FROM import_change \
        WHERE table_name IN ('school', 'school_event') AND batch_id = ",
    )
    .bind(batch)
    .push(" ORDER BY seq DESC");
    let logged: Vec<Logged> = q.fetch_all_in(tx).await?;
    if logged.is_empty() {
        return Ok(0);
    }
    let codes: Vec<&str> = logged
        .iter()
        .filter(|l| l.table_name == "school")
        .map(|l| l.record_id.as_str())
        .collect();
    let own_events: Vec<Uuid> = logged
        .iter()
        .filter(|l| l.table_name == "school_event")
        .filter_map(|l| Uuid::parse_str(&l.record_id).ok())
        .collect();
    // A school event since, not the batch's, stands on top of it.
    for chunk in codes.chunks(200) {
        let mut q = DynQuery::new(pg);
        q.push("SELECT id FROM school_event WHERE school_code IN")
            .push_in(chunk)
            .push(" AND recorded_at > (SELECT committed_at FROM import_batch WHERE id = ")
            .bind(batch)
            .push(")");
        let later: Vec<(Uuid,)> = q.fetch_all_in(tx).await?;
        if later.iter().any(|(id,)| !own_events.contains(id)) {
            return Err(refused());
        }
    }
    for chunk in own_events.chunks(200) {
        let mut d = DynQuery::new(pg);
        d.push("DELETE FROM school_event WHERE id IN")
            .push_in(chunk);
        d.execute_in(tx).await?;
    }
    let mut touched = std::collections::HashSet::new();
    for l in logged.iter().filter(|l| l.table_name == "school") {
        touched.insert(l.record_id.clone());
        let Some(field) = &l.field else {
            // References without a foreign key: accounts and grants at the school, transfer and
            // staff-move steps. Any of them and the school stays.
            for (table, column) in [
                ("role_grant", "node_school"),
                ("app_user", "home_school"),
                ("transfer_step", "school_code"),
                ("staff_move_step", "school_code"),
            ] {
                let mut c = DynQuery::new(pg);
                c.push("SELECT COUNT(*) FROM ")
                    .push(table)
                    .push(" WHERE ")
                    .push(column)
                    .push(" = ")
                    .bind(l.record_id.clone());
                let n: Vec<(i64,)> = c.fetch_all_in(tx).await?;
                if n.first().is_some_and(|r| r.0 > 0) {
                    return Err(refused());
                }
            }
            let mut d = DynQuery::new(pg);
            d.push("DELETE FROM school WHERE code = ")
                .bind(l.record_id.clone());
            match d.execute_in(tx).await {
                Ok(_) => {}
                // Something refers to the school since (a pupil, a class, a teaching point…).
                Err(crate::StorageError::Sqlx(sqlx::Error::Database(e)))
                    if e.is_foreign_key_violation() =>
                {
                    return Err(refused());
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        };
        // The column from the fixed list, with its type, never from the log's text.
        let Some(column) = [
            "name",
            "kind",
            "urban_rural",
            "parent_code",
            "grades",
            "opened_on",
        ]
        .into_iter()
        .find(|f| *f == field.as_str()) else {
            continue;
        };
        let value = |v: &Option<String>| -> Val {
            let v = v.clone().unwrap_or_default();
            match column {
                "parent_code" => Val::OptText(Some(v).filter(|s| !s.is_empty())),
                "opened_on" => {
                    Val::Date(NaiveDate::parse_from_str(&v, "%Y-%m-%d").unwrap_or_default())
                }
                _ => Val::Text(v),
            }
        };
        let mut u = DynQuery::new(pg);
        u.push("UPDATE school SET ")
            .push(column)
            .push(" = ")
            .bind_val(value(&l.old_value))
            .push(", version = version + 1 WHERE code = ")
            .bind(l.record_id.clone())
            .push(" AND ");
        if column == "parent_code" {
            u.push("COALESCE(parent_code, '') = ")
                .bind(l.new_value.clone().unwrap_or_default());
        } else {
            u.push(column).push(" = ").bind_val(value(&l.new_value));
        }
        if u.execute_in(tx).await? == 0 {
            return Err(refused());
        }
    }
    Ok(touched.len() as u64)
}
