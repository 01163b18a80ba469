//! Registry, part one: institutions (schools and teaching points) with their history.
//!
//! Reads go through the scope filter (`scope::push` on `s.county`, `s.code`); changes take an
//! [`Actor`] and need `registry_manage` at the school's county, so a school's own administrator
//! sees but does not open, close or merge schools. Every change is an event row with its
//! effective date and the fields before and after, written in the transaction of the change
//! together with its audit record.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use santong_domain::identity::{Node, Permission, SchoolCode, Scope};
use santong_domain::paging::{FieldError, FieldErrorKind};
use santong_domain::region::{RegionCode, RegionLevel};
use santong_domain::registry::{Grades, SchoolKind, SchoolStatus, UrbanRural, parse_school_name};
use serde::Serialize;
use uuid::Uuid;

use crate::audit;
use crate::dynsql::DynQuery;
use crate::identity::Actor;
use crate::regions::Regions;
use crate::{Db, Page, StorageError, Tx, db_query};

/// A school as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchoolRow {
    pub code: String,
    pub name: String,
    pub kind: String,
    pub urban_rural: String,
    pub county: String,
    pub parent_code: Option<String>,
    pub grades: String,
    pub status: String,
    pub opened_on: NaiveDate,
    pub closed_on: Option<NaiveDate>,
    pub merged_into: Option<String>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

const SCHOOL_COLUMNS: &str = "SELECT s.code, s.name, s.kind, s.urban_rural, s.county, \
    s.parent_code, s.grades, s.status, s.opened_on, s.closed_on, s.merged_into, s.version, \
    s.updated_at FROM school s";

impl SchoolRow {
    /// Where the school sits for scope checks.
    pub fn node(&self) -> Node {
        match (
            SchoolCode::parse(&self.code),
            RegionCode::parse(&self.county).ok(),
        ) {
            (Some(code), Some(county)) => Node::School { code, county },
            (_, Some(county)) => Node::Region(county),
            _ => Node::Nation,
        }
    }

    pub fn kind(&self) -> Option<SchoolKind> {
        SchoolKind::parse(&self.kind)
    }

    pub fn status(&self) -> Option<SchoolStatus> {
        SchoolStatus::parse(&self.status)
    }
}

/// One change in a school's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SchoolEventRow {
    pub id: Uuid,
    pub kind: String,
    pub effective_on: NaiveDate,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    pub changes: String,
}

/// A school as entered in a form or an API body: raw text, checked by [`Registry::create_school`]
/// and [`Registry::edit_school`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SchoolInput {
    pub code: String,
    pub name: String,
    pub kind: String,
    pub urban_rural: String,
    pub county: String,
    #[serde(default)]
    pub parent_code: String,
    /// Empty: the kind's usual grades.
    #[serde(default)]
    pub grades: String,
    /// `YYYY-MM-DD`; empty: today.
    #[serde(default)]
    pub opened_on: String,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Field by field, with the message key of each problem.
    #[error("invalid fields")]
    Fields(Vec<FieldError>),
    #[error("not allowed")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// Someone changed the record since the form was loaded.
    #[error("changed meanwhile")]
    Stale,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        RegistryError::Storage(e.into())
    }
}

type RegResult<T> = Result<T, RegistryError>;

/// Today in China (UTC+8): a school opened this morning is not opened "tomorrow".
pub fn today() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

/// A field refused by a domain rule, named by its message key.
pub(crate) fn rule(field: &str, key: &'static str) -> FieldError {
    FieldError::new(field, FieldErrorKind::Rule(key))
}

/// Whether free text holds a run of 11 or more digits (an ID or phone number pasted in), which
/// must not go into reasons shown to other schools or into the audit log.
pub fn holds_number(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_digit() || c == 'X' || c == 'x'))
        .map(str::len)
        .max()
        .unwrap_or(0)
        >= 11
}

/// A refusal of one field.
pub(crate) fn refused(field: &str, key: &'static str) -> RegistryError {
    RegistryError::Fields(vec![rule(field, key)])
}

/// How a school list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchoolSort {
    #[default]
    Code,
    Name,
    Opened,
}

