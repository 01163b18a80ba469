//! Regions: the GB/T 2260 tree (browse, ancestors, search) and the history of retired codes.

use santong_domain::paging::{PageRequest, Sort};
use santong_domain::region::RegionCode;
use serde::Serialize;

use crate::db::intern;
use crate::{Db, Page, db_query};

/// A region in use, with its parent's name and how many regions sit directly under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Region {
    pub code: String,
    pub name: String,
    pub level: String,
    pub parent_code: Option<String>,
    pub parent_name: Option<String>,
    pub child_count: i64,
}

/// A row of the 1981–2024 code history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    pub code: String,
    pub name: String,
    pub level: String,
    pub status: String,
    pub province: String,
    pub prefecture: String,
    pub start_year: i32,
    pub end_year: Option<i32>,
}

/// A current region that took over a retired code, and the year of the change.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SuccessorRow {
    pub code: String,
    pub name: String,
    pub year: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSort {
    Code,
    Name,
}

impl RegionSort {
    pub const ALLOWED: [(&'static str, RegionSort); 2] =
        [("code", RegionSort::Code), ("name", RegionSort::Name)];
}

/// The region columns with parent name and child count, followed by the given tail.
macro_rules! select {
    ($tail:literal) => {
        concat!(
            "SELECT r.code, r.name, r.level, r.parent_code, p.name AS parent_name, \
             (SELECT COUNT(*) FROM region c WHERE c.parent_code = r.code) AS child_count \
             FROM region r LEFT JOIN region p ON p.code = r.parent_code",
            $tail
        )
    };
}

/// Escapes LIKE wildcards in user input (`\` is the escape character).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How to filter a region list.
#[derive(Debug, Clone, Default)]
pub struct RegionFilter {
    /// `None` lists the provinces.
    pub parent: Option<RegionCode>,
    /// Name fragment or code prefix; searches the whole tree, ignoring `parent`.
    pub query: Option<String>,
}

pub struct Regions<'a>(pub &'a Db);

impl Regions<'_> {
    pub async fn get(&self, code: RegionCode) -> crate::Result<Option<Region>> {
        const SQL: &str = select!(" WHERE r.code = $1");
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, Region>(sql(SQL))
                .bind(code.to_string())
                .fetch_optional(ex)
                .await?
        }))
    }

    /// The chain from the province down to `code`'s parent, in that order.
    pub async fn ancestors(&self, region: &Region) -> crate::Result<Vec<Region>> {
        let Some(parent) = region
            .parent_code
            .as_deref()
            .and_then(|p| RegionCode::parse(p).ok())
        else {
            return Ok(vec![]);
        };
        // At most two levels sit above a county: fetch both candidates in one query.
        const SQL: &str = select!(" WHERE r.code IN ($1, $2)");
        let rows: Vec<Region> = db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, Region>(sql(SQL))
                .bind(parent.to_string())
                .bind(parent.province().to_string())
                .fetch_all(ex)
                .await?
        });
        let mut chain = Vec::new();
        let mut next = Some(parent.to_string());
        while let Some(code) = next.take() {
            if let Some(r) = rows.iter().find(|r| r.code == code) {
                next = r.parent_code.clone();
                chain.push(r.clone());
            }
        }
        chain.reverse();
        Ok(chain)
    }

    pub async fn list(
        &self,
        filter: &RegionFilter,
        page: PageRequest,
        sort: Option<Sort<RegionSort>>,
    ) -> crate::Result<Page<Region>> {
        // Names sort by code point on both backends (PostgreSQL would otherwise use its locale),
        // so a list pages identically wherever it runs.
        let name = if self.0.is_postgres() {
            "r.name COLLATE \"C\""
        } else {
            "r.name"
        };
        let order = match sort {
            None
            | Some(Sort {
                field: RegionSort::Code,
                descending: false,
            }) => "r.code".to_owned(),
            Some(Sort {
                field: RegionSort::Code,
                descending: true,
            }) => "r.code DESC".to_owned(),
            Some(Sort {
                field: RegionSort::Name,
                descending: false,
            }) => format!("{name}, r.code"),
            Some(Sort {
                field: RegionSort::Name,
                descending: true,
            }) => format!("{name} DESC, r.code"),
        };
        // Orders and filters come from closed sets, so the statements are a small fixed family.
        let (filter_sql, arg): (&str, Option<String>) = match (&filter.query, filter.parent) {
            (Some(q), _) if !q.trim().is_empty() => {
                let q = q.trim();
                if q.bytes().all(|b| b.is_ascii_digit()) {
                    (
                        " WHERE r.code LIKE $1 ESCAPE '\\'",
                        Some(format!("{}%", like_escape(q))),
                    )
                } else {
                    (
                        " WHERE r.name LIKE $1 ESCAPE '\\'",
                        Some(format!("%{}%", like_escape(q))),
                    )
                }
            }
            (_, Some(parent)) => (" WHERE r.parent_code = $1", Some(parent.to_string())),
            (_, None) => (" WHERE r.parent_code IS NULL AND $1 IS NULL", None),
        };
        let stmt = intern(format!(
            "{}{filter_sql} ORDER BY {order} LIMIT $2 OFFSET $3",
            select!("")
        ));
        let count_stmt = intern(format!("SELECT COUNT(*) FROM region r{filter_sql}"));
        let limit = i64::try_from(page.limit()).unwrap_or(i64::MAX);
        let offset = i64::try_from(page.offset()).unwrap_or(i64::MAX);
        let (items, total): (Vec<Region>, i64) = db_query!(self.0, read, |sql, ex| {
            let items = sqlx::query_as::<_, Region>(sql(stmt))
                .bind(arg.clone())
                .bind(limit)
                .bind(offset)
                .fetch_all(ex)
                .await?;
            // A first page that is not full already tells the total: skip the count.
            let total: i64 = if page.page == 1 && (items.len() as u64) < page.limit() {
                items.len() as i64
            } else {
                sqlx::query_scalar(sql(count_stmt))
                    .bind(arg)
                    .fetch_one(ex)
                    .await?
            };
            (items, total)
        });
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    pub async fn history(&self, code: RegionCode) -> crate::Result<Vec<HistoryRow>> {
        const SQL: &str = "SELECT code, name, level, status, province, prefecture, start_year, \
            end_year FROM region_history WHERE code = $1 ORDER BY start_year, end_year";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, HistoryRow>(sql(SQL))
                .bind(code.to_string())
                .fetch_all(ex)
                .await?
        }))
    }

    pub async fn successors(&self, code: RegionCode) -> crate::Result<Vec<SuccessorRow>> {
        const SQL: &str = "SELECT s.successor_code AS code, r.name, s.year FROM region_successor s \
            JOIN region r ON r.code = s.successor_code WHERE s.code = $1 ORDER BY s.successor_code";
        Ok(db_query!(self.0, read, |sql, ex| {
            sqlx::query_as::<_, SuccessorRow>(sql(SQL))
                .bind(code.to_string())
                .fetch_all(ex)
                .await?
        }))
    }

    pub async fn count(&self) -> crate::Result<i64> {
        Ok(db_query!(self.0, read, |_sql, ex| {
            sqlx::query_scalar("SELECT COUNT(*) FROM region")
                .fetch_one(ex)
                .await?
        }))
    }
}
