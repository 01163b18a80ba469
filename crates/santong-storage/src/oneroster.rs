//! OneRoster 1.2 CSV exchange with LMSs and rostering tools.
//!
//! **Export**: a zip of the manifest and the nine rostering files for one school or one region's
//! schools: the schools and their counties (orgs), the school year (academicSessions), a course
//! per school and grade, the year's classes, the students on the roll and the accounts holding a
//! teacher or school administrator role there (users, roles), the students' sex and, in a full
//! export, birth date (demographics), class membership and head teachers (enrollments). Records
//! keep Santong's ids as `sourcedId` (school and region codes for orgs), so a file sent back
//! matches record for record. A masked export carries no ID-bearing number.
//!
//! **Import** (bulk or delta, as the manifest says per file): classes and class membership. The
//! student register is not changed by a rostering feed: users are matched to students on the
//! roll and to accounts (by `sourcedId`, else by `identifier` / `username`), and one that matches
//! nobody is a rejected row (a student is enrolled through the registry first). Orgs must be
//! schools the caller manages. A bulk enrollments file ends the memberships, in the classes it
//! covers, that it no longer lists. Everything is written in one transaction: all or nothing, or
//! the valid rows with every rejected row reported.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, Write};
use std::path::Path;

use chrono::{NaiveDate, SecondsFormat, Utc};
use santong_domain::identity::{Node, Scope, region_prefix_pattern};
use santong_domain::import::{parse_date, push_line};
use santong_domain::oneroster::{
    self as or, CLASSES, COURSES, Delivery, ENROLLMENTS, FileSpec, ORGS, ROLES, USERS,
};
use santong_domain::region::RegionCode;
use santong_domain::registry::{Grades, SchoolStatus, SchoolYear};
use serde::Serialize;
use uuid::Uuid;

use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::registry::{Registry, RegistryError, SchoolRow, today};
use crate::sheet::{Limits, SheetError};
use crate::students::{mask_number, push_placing};
use crate::{Db, Tx, audit};

/// Rows an export reads per query.
const PAGE: i64 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum OneRosterError {
    #[error("not found")]
    NotFound,
    #[error("not allowed")]
    Forbidden,
    /// The package itself is refused (message key, and the file it concerns if one).
    #[error("refused: {0} {1}")]
    Package(&'static str, String),
    /// A file lacks a column the binding requires.
    #[error("{0} has no column {1}")]
    MissingColumn(String, String),
    #[error(transparent)]
    Storage(#[from] crate::StorageError),
    #[error("cannot read or write the package: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for OneRosterError {
    fn from(e: sqlx::Error) -> Self {
        OneRosterError::Storage(crate::StorageError::Sqlx(e))
    }
}

impl From<RegistryError> for OneRosterError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Forbidden => OneRosterError::Forbidden,
            RegistryError::Storage(s) => OneRosterError::Storage(s),
            _ => OneRosterError::NotFound,
        }
    }
}

impl OneRosterError {
    /// The message key shown for it.
    pub fn key(&self) -> &'static str {
        match self {
            OneRosterError::NotFound => "error-not-found",
            OneRosterError::Forbidden => "error-forbidden",
            OneRosterError::Package(k, _) => k,
            OneRosterError::MissingColumn(..) => "oneroster-missing-column",
            OneRosterError::Storage(_) | OneRosterError::Io(_) => "error-internal",
        }
    }
}

/// What an export covers.
#[derive(Debug, Clone)]
pub enum Target {
    School(String),
    /// Every open school in the region's subtree.
    Region(RegionCode),
}

/// Rows written per file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Exported {
    pub orgs: u64,
    pub courses: u64,
    pub classes: u64,
    pub users: u64,
    pub enrollments: u64,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    code: String,
    name: String,
    county: String,
    county_name: String,
    parent_code: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StudentRow {
    id: Uuid,
    student_number: String,
    name: String,
    sex: String,
    birth_date: NaiveDate,
    school_code: String,
    grade: i32,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    username: String,
    display_name: String,
    role: String,
    school: String,
    enabled: bool,
}

#[derive(sqlx::FromRow)]
struct ClassRow {
    id: Uuid,
    school_code: String,
    grade: i32,
    name: String,
    head_teacher: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    class_id: Uuid,
    student_id: Uuid,
    school_code: String,
    from_on: NaiveDate,
}

fn session_id(year: SchoolYear) -> String {
    format!("sy{}", year.0)
}

fn course_id(school: &str, year: SchoolYear, grade: i32) -> String {
    format!("course-{school}-{}-{}", year.0, or::grade_code(grade))
}

/// familyName and givenName, both filled as the binding requires: a one-character name is both.
fn name_parts(name: &str) -> (String, String) {
    let (family, given) = or::split_name(name);
    if given.is_empty() {
        (family.clone(), family)
    } else {
        (family, given)
    }
}

fn sex_word(code: &str) -> &'static str {
    match code {
        "1" => "male",
        "2" => "female",
        _ => "",
    }
}

/// One zip entry being written: lines are gathered and handed to the archive a page at a time.
struct Entry<'z, W: Write + Seek> {
    zip: &'z mut zip::ZipWriter<W>,
    buf: String,
    rows: u64,
}

impl<'z, W: Write + Seek> Entry<'z, W> {
    fn start(zip: &'z mut zip::ZipWriter<W>, spec: &FileSpec) -> std::io::Result<Self> {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file(spec.name, opts)
            .map_err(std::io::Error::other)?;
        let mut buf = String::new();
        push_line(&mut buf, spec.columns);
        Ok(Entry { zip, buf, rows: 0 })
    }

    fn row(&mut self, cells: &[&str]) -> std::io::Result<()> {
        push_line(&mut self.buf, cells);
        self.rows += 1;
        if self.buf.len() > 1 << 16 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.zip.write_all(self.buf.as_bytes())?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<u64> {
        self.flush()?;
        Ok(self.rows)
    }
}

/// The schools of the target, as `s`.
fn push_target(q: &mut DynQuery, target: &Target) {
    match target {
        Target::School(code) => q.push(" s.code = ").bind(code.clone()),
        Target::Region(r) => q.push(" s.county LIKE ").bind(region_prefix_pattern(*r)),
    };
}

pub struct OneRoster<'a>(pub &'a Db);