impl SchoolSort {
    pub fn parse(s: &str) -> Option<SchoolSort> {
        match s {
            "code" => Some(SchoolSort::Code),
            "name" => Some(SchoolSort::Name),
            "opened" => Some(SchoolSort::Opened),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            SchoolSort::Code => "s.code",
            SchoolSort::Name => "s.name",
            SchoolSort::Opened => "s.opened_on",
        }
    }
}

/// Filters of the school list.
#[derive(Debug, Clone, Default)]
pub struct SchoolFilter {
    /// Name or code contains.
    pub text: Option<String>,
    /// Under this region (a province, prefecture or county).
    pub region: Option<RegionCode>,
    pub kind: Option<SchoolKind>,
    pub status: Option<SchoolStatus>,
    /// Teaching points of this school.
    pub parent: Option<String>,
    pub sort: SchoolSort,
    pub descending: bool,
}

/// A school's input, checked: what is written.
pub(crate) struct Checked {
    pub(crate) code: String,
    pub(crate) name: String,
    pub(crate) kind: SchoolKind,
    pub(crate) urban_rural: UrbanRural,
    pub(crate) county: RegionCode,
    pub(crate) parent: Option<String>,
    pub(crate) grades: Grades,
    pub(crate) opened_on: NaiveDate,
}

/// Checks a school as entered (a form or a sheet's row) field by field; `county_known` answers
/// whether a code is a county's.
pub(crate) fn check_school(
    input: &SchoolInput,
    today: NaiveDate,
    county_known: &dyn Fn(RegionCode) -> bool,
) -> Result<Checked, Vec<FieldError>> {
    let mut errors = vec![];
    let code = SchoolCode::parse(input.code.trim()).map(|c| c.to_string());
    if code.is_none() {
        errors.push(rule("code", "registry-bad-code"));
    }
    let name = parse_school_name(&input.name);
    if name.is_none() {
        errors.push(rule("name", "registry-bad-name"));
    }
    let kind = SchoolKind::parse(&input.kind);
    if kind.is_none() {
        errors.push(rule("kind", "registry-bad-kind"));
    }
    let urban_rural = UrbanRural::parse(&input.urban_rural);
    if urban_rural.is_none() {
        errors.push(rule("urban_rural", "registry-bad-urban-rural"));
    }
    let county = RegionCode::parse(input.county.trim())
        .ok()
        .filter(|c| county_known(*c));
    if county.is_none() {
        errors.push(rule("county", "registry-bad-county"));
    }
    let grades = match input.grades.trim() {
        "" => kind.map(SchoolKind::default_grades),
        g => Grades::parse(g).filter(|g| kind.is_none_or(|k| g.fits(k))),
    };
    if grades.is_none() {
        errors.push(rule("grades", "registry-bad-grades"));
    }
    let opened_on = match input.opened_on.trim() {
        "" => Some(today),
        d => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .filter(|d| *d <= today && d.year() >= 1900),
    };
    if opened_on.is_none() {
        errors.push(rule("opened_on", "registry-bad-date"));
    }
    let parent = Some(input.parent_code.trim())
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if kind.is_some_and(SchoolKind::is_teaching_point) && parent.is_none() {
        errors.push(rule("parent_code", "registry-parent-required"));
    }
    if kind.is_some_and(|k| !k.is_teaching_point()) && parent.is_some() {
        errors.push(rule("parent_code", "registry-parent-only-for-points"));
    }
    match (code, name, kind, urban_rural, county, grades, opened_on) {
        (
            Some(code),
            Some(name),
            Some(kind),
            Some(urban_rural),
            Some(county),
            Some(grades),
            Some(opened_on),
        ) if errors.is_empty() => Ok(Checked {
            code,
            name,
            kind,
            urban_rural,
            county,
            parent,
            grades,
            opened_on,
        }),
        _ => Err(errors),
    }
}

pub struct Registry<'a>(pub &'a Db);

