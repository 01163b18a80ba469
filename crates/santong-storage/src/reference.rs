//! Reference data shipped inside the binary and loaded into the database on first start.
//!
//! The region lists (GB/T 2260, 2024, and the 1981–2024 history, CC0, see `data/SOURCES.md`) are
//! loaded in one transaction, recorded in `reference_data` with their version, and skipped on later
//! starts; a killed first start leaves no half-loaded list because nothing is committed until the
//! end.

use std::collections::HashMap;

use chrono::Utc;
use santong_domain::region::{
    HistoryEntry, HistoryStatus, RegionCode, RegionLevel, parse_new_codes, resolve_successors,
};
use uuid::Uuid;

use crate::dynsql::{Val, insert_batched};
use crate::{Db, StorageError, Tx, db_query};

const REGIONS_CSV: &str = include_str!("../../../data/admin_divisions_gbt2260_2024.csv");
const HISTORY_CSV: &str =
    include_str!("../../../data/admin_divisions_gbt2260_history_1981_2024.csv");
/// Bump when the embedded files change so existing installations reload them.
pub const REGIONS_VERSION: &str = "gbt2260-2024+history-1981-2024";

/// A current region as the embedded list states it.
#[derive(Debug, Clone)]
pub struct RegionSeed {
    pub code: RegionCode,
    pub name: String,
    pub level: RegionLevel,
    pub parent: Option<RegionCode>,
}

fn broken(name: &'static str, line: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Reference {
        name,
        line,
        reason: reason.into(),
    }
}

/// Parses the embedded current list, parents before children.
pub fn current_regions() -> crate::Result<Vec<RegionSeed>> {
    const NAME: &str = "admin_divisions_gbt2260_2024.csv";
    let mut out = Vec::with_capacity(3300);
    let mut rdr = csv::Reader::from_reader(REGIONS_CSV.as_bytes());
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| broken(NAME, line, e.to_string()))?;
        let field = |n: usize| rec.get(n).unwrap_or("").trim();
        let code = RegionCode::parse(field(0)).map_err(|e| broken(NAME, line, e.to_string()))?;
        let level =
            RegionLevel::parse(field(2)).ok_or_else(|| broken(NAME, line, "unknown level"))?;
        let parent = match field(3) {
            "" => None,
            p => Some(RegionCode::parse(p).map_err(|e| broken(NAME, line, e.to_string()))?),
        };
        out.push(RegionSeed {
            code,
            name: field(1).to_owned(),
            level,
            parent,
        });
    }
    out.sort_by_key(|r| (r.level as u8, r.code));
    Ok(out)
}

/// One row of the history file, with the names of its province and prefecture as written there.
#[derive(Debug, Clone)]
pub struct HistorySeed {
    pub entry: HistoryEntry,
    pub province: String,
    pub prefecture: String,
    pub new_codes_raw: String,
}

pub fn region_history() -> crate::Result<Vec<HistorySeed>> {
    const NAME: &str = "admin_divisions_gbt2260_history_1981_2024.csv";
    let mut out = Vec::with_capacity(7000);
    let mut rdr = csv::Reader::from_reader(HISTORY_CSV.as_bytes());
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| broken(NAME, line, e.to_string()))?;
        let field = |n: usize| rec.get(n).unwrap_or("").trim();
        let bad = |r: &str| broken(NAME, line, r.to_owned());
        let year = |s: &str| s.parse::<u16>().map_err(|_| bad("bad year"));
        let entry = HistoryEntry {
            code: RegionCode::parse(field(0)).map_err(|e| bad(&e.to_string()))?,
            name: field(3).to_owned(),
            level: RegionLevel::parse(field(4)).ok_or_else(|| bad("unknown level"))?,
            status: HistoryStatus::parse(field(5)).ok_or_else(|| bad("unknown status"))?,
            start_year: year(field(6))?,
            end_year: match field(7) {
                "" => None,
                y => Some(year(y)?),
            },
            new_codes: parse_new_codes(field(8)).map_err(|e| bad(&e.to_string()))?,
        };
        out.push(HistorySeed {
            entry,
            province: field(1).to_owned(),
            prefecture: field(2).to_owned(),
            new_codes_raw: field(8).to_owned(),
        });
    }
    Ok(out)
}

