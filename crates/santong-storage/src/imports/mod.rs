//! Imports (导入) of students into a school: a spreadsheet is checked row by row first (the
//! preview: counts of new, updated, unchanged and rejected rows, every rejected row with its
//! problems), then committed in one transaction as a batch. Every event and correction the batch
//! writes carries its id, so the batch can be undone as a whole.
//!
//! Rows are matched to existing records by natural key (the ID number, else the national student
//! number, else name, birth date and sex among the school's records without an ID number), so the
//! same file imported twice updates instead of duplicating. An import never moves a student: a
//! record at another school, a record that left school or a grade that differs from the record's
//! is a rejected row with its reason (transfers and status changes have their own pages).
//!
//! The uploaded file is kept in the database in pieces until it is committed, so any node can
//! check or commit it; the CLI reads its file directly.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use santong_domain::identity::{Node, Permission, Scope};
use santong_domain::import::{self as parse, StudentColumn};
use santong_domain::lifecycle::{EventKind, Status};
use santong_domain::region::RegionCode;
use santong_domain::registry::StudentNumber;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dynsql::{DynQuery, Val, insert_batched};
use crate::identity::Actor;
use crate::jobs::{JobContext, JobError, JobFuture, NewJob};
use crate::lifecycle::{Write, write_events};
use crate::registry::{Registry, RegistryError, SchoolRow, refused, today};
use crate::sheet::{self, Limits, SheetError};
use crate::students::{Checked, NewStudent, RegionKnown, check_student, next_j_number};
use crate::{Db, Tx, db_query};

mod classes;
mod conditions;
mod schools;
mod teachers;

/// The job that checks an uploaded file.
pub const CHECK_JOB: &str = "import.check";
/// The job that commits a checked file.
pub const COMMIT_JOB: &str = "import.commit";

/// Rows checked against the database per query.
const CHUNK: usize = 200;
/// Upload pieces as stored.
const PIECE: usize = 1 << 20;
/// Days an uploaded file waits to be committed before it is dropped.
pub const KEEP_UPLOAD_DAYS: i64 = 7;
/// Days the rejected rows of a batch (personal data as the file had it) are kept.
pub const KEEP_REJECTS_DAYS: i64 = 90;

/// What to do with a file that has rejected rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing is written unless every row is valid.
    All,
    /// The valid rows are written; the rejected ones are reported.
    Valid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Valid => "valid",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "all" => Some(Mode::All),
            "valid" => Some(Mode::Valid),
            _ => None,
        }
    }
}

/// What a batch imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Students,
    /// Teachers and other staff (教职工).
    Teachers,
    /// A school's classes (班级) with their head teachers.
    Classes,
    /// A county's schools and teaching points (学校名录).
    Schools,
    /// A county's schools' conditions (办学条件), per school year.
    Conditions,
}

impl Kind {
    /// Whether a batch of the kind belongs to a county rather than to one school.
    pub fn county_level(self) -> bool {
        matches!(self, Kind::Schools | Kind::Conditions)
    }

    pub const ALL: [Kind; 5] = [
        Kind::Students,
        Kind::Teachers,
        Kind::Classes,
        Kind::Schools,
        Kind::Conditions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Students => "students",
            Kind::Teachers => "teachers",
            Kind::Classes => "classes",
            Kind::Schools => "schools",
            Kind::Conditions => "conditions",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a batch's rows go: one school (its roll, staff or classes), or a county.
#[derive(Debug, Clone)]
pub enum Place {
    School(SchoolRow),
    County(RegionCode),
}

impl Place {
    pub fn node(&self) -> Node {
        match self {
            Place::School(s) => s.node(),
            Place::County(c) => Node::Region(*c),
        }
    }

    pub fn school(&self) -> Option<&SchoolRow> {
        match self {
            Place::School(s) => Some(s),
            Place::County(_) => None,
        }
    }

    /// The school's code, or the county's.
    pub fn code(&self) -> String {
        match self {
            Place::School(s) => s.code.clone(),
            Place::County(c) => c.to_string(),
        }
    }

    fn county(&self) -> String {
        match self {
            Place::School(s) => s.county.clone(),
            Place::County(c) => c.to_string(),
        }
    }
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Uploaded, waiting for the check.
    Uploaded,
    Checking,
    /// Checked: the preview is ready and the batch can be committed.
    Checked,
    Committing,
    Committed,
    Undone,
    /// The file itself was refused (see `error_key`) or the commit failed.
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Uploaded => "uploaded",
            State::Checking => "checking",
            State::Checked => "checked",
            State::Committing => "committing",
            State::Committed => "committed",
            State::Undone => "undone",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Uploaded,
            State::Checking,
            State::Checked,
            State::Committing,
            State::Committed,
            State::Undone,
            State::Failed,
            State::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// A job is at work on it.
    pub fn busy(self) -> bool {
        matches!(self, State::Uploaded | State::Checking | State::Committing)
    }
}

/// One problem of a row: the column (0-based, of the file) if it is one cell's, and the message
/// key. `line` names another line of the file where it applies (a duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub col: Option<usize>,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

impl Problem {
    fn at(col: Option<usize>, key: &str) -> Self {
        Problem {
            col,
            key: key.to_owned(),
            line: None,
        }
    }
}

/// A rejected row: its line in the file (the header is line 1), its cells as read, and why.
/// (`Debug` by hand: the cells hold ID numbers and phones.)
#[derive(Clone, Serialize)]
pub struct Reject {
    pub line: u64,
    pub cells: Vec<String>,
    pub problems: Vec<Problem>,
}

impl std::fmt::Debug for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reject")
            .field("line", &self.line)
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

/// What a check or a commit found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub rows: u64,
    pub new: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

/// Why a whole file or batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read as a sheet (message key from [`SheetError::key`]).
    #[error("the file was refused: {0}")]
    Sheet(SheetError),
    /// A column the import needs is missing from the header (its field name).
    #[error("a required column is missing")]
    MissingColumn(&'static str),
    /// Two columns name the same field (1-based column numbers).
    #[error("two columns name the same field")]
    SameField(usize, usize),
    /// All-or-nothing and some rows were rejected: nothing was written.
    #[error("rows were rejected; nothing was written")]
    Rejected(Tally),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<crate::StorageError> for ImportError {
    fn from(e: crate::StorageError) -> Self {
        ImportError::Registry(RegistryError::Storage(e))
    }
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Registry(RegistryError::from(e))
    }
}

impl ImportError {
    /// The message key of a refusal of the file or batch as a whole (not of the database).
    pub fn key(&self) -> Option<&'static str> {
        Some(match self {
            ImportError::Sheet(e) => e.key(),
            ImportError::MissingColumn(_) => "import-missing-column",
            ImportError::SameField(..) => "import-same-field",
            ImportError::Rejected(_) => "import-rejected-all",
            ImportError::Cancelled => "import-cancelled",
            ImportError::Registry(_) => return None,
        })
    }
}

/// A running import's progress, shared with whoever shows it (a job's heartbeat, the CLI's bar),
/// and its cancellation switch.
#[derive(Debug, Default)]
pub struct Progress {
    per_mille: AtomicU32,
    cancel: AtomicBool,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// 0.0 to 1.0.
    pub fn fraction(&self) -> f32 {
        self.per_mille.load(Ordering::Relaxed) as f32 / 1000.0
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn set(&self, fraction: f32) {
        let pm = (fraction.clamp(0.0, 1.0) * 1000.0) as u32;
        self.per_mille.store(pm, Ordering::Relaxed);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A batch as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub kind: String,
    /// None: a county's batch.
    pub school_code: Option<String>,
    pub county: String,
    pub file_name: String,
    pub file_size: i64,
    pub mode: String,
    pub state: String,
    pub job_id: Option<Uuid>,
    pub rows_total: i64,
    pub rows_new: i64,
    pub rows_updated: i64,
    pub rows_unchanged: i64,
    pub rows_rejected: i64,
    pub headers: String,
    pub error_key: Option<String>,
    pub actor: String,
    pub actor_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
    pub undone_at: Option<DateTime<Utc>>,
}

impl BatchRow {
    pub fn state(&self) -> State {
        State::parse(&self.state).unwrap_or(State::Failed)
    }

    pub fn mode(&self) -> Mode {
        Mode::parse(&self.mode).unwrap_or(Mode::All)
    }

    pub fn kind(&self) -> Kind {
        Kind::parse(&self.kind).unwrap_or(Kind::Students)
    }

    /// The school or county the batch belongs to, as a node of the hierarchy.
    pub fn node(&self) -> Node {
        let county = RegionCode::parse(&self.county).ok();
        match (self.school_code.as_deref(), county) {
            (Some(code), Some(county)) => match santong_domain::identity::SchoolCode::parse(code) {
                Some(code) => Node::School { code, county },
                None => Node::Nation,
            },
            (None, Some(county)) => Node::Region(county),
            _ => Node::Nation,
        }
    }

    /// The school's code, or the county's for a county's batch.
    pub fn place_code(&self) -> String {
        self.school_code
            .clone()
            .unwrap_or_else(|| self.county.clone())
    }

    /// The header row of the file, as read.
    pub fn header_cells(&self) -> Vec<String> {
        serde_json::from_str(&self.headers).unwrap_or_default()
    }

    pub fn tally(&self) -> Tally {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Tally {
            rows: n(self.rows_total),
            new: n(self.rows_new),
            updated: n(self.rows_updated),
            unchanged: n(self.rows_unchanged),
            rejected: n(self.rows_rejected),
        }
    }
}

const BATCH_COLUMNS: &str = "b.id, b.kind, b.school_code, b.county, b.file_name, b.file_size, \
    b.mode, b.state, b.job_id, b.rows_total, b.rows_new, b.rows_updated, b.rows_unchanged, \
    b.rows_rejected, b.headers, b.error_key, b.actor, b.actor_id, b.created_at, b.committed_at, \
    b.undone_at";

/// The fields and order of the template, and how the header of a file maps onto fields.
#[derive(Debug, Clone)]
struct Layout {
    cols: Vec<Option<StudentColumn>>,
}

impl Layout {
    fn of(headers: &[String]) -> Result<Layout, ImportError> {
        let cols = parse::student_columns(headers)
            .map_err(|s| ImportError::SameField(s.first, s.second))?;
        for c in StudentColumn::ALL {
            if c.required() && !cols.contains(&Some(c)) {
                return Err(ImportError::MissingColumn(c.field()));
            }
        }
        Ok(Layout { cols })
    }

    fn index(&self, c: StudentColumn) -> Option<usize> {
        self.cols.iter().position(|x| *x == Some(c))
    }

    fn cell<'r>(&self, row: &'r [String], c: StudentColumn) -> &'r str {
        self.index(c)
            .and_then(|i| row.get(i))
            .map_or("", String::as_str)
    }