impl Registry<'_> {
    /// A school the actor may change: not found outside what they may see (so a school out of
    /// reach looks like none), forbidden where they may only look.
    pub(crate) async fn managed_school(
        &self,
        actor: &Actor<'_>,
        code: &str,
    ) -> RegResult<SchoolRow> {
        let school = self
            .school(&Scope::everything(), code)
            .await?
            .filter(|s| actor.may(Permission::RegistryView, &s.node()))
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        Ok(school)
    }

    /// Records an export (`event`) of a list that is not one school's in the audit log: at
    /// `node` (the region filtered on, or the nation), with row count, filters and the caller's
    /// scope in `detail`.
    pub async fn record_export(
        &self,
        actor: Actor<'_>,
        event: &'static str,
        node: &Node,
        detail: String,
    ) -> crate::Result<()> {
        let mut e = actor.entry(event, &node.code(), "success", node);
        e.detail = detail;
        crate::audit::record(self.0, &e).await?;
        Ok(())
    }

    pub async fn list_schools(
        &self,
        scope: &Scope,
        f: &SchoolFilter,
        limit: u64,
        offset: u64,
    ) -> crate::Result<Page<SchoolRow>> {
        let filter = |q: &mut DynQuery| {
            q.push(" WHERE");
            crate::scope::push(q, scope, "s.county", "s.code");
            if let Some(text) = f.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                let pattern = format!("%{}%", crate::identity::like_escape(text));
                q.push(" AND (s.name LIKE ").bind(pattern.clone());
                q.push(" ESCAPE '\\' OR s.code LIKE ")
                    .bind(pattern)
                    .push(" ESCAPE '\\')");
            }
            if let Some(r) = f.region {
                q.push(" AND s.county LIKE ")
                    .bind(santong_domain::identity::region_prefix_pattern(r));
            }
            if let Some(k) = f.kind {
                q.push(" AND s.kind = ").bind(k.code().to_owned());
            }
            if let Some(st) = f.status {
                q.push(" AND s.status = ").bind(st.as_str().to_owned());
            }
            if let Some(p) = &f.parent {
                q.push(" AND s.parent_code = ").bind(p.clone());
            }
        };
        let mut q = DynQuery::for_db(self.0);
        q.push(SCHOOL_COLUMNS);
        filter(&mut q);
        q.push(" ORDER BY ")
            .push(f.sort.column())
            .push(if f.descending { " DESC" } else { " ASC" })
            .push(", s.code LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let items = q.fetch_all(self.0).await?;
        let mut c = DynQuery::for_db(self.0);
        c.push("SELECT COUNT(*) FROM school s");
        filter(&mut c);
        let total = u64::try_from(c.fetch_count(self.0).await?).unwrap_or(0);
        Ok(Page { items, total })
    }

    /// One school, if it lies in `scope`.
    pub async fn school(&self, scope: &Scope, code: &str) -> crate::Result<Option<SchoolRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push(SCHOOL_COLUMNS)
            .push(" WHERE s.code = ")
            .bind(code.to_owned())
            .push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        Ok(q.fetch_all::<SchoolRow>(self.0).await?.into_iter().next())
    }

    /// A school's history, newest first (the caller has checked the school is in scope).
    pub async fn history(&self, code: &str) -> crate::Result<Vec<SchoolEventRow>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, SchoolEventRow>(sql(
                "SELECT id, kind, effective_on, recorded_at, actor, reason, changes \
                FROM school_event WHERE school_code = $1 ORDER BY recorded_at DESC, id DESC",
            ))
            .bind(code)
            .fetch_all(ex)
            .await?
        }))
    }

    /// A school by code whatever the scope, locked until the transaction ends: for checks inside
    /// changes only. (SQLite's write transactions are exclusive already; PostgreSQL locks the row,
    /// so two changes that read the same school run one after the other.)
    async fn any_school(tx: &mut Tx, code: &str) -> crate::Result<Option<SchoolRow>> {
        const SQLITE: &str = "SELECT s.code, s.name, s.kind, s.urban_rural, s.county, \
            s.parent_code, s.grades, s.status, s.opened_on, s.closed_on, s.merged_into, \
            s.version, s.updated_at FROM school s WHERE s.code = ?1";
        const POSTGRES: &str = "SELECT s.code, s.name, s.kind, s.urban_rural, s.county, \
            s.parent_code, s.grades, s.status, s.opened_on, s.closed_on, s.merged_into, \
            s.version, s.updated_at FROM school s WHERE s.code = $1 FOR UPDATE";
        Ok(match tx {
            Tx::Sqlite(t) => {
                sqlx::query_as::<_, SchoolRow>(SQLITE)
                    .bind(code)
                    .fetch_optional(&mut **t)
                    .await?
            }
            Tx::Postgres(t) => {
                sqlx::query_as::<_, SchoolRow>(POSTGRES)
                    .bind(code)
                    .fetch_optional(&mut **t)
                    .await?
            }
        })
    }

    /// Checks every field and reports every problem at once.
    async fn check(&self, input: &SchoolInput, today: NaiveDate) -> RegResult<Checked> {
        let county = match RegionCode::parse(input.county.trim()) {
            Ok(c) => Regions(self.0)
                .get(c)
                .await?
                .is_some_and(|r| RegionLevel::parse(&r.level) == Some(RegionLevel::County)),
            Err(_) => false,
        };
        check_school(input, today, &|_| county).map_err(RegistryError::Fields)
    }

    /// A teaching point's parent must be an open school of the same county, not a teaching point.
    async fn check_parent(tx: &mut Tx, c: &Checked) -> RegResult<()> {
        let Some(p) = &c.parent else { return Ok(()) };
        let ok = Self::any_school(tx, p).await?.is_some_and(|ps| {
            ps.county == c.county.to_string()
                && ps.status() == Some(SchoolStatus::Open)
                && ps
                    .kind()
                    .is_some_and(|k| !k.is_teaching_point() && k != SchoolKind::Kindergarten)
                && ps.code != c.code
                && ps.opened_on <= c.opened_on
        });
        if ok {
            Ok(())
        } else {
            Err(RegistryError::Fields(vec![rule(
                "parent_code",
                "registry-bad-parent",
            )]))
        }
    }

    fn may_manage(actor: &Actor<'_>, county: RegionCode) -> RegResult<()> {
        if actor.may(Permission::RegistryManage, &Node::Region(county)) {
            Ok(())
        } else {
            Err(RegistryError::Forbidden)
        }
    }

    /// Opens a school (or a teaching point) in a county.
    pub async fn create_school(
        &self,
        actor: Actor<'_>,
        input: &SchoolInput,
    ) -> RegResult<SchoolRow> {
        let today = today();
        let c = self.check(input, today).await?;
        Self::may_manage(&actor, c.county)?;
        let mut tx = self.0.begin().await?;
        if Self::any_school(&mut tx, &c.code).await?.is_some() {
            return Err(RegistryError::Fields(vec![rule(
                "code",
                "registry-code-taken",
            )]));
        }
        Self::check_parent(&mut tx, &c).await?;
        let now = Utc::now();
        let inserted = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO school (code, name, kind, urban_rural, county, parent_code, grades, \
                status, opened_on, version, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, 1, $9) \
                ON CONFLICT (code) DO NOTHING",
            ))
            .bind(&c.code)
            .bind(&c.name)
            .bind(c.kind.code())
            .bind(c.urban_rural.code())
            .bind(c.county.to_string())
            .bind(&c.parent)
            .bind(c.grades.to_string())
            .bind(c.opened_on)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        // Created by someone else between our check and our insert.
        if inserted == 0 {
            return Err(RegistryError::Fields(vec![rule(
                "code",
                "registry-code-taken",
            )]));
        }
        let changes = serde_json::json!({
            "name": [null, c.name],
            "kind": [null, c.kind.code()],
            "urban_rural": [null, c.urban_rural.code()],
            "county": [null, c.county.to_string()],
            "parent_code": [null, c.parent],
            "grades": [null, c.grades.to_string()],
        });
        let node = Node::School {
            code: SchoolCode::parse(&c.code).ok_or(RegistryError::NotFound)?,
            county: c.county,
        };
        record(
            &mut tx,
            &actor,
            Change {
                node: &node,
                code: &c.code,
                kind: "create",
                effective_on: c.opened_on,
                reason: "",
                changes: &changes,
            },
        )
        .await?;
        tx.commit().await?;
        self.school(&Scope::everything(), &c.code)
            .await?
            .ok_or(RegistryError::NotFound)
    }

    /// Changes a school's details (not its code, status or county: those are closure and merger,
    /// or a new school). `version` is the one the form was loaded with.
    pub async fn edit_school(
        &self,
        actor: Actor<'_>,
        code: &str,
        version: i32,
        input: &SchoolInput,
        reason: &str,
    ) -> RegResult<()> {
        let today = today();
        // Field checks first, outside the transaction: they read regions from the pool, and a
        // transaction holding a connection while it waits for another could starve the pool.
        let shown = self
            .school(&Scope::everything(), code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let mut input = input.clone();
        input.code = shown.code.clone();
        input.county = shown.county.clone();
        if input.opened_on.trim().is_empty() {
            input.opened_on = shown.opened_on.to_string();
        }
        let checked = self.check(&input, today).await;
        let mut tx = self.0.begin().await?;
        let Some(before) = Self::any_school(&mut tx, code).await? else {
            return Err(RegistryError::NotFound);
        };
        let county = RegionCode::parse(&before.county).map_err(|_| RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryView, &before.node()) && !matches!(actor, Actor::Cli) {
            return Err(RegistryError::NotFound);
        }
        Self::may_manage(&actor, county)?;
        let mut c = checked?;
        if reason.chars().count() > 200 {
            return Err(RegistryError::Fields(vec![rule(
                "reason",
                "registry-reason-too-long",
            )]));
        }
        c.parent = c.parent.filter(|_| c.kind.is_teaching_point());
        Self::check_parent(&mut tx, &c).await?;
        if c.kind.is_teaching_point() || c.kind == SchoolKind::Kindergarten {
            // A school with teaching points under it cannot become one, nor a kindergarten.
            let points: i64 = db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query_scalar(sql(
                    "SELECT COUNT(*) FROM school WHERE parent_code = $1 AND status = 'open'",
                ))
                .bind(code)
                .fetch_one(ex)
                .await?
            });
            if points > 0 {
                return Err(RegistryError::Fields(vec![rule(
                    "kind",
                    "registry-has-points",
                )]));
            }
        }
        if before.status() != Some(SchoolStatus::Open) {
            return Err(RegistryError::Fields(vec![rule(
                "status",
                "registry-not-open",
            )]));
        }
        // Checked here as well as in the UPDATE: a form loaded before someone else's change is
        // stale even when it changes nothing.
        if before.version != version {
            return Err(RegistryError::Stale);
        }
        let mut changes = serde_json::Map::new();
        let mut diff = |field: &str, old: String, new: String| {
            if old != new {
                changes.insert(field.into(), serde_json::json!([old, new]));
            }
        };
        diff("name", before.name.clone(), c.name.clone());
        diff("kind", before.kind.clone(), c.kind.code().into());
        diff(
            "urban_rural",
            before.urban_rural.clone(),
            c.urban_rural.code().into(),
        );
        diff(
            "parent_code",
            before.parent_code.clone().unwrap_or_default(),
            c.parent.clone().unwrap_or_default(),
        );
        diff("grades", before.grades.clone(), c.grades.to_string());
        diff(
            "opened_on",
            before.opened_on.to_string(),
            c.opened_on.to_string(),
        );
        if changes.is_empty() {
            return Ok(());
        }
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE school SET name = $3, kind = $4, urban_rural = $5, parent_code = $6, \
                grades = $7, opened_on = $8, version = version + 1, updated_at = $9 \
                WHERE code = $1 AND version = $2",
            ))
            .bind(code)
            .bind(version)
            .bind(&c.name)
            .bind(c.kind.code())
            .bind(c.urban_rural.code())
            .bind(&c.parent)
            .bind(c.grades.to_string())
            .bind(c.opened_on)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(RegistryError::Stale);
        }
        let changes = serde_json::Value::Object(changes);
        record(
            &mut tx,
            &actor,
            Change {
                node: &before.node(),
                code,
                kind: "edit",
                effective_on: today,
                reason,
                changes: &changes,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a school on `on`, or merges it into `into` (an open school of the same county that
    /// is not one of its own teaching points). Its open teaching points must go first.
    pub async fn close_school(
        &self,
        actor: Actor<'_>,
        code: &str,
        version: i32,
        on: &str,
        into: Option<&str>,
        reason: &str,
    ) -> RegResult<()> {
        let today = today();
        let mut tx = self.0.begin().await?;
        let Some(before) = Self::any_school(&mut tx, code).await? else {
            return Err(RegistryError::NotFound);
        };
        let county = RegionCode::parse(&before.county).map_err(|_| RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryView, &before.node()) && !matches!(actor, Actor::Cli) {
            return Err(RegistryError::NotFound);
        }
        Self::may_manage(&actor, county)?;
        let mut errors = vec![];
        let date = NaiveDate::parse_from_str(on.trim(), "%Y-%m-%d")
            .ok()
            // Recorded when it happens: a closure cannot be scheduled ahead.
            .filter(|d| *d >= before.opened_on && *d <= today);
        if date.is_none() {
            errors.push(rule("on", "registry-bad-close-date"));
        }
        if reason.trim().is_empty() {
            errors.push(rule("reason", "registry-reason-required"));
        } else if reason.chars().count() > 200 {
            errors.push(rule("reason", "registry-reason-too-long"));
        }
        if before.status() != Some(SchoolStatus::Open) {
            errors.push(rule("status", "registry-not-open"));
        }
        let open_points: i64 = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_scalar(sql(
                "SELECT COUNT(*) FROM school WHERE parent_code = $1 AND status = 'open'",
            ))
            .bind(code)
            .fetch_one(ex)
            .await?
        });
        if open_points > 0 {
            errors.push(rule("status", "registry-points-still-open"));
        }
        if let Some(target) = into {
            let ok = Self::any_school(&mut tx, target.trim())
                .await?
                .is_some_and(|t| {
                    t.code != before.code
                        && t.county == before.county
                        && t.status() == Some(SchoolStatus::Open)
                        && t.kind().is_some_and(|k| !k.is_teaching_point())
                });
            if !ok {
                errors.push(rule("into", "registry-bad-merge-target"));
            }
        }
        let Some(date) = date.filter(|_| errors.is_empty()) else {
            return Err(RegistryError::Fields(errors));
        };
        let (status, event) = match into {
            Some(_) => ("merged", "merge"),
            None => ("closed", "close"),
        };
        let into = into.map(str::trim);
        let n = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE school SET status = $3, closed_on = $4, merged_into = $5, \
                version = version + 1, updated_at = $6 WHERE code = $1 AND version = $2",
            ))
            .bind(code)
            .bind(version)
            .bind(status)
            .bind(date)
            .bind(into)
            .bind(Utc::now())
            .execute(ex)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(RegistryError::Stale);
        }
        if let Some(target) = into {
            // The receiving school's history tells what it took in.
            let t = Self::any_school(&mut tx, target)
                .await?
                .ok_or(RegistryError::NotFound)?;
            let absorbed = serde_json::json!({ "absorbed": [null, code] });
            record(
                &mut tx,
                &actor,
                Change {
                    node: &t.node(),
                    code: target,
                    kind: "absorb",
                    effective_on: date,
                    reason: reason.trim(),
                    changes: &absorbed,
                },
            )
            .await?;
        }
        let changes = serde_json::json!({
            "status": [before.status, status],
            "merged_into": [null, into],
        });
        record(
            &mut tx,
            &actor,
            Change {
                node: &before.node(),
                code,
                kind: event,
                effective_on: date,
                reason: reason.trim(),
                changes: &changes,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// One change of a school, as recorded.
pub(crate) struct Change<'a> {
    pub(crate) node: &'a Node,
    pub(crate) code: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) effective_on: NaiveDate,
    pub(crate) reason: &'a str,
    pub(crate) changes: &'a serde_json::Value,
}

