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
    Ok(DemoReport {
        regions_loaded,
        county_set,
    })
}

/// The demo county, when demo data has been seeded.
pub async fn county(db: &Db) -> crate::Result<Option<RegionCode>> {
    Ok(Settings(db)
        .get(DEMO_COUNTY_KEY)
        .await?
        .and_then(|c| RegionCode::parse(&c).ok()))
}