/// Loads the region lists unless this version is already loaded. Returns whether it loaded.
pub async fn ensure_regions(db: &Db) -> crate::Result<bool> {
    let loaded: Option<String> = db_query!(db, read, |sql, ex| {
        sqlx::query_scalar(sql("SELECT version FROM reference_data WHERE name = $1"))
            .bind("regions")
            .fetch_optional(ex)
            .await?
    });
    if loaded.as_deref() == Some(REGIONS_VERSION) {
        return Ok(false);
    }

    let regions = current_regions()?;
    let history = region_history()?;
    let parents: HashMap<RegionCode, Option<RegionCode>> =
        regions.iter().map(|r| (r.code, r.parent)).collect();
    let entries: Vec<HistoryEntry> = history.iter().map(|h| h.entry.clone()).collect();
    let successors = resolve_successors(
        &entries,
        |c| parents.contains_key(&c),
        |c| parents.get(&c).copied().flatten(),
    );
    let mut successor_rows: Vec<(RegionCode, RegionCode, u16)> = successors
        .iter()
        .flat_map(|(code, list)| list.iter().map(move |s| (*code, s.code, s.year)))
        .collect();
    successor_rows.sort();

    let mut tx = db.begin().await?;
    // Several nodes may start at once on one PostgreSQL database: serialise the load and look
    // again inside the transaction, so only the first one loads. (SQLite has one writer.)
    if let Tx::Postgres(t) = &mut tx {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('santong.reference.regions'))")
            .execute(&mut **t)
            .await?;
    }
    let loaded: Option<String> = db_query!(&mut tx, tx, |sql, ex| {
        sqlx::query_scalar(sql("SELECT version FROM reference_data WHERE name = $1"))
            .bind("regions")
            .fetch_optional(ex)
            .await?
    });
    if loaded.as_deref() == Some(REGIONS_VERSION) {
        return Ok(false);
    }
    // The history tables are derived entirely from the embedded files: replace them whole.
    db_query!(&mut tx, tx, |_sql, ex| sqlx::query(
        "DELETE FROM region_successor"
    )
    .execute(ex)
    .await?
    .rows_affected());
    db_query!(&mut tx, tx, |_sql, ex| sqlx::query(
        "DELETE FROM region_history"
    )
    .execute(ex)
    .await?
    .rows_affected());
    // Regions are upserted rather than deleted: later contexts (schools) reference them.
    insert_batched(
        &mut tx,
        "INSERT INTO region (code, name, level, parent_code, province_code) VALUES ",
        " ON CONFLICT (code) DO UPDATE SET name = excluded.name, level = excluded.level, \
          parent_code = excluded.parent_code, province_code = excluded.province_code",
        &regions,
        |r| {
            vec![
                Val::Text(r.code.to_string()),
                Val::Text(r.name.clone()),
                Val::Text(r.level.as_str().to_owned()),
                Val::OptText(r.parent.map(|p| p.to_string())),
                Val::Text(r.code.province().to_string()),
            ]
        },
    )
    .await?;
    insert_batched(
        &mut tx,
        "INSERT INTO region_history (id, code, name, level, status, province, \
        prefecture, start_year, end_year, new_codes) VALUES ",
        "",
        &history,
        |h| {
            vec![
                Val::Uuid(Uuid::now_v7()),
                Val::Text(h.entry.code.to_string()),
                Val::Text(h.entry.name.clone()),
                Val::Text(h.entry.level.as_str().to_owned()),
                Val::Text(h.entry.status.as_str().to_owned()),
                Val::Text(h.province.clone()),
                Val::Text(h.prefecture.clone()),
                Val::Int(i32::from(h.entry.start_year)),
                Val::OptInt(h.entry.end_year.map(i32::from)),
                Val::Text(h.new_codes_raw.clone()),
            ]
        },
    )
    .await?;
    insert_batched(
        &mut tx,
        "INSERT INTO region_successor (code, successor_code, year) VALUES ",
        "",
        &successor_rows,
        |(c, s, y)| {
            vec![
                Val::Text(c.to_string()),
                Val::Text(s.to_string()),
                Val::Int(i32::from(*y)),
            ]
        },
    )
    .await?;

    let now = Utc::now();
    let count = i32::try_from(regions.len()).unwrap_or(i32::MAX);
    db_query!(&mut tx, tx, |sql, ex| {
        sqlx::query(sql(
            "INSERT INTO reference_data (name, version, row_count, loaded_at) \
            VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET version = excluded.version, \
            row_count = excluded.row_count, loaded_at = excluded.loaded_at",
        ))
        .bind("regions")
        .bind(REGIONS_VERSION)
        .bind(count)
        .bind(now)
        .execute(ex)
        .await?
        .rows_affected()
    });
    tx.commit().await?;
    tracing::info!(
        regions = regions.len(),
        history = history.len(),
        successors = successor_rows.len(),
        "loaded region reference data"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_lists_parse_completely() {
        let regions = current_regions().unwrap();
        assert_eq!(regions.len(), 3213);
        assert_eq!(
            regions
                .iter()
                .filter(|r| r.level == RegionLevel::Province)
                .count(),
            34
        );
        let codes: std::collections::HashSet<_> = regions.iter().map(|r| r.code).collect();
        assert!(
            regions
                .iter()
                .filter_map(|r| r.parent)
                .all(|p| codes.contains(&p))
        );
        assert_eq!(region_history().unwrap().len(), 6823);
    }
}