pub(crate) async fn record(tx: &mut Tx, actor: &Actor<'_>, c: Change<'_>) -> crate::Result<()> {
    let Change {
        node,
        code,
        kind,
        effective_on,
        reason,
        changes,
    } = c;
    db_query!(tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO school_event (id, school_code, kind, effective_on, recorded_at, actor, \
            actor_id, reason, changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(Uuid::now_v7())
        .bind(code)
        .bind(kind)
        .bind(effective_on)
        .bind(Utc::now())
        .bind(actor.name())
        .bind(actor.id())
        .bind(reason)
        .bind(changes.to_string())
        .execute(ex)
        .await?
        .rows_affected()
    });
    let event = match kind {
        "create" => "school.create",
        "edit" => "school.edit",
        "close" => "school.close",
        "absorb" => "school.absorb",
        _ => "school.merge",
    };
    let mut e = actor.entry(event, code, "success", node);
    e.detail = reason.to_owned();
    audit::append(tx, &e).await?;
    Ok(())
}

/// A school's conditions in one school year.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConditionRow {
    pub school_code: String,
    pub school_year: i32,
    pub building_area_m2: i32,
    pub classrooms: i32,
    pub multimedia_classrooms: i32,
    pub computers: i32,
    pub student_terminals: i32,
    pub broadband: String,
    pub bandwidth_mbps: Option<i32>,
    pub broadband_since: Option<NaiveDate>,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: String,
}