    /// The column of a field error (`birth_date`).
    fn column_of_field(&self, field: &str) -> Option<usize> {
        StudentColumn::ALL
            .into_iter()
            .find(|c| c.field() == field)
            .and_then(|c| self.index(c))
    }

    /// The row as an enrolment form, each cell read the forgiving way; a cell that does not
    /// parse is passed on as written, so the check names it.
    fn student(&self, row: &[String]) -> NewStudent {
        let cell = |c| self.cell(row, c);
        let date = |raw: &str| {
            parse::parse_date(raw).map_or_else(
                || parse::normalize(raw),
                |d| d.format("%Y-%m-%d").to_string(),
            )
        };
        NewStudent {
            name: parse::normalize(cell(StudentColumn::Name)),
            sex: parse::sex(cell(StudentColumn::Sex)).map_or_else(
                || parse::normalize(cell(StudentColumn::Sex)),
                |s| s.code().into(),
            ),
            birth_date: date(cell(StudentColumn::BirthDate)),
            ethnicity: parse::ethnicity(cell(StudentColumn::Ethnicity)).map_or_else(
                || parse::normalize(cell(StudentColumn::Ethnicity)),
                |e| e.code(),
            ),
            id_number: parse::id_number(cell(StudentColumn::IdNumber)),
            household_region: parse::normalize(cell(StudentColumn::HouseholdRegion)),
            guardian_name: parse::normalize(cell(StudentColumn::GuardianName)),
            guardian_relation: parse::normalize(cell(StudentColumn::GuardianRelation)),
            guardian_phone: parse::normalize(cell(StudentColumn::GuardianPhone)),
            left_behind: false,
            migrant: false,
            disability: false,
            grade: parse::grade(cell(StudentColumn::Grade)).map_or_else(
                || parse::normalize(cell(StudentColumn::Grade)),
                |g| g.to_string(),
            ),
            enrolled_on: match cell(StudentColumn::EnrolledOn).trim() {
                "" => String::new(),
                raw => date(raw),
            },
        }
    }
}

/// Every GB/T 2260 code in use and every one in use once, for checking rows without a query
/// each.
struct Regions {
    current: HashSet<String>,
    retired: HashSet<String>,
}

impl Regions {
    async fn load(db: &Db) -> crate::Result<Regions> {
        let (current, retired): (Vec<String>, Vec<String>) = db_query!(db, read, |sql, ex| {
            (
                sqlx::query_scalar(sql("SELECT code FROM region"))
                    .fetch_all(ex)
                    .await?,
                sqlx::query_scalar(sql("SELECT DISTINCT code FROM region_history"))
                    .fetch_all(ex)
                    .await?,
            )
        });
        Ok(Regions {
            current: current.into_iter().collect(),
            retired: retired.into_iter().collect(),
        })
    }

    fn known(&self, code: &str) -> RegionKnown {
        if self.current.contains(code) {
            RegionKnown::Current
        } else if self.retired.contains(code) {
            RegionKnown::Retired
        } else {
            RegionKnown::Unknown
        }
    }
}

/// An existing record a row matched, with where it is today.
#[derive(Clone, sqlx::FromRow)]
struct Existing {
    id: Uuid,
    student_number: String,
    name: String,
    sex: String,
    birth_date: NaiveDate,
    ethnicity: String,
    id_number: Option<String>,
    household_region: Option<String>,
    guardian_name: String,
    guardian_relation: String,
    guardian_phone: String,
    school_code: Option<String>,
    grade: Option<i32>,
    status: Option<String>,
}

/// What a valid row does.
enum Action {
    New(Box<Checked>),
    /// The record exists with no event in force (its enrolment was undone): enrolled again,
    /// with its fields brought up to date.
    Revive(Box<Checked>, Box<Existing>),
    Update(Box<Checked>, Box<Existing>),
    Unchanged,
}

/// The fields of a record an import may change, with their values as stored.
fn fields_of(c: &Checked) -> [(&'static str, Option<String>); 8] {
    [
        ("name", Some(c.name.clone())),
        ("sex", Some(c.sex.code().to_owned())),
        ("birth_date", Some(c.birth_date.to_string())),
        ("ethnicity", Some(c.ethnicity.code())),
        ("household_region", c.household.clone()),
        ("guardian_name", Some(c.guardian_name.clone())),
        ("guardian_relation", Some(c.guardian_relation.clone())),
        ("guardian_phone", Some(c.guardian_phone.clone())),
    ]
}

fn existing_fields(e: &Existing) -> [(&'static str, Option<String>); 8] {
    [
        ("name", Some(e.name.clone())),
        ("sex", Some(e.sex.clone())),
        ("birth_date", Some(e.birth_date.to_string())),
        ("ethnicity", Some(e.ethnicity.clone())),
        ("household_region", e.household_region.clone()),
        ("guardian_name", Some(e.guardian_name.clone())),
        ("guardian_relation", Some(e.guardian_relation.clone())),
        ("guardian_phone", Some(e.guardian_phone.clone())),
    ]
}

/// The fields that differ: (field, old, new).
fn changes(c: &Checked, e: &Existing) -> Vec<(&'static str, Option<String>, Option<String>)> {
    existing_fields(e)
        .into_iter()
        .zip(fields_of(c))
        .filter(|((_, old), (_, new))| old != new)
        .map(|((f, old), (_, new))| (f, old, new))
        .collect()
}

/// Where the reads of a check go: the pool (the preview) or the committing transaction.
enum Conn<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl Conn<'_> {
    async fn fetch<T>(&mut self, q: DynQuery) -> crate::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        match self {
            Conn::Db(db) => q.fetch_all(db).await,
            Conn::Tx(tx) => q.fetch_all_in(tx).await,
        }
    }
}

/// The state of one run over a file: what was seen so far, for duplicates inside the file.
struct Run<'a> {
    school: &'a SchoolRow,
    layout: Layout,
    regions: &'a Regions,
    today: NaiveDate,
    pg: bool,
    /// ID numbers and student numbers of earlier rows, with their lines.
    seen_ids: HashMap<String, u64>,
    seen_numbers: HashMap<String, u64>,
    seen_people: HashMap<(String, NaiveDate, String), u64>,
    /// The school's records without an ID number, by name, birth date and sex.
    unnumbered: HashMap<(String, NaiveDate, String), Existing>,
    tally: Tally,
}

/// A checked chunk of rows.
struct Checks {
    actions: Vec<Action>,
    rejects: Vec<Reject>,
}

