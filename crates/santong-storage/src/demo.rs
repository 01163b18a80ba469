//! Demo content, seeded idempotently by `santong demo` (and `serve --demo`). Each context adds
//! its part here; running it again changes nothing.

use santong_domain::region::RegionCode;

use crate::regions::Regions;
use crate::settings::Settings;
use crate::{Db, StorageError, reference};

/// 广东省深圳市南山区: a real county-level code, used as the demo county.
pub const DEMO_COUNTY: &str = "440305";
pub const DEMO_COUNTY_KEY: &str = "demo.county";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DemoReport {
    pub regions_loaded: bool,
    pub county_set: bool,
    /// Schools and teaching points opened now (0 when the county had some already).
    pub schools: usize,
    /// Students enrolled now (0 when the county had some already).
    pub students: usize,
    /// Classes opened now for the current school year (0 when the county had some already).
    pub classes: usize,
    /// Transfers started now (0 when there were some already).
    pub transfers: usize,
    /// Duplicate cases opened now (0 when the demo's was there already).
    pub duplicates: usize,
    /// Teachers appointed now (0 when the county had some already).
    pub teachers: usize,
}

/// The demo enrols one student for every this many of an average school's real enrolment, so a
/// first start stays quick while the proportions between school levels stay real.
pub const DEMO_STUDENT_SCALE: f64 = 50.0;

/// Average students per primary, junior and senior school of a province (latest year with all
/// figures).
fn province_students_per_school(province: &str) -> Option<(f64, f64, f64)> {
    province_per_school(province, "enrolment_10k")
}

/// Average full-time teachers per primary, junior and senior school of a province.
fn province_teachers_per_school(province: &str) -> Option<(f64, f64, f64)> {
    province_per_school(province, "fulltime_teachers_10k")
}

/// Average `<level>_<measure>` (a figure in ten thousands) per school of each level of a
/// province, in the latest year with all six figures.
fn province_per_school(province: &str, measure: &str) -> Option<(f64, f64, f64)> {
    let mut rdr = csv::Reader::from_reader(PROVINCE_K12_CSV.as_bytes());
    let headers = rdr.headers().ok()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let cols = [
        col("primary_schools")?,
        col(&format!("primary_{measure}"))?,
        col("junior_schools")?,
        col(&format!("junior_{measure}"))?,
        col("senior_schools")?,
        col(&format!("senior_{measure}"))?,
    ];
    let (pc, year) = (col("province_code")?, col("year")?);
    rdr.records()
        .filter_map(Result::ok)
        .filter(|r| r.get(pc) == Some(province))
        .filter_map(|r| {
            let f = |i: usize| r.get(i).and_then(|v| v.parse::<f64>().ok());
            let v: Option<Vec<f64>> = cols.iter().map(|c| f(*c)).collect();
            Some((f(year)? as i32, v?))
        })
        .max_by_key(|(y, _)| *y)
        .map(|(_, v)| {
            (
                v[1] * 10_000.0 / v[0],
                v[3] * 10_000.0 / v[2],
                v[5] * 10_000.0 / v[4],
            )
        })
}

