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
    Ok(DemoReport {
        regions_loaded,
        county_set,
        schools,
    })
}

/// The demo county, when demo data has been seeded.
pub async fn county(db: &Db) -> crate::Result<Option<RegionCode>> {
    Ok(Settings(db)
        .get(DEMO_COUNTY_KEY)
        .await?
        .and_then(|c| RegionCode::parse(&c).ok()))
}
