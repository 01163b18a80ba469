//! School condition imports (导入办学条件): a county's schools' conditions, one row per school and
//! school year, as the school page records them. A (school, year) without a record gets one; one
//! with a record gets the values that differ. A school not open in the county is a rejected row.
//! Every write is logged (the whole record before and after) for undo.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::import::{self as parse, Column, ConditionColumn};
use santong_domain::region::RegionCode;
use uuid::Uuid;

use super::{Carry, Conn, ImportError, Problem, Reject, Tally};
use crate::Tx;
use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::{CheckedConditions, ConditionInput, check_conditions};

/// A stored record's values, as the log keeps them.
#[derive(Clone, PartialEq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub(super) struct Values {
    building_area_m2: i32,
    classrooms: i32,
    multimedia_classrooms: i32,
    computers: i32,
    student_terminals: i32,
    broadband: String,
    bandwidth_mbps: Option<i32>,
    broadband_since: Option<NaiveDate>,
}

impl Values {
    fn of(c: &CheckedConditions) -> Values {
        Values {
            building_area_m2: c.area,
            classrooms: c.classrooms,
            multimedia_classrooms: c.multimedia,
            computers: c.computers,
            student_terminals: c.terminals,
            broadband: c.broadband.as_str().to_owned(),
            bandwidth_mbps: c.bandwidth,
            broadband_since: c.since,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Stored {
    school_code: String,
    school_year: i32,
    #[sqlx(flatten)]
    values: Values,
}

pub(super) enum ConditionAction {
    /// (school, the record, the values before if any)
    Write(String, Box<CheckedConditions>, Option<Values>),
    Unchanged,
}

pub(super) struct ConditionRun {
    cols: Vec<Option<ConditionColumn>>,
    today: NaiveDate,
    /// Open schools of the county → opened on.
    schools: HashMap<String, NaiveDate>,
    stored: HashMap<(String, i32), Values>,
    seen: HashMap<(String, i32), u64>,
    pub(super) tally: Tally,
}

impl ConditionRun {
    pub(super) async fn start(
        conn: &mut Conn<'_>,
        county: RegionCode,
        headers: &[String],
        today: NaiveDate,
        pg: bool,
    ) -> Result<ConditionRun, ImportError> {
        let cols = parse::columns::<ConditionColumn, _>(headers)
            .map_err(|s| ImportError::SameField(s.first, s.second))?;
        for c in ConditionColumn::ALL {
            if c.required() && !cols.contains(&Some(c)) {
                return Err(ImportError::MissingColumn(c.field()));
            }
        }
        let mut q = DynQuery::new(pg);
        q.push("SELECT code, opened_on FROM school WHERE status = 'open' AND county = ")
            .bind(county.to_string());
        let schools: Vec<(String, NaiveDate)> = conn.fetch(q).await?;
        let mut q = DynQuery::new(pg);
        q.push(
            "SELECT c.school_code, c.school_year, c.building_area_m2, c.classrooms, \
            c.multimedia_classrooms, c.computers, c.student_terminals, c.broadband, \
            c.bandwidth_mbps, c.broadband_since FROM school_condition c \
            JOIN school s ON s.code = c.school_code WHERE s.county = ",
        )
        .bind(county.to_string());
        let stored: Vec<Stored> = conn.fetch(q).await?;
        Ok(ConditionRun {
            cols,
            today,
            schools: schools.into_iter().collect(),
            stored: stored
                .into_iter()
                .map(|s| ((s.school_code, s.school_year), s.values))
                .collect(),
            seen: HashMap::new(),
            tally: Tally::default(),
        })
    }

    fn index(&self, field: &str) -> Option<usize> {
        self.cols
            .iter()
            .position(|c| c.is_some_and(|c| c.field() == field))
    }

    fn cell(&self, row: &[String], c: ConditionColumn) -> String {
        self.cols
            .iter()
            .position(|x| *x == Some(c))
            .and_then(|i| row.get(i))
            .map_or_else(String::new, |v| parse::normalize(v))
    }

    pub(super) fn check(
        &mut self,
        rows: Vec<(u64, Vec<String>)>,
    ) -> (Vec<ConditionAction>, Vec<Reject>) {
        let mut actions = vec![];
        let mut rejects = vec![];
        let current = santong_domain::registry::SchoolYear::of_date(self.today);
        for (line, cells) in rows {
            self.tally.rows += 1;
            let code = self.cell(&cells, ConditionColumn::Code).replace(' ', "");
            let number = |c| self.cell(&cells, c).replace([' ', ','], "");
            let broadband = self.cell(&cells, ConditionColumn::Broadband);
            let since = self.cell(&cells, ConditionColumn::BroadbandSince);
            let input = ConditionInput {
                school_year: match self.cell(&cells, ConditionColumn::SchoolYear) {
                    y if y.is_empty() => current.0.to_string(),
                    y => y,
                },
                building_area_m2: number(ConditionColumn::BuildingArea),
                classrooms: number(ConditionColumn::Classrooms),
                multimedia_classrooms: number(ConditionColumn::MultimediaClassrooms),
                computers: number(ConditionColumn::Computers),
                student_terminals: number(ConditionColumn::StudentTerminals),
                broadband: parse::broadband(&broadband)
                    .map_or(broadband, |b| b.as_str().to_owned()),
                bandwidth_mbps: number(ConditionColumn::BandwidthMbps)
                    .trim_end_matches(['M', 'm'])
                    .to_owned(),
                broadband_since: parse::parse_date(&since)
                    .map_or(since, |d| d.format("%Y-%m-%d").to_string()),
            };
            let mut problems = vec![];
            let action = match self.schools.get(&code) {
                None => {
                    problems.push(Problem::at(self.index("code"), "import-school-unknown"));
                    None
                }
                Some(opened) => match check_conditions(*opened, &input, self.today) {
                    Err(errors) => {
                        for e in errors {
                            problems.push(Problem::at(self.index(&e.field), e.kind.key()));
                        }
                        None
                    }
                    Ok(c) => {
                        let key = (code.clone(), c.year.0);
                        if let Some(first) = self.seen.get(&key) {
                            problems.push(Problem {
                                col: None,
                                key: "import-dup-in-file".into(),
                                line: Some(*first),
                            });
                            None
                        } else {
                            self.seen.insert(key.clone(), line);
                            let before = self.stored.get(&key).cloned();
                            Some(if before.as_ref() == Some(&Values::of(&c)) {
                                ConditionAction::Unchanged
                            } else {
                                ConditionAction::Write(code, Box::new(c), before)
                            })
                        }
                    }
                },
            };
            match action {
                Some(a) => {
                    match &a {
                        ConditionAction::Write(_, _, None) => self.tally.new += 1,
                        ConditionAction::Write(..) => self.tally.updated += 1,
                        ConditionAction::Unchanged => self.tally.unchanged += 1,
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

/// The log's key of a record: `school:year`.
fn key_of(code: &str, year: i32) -> String {
    format!("{code}:{year}")
}

pub(super) async fn apply(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    actions: Vec<ConditionAction>,
    now: DateTime<Utc>,
    carry: &mut Carry,
) -> Result<(), ImportError> {
    let mut rows = vec![];
    for a in actions {
        if let ConditionAction::Write(code, c, before) = a {
            let key = key_of(&code, c.year.0);
            let after = serde_json::to_string(&Values::of(&c)).unwrap_or_default();
            match &before {
                None => carry.log.created_as("school_condition", key, &after),
                Some(b) => carry.log.changed(
                    "school_condition",
                    key,
                    "values",
                    &serde_json::to_string(b).unwrap_or_default(),
                    &after,
                ),
            }
            rows.push((code, *c));
        }
    }
    insert_batched(
        tx,
        "INSERT INTO school_condition (school_code, school_year, building_area_m2, classrooms, \
        multimedia_classrooms, computers, student_terminals, broadband, bandwidth_mbps, \
        broadband_since, recorded_at, recorded_by) VALUES ",
        " ON CONFLICT (school_code, school_year) DO UPDATE SET \
        building_area_m2 = excluded.building_area_m2, classrooms = excluded.classrooms, \
        multimedia_classrooms = excluded.multimedia_classrooms, computers = excluded.computers, \
        student_terminals = excluded.student_terminals, broadband = excluded.broadband, \
        bandwidth_mbps = excluded.bandwidth_mbps, broadband_since = excluded.broadband_since, \
        recorded_at = excluded.recorded_at, recorded_by = excluded.recorded_by",
        &rows,
        |(code, c)| {
            vec![
                Val::Text(code.clone()),
                Val::Int(c.year.0),
                Val::Int(c.area),
                Val::Int(c.classrooms),
                Val::Int(c.multimedia),
                Val::Int(c.computers),
                Val::Int(c.terminals),
                Val::Text(c.broadband.as_str().to_owned()),
                Val::OptInt(c.bandwidth),
                Val::OptDate(c.since),
                Val::Time(now),
                Val::Text(actor.name()),
            ]
        },
    )
    .await?;
    carry.log.write(tx, batch).await?;
    Ok(())
}

/// Undoes a conditions batch in the caller's transaction: records it created removed, records
/// it changed restored — unless a record was changed again since.
pub(super) async fn undo(tx: &mut Tx, batch: Uuid) -> Result<u64, ImportError> {
    let pg = matches!(tx, Tx::Postgres(_));
    let refused = || ImportError::from(crate::registry::refused("batch", "import-later-changes"));
    #[derive(sqlx::FromRow)]
    struct Logged {
        record_id: String,
        old_value: Option<String>,
        new_value: Option<String>,
        field: Option<String>,
    }
    let mut q = DynQuery::new(pg);
    q.push(
        "SELECT record_id, old_value, new_value, field FROM import_change \
        WHERE table_name = 'school_condition' AND batch_id = ",
    )
    .bind(batch)
    .push(" ORDER BY seq DESC");
    let logged: Vec<Logged> = q.fetch_all_in(tx).await?;
    for l in &logged {
        let Some((code, year)) = l
            .record_id
            .split_once(':')
            .and_then(|(c, y)| Some((c.to_owned(), y.parse::<i32>().ok()?)))
        else {
            continue;
        };
        let mut r = DynQuery::new(pg);
        r.push(
            "SELECT school_code, school_year, building_area_m2, classrooms, \
            multimedia_classrooms, computers, student_terminals, broadband, bandwidth_mbps, \
            broadband_since FROM school_condition WHERE school_code = ",
        )
        .bind(code.clone())
        .push(" AND school_year = ")
        .bind_val(Val::Int(year));
        let now: Option<Stored> = r.fetch_all_in(tx).await?.into_iter().next();
        // What the batch wrote: the record must still hold it, or it was changed since.
        let written: Option<Values> = l
            .new_value
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok());
        match (&l.field, now) {
            (None, Some(now)) if Some(&now.values) == written.as_ref() => {
                let mut d = DynQuery::new(pg);
                d.push("DELETE FROM school_condition WHERE school_code = ")
                    .bind(code)
                    .push(" AND school_year = ")
                    .bind_val(Val::Int(year));
                d.execute_in(tx).await?;
            }
            (Some(_), Some(now)) if Some(&now.values) == written.as_ref() => {
                let Some(old) = l
                    .old_value
                    .as_deref()
                    .and_then(|v| serde_json::from_str::<Values>(v).ok())
                else {
                    continue;
                };
                let mut u = DynQuery::new(pg);
                u.push("UPDATE school_condition SET building_area_m2 = ")
                    .bind_val(Val::Int(old.building_area_m2))
                    .push(", classrooms = ")
                    .bind_val(Val::Int(old.classrooms))
                    .push(", multimedia_classrooms = ")
                    .bind_val(Val::Int(old.multimedia_classrooms))
                    .push(", computers = ")
                    .bind_val(Val::Int(old.computers))
                    .push(", student_terminals = ")
                    .bind_val(Val::Int(old.student_terminals))
                    .push(", broadband = ")
                    .bind(old.broadband.clone())
                    .push(", bandwidth_mbps = ")
                    .bind_val(Val::OptInt(old.bandwidth_mbps))
                    .push(", broadband_since = ")
                    .bind_val(Val::OptDate(old.broadband_since))
                    .push(" WHERE school_code = ")
                    .bind(code)
                    .push(" AND school_year = ")
                    .bind_val(Val::Int(year));
                u.execute_in(tx).await?;
            }
            (None, None) => {}
            _ => return Err(refused()),
        }
    }
    Ok(logged.len() as u64)
}