impl OneRoster<'_> {
    /// Writes the export of `target` (within `scope`, the caller's registry scope) for `year`
    /// into `out` as a zip. `full`: the purpose of a full export (the caller has checked the
    /// sensitive-data permission), which adds student numbers and birth dates. Audited as
    /// `oneroster.export` with its counts.
    pub async fn export<W: Write + Seek>(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        target: &Target,
        year: SchoolYear,
        full: Option<&str>,
        out: W,
    ) -> Result<Exported, OneRosterError> {
        let node = match target {
            Target::School(code) => Registry(self.0)
                .school(scope, code)
                .await?
                .ok_or(OneRosterError::NotFound)?
                .node(),
            Target::Region(r) => {
                let node = Node::Region(*r);
                if !scope.contains(&node) {
                    return Err(OneRosterError::NotFound);
                }
                node
            }
        };
        let today = today();
        let on = today.clamp(year.start(), year.end());
        let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let stamp = stamp.as_str();
        let mut zip = zip::ZipWriter::new(out);
        let mut counts = Exported::default();

        // The manifest first: a reader learns what follows before reading it.
        {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            zip.start_file("manifest.csv", opts)
                .map_err(std::io::Error::other)?;
            let mut m = String::new();
            push_line(&mut m, &["propertyName", "value"]);
            push_line(&mut m, &["manifest.version", "1.0"]);
            push_line(&mut m, &["oneroster.version", "1.2"]);
            let mut files: Vec<(&str, &str)> = or::ROSTER_FILES
                .iter()
                .map(|f| (f.property, "bulk"))
                .chain(or::ABSENT_FILES.iter().map(|p| (*p, "absent")))
                .collect();
            files.sort_unstable();
            for (p, v) in files {
                push_line(&mut m, &[p, v]);
            }
            push_line(&mut m, &["source.systemName", "Santong"]);
            push_line(&mut m, &["source.systemCode", "santong"]);
            zip.write_all(m.as_bytes())?;
        }

        // orgs: the counties, then the schools (a teaching point under its parent school when
        // that is exported too).
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT s.code, s.name, s.county, r.name AS county_name, s.parent_code FROM school s \
            JOIN region r ON r.code = s.county WHERE s.status = 'open' AND",
        );
        push_target(&mut q, target);
        q.push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" ORDER BY s.county, s.code");
        let orgs: Vec<OrgRow> = q.fetch_all(self.0).await?;
        if orgs.is_empty() && matches!(target, Target::School(_)) {
            return Err(OneRosterError::NotFound);
        }
        let codes: HashSet<&str> = orgs.iter().map(|o| o.code.as_str()).collect();
        {
            let mut e = Entry::start(&mut zip, &or::ORGS)?;
            let mut last_county = "";
            for o in &orgs {
                if o.county != last_county {
                    e.row(&[
                        &o.county,
                        "active",
                        stamp,
                        &o.county_name,
                        "district",
                        &o.county,
                        "",
                    ])?;
                    last_county = &o.county;
                }
            }
            for o in &orgs {
                let parent = o
                    .parent_code
                    .as_deref()
                    .filter(|p| codes.contains(p))
                    .unwrap_or(&o.county);
                e.row(&[&o.code, "active", stamp, &o.name, "school", &o.code, parent])?;
            }
            counts.orgs = e.finish()?;
        }

        // academicSessions: the school year (OneRoster's schoolYear is the year it ends in).
        {
            let mut e = Entry::start(&mut zip, &or::ACADEMIC_SESSIONS)?;
            let title = format!("{}学年", year);
            e.row(&[
                &session_id(year),
                "active",
                stamp,
                &title,
                "schoolYear",
                &year.start().to_string(),
                &year.end().to_string(),
                "",
                &(year.0 + 1).to_string(),
            ])?;
            e.finish()?;
        }

        // The year's classes; a course per school and grade they are in.
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT c.id, c.school_code, c.grade, c.name, c.head_teacher FROM school_class c \
            JOIN school s ON s.code = c.school_code WHERE s.status = 'open' AND c.school_year = ",
        )
        .bind(i64::from(year.0))
        .push(" AND");
        push_target(&mut q, target);
        q.push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" ORDER BY c.school_code, c.grade, c.name");
        let classes: Vec<ClassRow> = q.fetch_all(self.0).await?;
        {
            let mut e = Entry::start(&mut zip, &or::COURSES)?;
            let mut seen = HashSet::new();
            for c in &classes {
                if seen.insert((c.school_code.as_str(), c.grade)) {
                    let title = format!("{}年级", c.grade);
                    e.row(&[
                        &course_id(&c.school_code, year, c.grade),
                        "active",
                        stamp,
                        &session_id(year),
                        &title,
                        "",
                        &or::grade_code(c.grade),
                        &c.school_code,
                        "",
                        "",
                    ])?;
                }
            }
            counts.courses = e.finish()?;
        }
        {
            let mut e = Entry::start(&mut zip, &or::CLASSES)?;
            for c in &classes {
                e.row(&[
                    &c.id.to_string(),
                    "active",
                    stamp,
                    &c.name,
                    &or::grade_code(c.grade),
                    &course_id(&c.school_code, year, c.grade),
                    &c.name,
                    "homeroom",
                    "",
                    &c.school_code,
                    &session_id(year),
                    "",
                    "",
                    "",
                ])?;
            }
            counts.classes = e.finish()?;
        }

        // users: the accounts (small), then the students a page at a time; roles and
        // demographics follow from the same rows, so the students are read twice more.
        let mut q = DynQuery::for_db(self.0);
        q.push(
            "SELECT u.id, u.username, u.display_name, g.role, g.node_school AS school, \
            (u.disabled_at IS NULL) AS enabled FROM role_grant g JOIN app_user u ON u.id = g.user_id \
            JOIN school s ON s.code = g.node_school \
            WHERE g.role IN ('teacher', 'school_admin') AND s.status = 'open' AND",
        );
        push_target(&mut q, target);
        q.push(" AND");
        crate::scope::push(&mut q, scope, "s.county", "s.code");
        q.push(" ORDER BY u.id, g.node_school, g.role");
        let accounts: Vec<AccountRow> = q.fetch_all(self.0).await?;
        let account_ids: HashSet<Uuid> = accounts.iter().map(|a| a.id).collect();
        let students = |after: Uuid| {
            let mut q = DynQuery::for_db(self.0);
            q.push(
                "SELECT st.id, st.student_number, st.name, st.sex, st.birth_date, e.school_code, \
                e.grade FROM student st JOIN student_event e ON e.student_id = st.id \
                JOIN school s ON s.code = e.school_code WHERE",
            );
            push_placing(&mut q, on);
            q.push(" AND e.status <> 'out' AND s.status = 'open' AND");
            push_target(&mut q, target);
            q.push(" AND");
            crate::scope::push(&mut q, scope, "s.county", "s.code");
            q.push(" AND st.id > ")
                .bind(after)
                .push(" ORDER BY st.id LIMIT ")
                .bind(PAGE);
            q.fetch_all::<StudentRow>(self.0)
        };
        {
            let mut e = Entry::start(&mut zip, &or::USERS)?;
            let mut last = None;
            for a in &accounts {
                if last == Some(a.id) {
                    continue;
                }
                last = Some(a.id);
                let (family, given) = name_parts(&a.display_name);
                let id = a.id.to_string();
                let mut cells = vec![""; or::USERS.columns.len()];
                cells[0] = &id;
                cells[1] = "active";
                cells[2] = stamp;
                cells[3] = if a.enabled { "true" } else { "false" };
                cells[4] = &a.username;
                cells[6] = &given;
                cells[7] = &family;
                cells[9] = &a.username;
                cells[21] = &a.school;
                e.row(&cells)?;
            }
            let mut after = Uuid::nil();
            loop {
                let page = students(after).await?;
                for s in &page {
                    let (family, given) = name_parts(&s.name);
                    let id = s.id.to_string();
                    let masked = mask_number(&s.student_number);
                    let user_ids = format!("{{学籍号:{}}}", s.student_number);
                    let grade = or::grade_code(s.grade);
                    let mut cells = vec![""; or::USERS.columns.len()];
                    cells[0] = &id;
                    cells[1] = "active";
                    cells[2] = stamp;
                    // Enabled: a receiving LMS would otherwise shut the pupil out.
                    cells[3] = "true";
                    cells[4] = if full.is_some() {
                        &s.student_number
                    } else {
                        &id
                    };
                    if full.is_some() {
                        cells[5] = &user_ids;
                    }
                    cells[6] = &given;
                    cells[7] = &family;
                    cells[9] = if full.is_some() {
                        &s.student_number
                    } else {
                        &masked
                    };
                    cells[14] = &grade;
                    cells[21] = &s.school_code;
                    e.row(&cells)?;
                }
                match page.last() {
                    Some(s) if page.len() as i64 == PAGE => after = s.id,
                    _ => break,
                }
            }
            counts.users = e.finish()?;
        }
        {
            let mut e = Entry::start(&mut zip, &or::ROLES)?;
            for a in &accounts {
                let id = format!("role-{}-{}-{}", a.id, a.school, a.role);
                let role = if a.role == "school_admin" {
                    "siteAdministrator"
                } else {
                    "teacher"
                };
                e.row(&[
                    &id,
                    "active",
                    stamp,
                    &a.id.to_string(),
                    "primary",
                    role,
                    "",
                    "",
                    &a.school,
                    "",
                ])?;
            }
            let mut after = Uuid::nil();
            loop {
                let page = students(after).await?;
                for s in &page {
                    e.row(&[
                        &format!("role-{}-{}-student", s.id, s.school_code),
                        "active",
                        stamp,
                        &s.id.to_string(),
                        "primary",
                        "student",
                        "",
                        "",
                        &s.school_code,
                        "",
                    ])?;
                }
                match page.last() {
                    Some(s) if page.len() as i64 == PAGE => after = s.id,
                    _ => break,
                }
            }
            e.finish()?;
        }
        {
            let mut e = Entry::start(&mut zip, &or::DEMOGRAPHICS)?;
            let mut after = Uuid::nil();
            loop {
                let page = students(after).await?;
                for s in &page {
                    let birth = s.birth_date.to_string();
                    let mut cells = vec![""; or::DEMOGRAPHICS.columns.len()];
                    let id = s.id.to_string();
                    cells[0] = &id;
                    cells[1] = "active";
                    cells[2] = stamp;
                    if full.is_some() {
                        cells[3] = &birth;
                    }
                    cells[4] = sex_word(&s.sex);
                    e.row(&cells)?;
                }
                match page.last() {
                    Some(s) if page.len() as i64 == PAGE => after = s.id,
                    _ => break,
                }
            }
            e.finish()?;
        }

        // enrollments: head teachers, then the members on `on` still at the class's school.
        {
            let mut e = Entry::start(&mut zip, &or::ENROLLMENTS)?;
            for c in &classes {
                let Some(head) = c.head_teacher.filter(|h| account_ids.contains(h)) else {
                    continue;
                };
                e.row(&[
                    &format!("enr-{}-{}", c.id, head),
                    "active",
                    stamp,
                    &c.id.to_string(),
                    &c.school_code,
                    &head.to_string(),
                    "teacher",
                    "true",
                    "",
                    "",
                ])?;
            }
            let mut after = (Uuid::nil(), Uuid::nil());
            loop {
                let mut q = DynQuery::for_db(self.0);
                q.push(
                    "SELECT m.class_id, m.student_id, c.school_code, m.from_on FROM school_class c \
                    JOIN school s ON s.code = c.school_code \
                    JOIN class_member m ON m.class_id = c.id \
                    JOIN student st ON st.id = m.student_id \
                    JOIN student_event e ON e.student_id = st.id WHERE c.school_year = ",
                )
                .bind(i64::from(year.0))
                .push(" AND m.from_on <= ")
                .bind(on)
                .push(" AND (m.until_on IS NULL OR m.until_on > ")
                .bind(on)
                .push(") AND");
                push_placing(&mut q, on);
                q.push(
                    " AND e.school_code = c.school_code AND e.status <> 'out' \
                    AND s.status = 'open' AND",
                );
                push_target(&mut q, target);
                q.push(" AND");
                crate::scope::push(&mut q, scope, "s.county", "s.code");
                q.push(" AND (m.class_id > ")
                    .bind(after.0)
                    .push(" OR (m.class_id = ")
                    .bind(after.0)
                    .push(" AND m.student_id > ")
                    .bind(after.1)
                    .push(")) ORDER BY m.class_id, m.student_id LIMIT ")
                    .bind(PAGE);
                let page: Vec<MemberRow> = q.fetch_all(self.0).await?;
                for m in &page {
                    e.row(&[
                        &format!("enr-{}-{}-{}", m.class_id, m.student_id, m.from_on),
                        "active",
                        stamp,
                        &m.class_id.to_string(),
                        &m.school_code,
                        &m.student_id.to_string(),
                        "student",
                        "false",
                        &m.from_on.to_string(),
                        "",
                    ])?;
                }
                match page.last() {
                    Some(m) if page.len() as i64 == PAGE => after = (m.class_id, m.student_id),
                    _ => break,
                }
            }
            counts.enrollments = e.finish()?;
        }
        // Santong holds no third-party credentials: the file is there, empty.
        Entry::start(&mut zip, &or::USER_PROFILES)?.finish()?;
        zip.finish().map_err(std::io::Error::other)?;

        let mut entry = actor.entry("oneroster.export", &node.code(), "success", &node);
        entry.detail = serde_json::json!({
            "school_year": year.0,
            "full": full.is_some(),
            "purpose": full.unwrap_or(""),
            "orgs": counts.orgs,
            "classes": counts.classes,
            "users": counts.users,
            "enrollments": counts.enrollments,
        })
        .to_string();
        let mut tx = self.0.begin().await?;
        audit::append(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(counts)
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// One rejected row: the file, its line, the message key and what it concerns.
#[derive(Debug, Clone, Serialize)]
pub struct Rejected {
    pub file: &'static str,
    pub line: u64,
    pub key: &'static str,
    pub value: String,
}

/// What an import did (or, dry or refused, would have done).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub classes_new: u64,
    pub classes_renamed: u64,
    pub placed: u64,
    pub ended: u64,
    pub heads: u64,
    pub unchanged: u64,
    /// Rows read and deliberately left alone (parents, deleted users, other roles).
    pub ignored: u64,
    pub rejected: Vec<Rejected>,
    /// Written: false for a dry run, or when rows were rejected in all-or-nothing mode.
    pub committed: bool,
}