/// Enrols demo students in every school of the county, by level in the province's proportions
/// (at 1/[`DEMO_STUDENT_SCALE`]), spread over the grades each school offers, enrolled on the first
/// of September of the current school year. Made-up names; no ID numbers (J student numbers).
async fn seed_students(db: &Db, county: RegionCode) -> crate::Result<usize> {
    use crate::identity::Actor;
    use crate::registry::{Registry, SchoolFilter};
    use crate::students::{NewStudent, Students};
    use santong_domain::registry::{Grades, SchoolKind};
    let all = santong_domain::identity::Scope::everything();
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    if !Students(db)
        .enrolment(&all, county, today)
        .await?
        .is_empty()
    {
        return Ok(0);
    }
    let province = format!("{}0000", &county.to_string()[..2]);
    let Some((primary, junior, senior)) = province_students_per_school(&province) else {
        return Ok(0);
    };
    use chrono::Datelike;
    let year = if today.month() >= 9 {
        today.year()
    } else {
        today.year() - 1
    };
    let enrolled_on = format!("{year}-09-01");
    const SURNAMES: &[&str] = &[
        "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡",
        "郭", "何", "林", "罗", "梁",
    ];
    const GIVEN: &[&str] = &[
        "子涵", "欣怡", "浩然", "梓萱", "宇轩", "诗涵", "俊杰", "雨桐", "博文", "可馨", "一诺",
        "思远", "嘉怡", "子墨", "语彤", "明轩",
    ];
    let schools = Registry(db)
        .list_schools(
            &all,
            &SchoolFilter {
                region: Some(county),
                ..Default::default()
            },
            1000,
            0,
        )
        .await?;
    let mut made = 0usize;
    let mut enrolled = 0usize;
    for school in schools.items {
        let Some(kind) = school.kind() else { continue };
        let per_school = match kind {
            SchoolKind::TeachingPoint => primary / 5.0,
            SchoolKind::Primary | SchoolKind::AttachedPrimaryClasses => primary,
            SchoolKind::JuniorSecondary => junior,
            SchoolKind::NineYear => (primary + junior) / 2.0,
            SchoolKind::SeniorSecondary | SchoolKind::CompleteSecondary => senior,
            _ => continue,
        };
        let Some(grades) = Grades::parse(&school.grades).filter(|g| g.from >= 1) else {
            continue;
        };
        let count = (per_school / DEMO_STUDENT_SCALE).round().max(1.0) as usize;
        let span = usize::from(grades.to - grades.from) + 1;
        for i in 0..count {
            let grade = grades.from + u8::try_from(i % span).unwrap_or(0);
            let birth_year = year - 6 - i32::from(grade) + 1;
            let n = made + i;
            let input = NewStudent {
                name: format!(
                    "{}{}",
                    SURNAMES[n % SURNAMES.len()],
                    GIVEN[(n / 7) % GIVEN.len()]
                ),
                sex: if n.is_multiple_of(2) { "1" } else { "2" }.into(),
                birth_date: format!("{birth_year}-{:02}-{:02}", 1 + n % 12, 1 + n % 28),
                ethnicity: if n.is_multiple_of(17) { "09" } else { "01" }.into(),
                guardian_name: format!("{}家长", SURNAMES[n % SURNAMES.len()]),
                guardian_relation: if n.is_multiple_of(3) {
                    "父亲"
                } else {
                    "母亲"
                }
                .into(),
                // 190 0000 xxxx: a made-up range, so no real subscriber's number is in the demo.
                guardian_phone: format!("1900000{:04}", n % 10_000),
                left_behind: n.is_multiple_of(23),
                migrant: n.is_multiple_of(5),
                grade: grade.to_string(),
                enrolled_on: enrolled_on.clone(),
                ..Default::default()
            };
            match Students(db).enrol(Actor::Cli, &school.code, &input).await {
                Ok(_) => enrolled += 1,
                Err(crate::registry::RegistryError::Storage(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, school = %school.code, "demo student refused"),
            }
        }
        made += count;
    }
    Ok(enrolled)
}

/// Provincial education statistics (NBS, 2000–2019), for the demo county's school mix.
const PROVINCE_K12_CSV: &str = include_str!("../../../data/edu_province_k12_2000_2019.csv");

/// Primary, junior and senior schools of a province in its latest year with all three figures.
fn province_school_counts(province: &str) -> Option<(u32, u32, u32)> {
    let mut rdr = csv::Reader::from_reader(PROVINCE_K12_CSV.as_bytes());
    let headers = rdr.headers().ok()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (pc, year, p, j, s) = (
        col("province_code")?,
        col("year")?,
        col("primary_schools")?,
        col("junior_schools")?,
        col("senior_schools")?,
    );
    rdr.records()
        .filter_map(Result::ok)
        .filter(|r| r.get(pc) == Some(province))
        .filter_map(|r| {
            let n = |i: usize| r.get(i).and_then(|v| v.parse::<u32>().ok());
            Some((n(year)?, (n(p)?, n(j)?, n(s)?)))
        })
        .max_by_key(|(y, _)| *y)
        .map(|(_, counts)| counts)
}

/// Opens the demo county's schools: as many primary, junior and senior schools as an average
/// county of its province had in the latest statistics, plus a few teaching points. Codes and
/// names are made up (学校标识码-shaped: `1`, the county code, a sequence).
async fn seed_schools(db: &Db, county: RegionCode) -> crate::Result<usize> {
    use crate::identity::Actor;
    use crate::registry::{Registry, SchoolFilter, SchoolInput};
    let registry = Registry(db);
    let existing = registry
        .list_schools(
            &santong_domain::identity::Scope::everything(),
            &SchoolFilter {
                region: Some(county),
                ..Default::default()
            },
            1,
            0,
        )
        .await?;
    if existing.total > 0 {
        return Ok(0);
    }
    let province = format!("{}0000", &county.to_string()[..2]);
    let Some((primary, junior, senior)) = province_school_counts(&province) else {
        return Ok(0);
    };
    let counties: i64 = crate::db_query!(db, read, |sql, ex| {
        sqlx::query_scalar(sql(
            "SELECT COUNT(*) FROM region WHERE level = 'county' AND province_code = $1",
        ))
        .bind(&province)
        .fetch_one(ex)
        .await?
    });
    let per = |n: u32| ((f64::from(n) / counties.max(1) as f64).round() as usize).max(1);
    let name = Regions(db)
        .get(county)
        .await?
        .map(|r| r.name)
        .unwrap_or_default();
    let mut plan: Vec<(String, &str, &str, String)> = vec![];
    for i in 1..=per(primary) {
        plan.push((
            format!("{name}第{i}小学"),
            "211",
            if i % 5 == 0 { "112" } else { "111" },
            String::new(),
        ));
    }
    for i in 1..=per(junior) {
        // One junior school in four teaches all nine years.
        let kind = if i % 4 == 0 { "312" } else { "311" };
        plan.push((format!("{name}第{i}中学"), kind, "111", String::new()));
    }
    for i in 1..=per(senior) {
        let kind = if i == 1 { "341" } else { "342" };
        plan.push((format!("{name}第{i}高级中学"), kind, "111", String::new()));
    }
    // Teaching points hang off the first primary schools (illustrative: the statistics above do
    // not count them).
    for i in 1..=3 {
        plan.push((
            format!("{name}第{i}小学教学点"),
            "218",
            "122",
            format!("1{county}{i:03}"),
        ));
    }
    let mut made = 0;
    for (seq, (school, kind, urban, parent)) in plan.iter().enumerate() {
        let year = 1950 + (seq * 7) % 70;
        let input = SchoolInput {
            code: format!("1{county}{:03}", seq + 1),
            name: school.clone(),
            kind: (*kind).into(),
            urban_rural: (*urban).into(),
            county: county.to_string(),
            parent_code: parent.clone(),
            grades: if *kind == "218" {
                "1-3".into()
            } else {
                String::new()
            },
            opened_on: format!("{year}-09-01"),
        };
        match registry.create_school(Actor::Cli, &input).await {
            Ok(_) => made += 1,
            Err(crate::registry::RegistryError::Storage(e)) => return Err(e),
            Err(e) => tracing::warn!(error = %e, code = %input.code, "demo school refused"),
        }
    }
    Ok(made)
}

pub async fn seed(db: &Db) -> crate::Result<DemoReport> {
    let regions_loaded = reference::ensure_regions(db).await?;
    let code = RegionCode::parse(DEMO_COUNTY).map_err(|_| StorageError::NotFound("demo county"))?;
    Regions(db)
        .get(code)
        .await?
        .ok_or(StorageError::NotFound("demo county"))?;
    let settings = Settings(db);
    let county_set = settings.get(DEMO_COUNTY_KEY).await?.is_none();
    if county_set {
        settings.set(DEMO_COUNTY_KEY, DEMO_COUNTY).await?;
    }
    let schools = seed_schools(db, code).await?;
    let students = seed_students(db, code).await?;
    let classes = seed_classes(db, code).await?;
    let transfers = seed_transfers(db).await?;
    let duplicates = seed_duplicate(db).await?;
    let teachers = seed_teachers(db, code).await?;
    Ok(DemoReport {
        regions_loaded,
        county_set,
        schools,
        students,
        classes,
        transfers,
        duplicates,
        teachers,
    })
}

/// Appoints full-time teachers at every school of the county, by level in the province's
/// proportions at the same 1/[`DEMO_STUDENT_SCALE`] as the students (at least one per school).
/// Made-up names; the ID numbers use the sequences 996–999, which the numbering keeps for people
/// over a hundred, so none can be a real teacher's.
async fn seed_teachers(db: &Db, county: RegionCode) -> crate::Result<usize> {
    use crate::db_query;
    use crate::identity::Actor;
    use crate::registry::{Registry, RegistryError, SchoolFilter};
    use crate::teachers::{NewTeacher, Teachers};
    use santong_domain::registry::SchoolKind;
    let county_code = county.to_string();
    let known: i64 = db_query!(db, read, |sql, ex| {
        sqlx::query_scalar(sql(
            "SELECT COUNT(*) FROM teacher_event e JOIN school s ON s.code = e.school_code \
            WHERE s.county = $1",
        ))
        .bind(&county_code)
        .fetch_one(ex)
        .await?
    });
    let province = format!("{}0000", &county_code[..2]);
    let Some((primary, junior, senior)) = province_teachers_per_school(&province) else {
        return Ok(0);
    };
    if known > 0 {
        return Ok(0);
    }
    let all = santong_domain::identity::Scope::everything();
    let schools = Registry(db)
        .list_schools(
            &all,
            &SchoolFilter {
                region: Some(county),
                ..Default::default()
            },
            1000,
            0,
        )
        .await?;
    const NAMES: &[&str] = &[
        "王丽", "李军", "张敏", "刘洋", "陈静", "杨帆", "黄芳", "赵磊", "吴霞", "周涛", "徐娟",
        "孙强", "马燕", "朱伟", "胡琳", "郭勇", "何萍", "林峰", "罗慧", "梁斌",
    ];
    const SUBJECTS: &[&str] = &[
        "语文",
        "数学",
        "英语",
        "科学",
        "道德与法治",
        "体育",
        "音乐",
        "美术",
    ];
    let today = crate::registry::today();
    let mut n = 0usize;
    let mut appointed = 0usize;
    for school in schools.items {
        let Some(kind) = school.kind() else { continue };
        let (per_school, qualification) = match kind {
            SchoolKind::TeachingPoint => (primary / 5.0, "primary"),
            SchoolKind::Primary | SchoolKind::AttachedPrimaryClasses => (primary, "primary"),
            SchoolKind::JuniorSecondary => (junior, "junior"),
            SchoolKind::NineYear => ((primary + junior) / 2.0, "junior"),
            SchoolKind::SeniorSecondary | SchoolKind::CompleteSecondary => (senior, "senior"),
            _ => continue,
        };
        let count = (per_school / DEMO_STUDENT_SCALE).round().max(1.0) as usize;
        for _ in 0..count {
            let seq = 996 + (n % 4);
            let k = n / 4;
            let (year, month, day) = (1970 + k % 28, 1 + (k / 28) % 12, 1 + (k / 336) % 28);
            let body = format!("{county_code}{year:04}{month:02}{day:02}{seq:03}");
            let id_number = format!(
                "{body}{}",
                char::from(santong_domain::registry::id_check_char(body.as_bytes()))
            );
            let input = NewTeacher {
                name: NAMES[n % NAMES.len()].into(),
                sex: if seq.is_multiple_of(2) { "2" } else { "1" }.into(),
                birth_date: format!("{year:04}-{month:02}-{day:02}"),
                ethnicity: "01".into(),
                id_number,
                qualification: qualification.into(),
                title: ["second", "first", "senior"][n % 3].into(),
                subjects: SUBJECTS[n % SUBJECTS.len()].into(),
                post: "teaching".into(),
                // At 23, or when the school opened if later (never after today).
                appointed_on: chrono::NaiveDate::from_ymd_opt(year as i32 + 23, 9, 1)
                    .map_or(school.opened_on, |d| d.max(school.opened_on))
                    .min(today)
                    .to_string(),
            };
            n += 1;
            match Teachers(db).appoint(Actor::Cli, &school.code, &input).await {
                Ok(_) => appointed += 1,
                Err(RegistryError::Storage(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, school = %school.code, "demo teacher refused"),
            }
        }
    }
    Ok(appointed)
}

/// Opens one class per grade of every school of the county for the current school year (the
/// demo's schools are small at 1/50 scale) and places every student in it.
async fn seed_classes(db: &Db, county: RegionCode) -> crate::Result<usize> {
    use crate::classes::{Classes, NewClass};
    use crate::identity::Actor;
    use crate::registry::{Registry, RegistryError, SchoolFilter};
    use santong_domain::registry::SchoolYear;
    let all = santong_domain::identity::Scope::everything();
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let year = SchoolYear::of_date(today);
    let schools = Registry(db)
        .list_schools(
            &all,
            &SchoolFilter {
                region: Some(county),
                ..Default::default()
            },
            1000,
            0,
        )
        .await?;
    let classes = Classes(db);
    let mut made = 0;
    for school in &schools.items {
        if !classes
            .list(&all, &school.code, year, today)
            .await?
            .is_empty()
        {
            // Done already (by an earlier run, perhaps one that stopped half-way).
            continue;
        }
        let Some(grades) = santong_domain::registry::Grades::parse(&school.grades) else {
            continue;
        };
        for grade in grades.from..=grades.to {
            let input = NewClass {
                school_year: year.0.to_string(),
                grade: grade.to_string(),
                name: format!("{grade}年级(1)班"),
                head_teacher: String::new(),
            };
            let class = match classes.create(Actor::Cli, &school.code, &input).await {
                Ok(c) => c,
                Err(RegistryError::Storage(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, school = %school.code, "demo class refused");
                    continue;
                }
            };
            made += 1;
            let pupils: Vec<uuid::Uuid> = classes
                .unplaced(&all, &class, today, crate::classes::MAX_PLACED as u64)
                .await?
                .into_iter()
                .map(|m| m.student_id)
                .collect();
            if pupils.is_empty() {
                continue;
            }
            match classes
                .assign(
                    Actor::Cli,
                    &all,
                    class.id,
                    &pupils,
                    &year.start().to_string(),
                )
                .await
            {
                Ok(_) => {}
                Err(RegistryError::Storage(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, school = %school.code, "demo class refused"),
            }
        }
    }
    Ok(made)
}

/// A primary school in another province (湖南省邵东市, where many of Shenzhen's migrant children
/// come from), so that cross-province transfers can be tried. Made-up code and name.
pub const DEMO_SENDING_SCHOOL: &str = "1430582001";

/// Pupils of the sending school (made-up names): the first four take part in the demo's
/// transfers; the last two are left free for a newcomer (and the browser suite) to transfer.
const SENDING_PUPILS: [(&str, &str, &str); 6] = [
    ("周子涵", "2016-04-12", "4"),
    ("李思远", "2017-06-03", "3"),
    ("蒋佳怡", "2015-11-20", "5"),
    ("谢宇航", "2016-01-09", "4"),
    ("何雨桐", "2017-02-14", "3"),
    ("唐梓萱", "2016-08-30", "4"),
];

/// Transfers in flight (and one done) from the sending school into the demo county, so the
/// inboxes are not empty on a first start.
async fn seed_transfers(db: &Db) -> crate::Result<usize> {
    use crate::identity::Actor;
    use crate::registry::{Registry, RegistryError, SchoolInput};
    use crate::students::{NewStudent, Students};
    use crate::transfers::{NewTransfer, Transfers};
    let all = santong_domain::identity::Scope::everything();
    let registry = Registry(db);
    if registry.school(&all, DEMO_SENDING_SCHOOL).await?.is_some() {
        return Ok(0);
    }
    let refused = |e: RegistryError| match e {
        RegistryError::Storage(e) => Err(e),
        other => {
            tracing::warn!(error = %other, "demo transfer data refused");
            Ok(())
        }
    };
    if let Err(e) = registry
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: DEMO_SENDING_SCHOOL.into(),
                name: "邵东市演示小学".into(),
                kind: "211".into(),
                urban_rural: "121".into(),
                county: "430582".into(),
                opened_on: "1985-09-01".into(),
                ..Default::default()
            },
        )
        .await
    {
        refused(e)?;
        return Ok(0);
    }
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let enrolled_on = santong_domain::registry::SchoolYear::of(
        chrono::Datelike::year(&today),
        chrono::Datelike::month(&today),
    )
    .0;
    let mut numbers = vec![];
    for (name, birth, grade) in SENDING_PUPILS {
        let input = NewStudent {
            name: name.into(),
            sex: "1".into(),
            birth_date: birth.into(),
            ethnicity: "01".into(),
            guardian_name: "家长".into(),
            guardian_relation: "母亲".into(),
            guardian_phone: "19000000000".into(),
            grade: grade.into(),
            enrolled_on: format!("{enrolled_on}-09-01"),
            ..Default::default()
        };
        match Students(db)
            .enrol(Actor::Cli, DEMO_SENDING_SCHOOL, &input)
            .await
        {
            Ok(p) => numbers.push((name, p.student.student_number)),
            Err(e) => refused(e)?,
        }
    }
    // The receiving schools: the first open schools of the demo county that offer the grade.
    let mut receiving = vec![];
    for seq in 1..=60 {
        let code = format!("1{DEMO_COUNTY}{seq:03}");
        if let Some(s) = registry.school(&all, &code).await?
            && santong_domain::registry::Grades::parse(&s.grades)
                .is_some_and(|g| g.contains(3) && g.contains(5) && g.from == 1)
        {
            receiving.push(code);
        }
        if receiving.len() == 2 {
            break;
        }
    }
    let (Some(first), Some(second)) = (receiving.first(), receiving.get(1)) else {
        return Ok(0);
    };
    let transfers = Transfers(db);
    let mut started = 0;
    // (pupil, receiving school, steps to approve after the start)
    for (i, (to, approvals)) in [(first, 1), (second, 0), (first, 5), (second, 2)]
        .into_iter()
        .enumerate()
    {
        let Some((name, number)) = numbers.get(i) else {
            break;
        };
        let d = match transfers
            .start(
                Actor::Cli,
                &NewTransfer {
                    student_number: number.clone(),
                    name: (*name).into(),
                    to_school: to.clone(),
                    reason: "随父母在深圳务工".into(),
                },
            )
            .await
        {
            Ok(d) => d,
            Err(e) => {
                refused(e)?;
                continue;
            }
        };
        started += 1;
        for seq in 1..=approvals {
            if let Err(e) = transfers
                .decide(Actor::Cli, &all, d.transfer.id, seq, true, "")
                .await
            {
                refused(e)?;
                break;
            }
        }
    }
    Ok(started)
}

/// The demo's duplicate record: a boy enrolled at the sending school who turns up at a school of
/// the demo county, enrolled there again with the same ID number (so he gets a temporary number
/// and a case opens for both schools). The ID number's sequence 999 is one the numbering keeps
/// for people over a hundred, so it cannot be a real child's.
async fn seed_duplicate(db: &Db) -> crate::Result<usize> {
    use crate::db_query;
    use crate::identity::Actor;
    use crate::registry::{Registry, RegistryError, SchoolFilter};
    use crate::students::{NewStudent, Students};
    use santong_domain::registry::SchoolKind;
    let body = "430582201601159990";
    let id = format!(
        "{}{}",
        &body[..17],
        char::from(santong_domain::registry::id_check_char(
            &body.as_bytes()[..17]
        ))
    );
    let known: i64 = db_query!(db, read, |sql, ex| {
        sqlx::query_scalar(sql("SELECT COUNT(*) FROM student WHERE id_number = $1"))
            .bind(&id)
            .fetch_one(ex)
            .await?
    });
    let all = santong_domain::identity::Scope::everything();
    let Some(receiving) = Registry(db)
        .list_schools(
            &all,
            &SchoolFilter {
                region: RegionCode::parse(DEMO_COUNTY).ok(),
                kind: SchoolKind::parse("211"),
                ..Default::default()
            },
            1,
            0,
        )
        .await?
        .items
        .into_iter()
        .next()
    else {
        return Ok(0);
    };
    if known > 0
        || Registry(db)
            .school(&all, DEMO_SENDING_SCHOOL)
            .await?
            .is_none()
    {
        return Ok(0);
    }
    let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let year = santong_domain::registry::SchoolYear::of_date(today).0;
    let input = NewStudent {
        name: "邓浩然".into(),
        sex: "1".into(),
        birth_date: "2016-01-15".into(),
        ethnicity: "01".into(),
        id_number: id,
        guardian_name: "邓家长".into(),
        guardian_relation: "父亲".into(),
        guardian_phone: "19000000001".into(),
        grade: "4".into(),
        enrolled_on: format!("{year}-09-01"),
        ..Default::default()
    };
    for school in [DEMO_SENDING_SCHOOL, receiving.code.as_str()] {
        match Students(db).enrol(Actor::Cli, school, &input).await {
            Ok(_) => {}
            Err(RegistryError::Storage(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "demo duplicate refused");
                return Ok(0);
            }
        }
    }
    Ok(1)
}

/// The demo county, when demo data has been seeded.
pub async fn county(db: &Db) -> crate::Result<Option<RegionCode>> {
    Ok(Settings(db)
        .get(DEMO_COUNTY_KEY)
        .await?
        .and_then(|c| RegionCode::parse(&c).ok()))
}