impl<'a> Run<'a> {
    async fn start(
        conn: &mut Conn<'_>,
        school: &'a SchoolRow,
        layout: Layout,
        regions: &'a Regions,
        pg: bool,
    ) -> crate::Result<Run<'a>> {
        let mut q = DynQuery::new(pg);
        // On the roll here, or once here and on no roll now (an undone import): the same child
        // comes back onto the same record.
        q.push("SELECT ")
            .push(EXISTING_COLUMNS)
            .push(" FROM student st LEFT JOIN student_event e ON e.student_id = st.id AND");
        crate::students::push_placing(&mut q, today());
        q.push(
            " WHERE st.id_number IS NULL AND st.id IN (SELECT h.student_id FROM student_event h \
            WHERE h.school_code = ",
        )
        .bind(school.code.clone())
        .push(") AND (e.id IS NULL OR e.school_code = ")
        .bind(school.code.clone())
        .push(")");
        let rows: Vec<Existing> = conn.fetch(q).await?;
        let unnumbered = rows
            .into_iter()
            .map(|e| ((e.name.clone(), e.birth_date, e.sex.clone()), e))
            .collect();
        Ok(Run {
            school,
            layout,
            regions,
            today: today(),
            pg,
            seen_ids: HashMap::new(),
            seen_numbers: HashMap::new(),
            seen_people: HashMap::new(),
            unnumbered,
            tally: Tally::default(),
        })
    }

    /// Checks a chunk of rows (line, cells) against the rules, the file so far and the database.
    async fn check(
        &mut self,
        conn: &mut Conn<'_>,
        rows: Vec<(u64, Vec<String>)>,
    ) -> crate::Result<Checks> {
        struct Parsed {
            line: u64,
            cells: Vec<String>,
            checked: Option<Checked>,
            number: Option<String>,
            problems: Vec<Problem>,
        }
        let mut parsed = Vec::with_capacity(rows.len());
        for (line, cells) in rows {
            let input = self.layout.student(&cells);
            let mut problems = vec![];
            let checked = match check_student(
                self.school,
                &input,
                self.today,
                &|c| self.regions.known(c),
                true,
            ) {
                Ok(c) => Some(c),
                Err(errors) => {
                    for e in errors {
                        // An import's dates come in many shapes: say which ones are read.
                        let key = match e.kind.key() {
                            "registry-bad-date" => "import-bad-date",
                            k => k,
                        };
                        problems.push(Problem::at(self.layout.column_of_field(&e.field), key));
                    }
                    None
                }
            };
            let number =
                match parse::normalize(self.layout.cell(&cells, StudentColumn::StudentNumber))
                    .replace(' ', "")
                    .to_uppercase()
                {
                    n if n.is_empty() => None,
                    n if StudentNumber::parse(&n).is_some() => Some(n),
                    _ => {
                        problems.push(Problem::at(
                            self.layout.index(StudentColumn::StudentNumber),
                            "import-bad-student-number",
                        ));
                        None
                    }
                };
            // The same child twice in one file: the second is refused, naming the first.
            if let Some(c) = &checked {
                let dup = |seen: &mut HashMap<String, u64>, key: String| match seen.get(&key) {
                    Some(first) => Some(*first),
                    None => {
                        seen.insert(key, line);
                        None
                    }
                };
                let first = match (&c.id, &number) {
                    (Some(id), _) => dup(&mut self.seen_ids, id.as_str().to_owned()),
                    (None, Some(n)) => dup(&mut self.seen_numbers, n.clone()),
                    (None, None) => {
                        let key = (c.name.clone(), c.birth_date, c.sex.code().to_owned());
                        match self.seen_people.get(&key) {
                            Some(first) => Some(*first),
                            None => {
                                self.seen_people.insert(key, line);
                                None
                            }
                        }
                    }
                };
                if let Some(first) = first {
                    problems.push(Problem {
                        col: None,
                        key: "import-dup-in-file".into(),
                        line: Some(first),
                    });
                }
            }
            parsed.push(Parsed {
                line,
                cells,
                checked,
                number,
                problems,
            });
        }
        // One query for the records the chunk's ID numbers and student numbers name.
        let ids: Vec<String> = parsed
            .iter()
            .filter(|p| p.problems.is_empty())
            .filter_map(|p| {
                p.checked
                    .as_ref()?
                    .id
                    .as_ref()
                    .map(|i| i.as_str().to_owned())
            })
            .collect();
        let numbers: Vec<String> = parsed
            .iter()
            .filter(|p| p.problems.is_empty())
            .filter_map(|p| p.number.clone())
            .collect();
        let mut by_id: HashMap<String, Existing> = HashMap::new();
        let mut by_number: HashMap<String, Existing> = HashMap::new();
        if !ids.is_empty() || !numbers.is_empty() {
            let mut q = DynQuery::new(self.pg);
            q.push("SELECT ")
                .push(EXISTING_COLUMNS)
                .push(" FROM student st LEFT JOIN student_event e ON e.student_id = st.id AND");
            crate::students::push_placing(&mut q, self.today);
            q.push(" WHERE st.id_number IN (");
            push_list(&mut q, self.pg, &ids);
            q.push(") OR st.student_number IN (");
            push_list(&mut q, self.pg, &numbers);
            q.push(")");
            for e in conn.fetch::<Existing>(q).await? {
                if let Some(id) = &e.id_number {
                    by_id.insert(id.clone(), e.clone());
                }
                by_number.insert(e.student_number.clone(), e);
            }
        }
        let mut out = Checks {
            actions: Vec::with_capacity(parsed.len()),
            rejects: vec![],
        };
        for p in parsed {
            self.tally.rows += 1;
            let mut problems = p.problems;
            let action = match p.checked {
                Some(c) if problems.is_empty() => {
                    let found = match (&c.id, &p.number) {
                        (Some(id), _) => by_id.get(id.as_str()).cloned(),
                        (None, Some(n)) => by_number.get(n).cloned(),
                        (None, None) => self
                            .unnumbered
                            .get(&(c.name.clone(), c.birth_date, c.sex.code().to_owned()))
                            .cloned(),
                    };
                    // A number in the file must be the record's own.
                    if let (Some(n), Some(id)) = (&p.number, &c.id) {
                        let own = found.as_ref().map(|e| e.student_number.as_str());
                        let issued = StudentNumber::official(id);
                        if own.is_some_and(|o| o != n) || (own.is_none() && n != issued.as_str()) {
                            problems.push(Problem::at(
                                self.layout.index(StudentColumn::StudentNumber),
                                "import-number-mismatch",
                            ));
                        }
                    } else if p.number.is_some() && found.is_none() {
                        problems.push(Problem::at(
                            self.layout.index(StudentColumn::StudentNumber),
                            "import-unknown-number",
                        ));
                    }
                    // A row with an ID number for a child on this roll without one: the same
                    // child, whose ID belongs on the record by a correction, not a second record.
                    let key = (c.name.clone(), c.birth_date, c.sex.code().to_owned());
                    if found.is_none() && c.id.is_some() && self.unnumbered.contains_key(&key) {
                        problems.push(Problem::at(
                            self.layout.index(StudentColumn::IdNumber),
                            "import-probable-duplicate",
                        ));
                    }
                    match found {
                        _ if !problems.is_empty() => None,
                        None => Some(Action::New(Box::new(c))),
                        Some(e) => match (e.school_code.as_deref(), e.status.as_deref()) {
                            (None, _) => Some(Action::Revive(Box::new(c), Box::new(e))),
                            (_, Some("out")) => {
                                problems.push(Problem::at(
                                    self.layout.index(StudentColumn::IdNumber),
                                    "student-already-enrolled",
                                ));
                                None
                            }
                            (Some(s), _) if s != self.school.code => {
                                problems.push(Problem::at(None, "import-at-other-school"));
                                None
                            }
                            _ if e.grade != Some(i32::from(c.grade)) => {
                                problems.push(Problem::at(
                                    self.layout.index(StudentColumn::Grade),
                                    "import-grade-differs",
                                ));
                                None
                            }
                            _ if changes(&c, &e).is_empty() => Some(Action::Unchanged),
                            _ => Some(Action::Update(Box::new(c), Box::new(e))),
                        },
                    }
                }
                _ => None,
            };
            match action {
                Some(a) => {
                    match &a {
                        Action::New(_) | Action::Revive(..) => self.tally.new += 1,
                        Action::Update(..) => self.tally.updated += 1,
                        Action::Unchanged => self.tally.unchanged += 1,
                    }
                    out.actions.push(a);
                }
                None => {
                    self.tally.rejected += 1;
                    out.rejects.push(Reject {
                        line: p.line,
                        cells: p.cells,
                        problems,
                    });
                }
            }
        }
        Ok(out)
    }
}

const EXISTING_COLUMNS: &str = "st.id, st.student_number, st.name, st.sex, st.birth_date, \
    st.ethnicity, st.id_number, st.household_region, st.guardian_name, st.guardian_relation, \
    st.guardian_phone, e.school_code, e.grade, e.status";

/// The values of an `IN (…)` list. On SQLite one JSON array parameter read by `json_each`: the
/// cost of binding grows with the square of the parameters there (docs/benchmarks.md).
fn push_list(q: &mut DynQuery, pg: bool, values: &[String]) {
    if !pg {
        q.push("SELECT value FROM json_each(")
            .bind(serde_json::to_string(values).unwrap_or_else(|_| "[]".into()))
            .push(")");
        return;
    }
    if values.is_empty() {
        // `IN ()` is not SQL; a value no column holds keeps the statement valid.
        q.push("NULL");
    }
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.push(",");
        }
        q.bind(v.clone());
    }
}

/// The writes of a batch of a kind without events of its own to undo (staff), in order, for
/// its undo: see `import_change`.
#[derive(Default)]
pub(crate) struct ChangeLog {
    seq: i64,
    rows: Vec<Logged>,
}

/// One write: (seq, table, record key, field — none for a record created — old, new).
type Logged = (
    i64,
    &'static str,
    String,
    Option<&'static str>,
    Option<String>,
    Option<String>,
);

impl ChangeLog {
    fn created(&mut self, table: &'static str, record: String) {
        self.seq += 1;
        self.rows.push((self.seq, table, record, None, None, None));
    }

    /// A record created, with what it held (for a record without an id of its own to compare).
    fn created_as(&mut self, table: &'static str, record: String, new: &str) {
        self.seq += 1;
        self.rows
            .push((self.seq, table, record, None, None, Some(new.to_owned())));
    }

    fn changed(
        &mut self,
        table: &'static str,
        record: String,
        field: &'static str,
        old: &str,
        new: &str,
    ) {
        self.seq += 1;
        self.rows.push((
            self.seq,
            table,
            record,
            Some(field),
            Some(old.into()),
            Some(new.into()),
        ));
    }