/// A package to import: a zip, or a folder of the CSV files.
pub enum Source<'a> {
    Zip(&'a Path),
    Dir(&'a Path),
}

/// The files of a package by lower-cased name, read whole (a rostering feed is small next to a
/// roster import: about a hundred bytes a row).
struct Package {
    files: HashMap<String, Vec<u8>>,
}

/// The most a package may hold, unpacked (a province's rosters are a few hundred MiB; the files
/// are held in memory while they are read).
const MAX_PACKAGE: u64 = 256 << 20;

impl Package {
    fn open(source: &Source<'_>) -> Result<Package, OneRosterError> {
        let mut files = HashMap::new();
        match source {
            Source::Zip(path) => {
                let file = std::fs::File::open(path)?;
                let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
                    .map_err(|_| OneRosterError::Package("oneroster-not-zip", String::new()))?;
                let limits = Limits {
                    max_entries: 100,
                    max_uncompressed: MAX_PACKAGE,
                    ..Limits::default()
                };
                crate::sheet::check_archive(&mut zip, &limits)
                    .map_err(|e| OneRosterError::Package(e.key(), String::new()))?;
                for i in 0..zip.len() {
                    let mut entry = zip
                        .by_index(i)
                        .map_err(|_| OneRosterError::Package("sheet-unreadable", String::new()))?;
                    if entry.is_dir() {
                        continue;
                    }
                    // Files may sit in one folder inside the zip.
                    let name = entry
                        .name()
                        .map_err(|_| OneRosterError::Package("sheet-unreadable", String::new()))?
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    let mut buf = Vec::new();
                    (&mut entry)
                        .take(MAX_PACKAGE)
                        .read_to_end(&mut buf)
                        .map_err(|_| OneRosterError::Package("sheet-unreadable", name.clone()))?;
                    files.insert(name, buf);
                }
            }
            Source::Dir(dir) => {
                let mut total = 0u64;
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
                    if !name.ends_with(".csv") {
                        continue;
                    }
                    total += entry.metadata()?.len();
                    if total > MAX_PACKAGE {
                        return Err(OneRosterError::Package(
                            SheetError::TooLarge.key(),
                            String::new(),
                        ));
                    }
                    files.insert(name, std::fs::read(entry.path())?);
                }
            }
        }
        Ok(Package { files })
    }

    /// The rows of `spec`'s file with its header, if the package has it. Columns are found by
    /// name, case forgiven; unknown ones (`ext_…`, `metadata.…`) are left alone.
    fn table(&self, spec: &FileSpec) -> Result<Option<Table>, OneRosterError> {
        let Some(bytes) = self.files.get(&spec.name.to_ascii_lowercase()) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| OneRosterError::Package("oneroster-not-utf8", spec.name.into()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(text.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(|_| OneRosterError::Package("oneroster-bad-csv", spec.name.into()))?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        for r in spec.required {
            if !headers.contains(&r.to_ascii_lowercase()) {
                return Err(OneRosterError::MissingColumn(
                    spec.name.into(),
                    (*r).to_owned(),
                ));
            }
        }
        let mut rows = Vec::new();
        for (i, rec) in reader.records().enumerate() {
            let rec =
                rec.map_err(|_| OneRosterError::Package("oneroster-bad-csv", spec.name.into()))?;
            if rec.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            let line = rec.position().map_or(i as u64 + 2, |p| p.line());
            rows.push((line, rec.iter().map(|c| c.trim().to_owned()).collect()));
        }
        Ok(Some(Table { headers, rows }))
    }
}

struct Table {
    headers: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
}

impl Table {
    fn col(&self, name: &str) -> Option<usize> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().position(|h| *h == name)
    }
}

/// A row's cells by column name.
struct Row<'t> {
    cells: &'t [String],
    table: &'t Table,
}