/// Conditions as entered: raw text, checked by [`Registry::record_conditions`].
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ConditionInput {
    pub school_year: String,
    pub building_area_m2: String,
    pub classrooms: String,
    pub multimedia_classrooms: String,
    pub computers: String,
    pub student_terminals: String,
    pub broadband: String,
    #[serde(default)]
    pub bandwidth_mbps: String,
    #[serde(default)]
    pub broadband_since: String,
}

/// A school's conditions as entered, every field checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckedConditions {
    pub(crate) year: santong_domain::registry::SchoolYear,
    pub(crate) area: i32,
    pub(crate) classrooms: i32,
    pub(crate) multimedia: i32,
    pub(crate) computers: i32,
    pub(crate) terminals: i32,
    pub(crate) broadband: santong_domain::registry::Broadband,
    pub(crate) bandwidth: Option<i32>,
    pub(crate) since: Option<NaiveDate>,
}

/// Checks a school's conditions as entered (a form or a sheet's row) for a school opened on
/// `opened_on`: every problem is reported, each with its field.
pub(crate) fn check_conditions(
    opened_on: NaiveDate,
    input: &ConditionInput,
    today: NaiveDate,
) -> Result<CheckedConditions, Vec<FieldError>> {
    use santong_domain::registry::{Broadband, SchoolYear};
    let mut errors = vec![];
    let current = SchoolYear::of(today.year(), today.month());
    let first = SchoolYear::of(opened_on.year(), opened_on.month());
    let year = SchoolYear::parse(&input.school_year).filter(|y| *y >= first && *y <= current);
    if year.is_none() {
        errors.push(rule("school_year", "registry-bad-school-year"));
    }
    let mut count = |field: &'static str, raw: &str, max: i32| -> Option<i32> {
        let v = raw
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| (0..=max).contains(n));
        if v.is_none() {
            errors.push(rule(field, "registry-bad-count"));
        }
        v
    };
    let area = count("building_area_m2", &input.building_area_m2, 10_000_000);
    let classrooms = count("classrooms", &input.classrooms, 10_000);
    let multimedia = count(
        "multimedia_classrooms",
        &input.multimedia_classrooms,
        10_000,
    );
    let computers = count("computers", &input.computers, 1_000_000);
    let terminals = count("student_terminals", &input.student_terminals, 1_000_000);
    if let (Some(c), Some(m)) = (classrooms, multimedia)
        && m > c
    {
        errors.push(rule(
            "multimedia_classrooms",
            "registry-more-multimedia-than-classrooms",
        ));
    }
    let broadband = Broadband::parse(&input.broadband);
    if broadband.is_none() {
        errors.push(rule("broadband", "registry-bad-broadband"));
    }
    let connected = broadband.is_some_and(|b| b != Broadband::None);
    let bandwidth = match (connected, input.bandwidth_mbps.trim()) {
        (false, "") => None,
        (false, _) => {
            errors.push(rule(
                "bandwidth_mbps",
                "registry-bandwidth-without-broadband",
            ));
            None
        }
        (true, raw) => {
            let v = raw
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=100_000).contains(n));
            if v.is_none() {
                errors.push(rule("bandwidth_mbps", "registry-bad-bandwidth"));
            }
            v
        }
    };
    let since = match (connected, input.broadband_since.trim()) {
        (_, "") => None,
        (false, _) => {
            errors.push(rule(
                "broadband_since",
                "registry-bandwidth-without-broadband",
            ));
            None
        }
        (true, raw) => {
            let d = NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .ok()
                .filter(|d| *d <= today && d.year() >= 1990);
            if d.is_none() {
                errors.push(rule("broadband_since", "registry-bad-date"));
            }
            d
        }
    };
    let (
        Some(year),
        Some(area),
        Some(classrooms),
        Some(multimedia),
        Some(computers),
        Some(terminals),
        Some(broadband),
    ) = (
        year, area, classrooms, multimedia, computers, terminals, broadband,
    )
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CheckedConditions {
        year,
        area,
        classrooms,
        multimedia,
        computers,
        terminals,
        broadband,
        bandwidth,
        since,
    })
}