    /// Writes what was logged since the last call.
    async fn write(&mut self, tx: &mut Tx, batch: Uuid) -> crate::Result<()> {
        let rows = std::mem::take(&mut self.rows);
        insert_batched(
            tx,
            "INSERT INTO import_change (batch_id, seq, table_name, record_id, field, old_value, \
            new_value) VALUES ",
            "",
            &rows,
            |(seq, table, record, field, old, new)| {
                vec![
                    Val::Uuid(batch),
                    Val::BigInt(*seq),
                    Val::Text((*table).to_owned()),
                    Val::Text(record.clone()),
                    Val::OptText(field.map(str::to_owned)),
                    Val::OptText(old.clone()),
                    Val::OptText(new.clone()),
                ]
            },
        )
        .await
    }
}

/// One run over a file, of its kind.
enum Runner<'a> {
    Students(Run<'a>),
    Teachers(teachers::TeacherRun<'a>),
    Classes(classes::ClassRun<'a>),
    Schools(schools::SchoolRun),
    Conditions(conditions::ConditionRun),
}

/// A checked chunk's valid rows, of the run's kind.
enum Actions {
    Students(Vec<Action>),
    Teachers(Vec<teachers::TeacherAction>),
    Classes(Vec<classes::ClassAction>),
    Schools(Vec<schools::SchoolAction>),
    Conditions(Vec<conditions::ConditionAction>),
}

impl<'a> Runner<'a> {
    async fn start(
        kind: Kind,
        conn: &mut Conn<'_>,
        place: &'a Place,
        headers: &[String],
        regions: &'a Regions,
        pg: bool,
    ) -> Result<Runner<'a>, ImportError> {
        let school = place.school().ok_or(RegistryError::NotFound);
        let county = match place {
            Place::County(c) => Ok(*c),
            Place::School(_) => Err(RegistryError::NotFound),
        };
        Ok(match kind {
            Kind::Schools => Runner::Schools(
                schools::SchoolRun::start(conn, county?, headers, today(), pg).await?,
            ),
            Kind::Conditions => Runner::Conditions(
                conditions::ConditionRun::start(conn, county?, headers, today(), pg).await?,
            ),
            Kind::Students => {
                let layout = Layout::of(headers)?;
                Runner::Students(Run::start(conn, school?, layout, regions, pg).await?)
            }
            Kind::Teachers => {
                Runner::Teachers(teachers::TeacherRun::start(school?, headers, today(), pg)?)
            }
            Kind::Classes => Runner::Classes(
                classes::ClassRun::start(conn, school?, headers, today(), pg).await?,
            ),
        })
    }

    async fn check(
        &mut self,
        conn: &mut Conn<'_>,
        rows: Vec<(u64, Vec<String>)>,
    ) -> crate::Result<(Actions, Vec<Reject>)> {
        Ok(match self {
            Runner::Students(run) => {
                let c = run.check(conn, rows).await?;
                (Actions::Students(c.actions), c.rejects)
            }
            Runner::Teachers(run) => {
                let (a, r) = run.check(conn, rows).await?;
                (Actions::Teachers(a), r)
            }
            Runner::Classes(run) => {
                let (a, r) = run.check(rows);
                (Actions::Classes(a), r)
            }
            Runner::Schools(run) => {
                let (a, r) = run.check(conn, rows).await?;
                (Actions::Schools(a), r)
            }
            Runner::Conditions(run) => {
                let (a, r) = run.check(rows);
                (Actions::Conditions(a), r)
            }
        })
    }

    fn tally(&self) -> Tally {
        match self {
            Runner::Students(run) => run.tally,
            Runner::Teachers(run) => run.tally,
            Runner::Classes(run) => run.tally,
            Runner::Schools(run) => run.tally,
            Runner::Conditions(run) => run.tally,
        }
    }
}

/// What a commit carries from one chunk to the next: the next J-numbers and staff numbers, and
/// the change log.
#[derive(Default)]
struct Carry {
    j_next: HashMap<String, u16>,
    staff_numbers: HashMap<i32, u32>,
    log: ChangeLog,
}

async fn apply_actions(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    place: &Place,
    actions: Actions,
    now: DateTime<Utc>,
    carry: &mut Carry,
) -> Result<(), ImportError> {
    let school = place.school().ok_or(RegistryError::NotFound);
    match actions {
        Actions::Students(a) => apply(tx, actor, batch, school?, a, now, &mut carry.j_next).await,
        Actions::Teachers(a) => teachers::apply(tx, actor, batch, school?, a, now, carry).await,
        Actions::Classes(a) => classes::apply(tx, actor, batch, school?, a, now, carry).await,
        Actions::Schools(a) => match place {
            Place::County(c) => schools::apply(tx, actor, batch, *c, a, now, carry).await,
            Place::School(_) => Err(RegistryError::NotFound.into()),
        },
        Actions::Conditions(a) => conditions::apply(tx, actor, batch, a, now, carry).await,
    }
}

/// A sheet opened for a run, with its header read.
struct Opened {
    rows: sheet::Rows,
    headers: Vec<String>,
}

fn open_sheet(path: &Path, limits: &Limits) -> Result<Opened, ImportError> {
    let mut rows = sheet::open(path, limits).map_err(ImportError::Sheet)?;
    let headers = match rows.next() {
        Some(h) => h.map_err(ImportError::Sheet)?,
        None => return Err(ImportError::Sheet(SheetError::Empty)),
    };
    Ok(Opened { rows, headers })
}

/// Reads the next chunk of data rows with their lines as the person's editor numbers them.
fn next_chunk(rows: &mut sheet::Rows) -> Result<Vec<(u64, Vec<String>)>, ImportError> {
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.next() {
        let row = row.map_err(ImportError::Sheet)?;
        chunk.push((rows.line(), row));
        if chunk.len() == CHUNK {
            break;
        }
    }
    Ok(chunk)
}

/// The outcome of checking a file without writing (`check_file`) or of committing it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub headers: Vec<String>,
    pub tally: Tally,
    /// Every rejected row when `keep_rejects`, else the first hundred.
    pub rejects: Vec<Reject>,
    /// The batch the rows were written as (or would have been: see `committed`).
    pub batch: Option<Uuid>,
    /// False when nothing was written: a dry run, or all-or-nothing with rejected rows.
    pub committed: bool,
}

/// The most rejected rows an outcome carries when they are not all kept.
const REJECTS_SHOWN: usize = 100;

pub struct Imports<'a>(pub &'a Db);