impl Row<'_> {
    fn get(&self, name: &str) -> &str {
        self.table
            .col(name)
            .and_then(|i| self.cells.get(i))
            .map_or("", String::as_str)
    }
}

/// A school the caller manages, with the year's classes of it as they stand.
struct SchoolPlace {
    row: SchoolRow,
    /// (year, grade, name) → class id.
    classes: HashMap<(i32, i32, String), Uuid>,
    by_id: HashMap<Uuid, (i32, i32, String)>,
    /// Students on the roll today → grade.
    roll: HashMap<Uuid, i32>,
    /// Student numbers of those → id.
    numbers: HashMap<String, Uuid>,
    /// Accounts that may head a class here: id and user name.
    staff: HashMap<Uuid, String>,
}

/// A class of the package, resolved.
#[derive(Clone)]
struct ClassRef {
    school: String,
    id: Uuid,
    year: SchoolYear,
    grade: i32,
    name: String,
}

/// Who a user of the package is here.
#[derive(Clone, Copy)]
enum Person {
    Student(Uuid),
    Account(Uuid),
}

impl OneRoster<'_> {
    /// Imports a OneRoster package. `valid_only`: write the valid rows even when some are
    /// rejected (otherwise nothing is written unless every row is valid); `dry_run`: check
    /// only. Audited as `oneroster.import` with its counts.
    pub async fn import(
        &self,
        actor: Actor<'_>,
        source: Source<'_>,
        valid_only: bool,
        dry_run: bool,
    ) -> Result<ImportReport, OneRosterError> {
        // Reading and inflating the files is blocking work: off the async threads.
        let (zip, path) = match source {
            Source::Zip(p) => (true, p.to_owned()),
            Source::Dir(p) => (false, p.to_owned()),
        };
        let package = tokio::task::spawn_blocking(move || {
            Package::open(&if zip {
                Source::Zip(&path)
            } else {
                Source::Dir(&path)
            })
        })
        .await
        .map_err(|e| OneRosterError::Io(std::io::Error::other(e)))??;
        // The manifest says how each file is given.
        let manifest = package
            .files
            .get("manifest.csv")
            .ok_or(OneRosterError::Package(
                "oneroster-no-manifest",
                String::new(),
            ))?;
        let mut delivery: HashMap<String, Delivery> = HashMap::new();
        let mut version = String::new();
        {
            let mut r = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(manifest.strip_prefix(b"\xef\xbb\xbf").unwrap_or(manifest));
            for rec in r.records() {
                let rec = rec.map_err(|_| {
                    OneRosterError::Package("oneroster-bad-csv", "manifest.csv".into())
                })?;
                let (Some(k), Some(v)) = (rec.get(0), rec.get(1)) else {
                    continue;
                };
                let k = k.trim();
                if k == "oneroster.version" {
                    v.trim().clone_into(&mut version);
                } else if let Some(file) = k.strip_prefix("file.") {
                    let d = Delivery::parse(v).ok_or(OneRosterError::Package(
                        "oneroster-bad-manifest",
                        k.to_owned(),
                    ))?;
                    delivery.insert(file.to_ascii_lowercase(), d);
                }
            }
        }
        if !matches!(version.as_str(), "1.1" | "1.2") {
            return Err(OneRosterError::Package(
                "oneroster-bad-version",
                version.clone(),
            ));
        }
        let given = |spec: &FileSpec| -> Result<Option<(Table, Delivery)>, OneRosterError> {
            let key = spec
                .property
                .strip_prefix("file.")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let d = delivery.get(&key).copied().unwrap_or(Delivery::Absent);
            if d == Delivery::Absent {
                return Ok(None);
            }
            match package.table(spec)? {
                Some(t) => Ok(Some((t, d))),
                None => Err(OneRosterError::Package(
                    "oneroster-file-missing",
                    spec.name.into(),
                )),
            }
        };
        let orgs = given(&ORGS)?;
        let sessions = given(&or::ACADEMIC_SESSIONS)?;
        let courses = given(&COURSES)?;
        let classes = given(&CLASSES)?;
        let users = given(&USERS)?;
        let roles = given(&ROLES)?;
        let enrollments = given(&ENROLLMENTS)?;

        let mut report = ImportReport::default();
        let reject = |report: &mut ImportReport, file, line, key, value: &str| {
            report.rejected.push(Rejected {
                file,
                line,
                key,
                value: value.to_owned(),
            });
        };
        let current = SchoolYear::of_date(today());

        // Schools, loaded when first named.
        let mut places: HashMap<String, Option<SchoolPlace>> = HashMap::new();
        // org sourcedId → school code.
        let mut org_school: HashMap<String, String> = HashMap::new();
        if let Some((t, _)) = &orgs {
            for (line, cells) in &t.rows {
                let r = Row { cells, table: t };
                if r.get("type").eq_ignore_ascii_case("school") {
                    let code = [r.get("identifier"), r.get("sourcedId")]
                        .into_iter()
                        .find(|c| c.len() == 10 && c.bytes().all(|b| b.is_ascii_digit()));
                    let found = match code {
                        Some(c) => self.place(&actor, &mut places, c).await?.is_some(),
                        None => false,
                    };
                    match code {
                        Some(c) if found => {
                            org_school.insert(r.get("sourcedId").to_owned(), c.to_owned());
                        }
                        _ => reject(
                            &mut report,
                            ORGS.name,
                            *line,
                            "oneroster-org-unknown",
                            r.get("sourcedId"),
                        ),
                    }
                } else {
                    report.ignored += 1;
                }
            }
        }

        // academicSessions → school years.
        let mut session_year: HashMap<String, SchoolYear> = HashMap::new();
        if let Some((t, _)) = &sessions {
            for (line, cells) in &t.rows {
                let r = Row { cells, table: t };
                let start = parse_date(r.get("startDate"));
                let year = if r.get("type").eq_ignore_ascii_case("schoolYear") {
                    r.get("schoolYear")
                        .parse::<i32>()
                        .ok()
                        .map(|y| SchoolYear(y - 1))
                        .or(start.map(SchoolYear::of_date))
                } else {
                    start.map(SchoolYear::of_date)
                };
                match year {
                    Some(y) => {
                        session_year.insert(r.get("sourcedId").to_owned(), y);
                    }
                    None => reject(
                        &mut report,
                        or::ACADEMIC_SESSIONS.name,
                        *line,
                        "oneroster-bad-session",
                        r.get("sourcedId"),
                    ),
                }
            }
        }

        // courses → (school year, grade) hints for their classes.
        let mut course: HashMap<String, (Option<SchoolYear>, Option<i32>)> = HashMap::new();
        if let Some((t, _)) = &courses {
            for (_, cells) in &t.rows {
                let r = Row { cells, table: t };
                course.insert(
                    r.get("sourcedId").to_owned(),
                    (
                        session_year.get(r.get("schoolYearSourcedId")).copied(),
                        or::values(r.get("grades")).find_map(or::grade_of),
                    ),
                );
            }
        }

        let pg = self.0.is_postgres();
        let mut tx = self.0.begin().await?;
        let now = Utc::now();

        // classes: matched by id, else by school, year, grade and name; new ones created.
        let mut class_of: HashMap<String, ClassRef> = HashMap::new();
        let mut deleted_classes: Vec<(String, Uuid)> = vec![];
        let mut new_classes: Vec<(Uuid, ClassRef)> = vec![];
        if let Some((t, _)) = &classes {
            for (line, cells) in &t.rows {
                let r = Row { cells, table: t };
                let sid = r.get("sourcedId");
                let school = match self
                    .school_of(&actor, &mut places, &org_school, r.get("schoolSourcedId"))
                    .await?
                {
                    Some(s) => s,
                    None => {
                        reject(
                            &mut report,
                            CLASSES.name,
                            *line,
                            "oneroster-org-unknown",
                            r.get("schoolSourcedId"),
                        );
                        continue;
                    }
                };
                let Some(place) = places.get_mut(&school).and_then(Option::as_mut) else {
                    continue;
                };
                let hint = course.get(r.get("courseSourcedId")).copied();
                let year = or::values(r.get("termSourcedIds"))
                    .find_map(|t| session_year.get(t).copied())
                    .or(hint.and_then(|h| h.0))
                    .unwrap_or(current);
                let grade = or::values(r.get("grades"))
                    .find_map(or::grade_of)
                    .or(hint.and_then(|h| h.1));
                let name = r.get("title").to_owned();
                let existing = Uuid::parse_str(sid)
                    .ok()
                    .filter(|id| place.by_id.contains_key(id));
                if or::to_be_deleted(r.get("status")) {
                    match existing {
                        Some(id) => deleted_classes.push((school.clone(), id)),
                        None => report.ignored += 1,
                    }
                    continue;
                }
                let Some(grade) = grade.filter(|g| {
                    Grades::parse(&place.row.grades)
                        .is_some_and(|r| u8::try_from(*g).is_ok_and(|g| r.contains(g)))
                }) else {
                    reject(
                        &mut report,
                        CLASSES.name,
                        *line,
                        "student-bad-grade",
                        r.get("grades"),
                    );
                    continue;
                };
                if name.is_empty() || name.chars().count() > 20 {
                    reject(&mut report, CLASSES.name, *line, "class-bad-name", &name);
                    continue;
                }
                let resolved = match existing {
                    Some(id) => {
                        let (y, g, old) = place.by_id[&id].clone();
                        if g != grade || y != year.0 {
                            reject(
                                &mut report,
                                CLASSES.name,
                                *line,
                                "oneroster-class-moved",
                                sid,
                            );
                            continue;
                        }
                        if old != name {
                            if place.classes.contains_key(&(y, g, name.clone())) {
                                reject(&mut report, CLASSES.name, *line, "class-name-taken", &name);
                                continue;
                            }
                            let mut u = DynQuery::new(pg);
                            u.push("UPDATE school_class SET name = ")
                                .bind(name.clone())
                                .push(" WHERE id = ")
                                .bind(id);
                            u.execute_in(&mut tx).await?;
                            place.classes.remove(&(y, g, old));
                            place.classes.insert((y, g, name.clone()), id);
                            place.by_id.insert(id, (y, g, name.clone()));
                            report.classes_renamed += 1;
                        } else {
                            report.unchanged += 1;
                        }
                        Some(id)
                    }
                    None => match place.classes.get(&(year.0, grade, name.clone())) {
                        Some(id) => {
                            report.unchanged += 1;
                            Some(*id)
                        }
                        None => None,
                    },
                };
                let id = match resolved {
                    Some(id) => id,
                    None => {
                        if year.end() < place.row.opened_on || year.0 > current.0 + 1 {
                            reject(&mut report, CLASSES.name, *line, "class-bad-year", sid);
                            continue;
                        }
                        let id = Uuid::now_v7();
                        place.classes.insert((year.0, grade, name.clone()), id);
                        place.by_id.insert(id, (year.0, grade, name.clone()));
                        new_classes.push((
                            id,
                            ClassRef {
                                school: school.clone(),
                                id,
                                year,
                                grade,
                                name: name.clone(),
                            },
                        ));
                        report.classes_new += 1;
                        id
                    }
                };
                class_of.insert(
                    sid.to_owned(),
                    ClassRef {
                        school,
                        id,
                        year,
                        grade,
                        name,
                    },
                );
            }
        }
        insert_batched(
            &mut tx,
            "INSERT INTO school_class (id, school_code, school_year, grade, name, head_teacher, \
            created_at, created_by) VALUES ",
            "",
            &new_classes,
            |(id, c)| {
                vec![
                    Val::Uuid(*id),
                    Val::Text(c.school.clone()),
                    Val::Int(c.year.0),
                    Val::Int(c.grade),
                    Val::Text(c.name.clone()),
                    Val::OptUuid(None),
                    Val::Time(now),
                    Val::Text(actor.name()),
                ]
            },
        )
        .await?;

        // Roles say who is a parent (left alone) when users.csv does not (1.2).
        let mut role_of: HashMap<String, String> = HashMap::new();
        if let Some((t, _)) = &roles {
            for (_, cells) in &t.rows {
                let r = Row { cells, table: t };
                if r.get("roleType").eq_ignore_ascii_case("primary")
                    || !role_of.contains_key(r.get("userSourcedId"))
                {
                    role_of.insert(
                        r.get("userSourcedId").to_owned(),
                        r.get("role").to_ascii_lowercase(),
                    );
                }
            }
        }
        let family_roles = ["parent", "guardian", "relative"];

        // users → students on the roll or accounts of the schools named.
        let mut person: HashMap<String, Person> = HashMap::new();
        if let Some((t, _)) = &users {
            for (line, cells) in &t.rows {
                let r = Row { cells, table: t };
                let sid = r.get("sourcedId");
                let role = match r.get("role") {
                    "" => role_of.get(sid).map_or("", String::as_str),
                    role => role,
                }
                .to_ascii_lowercase();
                if or::to_be_deleted(r.get("status")) || family_roles.contains(&role.as_str()) {
                    report.ignored += 1;
                    continue;
                }
                match self
                    .find_person(&actor, &mut places, &org_school, &r)
                    .await?
                {
                    Some(p) => {
                        person.insert(sid.to_owned(), p);
                    }
                    None => reject(
                        &mut report,
                        USERS.name,
                        *line,
                        "oneroster-user-unknown",
                        sid,
                    ),
                }
            }
        }

        // enrollments → memberships and head teachers.
        let mut placed: Vec<(Uuid, Uuid, NaiveDate, String, i32)> = vec![];
        let mut ending: Vec<(Uuid, Uuid, NaiveDate)> = vec![];
        let mut heads: Vec<(Uuid, Uuid)> = vec![];
        let mut listed: HashSet<(Uuid, Uuid)> = HashSet::new();
        let mut covered: HashSet<Uuid> = HashSet::new();
        // A student's class per school year in this file: a second one is refused.
        let mut class_in_year: HashMap<(Uuid, String, i32), Uuid> = HashMap::new();
        // Classes named by id only (a delta without classes.csv), looked up once each.
        let mut by_id: HashMap<String, Option<ClassRef>> = HashMap::new();
        let today = today();
        if let Some((t, _)) = &enrollments {
            for (line, cells) in &t.rows {
                let r = Row { cells, table: t };
                let sid = r.get("classSourcedId");
                let class = match class_of.get(sid) {
                    Some(c) => Some(c.clone()),
                    None => match by_id.get(sid) {
                        Some(c) => c.clone(),
                        None => {
                            let c = self.class_by_id(&actor, &mut places, sid).await?;
                            by_id.insert(sid.to_owned(), c.clone());
                            c
                        }
                    },
                };
                let Some(class) = class else {
                    reject(
                        &mut report,
                        ENROLLMENTS.name,
                        *line,
                        "oneroster-class-unknown",
                        r.get("classSourcedId"),
                    );
                    continue;
                };
                let class_id = class.id;
                covered.insert(class_id);
                let user = r.get("userSourcedId");
                let who = match person.get(user) {
                    Some(p) => Some(*p),
                    None => Uuid::parse_str(user).ok().and_then(|id| {
                        let place = places.get(&class.school)?.as_ref()?;
                        if place.roll.contains_key(&id) {
                            Some(Person::Student(id))
                        } else if place.staff.contains_key(&id) {
                            Some(Person::Account(id))
                        } else {
                            None
                        }
                    }),
                };
                let role = r.get("role").to_ascii_lowercase();
                let gone = or::to_be_deleted(r.get("status"));
                match (role.as_str(), who) {
                    ("student", Some(Person::Student(s))) => {
                        let place = places.get(&class.school).and_then(Option::as_ref);
                        let grade = place.and_then(|p| p.roll.get(&s)).copied();
                        if grade.is_none() {
                            reject(
                                &mut report,
                                ENROLLMENTS.name,
                                *line,
                                "class-student-not-here",
                                user,
                            );
                            continue;
                        }
                        let end = parse_date(r.get("endDate"));
                        if gone || end.is_some_and(|e| e <= today) {
                            let on = end.filter(|e| *e <= today).unwrap_or(today);
                            ending.push((class_id, s, on));
                            continue;
                        }
                        // A rejected row leaves the membership it names as it is, bulk or not.
                        listed.insert((class_id, s));
                        if grade != Some(class.grade) {
                            reject(
                                &mut report,
                                ENROLLMENTS.name,
                                *line,
                                "class-student-not-here",
                                user,
                            );
                            continue;
                        }
                        let key = (s, class.school.clone(), class.year.0);
                        match class_in_year.get(&key) {
                            Some(other) if *other == class_id => {
                                report.unchanged += 1;
                                continue;
                            }
                            Some(_) => {
                                reject(
                                    &mut report,
                                    ENROLLMENTS.name,
                                    *line,
                                    "oneroster-two-classes",
                                    user,
                                );
                                continue;
                            }
                            None => {
                                class_in_year.insert(key, class_id);
                            }
                        }
                        // A class of next year starts on its first day.
                        let start = class.year.start();
                        let from = parse_date(r.get("beginDate"))
                            .unwrap_or(today)
                            .clamp(start, class.year.end().min(today).max(start));
                        placed.push((class_id, s, from, class.school.clone(), class.year.0));
                    }
                    ("teacher", Some(Person::Account(a))) => {
                        let may = places
                            .get(&class.school)
                            .and_then(Option::as_ref)
                            .is_some_and(|p| p.staff.contains_key(&a));
                        if !may {
                            reject(
                                &mut report,
                                ENROLLMENTS.name,
                                *line,
                                "class-bad-teacher",
                                user,
                            );
                        } else if !gone
                            && (r.get("primary").eq_ignore_ascii_case("true")
                                || r.get("primary").is_empty())
                        {
                            heads.push((class_id, a));
                        } else {
                            report.ignored += 1;
                        }
                    }
                    (_, None) => reject(
                        &mut report,
                        ENROLLMENTS.name,
                        *line,
                        "oneroster-user-unknown",
                        user,
                    ),
                    _ => report.ignored += 1,
                }
            }
        }
        let bulk_enrollments = enrollments
            .as_ref()
            .is_some_and(|(_, d)| *d == Delivery::Bulk);

        if valid_only || report.rejected.is_empty() {
            // Memberships as they stand today in the classes concerned.
            let mut touched: Vec<Uuid> = covered.iter().copied().collect();
            touched.extend(deleted_classes.iter().map(|(_, id)| *id));
            touched.sort_unstable();
            touched.dedup();
            let mut current_members: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            for chunk in touched.chunks(200) {
                let mut q = DynQuery::new(pg);
                q.push(
                    "SELECT class_id, student_id FROM class_member \
                    WHERE (until_on IS NULL OR until_on > ",
                )
                .bind(today)
                .push(") AND class_id IN");
                q.push_in(chunk);
                let rows: Vec<(Uuid, Uuid)> = q.fetch_all_in(&mut tx).await?;
                for (c, s) in rows {
                    current_members.entry(c).or_default().push(s);
                }
            }
            let is_member =
                |c: Uuid, s: Uuid| current_members.get(&c).is_some_and(|m| m.contains(&s));
            for (_, id) in &deleted_classes {
                for s in current_members.get(id).into_iter().flatten() {
                    ending.push((*id, *s, today));
                }
            }
            if bulk_enrollments {
                for c in &covered {
                    for s in current_members.get(c).into_iter().flatten() {
                        if !listed.contains(&(*c, *s)) {
                            ending.push((*c, *s, today));
                        }
                    }
                }
            }
            // A student already in the class stays as they are; one placed ends any other
            // class of theirs that school year.
            placed.retain(|(c, s, ..)| {
                let stay = is_member(*c, *s);
                if stay {
                    report.unchanged += 1;
                }
                !stay
            });
            // Grouped by class and day, then by school, year and day: a statement per group
            // of up to 200 students, not one per row.
            let mut ends: HashMap<(Uuid, NaiveDate), Vec<Uuid>> = HashMap::new();
            for (c, s, on) in &ending {
                if is_member(*c, *s) {
                    ends.entry((*c, *on)).or_default().push(*s);
                }
            }
            for ((c, on), mut students) in ends {
                students.sort_unstable();
                students.dedup();
                for chunk in students.chunks(200) {
                    let mut u = DynQuery::new(pg);
                    u.push("UPDATE class_member SET until_on = CASE WHEN from_on < ")
                        .bind(on)
                        .push(" THEN ")
                        .bind(on)
                        .push(" ELSE from_on END WHERE (until_on IS NULL OR until_on > ")
                        .bind(on)
                        .push(") AND class_id = ")
                        .bind(c)
                        .push(" AND student_id IN");
                    u.push_in(chunk);
                    report.ended += u.execute_in(&mut tx).await?;
                }
            }
            let mut moves: HashMap<(String, i32, NaiveDate), Vec<Uuid>> = HashMap::new();
            for (_, s, from, school, year) in &placed {
                moves
                    .entry((school.clone(), *year, *from))
                    .or_default()
                    .push(*s);
            }
            for ((school, year, from), students) in moves {
                for chunk in students.chunks(200) {
                    end_other_classes(&mut tx, pg, chunk, &school, year, from).await?;
                }
            }
            insert_batched(
                &mut tx,
                "INSERT INTO class_member (class_id, student_id, from_on, until_on) VALUES ",
                " ON CONFLICT (class_id, student_id, from_on) DO UPDATE SET until_on = NULL",
                &placed,
                |(c, s, from, ..)| {
                    vec![
                        Val::Uuid(*c),
                        Val::Uuid(*s),
                        Val::Date(*from),
                        Val::OptDate(None),
                    ]
                },
            )
            .await?;
            report.placed = placed.len() as u64;
            for (c, a) in &heads {
                let mut u = DynQuery::new(pg);
                u.push("UPDATE school_class SET head_teacher = ")
                    .bind(*a)
                    .push(" WHERE id = ")
                    .bind(*c)
                    .push(" AND (head_teacher IS NULL OR head_teacher <> ")
                    .bind(*a)
                    .push(")");
                let n = u.execute_in(&mut tx).await?;
                report.heads += n;
                report.unchanged += 1 - n.min(1);
            }
        }

        let write = !dry_run && (valid_only || report.rejected.is_empty());
        // One entry per school the package reached, so each school's trail shows it.
        let mut nodes: Vec<Node> = places.values().flatten().map(|p| p.row.node()).collect();
        if nodes.is_empty() {
            nodes.push(Node::Nation);
        }
        let detail = serde_json::json!({
            "dry_run": dry_run,
            "schools": places.values().flatten().count(),
            "classes_new": report.classes_new,
            "classes_renamed": report.classes_renamed,
            "placed": report.placed,
            "ended": report.ended,
            "heads": report.heads,
            "rejected": report.rejected.len(),
        })
        .to_string();
        let entries: Vec<_> = nodes
            .iter()
            .map(|node| {
                let mut e = actor.entry(
                    "oneroster.import",
                    &node.code(),
                    if write { "success" } else { "refused" },
                    node,
                );
                e.detail.clone_from(&detail);
                e
            })
            .collect();
        if write {
            for e in &entries {
                audit::append(&mut tx, e).await?;
            }
            tx.commit().await?;
            report.committed = true;
        } else {
            drop(tx);
            if !dry_run {
                let mut tx = self.0.begin().await?;
                for e in &entries {
                    audit::append(&mut tx, e).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(report)
    }

    /// The school of `code` if the actor manages it, loaded with what the import matches
    /// against; None (remembered) otherwise.
    async fn place<'p>(
        &self,
        actor: &Actor<'_>,
        places: &'p mut HashMap<String, Option<SchoolPlace>>,
        code: &str,
    ) -> Result<Option<&'p SchoolPlace>, OneRosterError> {
        if !places.contains_key(code) {
            let loaded = match Registry(self.0).managed_school(actor, code).await {
                Ok(row) if row.status() == Some(SchoolStatus::Open) => {
                    Some(self.load_place(row).await?)
                }
                Ok(_) | Err(RegistryError::NotFound | RegistryError::Forbidden) => None,
                Err(e) => return Err(e.into()),
            };
            places.insert(code.to_owned(), loaded);
        }
        Ok(places.get(code).and_then(Option::as_ref))
    }

    async fn load_place(&self, row: SchoolRow) -> Result<SchoolPlace, OneRosterError> {
        let today = today();
        let classes: Vec<(Uuid, i32, i32, String)> = {
            let mut q = DynQuery::for_db(self.0);
            q.push("SELECT id, school_year, grade, name FROM school_class WHERE school_code = ")
                .bind(row.code.clone());
            q.fetch_all(self.0).await?
        };
        let roll: Vec<(Uuid, String, i32)> = {
            let mut q = DynQuery::for_db(self.0);
            q.push(
                "SELECT st.id, st.student_number, e.grade FROM student st \
                JOIN student_event e ON e.student_id = st.id WHERE",
            );
            push_placing(&mut q, today);
            q.push(" AND e.status <> 'out' AND e.school_code = ")
                .bind(row.code.clone());
            q.fetch_all(self.0).await?
        };
        let staff: Vec<(Uuid, String)> = {
            let mut q = DynQuery::for_db(self.0);
            q.push(
                "SELECT DISTINCT u.id, u.username FROM app_user u \
                JOIN role_grant g ON g.user_id = u.id WHERE g.node_school = ",
            )
            .bind(row.code.clone())
            .push(" AND u.disabled_at IS NULL AND g.role IN ('teacher', 'school_admin')");
            q.fetch_all(self.0).await?
        };
        Ok(SchoolPlace {
            row,
            classes: classes
                .iter()
                .map(|(id, y, g, n)| ((*y, *g, n.clone()), *id))
                .collect(),
            by_id: classes
                .into_iter()
                .map(|(id, y, g, n)| (id, (y, g, n)))
                .collect(),
            numbers: roll.iter().map(|(id, n, _)| (n.clone(), *id)).collect(),
            roll: roll.into_iter().map(|(id, _, g)| (id, g)).collect(),
            staff: staff.into_iter().collect(),
        })
    }

    /// The school an org reference names: through orgs.csv, else the reference as a school code.
    async fn school_of(
        &self,
        actor: &Actor<'_>,
        places: &mut HashMap<String, Option<SchoolPlace>>,
        org_school: &HashMap<String, String>,
        org: &str,
    ) -> Result<Option<String>, OneRosterError> {
        let code = org_school.get(org).map_or(org, String::as_str).to_owned();
        Ok(self
            .place(actor, places, &code)
            .await?
            .map(|p| p.row.code.clone()))
    }

    /// A class of a managed school by its Santong id (a delta without classes.csv).
    async fn class_by_id(
        &self,
        actor: &Actor<'_>,
        places: &mut HashMap<String, Option<SchoolPlace>>,
        id: &str,
    ) -> Result<Option<ClassRef>, OneRosterError> {
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(None);
        };
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT school_code FROM school_class WHERE id = ")
            .bind(id);
        let Some((school,)) = q.fetch_all::<(String,)>(self.0).await?.into_iter().next() else {
            return Ok(None);
        };
        let Some(place) = self.place(actor, places, &school).await? else {
            return Ok(None);
        };
        Ok(place.by_id.get(&id).map(|(y, g, n)| ClassRef {
            school,
            id,
            year: SchoolYear(*y),
            grade: *g,
            name: n.clone(),
        }))
    }

    /// Who a users.csv row is: a student on the roll or an account of a school it names, by
    /// `sourcedId`, else by `identifier` or `username` (a student number, a user name).
    async fn find_person(
        &self,
        actor: &Actor<'_>,
        places: &mut HashMap<String, Option<SchoolPlace>>,
        org_school: &HashMap<String, String>,
        r: &Row<'_>,
    ) -> Result<Option<Person>, OneRosterError> {
        let mut schools = vec![];
        for org in
            or::values(r.get("primaryOrgSourcedId")).chain(or::values(r.get("orgSourcedIds")))
        {
            if let Some(s) = self.school_of(actor, places, org_school, org).await? {
                schools.push(s);
            }
        }
        // Without an org the user can be at any school the package names.
        if schools.is_empty() {
            schools = places
                .iter()
                .filter(|(_, p)| p.is_some())
                .map(|(c, _)| c.clone())
                .collect();
        }
        let id = Uuid::parse_str(r.get("sourcedId")).ok();
        let keys = [r.get("identifier"), r.get("username")];
        for code in &schools {
            let Some(p) = places.get(code).and_then(Option::as_ref) else {
                continue;
            };
            if let Some(id) = id {
                if p.roll.contains_key(&id) {
                    return Ok(Some(Person::Student(id)));
                }
                if p.staff.contains_key(&id) {
                    return Ok(Some(Person::Account(id)));
                }
            }
            for k in keys.iter().filter(|k| !k.is_empty()) {
                if let Some(s) = p.numbers.get(*k) {
                    return Ok(Some(Person::Student(*s)));
                }
                if let Some((a, _)) = p.staff.iter().find(|(_, u)| u.as_str() == *k) {
                    return Ok(Some(Person::Account(*a)));
                }
            }
        }
        Ok(None)
    }
}

/// Ends the students' other class memberships at `school` in `year` the day `from` the new one
/// starts, as placing students by hand does.
async fn end_other_classes(
    tx: &mut Tx,
    pg: bool,
    students: &[Uuid],
    school: &str,
    year: i32,
    from: NaiveDate,
) -> crate::Result<u64> {
    let mut u = DynQuery::new(pg);
    u.push("UPDATE class_member SET until_on = CASE WHEN from_on < ")
        .bind(from)
        .push(" THEN ")
        .bind(from)
        .push(" ELSE from_on END WHERE (until_on IS NULL OR until_on > ")
        .bind(from)
        .push(") AND class_id IN (SELECT id FROM school_class WHERE school_code = ")
        .bind(school.to_owned())
        .push(" AND school_year = ")
        .bind(i64::from(year))
        .push(") AND student_id IN");
    u.push_in(students);
    u.execute_in(tx).await
}