impl Registry<'_> {
    /// A school's conditions, newest school year first (the caller has checked its scope).
    pub async fn conditions(&self, code: &str) -> crate::Result<Vec<ConditionRow>> {
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, ConditionRow>(sql(
                "SELECT school_code, school_year, building_area_m2, classrooms, \
                multimedia_classrooms, computers, student_terminals, broadband, bandwidth_mbps, \
                broadband_since, recorded_at, recorded_by FROM school_condition \
                WHERE school_code = $1 ORDER BY school_year DESC",
            ))
            .bind(code)
            .fetch_all(ex)
            .await?
        }))
    }

    /// Records (or corrects) a school's conditions for one school year. The school's own
    /// administrator may, as may the county: it is the school's report.
    pub async fn record_conditions(
        &self,
        actor: Actor<'_>,
        code: &str,
        input: &ConditionInput,
    ) -> RegResult<ConditionRow> {
        let today = today();
        let mut tx = self.0.begin().await?;
        let Some(school) = Self::any_school(&mut tx, code).await? else {
            return Err(RegistryError::NotFound);
        };
        if !actor.may(Permission::RegistryView, &school.node()) && !matches!(actor, Actor::Cli) {
            return Err(RegistryError::NotFound);
        }
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden);
        }
        let CheckedConditions {
            year,
            area,
            classrooms,
            multimedia,
            computers,
            terminals,
            broadband,
            bandwidth,
            since,
        } = check_conditions(school.opened_on, input, today).map_err(RegistryError::Fields)?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO school_condition (school_code, school_year, building_area_m2, \
                classrooms, multimedia_classrooms, computers, student_terminals, broadband, \
                bandwidth_mbps, broadband_since, recorded_at, recorded_by) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                ON CONFLICT (school_code, school_year) DO UPDATE SET \
                building_area_m2 = excluded.building_area_m2, classrooms = excluded.classrooms, \
                multimedia_classrooms = excluded.multimedia_classrooms, \
                computers = excluded.computers, student_terminals = excluded.student_terminals, \
                broadband = excluded.broadband, bandwidth_mbps = excluded.bandwidth_mbps, \
                broadband_since = excluded.broadband_since, recorded_at = excluded.recorded_at, \
                recorded_by = excluded.recorded_by",
            ))
            .bind(code)
            .bind(year.0)
            .bind(area)
            .bind(classrooms)
            .bind(multimedia)
            .bind(computers)
            .bind(terminals)
            .bind(broadband.as_str())
            .bind(bandwidth)
            .bind(since)
            .bind(Utc::now())
            .bind(actor.name())
            .execute(ex)
            .await?
            .rows_affected()
        });
        let mut e = actor.entry("school.conditions", code, "success", &school.node());
        e.detail = format!(
            "{year}: {classrooms} classrooms, {multimedia} multimedia, broadband {}",
            broadband.as_str()
        );
        audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.conditions(code)
            .await?
            .into_iter()
            .find(|c| c.school_year == year.0)
            .ok_or(RegistryError::NotFound)
    }
}