impl Imports<'_> {
    /// Checks a file for `school` and writes nothing (the CLI's `--dry-run`, and the check job).
    pub async fn check_file(
        &self,
        kind: Kind,
        place: &Place,
        path: &Path,
        limits: &Limits,
        progress: &Progress,
        store_rejects: Option<Uuid>,
    ) -> Result<Outcome, ImportError> {
        let Opened { mut rows, headers } = open_sheet(path, limits)?;
        let regions = Regions::load(self.0).await?;
        let mut conn = Conn::Db(self.0);
        let mut run = Runner::start(
            kind,
            &mut conn,
            place,
            &headers,
            &regions,
            self.0.is_postgres(),
        )
        .await?;
        let mut shown = vec![];
        loop {
            let chunk = next_chunk(&mut rows)?;
            if chunk.is_empty() {
                break;
            }
            let (_, rejects) = run.check(&mut conn, chunk).await?;
            if let Some(batch) = store_rejects {
                self.store_rejects(batch, &rejects, false).await?;
            }
            let room = REJECTS_SHOWN.saturating_sub(shown.len());
            shown.extend(rejects.into_iter().take(room));
            progress.set(rows.fraction_done() * 0.99);
            if progress.cancelled() {
                return Err(ImportError::Cancelled);
            }
        }
        progress.set(1.0);
        Ok(Outcome {
            headers,
            tally: run.tally(),
            rejects: shown,
            batch: None,
            committed: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    /// Checks and writes a file for `school` in one transaction as a new batch (the CLI; the
    /// commit job goes through [`Self::commit_batch`]). In [`Mode::All`] a single rejected row
    /// means nothing is written.
    pub async fn import_file(
        &self,
        actor: Actor<'_>,
        kind: Kind,
        code: &str,
        path: &Path,
        file_name: &str,
        mode: Mode,
        limits: &Limits,
        progress: &Progress,
    ) -> Result<Outcome, ImportError> {
        let place = self.place_for(&actor, kind, code).await?;
        let batch = Uuid::now_v7();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let mut tx = self.0.begin().await?;
        self.insert_batch(
            &mut tx,
            &actor,
            batch,
            kind,
            &place,
            file_name,
            size,
            mode,
            State::Committing,
        )
        .await?;
        tx.commit().await?;
        let outcome = self
            .write(&actor, batch, kind, &place, path, mode, limits, progress)
            .await;
        match &outcome {
            Err(e) => self.settle_failure(batch, e).await?,
            // The command line keeps no file to commit later: the batch ends here.
            Ok(o) if !o.committed => {
                self.set_tally(batch, &o.tally).await?;
                self.settle_failure(batch, &ImportError::Cancelled).await?;
            }
            Ok(_) => {}
        }
        outcome
    }

    /// The school, or the county for a county's kind, if the actor may import there.
    async fn place_for(
        &self,
        actor: &Actor<'_>,
        kind: Kind,
        code: &str,
    ) -> Result<Place, ImportError> {
        if kind.county_level() {
            let county = RegionCode::parse(code).map_err(|_| RegistryError::NotFound)?;
            let is_county = crate::regions::Regions(self.0)
                .get(county)
                .await?
                .is_some_and(|r| {
                    santong_domain::region::RegionLevel::parse(&r.level)
                        == Some(santong_domain::region::RegionLevel::County)
                });
            let node = Node::Region(county);
            if !is_county
                || (!actor.may(Permission::RegistryView, &node) && !matches!(actor, Actor::Cli))
            {
                return Err(RegistryError::NotFound.into());
            }
            if !actor.may(Permission::RegistryManage, &node) {
                return Err(RegistryError::Forbidden.into());
            }
            return Ok(Place::County(county));
        }
        Ok(Place::School(self.school_for(actor, code).await?))
    }

    /// Where a stored batch's rows go (for its jobs).
    async fn place_of(&self, batch: &BatchRow) -> Result<Place, ImportError> {
        match &batch.school_code {
            Some(code) => Ok(Place::School(
                Registry(self.0)
                    .school(&Scope::everything(), code)
                    .await?
                    .ok_or(RegistryError::NotFound)?,
            )),
            None => Ok(Place::County(
                RegionCode::parse(&batch.county).map_err(|_| RegistryError::NotFound)?,
            )),
        }
    }

    /// The school, if the actor may import there.
    async fn school_for(&self, actor: &Actor<'_>, code: &str) -> Result<SchoolRow, ImportError> {
        let school = Registry(self.0)
            .school(&Scope::everything(), code)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !actor.may(Permission::RegistryView, &school.node()) && !matches!(actor, Actor::Cli) {
            return Err(RegistryError::NotFound.into());
        }
        if !actor.may(Permission::RegistryManage, &school.node()) {
            return Err(RegistryError::Forbidden.into());
        }
        Ok(school)
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_batch(
        &self,
        tx: &mut Tx,
        actor: &Actor<'_>,
        id: Uuid,
        kind: Kind,
        place: &Place,
        file_name: &str,
        size: u64,
        mode: Mode,
        state: State,
    ) -> crate::Result<()> {
        // Only the last part of a path, never more than a line's worth.
        let file_name: String = file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql(
                "INSERT INTO import_batch (id, kind, school_code, county, file_name, file_size, \
                mode, state, rows_total, rows_new, rows_updated, rows_unchanged, rows_rejected, \
                headers, actor, actor_id, created_at) \
                VALUES ($1, $11, $2, $3, $4, $5, $6, $7, 0, 0, 0, 0, 0, '[]', $8, $9, $10)",
            ))
            .bind(id)
            .bind(place.school().map(|s| s.code.clone()))
            .bind(place.county())
            .bind(&file_name)
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .bind(mode.as_str())
            .bind(state.as_str())
            .bind(actor.name())
            .bind(actor.id())
            .bind(Utc::now())
            .bind(kind.as_str())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Records why a run ended without writing: a refused file or batch fails it (with its
    /// message key), an all-or-nothing batch with rejects goes back to checked.
    async fn settle_failure(&self, id: Uuid, e: &ImportError) -> crate::Result<()> {
        let (state, key) = match e {
            ImportError::Rejected(_) => (State::Checked, None),
            ImportError::Cancelled => (State::Cancelled, None),
            other => (State::Failed, Some(other.key().unwrap_or("import-failed"))),
        };
        if let ImportError::Rejected(t) = e {
            self.set_tally(id, t).await?;
        }
        db_query!(self.0, write, |sql, ex| {
            // Only a run still at work settles: a batch committed or cancelled stays so.
            sqlx::query(sql(
                "UPDATE import_batch SET state = $2, error_key = COALESCE($3, error_key) \
                WHERE id = $1 AND state IN ('uploaded', 'checking', 'committing')",
            ))
            .bind(id)
            .bind(state.as_str())
            .bind(key)
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    async fn set_tally(&self, id: Uuid, t: &Tally) -> crate::Result<()> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "UPDATE import_batch SET rows_total = $2, rows_new = $3, rows_updated = $4, \
                rows_unchanged = $5, rows_rejected = $6 WHERE id = $1",
            ))
            .bind(id)
            .bind(n(t.rows))
            .bind(n(t.new))
            .bind(n(t.updated))
            .bind(n(t.unchanged))
            .bind(n(t.rejected))
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Checks and writes the file as batch `batch` in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        actor: &Actor<'_>,
        batch: Uuid,
        kind: Kind,
        place: &Place,
        path: &Path,
        mode: Mode,
        limits: &Limits,
        progress: &Progress,
    ) -> Result<Outcome, ImportError> {
        let Opened { mut rows, headers } = open_sheet(path, limits)?;
        let regions = Regions::load(self.0).await?;
        let pg = self.0.is_postgres();
        let mut tx = self.0.begin().await?;
        if pg {
            lock_place(&mut tx, place).await?;
        }
        write_rejects(&mut tx, batch, &[], true).await?;
        let mut run = {
            let mut conn = Conn::Tx(&mut tx);
            Runner::start(kind, &mut conn, place, &headers, &regions, pg).await?
        };
        // All-or-nothing drops the transaction at the first rejected row and goes on checking
        // only, to report every rejected row.
        let mut tx = Some(tx);
        let now = Utc::now();
        let mut shown: Vec<Reject> = vec![];
        let mut carry = Carry::default();
        loop {
            let chunk = next_chunk(&mut rows)?;
            if chunk.is_empty() {
                break;
            }
            let (actions, rejects) = {
                let mut conn = match tx.as_mut() {
                    Some(t) => Conn::Tx(t),
                    None => Conn::Db(self.0),
                };
                run.check(&mut conn, chunk).await?
            };
            if mode == Mode::All && !rejects.is_empty() && tx.is_some() {
                drop(tx.take());
                self.store_rejects(batch, &[], true).await?;
            }
            match tx.as_mut() {
                Some(t) => {
                    apply_actions(t, actor, batch, place, actions, now, &mut carry).await?;
                    write_rejects(t, batch, &rejects, false).await?;
                }
                None => self.store_rejects(batch, &rejects, false).await?,
            }
            let room = REJECTS_SHOWN.saturating_sub(shown.len());
            shown.extend(rejects.into_iter().take(room));
            progress.set(rows.fraction_done() * 0.99);
            if progress.cancelled() {
                return Err(ImportError::Cancelled);
            }
        }
        let tally = run.tally();
        let Some(mut tx) = tx else {
            return Ok(Outcome {
                headers,
                tally,
                rejects: shown,
                batch: Some(batch),
                committed: false,
            });
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        // Compare-and-set: a batch cancelled meanwhile is not committed.
        let marked = db_query!(&mut tx, tx, |sql, ex| {
            let marked = sqlx::query(sql(
                "UPDATE import_batch SET state = 'committed', committed_at = $2, headers = $3, \
                rows_total = $4, rows_new = $5, rows_updated = $6, rows_unchanged = $7, \
                rows_rejected = $8 WHERE id = $1 AND state = 'committing'",
            ))
            .bind(batch)
            .bind(now)
            .bind(serde_json::to_string(&headers).unwrap_or_default())
            .bind(n(tally.rows))
            .bind(n(tally.new))
            .bind(n(tally.updated))
            .bind(n(tally.unchanged))
            .bind(n(tally.rejected))
            .execute(&mut *ex)
            .await?
            .rows_affected();
            // The upload is not needed once committed.
            sqlx::query(sql("DELETE FROM import_file WHERE batch_id = $1"))
                .bind(batch)
                .execute(&mut *ex)
                .await?
                .rows_affected();
            marked
        });
        if marked != 1 {
            return Err(ImportError::Cancelled);
        }
        let mut e = actor.entry(
            "import.commit",
            &batch.to_string(),
            "success",
            &place.node(),
        );
        e.detail = serde_json::json!({
            "kind": kind.as_str(),
            "school": place.code(),
            "mode": mode.as_str(),
            "rows": tally.rows,
            "new": tally.new,
            "updated": tally.updated,
            "unchanged": tally.unchanged,
            "rejected": tally.rejected,
        })
        .to_string();
        crate::audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        progress.set(1.0);
        Ok(Outcome {
            headers,
            tally,
            rejects: shown,
            batch: Some(batch),
            committed: true,
        })
    }

    /// Stores rejected rows of a batch in a short transaction of their own.
    async fn store_rejects(
        &self,
        batch: Uuid,
        rejects: &[Reject],
        replace: bool,
    ) -> crate::Result<()> {
        if rejects.is_empty() && !replace {
            return Ok(());
        }
        let mut tx = self.0.begin().await?;
        write_rejects(&mut tx, batch, rejects, replace).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Stores rejected rows of a batch (replacing earlier ones when `replace`).
async fn write_rejects(
    tx: &mut Tx,
    batch: Uuid,
    rejects: &[Reject],
    replace: bool,
) -> crate::Result<()> {
    if replace {
        db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql("DELETE FROM import_reject WHERE batch_id = $1"))
                .bind(batch)
                .execute(ex)
                .await?
                .rows_affected()
        });
    }
    insert_batched(
        tx,
        "INSERT INTO import_reject (batch_id, line, cells, problems) VALUES ",
        "",
        rejects,
        |r| {
            vec![
                Val::Uuid(batch),
                Val::BigInt(i64::try_from(r.line).unwrap_or(i64::MAX)),
                Val::Text(serde_json::to_string(&r.cells).unwrap_or_default()),
                Val::Text(serde_json::to_string(&r.problems).unwrap_or_default()),
            ]
        },
    )
    .await
}

/// Writes a chunk's valid rows: new records with their enrolment, revived records, and updates
/// as corrections. Everything carries the batch.
async fn apply(
    tx: &mut Tx,
    actor: &Actor<'_>,
    batch: Uuid,
    school: &SchoolRow,
    actions: Vec<Action>,
    now: DateTime<Utc>,
    j_next: &mut HashMap<String, u16>,
) -> Result<(), ImportError> {
    let mut students: Vec<(Uuid, String, Checked)> = vec![];
    let mut events: Vec<Write> = vec![];
    let mut corrections: Vec<(Uuid, &'static str, Option<String>, Option<String>)> = vec![];
    let mut updates: Vec<(Uuid, Checked)> = vec![];
    let enrol = |student_id: Uuid, c: &Checked| Write {
        id: Uuid::now_v7(),
        student_id,
        kind: EventKind::Enrol,
        status: Status::In,
        school_code: school.code.clone(),
        grade: i32::from(c.grade),
        from_school: None,
        from_grade: None,
        effective_on: c.enrolled_on,
        reason: "import".into(),
        approval_ref: None,
        undoes: None,
        batch_id: Some(batch),
    };
    for a in actions {
        match a {
            Action::New(c) => {
                let number = match &c.id {
                    Some(id) => StudentNumber::official(id),
                    None => {
                        // The next free J sequence of the prefix: read once, then counted here.
                        let prefix = format!(
                            "{}{:04}{:02}{:02}",
                            school.county, c.birth.0, c.birth.1, c.birth.2
                        );
                        let seq = match j_next.get(&prefix) {
                            Some(n) => *n,
                            None => next_j_number(tx, &school.county, c.birth, None).await?.1,
                        };
                        j_next.insert(prefix, seq + 1);
                        StudentNumber::without_id(&school.county, c.birth, seq)
                            .ok_or(refused("birth_date", "student-no-number-left"))?
                    }
                };
                let id = Uuid::now_v7();
                events.push(enrol(id, &c));
                students.push((id, number.as_str().to_owned(), *c));
            }
            Action::Revive(c, e) => {
                events.push(enrol(e.id, &c));
                for (f, old, new) in changes(&c, &e) {
                    corrections.push((e.id, f, old, new));
                }
                updates.push((e.id, *c));
            }
            Action::Update(c, e) => {
                for (f, old, new) in changes(&c, &e) {
                    corrections.push((e.id, f, old, new));
                }
                updates.push((e.id, *c));
            }
            Action::Unchanged => {}
        }
    }
    insert_batched(
        tx,
        "INSERT INTO student (id, student_number, name, sex, birth_date, ethnicity, id_number, \
        id_region_retired, household_region, guardian_name, guardian_relation, guardian_phone, \
        left_behind, migrant, disability, created_at) VALUES ",
        "",
        &students,
        |(id, number, c)| {
            vec![
                Val::Uuid(*id),
                Val::Text(number.clone()),
                Val::Text(c.name.clone()),
                Val::Text(c.sex.code().into()),
                Val::Date(c.birth_date),
                Val::Text(c.ethnicity.code()),
                Val::OptText(c.id.as_ref().map(|i| i.as_str().to_owned())),
                Val::Bool(c.id_region_retired),
                Val::OptText(c.household.clone()),
                Val::Text(c.guardian_name.clone()),
                Val::Text(c.guardian_relation.clone()),
                Val::Text(c.guardian_phone.clone()),
                Val::Bool(false),
                Val::Bool(false),
                Val::Bool(false),
                Val::Time(now),
            ]
        },
    )
    .await?;
    write_events(tx, &events, now, actor).await?;
    for (id, c) in &updates {
        db_query!(tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE student SET name = $2, sex = $3, birth_date = $4, ethnicity = $5, \
                household_region = $6, guardian_name = $7, guardian_relation = $8, \
                guardian_phone = $9 WHERE id = $1",
            ))
            .bind(id)
            .bind(&c.name)
            .bind(c.sex.code())
            .bind(c.birth_date)
            .bind(c.ethnicity.code())
            .bind(&c.household)
            .bind(&c.guardian_name)
            .bind(&c.guardian_relation)
            .bind(&c.guardian_phone)
            .execute(ex)
            .await?
            .rows_affected()
        });
    }
    let actor_name = actor.name();
    insert_batched(
        tx,
        "INSERT INTO student_correction (id, student_id, field, old_value, new_value, reason, \
        actor, recorded_at, batch_id) VALUES ",
        "",
        &corrections,
        |(sid, f, old, new)| {
            vec![
                Val::Uuid(Uuid::now_v7()),
                Val::Uuid(*sid),
                Val::Text((*f).into()),
                Val::OptText(old.clone()),
                Val::OptText(new.clone()),
                Val::Text("import".into()),
                Val::Text(actor_name.clone()),
                Val::Time(now),
                Val::Uuid(batch),
            ]
        },
    )
    .await?;
    Ok(())
}

// ----- Batches through the pages: upload, check job, commit job, undo ---------------------------

impl Imports<'_> {
    /// Stores an uploaded file (spooled to `path` by the caller) as a new batch for `school`
    /// and queues its check, in one short transaction: a batch exists with its whole file or
    /// not at all.
    pub async fn upload(
        &self,
        actor: Actor<'_>,
        kind: Kind,
        code: &str,
        file_name: &str,
        mode: Mode,
        path: &Path,
    ) -> Result<BatchRow, ImportError> {
        let place = self.place_for(&actor, kind, code).await?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size == 0 {
            return Err(ImportError::Sheet(SheetError::Empty));
        }
        let mut file = std::fs::File::open(path).map_err(|_| ImportError::Sheet(SheetError::Io))?;
        let id = Uuid::now_v7();
        // The batch, its whole file and its check job, or nothing.
        let mut tx = self.0.begin().await?;
        self.insert_batch(
            &mut tx,
            &actor,
            id,
            kind,
            &place,
            file_name,
            size,
            mode,
            State::Uploaded,
        )
        .await?;
        let mut piece = vec![0u8; PIECE];
        for seq in 0.. {
            let n =
                read_full(&mut file, &mut piece).map_err(|_| ImportError::Sheet(SheetError::Io))?;
            if n == 0 {
                break;
            }
            let piece = &piece[..n];
            db_query!(&mut tx, tx, |sql, ex| {
                sqlx::query(sql(
                    "INSERT INTO import_file (batch_id, seq, data) VALUES ($1, $2, $3)",
                ))
                .bind(id)
                .bind(seq)
                .bind(piece)
                .execute(ex)
                .await?
                .rows_affected()
            });
        }
        let job = crate::jobs::enqueue_in(
            &mut tx,
            &NewJob::new(CHECK_JOB, serde_json::json!({ "batch": id })),
        )
        .await?;
        db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql("UPDATE import_batch SET job_id = $2 WHERE id = $1"))
                .bind(id)
                .bind(job)
                .execute(ex)
                .await?
                .rows_affected()
        });
        let mut e = actor.entry("import.upload", &id.to_string(), "success", &place.node());
        e.detail = serde_json::json!({ "kind": kind.as_str(), "bytes": size }).to_string();
        crate::audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.batch(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound.into())
    }

    /// A batch, if its school is in `scope`.
    pub async fn batch(&self, scope: &Scope, id: Uuid) -> crate::Result<Option<BatchRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT ")
            .push(BATCH_COLUMNS)
            .push(" FROM import_batch b WHERE b.id = ")
            .bind(id)
            .push(" AND");
        crate::scope::push(&mut q, scope, "b.county", "b.school_code");
        Ok(q.fetch_all(self.0).await?.into_iter().next())
    }

    /// The latest batches of a school or a county (or everywhere in `scope` when `place` is
    /// `None`).
    pub async fn batches(
        &self,
        scope: &Scope,
        place: Option<&Place>,
        limit: u64,
    ) -> crate::Result<Vec<BatchRow>> {
        let mut q = DynQuery::for_db(self.0);
        q.push("SELECT ")
            .push(BATCH_COLUMNS)
            .push(" FROM import_batch b WHERE");
        match place {
            Some(Place::School(s)) => {
                q.push(" b.school_code = ")
                    .bind(s.code.clone())
                    .push(" AND");
            }
            Some(Place::County(c)) => {
                q.push(" b.school_code IS NULL AND b.county = ")
                    .bind(c.to_string())
                    .push(" AND");
            }
            None => {}
        }
        crate::scope::push(&mut q, scope, "b.county", "b.school_code");
        q.push(" ORDER BY b.created_at DESC, b.id DESC LIMIT ")
            .bind(i64::try_from(limit).unwrap_or(100));
        q.fetch_all(self.0).await
    }

    /// Rejected rows of a batch in `scope`, by line, a page at a time.
    pub async fn rejects(
        &self,
        scope: &Scope,
        id: Uuid,
        after_line: u64,
        limit: u64,
    ) -> crate::Result<Vec<Reject>> {
        if self.batch(scope, id).await?.is_none() {
            return Ok(vec![]);
        }
        #[derive(sqlx::FromRow)]
        struct Row {
            line: i64,
            cells: String,
            problems: String,
        }
        let rows: Vec<Row> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT line, cells, problems FROM import_reject WHERE batch_id = $1 \
                AND line > $2 ORDER BY line LIMIT $3",
            ))
            .bind(id)
            .bind(i64::try_from(after_line).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(1000))
            .fetch_all(ex)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| Reject {
                line: u64::try_from(r.line).unwrap_or(0),
                cells: serde_json::from_str(&r.cells).unwrap_or_default(),
                problems: serde_json::from_str(&r.problems).unwrap_or_default(),
            })
            .collect())
    }

    /// Records a download of a batch's rejected rows in the audit log (they hold personal data).
    pub async fn record_reject_export(
        &self,
        actor: Actor<'_>,
        batch: &BatchRow,
        format: &str,
    ) -> crate::Result<()> {
        let mut e = actor.entry(
            "import.rejects_export",
            &batch.id.to_string(),
            "success",
            &batch.node(),
        );
        e.detail = serde_json::json!({ "rows": batch.rows_rejected, "format": format }).to_string();
        crate::audit::record(self.0, &e).await?;
        Ok(())
    }

    /// Asks for a checked batch to be committed (needs `registry_manage` at its school): the
    /// commit job does it. In all-or-nothing mode a batch with rejected rows is refused.
    pub async fn commit(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
        mode: Mode,
    ) -> Result<BatchRow, ImportError> {
        let batch = self
            .batch(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        self.place_for(&actor, batch.kind(), &batch.place_code())
            .await?;
        if mode == Mode::All && batch.rows_rejected > 0 {
            return Err(ImportError::Rejected(batch.tally()));
        }
        let mut tx = self.0.begin().await?;
        let job = crate::jobs::enqueue_in(
            &mut tx,
            &NewJob::new(COMMIT_JOB, serde_json::json!({ "batch": id })),
        )
        .await?;
        // Compare-and-set: of two commits of one batch, one is queued.
        let marked = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE import_batch SET state = 'committing', mode = $2, job_id = $3 \
                WHERE id = $1 AND state = 'checked'",
            ))
            .bind(id)
            .bind(mode.as_str())
            .bind(job)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if marked == 0 {
            return Err(refused("batch", "import-not-ready").into());
        }
        let mut e = actor.entry(
            "import.commit_requested",
            &id.to_string(),
            "success",
            &batch.node(),
        );
        e.detail = serde_json::json!({ "mode": mode.as_str() }).to_string();
        crate::audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.batch(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound.into())
    }

    /// Cancels a batch that is not committed: a queued or running job stops and nothing is
    /// written; a checked batch is dropped with its file.
    pub async fn cancel(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
    ) -> Result<(), ImportError> {
        let batch = self
            .batch(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        self.place_for(&actor, batch.kind(), &batch.place_code())
            .await?;
        if let Some(job) = batch.job_id
            && batch.state().busy()
        {
            crate::jobs::Jobs(self.0).cancel(job).await?;
        }
        let marked = db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "UPDATE import_batch SET state = 'cancelled' WHERE id = $1 \
                AND state IN ('uploaded', 'checking', 'checked', 'committing')",
            ))
            .bind(id)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if marked == 0 {
            return Err(refused("batch", "import-not-cancellable").into());
        }
        crate::audit::record(
            self.0,
            &actor.entry("import.cancel", &id.to_string(), "success", &batch.node()),
        )
        .await?;
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql("DELETE FROM import_file WHERE batch_id = $1"))
                .bind(id)
                .execute(ex)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Writes the stored upload of a batch to a temporary file for a run.
    async fn materialise(&self, id: Uuid) -> Result<TempFile, ImportError> {
        let path = std::env::temp_dir().join(format!("santong-import-{id}-{}", Uuid::new_v4()));
        let file = TempFile(path);
        let mut out =
            std::fs::File::create(&file.0).map_err(|_| ImportError::Sheet(SheetError::Io))?;
        let mut seq = 0i32;
        loop {
            let piece: Option<Vec<u8>> = db_query!(self.0, read, |sql, ex| {
                sqlx::query_scalar(sql(
                    "SELECT data FROM import_file WHERE batch_id = $1 AND seq = $2",
                ))
                .bind(id)
                .bind(seq)
                .fetch_optional(ex)
                .await?
            });
            let Some(piece) = piece else { break };
            std::io::Write::write_all(&mut out, &piece)
                .map_err(|_| ImportError::Sheet(SheetError::Io))?;
            seq += 1;
        }
        if seq == 0 {
            return Err(ImportError::Sheet(SheetError::Empty));
        }
        Ok(file)
    }

    /// Drops what imports keep of minors' data once it has served: the uploaded file of a batch
    /// not committed within [`KEEP_UPLOAD_DAYS`] days, and the rejected rows of batches older than
    /// [`KEEP_REJECTS_DAYS`] days. Runs before each check; returns (pieces, rows) removed.
    pub async fn purge_stale(&self, now: DateTime<Utc>) -> crate::Result<(u64, u64)> {
        let upload_before = now - chrono::Duration::days(KEEP_UPLOAD_DAYS);
        let rejects_before = now - chrono::Duration::days(KEEP_REJECTS_DAYS);
        Ok(db_query!(self.0, write, |sql, ex| {
            let pieces = sqlx::query(sql(
                "DELETE FROM import_file WHERE batch_id IN (SELECT id FROM import_batch \
                WHERE created_at < $1 AND state <> 'committing')",
            ))
            .bind(upload_before)
            .execute(ex)
            .await?
            .rows_affected();
            let rows = sqlx::query(sql(
                "DELETE FROM import_reject WHERE batch_id IN (SELECT id FROM import_batch \
                WHERE created_at < $1)",
            ))
            .bind(rejects_before)
            .execute(ex)
            .await?
            .rows_affected();
            (pieces, rows)
        }))
    }

    /// The check job's work: reads the stored file, records the tally and the rejected rows,
    /// and leaves the batch checked (or failed, with the file's problem).
    pub async fn run_check(&self, id: Uuid, progress: &Progress) -> Result<(), ImportError> {
        let Some(batch) = self.batch(&Scope::everything(), id).await? else {
            return Ok(());
        };
        if !matches!(batch.state(), State::Uploaded | State::Checking) {
            return Ok(());
        }
        if !self.set_state(id, State::Checking).await? {
            return Ok(());
        }
        let place = self.place_of(&batch).await?;
        self.purge_stale(Utc::now()).await?;
        // A re-run after a crash starts the report afresh.
        self.store_rejects(id, &[], true).await?;
        let file = self.materialise(id).await?;
        let result = self
            .check_file(
                batch.kind(),
                &place,
                &file.0,
                &Limits::default(),
                progress,
                Some(id),
            )
            .await;
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                self.settle_failure(id, &e).await?;
                return Err(e);
            }
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let t = outcome.tally;
        db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql(
                "UPDATE import_batch SET state = 'checked', headers = $2, rows_total = $3, \
                rows_new = $4, rows_updated = $5, rows_unchanged = $6, rows_rejected = $7 \
                WHERE id = $1 AND state = 'checking'",
            ))
            .bind(id)
            .bind(serde_json::to_string(&outcome.headers).unwrap_or_default())
            .bind(n(t.rows))
            .bind(n(t.new))
            .bind(n(t.updated))
            .bind(n(t.unchanged))
            .bind(n(t.rejected))
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The commit job's work.
    pub async fn run_commit(&self, id: Uuid, progress: &Progress) -> Result<(), ImportError> {
        let Some(batch) = self.batch(&Scope::everything(), id).await? else {
            return Ok(());
        };
        if batch.state() != State::Committing {
            return Ok(());
        }
        let place = self.place_of(&batch).await?;
        let actor = Actor::OnBehalf {
            name: &batch.actor,
            id: batch.actor_id,
        };
        let file = self.materialise(id).await?;
        let result = self
            .write(
                &actor,
                id,
                batch.kind(),
                &place,
                &file.0,
                batch.mode(),
                &Limits::default(),
                progress,
            )
            .await;
        match &result {
            Err(e) => self.settle_failure(id, e).await?,
            Ok(o) if !o.committed => {
                self.settle_failure(id, &ImportError::Rejected(o.tally))
                    .await?
            }
            Ok(_) => {}
        }
        result.map(|_| ())
    }

    /// Moves an uploaded (or re-run) batch to `state`; false when it was cancelled meanwhile.
    async fn set_state(&self, id: Uuid, state: State) -> crate::Result<bool> {
        let moved = db_query!(self.0, write, |sql, ex| {
            sqlx::query(sql("UPDATE import_batch SET state = $2 WHERE id = $1 \
                AND state IN ('uploaded', 'checking')"))
            .bind(id)
            .bind(state.as_str())
            .execute(ex)
            .await?
            .rows_affected()
        });
        Ok(moved == 1)
    }

    /// Undoes a committed batch (needs `registry_manage` at its school): its enrolments get
    /// compensating events and its corrections are reverted. Refused, with nothing written,
    /// while any of its students has a later event or correction: undo that first.
    pub async fn undo(
        &self,
        actor: Actor<'_>,
        scope: &Scope,
        id: Uuid,
    ) -> Result<BatchRow, ImportError> {
        let batch = self
            .batch(scope, id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let place = self
            .place_for(&actor, batch.kind(), &batch.place_code())
            .await?;
        let pg = self.0.is_postgres();
        let mut tx = self.0.begin().await?;
        let now = Utc::now();
        let marked = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query(sql(
                "UPDATE import_batch SET state = 'undone', undone_at = $2 \
                WHERE id = $1 AND state = 'committed'",
            ))
            .bind(id)
            .bind(now)
            .execute(ex)
            .await?
            .rows_affected()
        });
        if marked == 0 {
            return Err(refused("batch", "import-not-undoable").into());
        }
        if pg {
            // The school row first, as a commit takes it: an undo and a commit of one school's
            // files never interleave.
            lock_place(&mut tx, &place).await?;
            let mut l = DynQuery::new(true);
            l.push(
                "SELECT id FROM student WHERE id IN (SELECT student_id FROM student_event \
                WHERE batch_id = ",
            )
            .bind(id)
            .push(") OR id IN (SELECT student_id FROM student_correction WHERE batch_id = ")
            .bind(id)
            .push(") ORDER BY id FOR UPDATE");
            let _: Vec<(Uuid,)> = l.fetch_all_in(&mut tx).await?;
        }
        // Anything recorded since the commit on a student the batch touched, other than by
        // batches undone already, stands on top of it.
        let touched = "(SELECT student_id FROM student_event WHERE batch_id = $1 \
            UNION SELECT student_id FROM student_correction WHERE batch_id = $1)";
        let since = "(SELECT committed_at FROM import_batch WHERE id = $1)";
        let events_sql = format!(
            "SELECT COUNT(*) FROM student_event l WHERE l.student_id IN {touched} \
            AND (l.batch_id IS NULL OR l.batch_id <> $1) AND l.kind <> 'undo' \
            AND l.undone_by IS NULL AND l.recorded_at > {since}"
        );
        let corrections_sql = format!(
            "SELECT COUNT(*) FROM student_correction l WHERE l.student_id IN {touched} \
            AND (l.batch_id IS NULL OR (l.batch_id <> $1 AND l.batch_id NOT IN \
            (SELECT id FROM import_batch WHERE state = 'undone'))) AND l.recorded_at > {since}"
        );
        let mut later = 0i64;
        for q in [events_sql, corrections_sql] {
            let mut d = DynQuery::new(pg);
            // `$1` written in the text is rebound here for each backend.
            let parts: Vec<&str> = q.split("$1").collect();
            for (i, part) in parts.iter().enumerate() {
                d.push(part);
                if i + 1 < parts.len() {
                    d.bind(id);
                }
            }
            let n: Vec<(i64,)> = d.fetch_all_in(&mut tx).await?;
            later += n.first().map_or(0, |r| r.0);
        }
        if later > 0 {
            return Err(refused("batch", "import-later-changes").into());
        }
        let events =
            crate::lifecycle::undo_batch_events(&mut tx, id, "import", now, &actor).await?;
        // Corrections are reverted newest first, field by field, and their lineage kept with a
        // compensating correction each.
        #[derive(sqlx::FromRow)]
        struct Corr {
            student_id: Uuid,
            field: String,
            old_value: Option<String>,
            new_value: Option<String>,
        }
        let corrections: Vec<Corr> = db_query!(&mut tx, tx, |sql, ex| {
            sqlx::query_as(sql(
                "SELECT student_id, field, old_value, new_value FROM student_correction \
                WHERE batch_id = $1 ORDER BY recorded_at DESC, id DESC",
            ))
            .bind(id)
            .fetch_all(ex)
            .await?
        });
        for c in &corrections {
            let column = match c.field.as_str() {
                "name" => "name",
                "sex" => "sex",
                "ethnicity" => "ethnicity",
                "household_region" => "household_region",
                "guardian_name" => "guardian_name",
                "guardian_relation" => "guardian_relation",
                "guardian_phone" => "guardian_phone",
                "birth_date" => {
                    let d = c
                        .old_value
                        .as_deref()
                        .and_then(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok());
                    db_query!(&mut tx, tx, |sql, ex| {
                        sqlx::query(sql("UPDATE student SET birth_date = $2 WHERE id = $1"))
                            .bind(c.student_id)
                            .bind(d)
                            .execute(ex)
                            .await?
                            .rows_affected()
                    });
                    continue;
                }
                _ => continue,
            };
            // The column name comes from the fixed list above, never from the row.
            let mut q = DynQuery::new(pg);
            q.push("UPDATE student SET ")
                .push(column)
                .push(" = ")
                .bind_val(Val::OptText(c.old_value.clone()))
                .push(" WHERE id = ")
                .bind(c.student_id);
            q.execute_in(&mut tx).await?;
        }
        let reverts: Vec<(Uuid, String, Option<String>, Option<String>)> = corrections
            .into_iter()
            .map(|c| (c.student_id, c.field, c.new_value, c.old_value))
            .collect();
        let actor_name = actor.name();
        insert_batched(
            &mut tx,
            "INSERT INTO student_correction (id, student_id, field, old_value, new_value, \
            reason, actor, recorded_at, batch_id) VALUES ",
            "",
            &reverts,
            |(sid, f, old, new)| {
                vec![
                    Val::Uuid(Uuid::now_v7()),
                    Val::Uuid(*sid),
                    Val::Text(f.clone()),
                    Val::OptText(old.clone()),
                    Val::OptText(new.clone()),
                    Val::Text("import undone".into()),
                    Val::Text(actor_name.clone()),
                    Val::Time(now),
                    Val::Uuid(id),
                ]
            },
        )
        .await?;
        // Staff and class batches: their change log, read backwards.
        let staff = teachers::undo(&mut tx, id).await?;
        let classes = classes::undo(&mut tx, id).await?;
        let schools = schools::undo(&mut tx, id).await?;
        let conditions = conditions::undo(&mut tx, id).await?;
        let mut e = actor.entry("import.undo", &id.to_string(), "success", &place.node());
        e.detail = serde_json::json!({
            "events": events,
            "corrections": reverts.len(),
            "staff": staff,
            "classes": classes,
            "schools": schools,
            "conditions": conditions,
        })
        .to_string();
        crate::audit::append(&mut tx, &e).await?;
        tx.commit().await?;
        self.batch(&Scope::everything(), id)
            .await?
            .ok_or(RegistryError::NotFound.into())
    }
}

/// Takes a batch's place for the transaction (PostgreSQL; SQLite's writer is exclusive): the
/// school row, or the county's region row. Two commits of one place's files at once would each
/// see the other's new records as absent; this makes them, and undos, take turns.
async fn lock_place(tx: &mut Tx, place: &Place) -> crate::Result<()> {
    let mut l = DynQuery::new(true);
    match place {
        Place::School(s) => l
            .push("SELECT code FROM school WHERE code = ")
            .bind(s.code.clone()),
        Place::County(c) => l
            .push("SELECT code FROM region WHERE code = ")
            .bind(c.to_string()),
    };
    l.push(" FOR UPDATE");
    let _: Vec<(String,)> = l.fetch_all_in(tx).await?;
    Ok(())
}

/// Fills `buf` as far as the file goes (a short read is not the end of a file).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match std::io::Read::read(file, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn batch_of(ctx: &JobContext) -> Result<Uuid, JobError> {
    ctx.payload
        .get("batch")
        .and_then(|b| b.as_str())
        .and_then(|b| Uuid::parse_str(b).ok())
        .ok_or_else(|| JobError::Failed("payload without a batch".into()))
}

/// Runs `work` while reporting its progress to the job every second; a cancellation of the job
/// reaches the work through [`Progress`].
async fn with_progress<F>(
    ctx: &JobContext,
    progress: Arc<Progress>,
    work: F,
) -> Result<(), JobError>
where
    F: std::future::Future<Output = Result<(), ImportError>>,
{
    let ticker = {
        let (db, id, worker, p) = (ctx.db.clone(), ctx.id, ctx.worker.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let pct = (p.fraction() * 100.0) as u8;
                // On SQLite a commit holds the only writer: this waits until it is done.
                if let Ok(true) = crate::jobs::Jobs(&db)
                    .report_progress(id, &worker, pct)
                    .await
                {
                    p.cancel();
                }
            }
        })
    };
    let result = work.await;
    ticker.abort();
    match result {
        // A refused file or batch is the user's to fix: recorded on the batch, not retried.
        Ok(()) | Err(ImportError::Registry(RegistryError::Fields(_))) => Ok(()),
        Err(e) if e.key().is_some() => Ok(()),
        Err(e) => Err(JobError::Failed(e.to_string())),
    }
}

/// The job handler for [`CHECK_JOB`].
pub fn check_job(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        let id = batch_of(ctx)?;
        let progress = Progress::new();
        let imports = Imports(&ctx.db);
        with_progress(ctx, progress.clone(), imports.run_check(id, &progress)).await
    })
}

/// The job handler for [`COMMIT_JOB`].
pub fn commit_job(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        let id = batch_of(ctx)?;
        let progress = Progress::new();
        let imports = Imports(&ctx.db);
        with_progress(ctx, progress.clone(), imports.run_commit(id, &progress)).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_and_refuses_missing_columns() {
        let h = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let full = h(&[
            "姓名",
            "性别",
            "出生日期",
            "民族",
            "年级",
            "监护人",
            "监护人关系",
            "监护人电话",
        ]);
        let l = Layout::of(&full).unwrap();
        assert_eq!(l.index(StudentColumn::Grade), Some(4));
        assert_eq!(l.column_of_field("guardian_phone"), Some(7));
        assert!(matches!(
            Layout::of(&h(&["姓名", "性别"])),
            Err(ImportError::MissingColumn("birth_date"))
        ));
        let row = h(&[
            "张三",
            "男",
            "2016/3/1",
            "汉族",
            "三年级",
            "张父",
            "父亲",
            "138 0013 8000",
        ]);
        let s = l.student(&row);
        assert_eq!(
            (
                s.sex.as_str(),
                s.birth_date.as_str(),
                s.ethnicity.as_str(),
                s.grade.as_str()
            ),
            ("1", "2016-03-01", "01", "3")
        );
    }
}
