//! The one scope filter: every query that returns people or records appends it, with the
//! columns that say where its rows belong (a region code, and a school code inside that county).
//! A region scope matches its whole subtree by code prefix; a school scope matches the school
//! code *and* its county; an empty scope matches nothing.

use santong_domain::identity::{Scope, region_prefix_pattern};

use crate::dynsql::DynQuery;

/// Appends ` (…)`, true for rows inside `scope`. `region_col` and `school_col` are column
/// expressions of the query (`u.home_region`), never user input.
pub(crate) fn push(
    q: &mut DynQuery,
    scope: &Scope,
    region_col: &'static str,
    school_col: &'static str,
) {
    if scope.nation {
        q.push(" (1 = 1)");
        return;
    }
    if scope.is_empty() {
        q.push(" (1 = 0)");
        return;
    }
    q.push(" (1 = 0");
    for r in &scope.regions {
        q.push(" OR ")
            .push(region_col)
            .push(" LIKE ")
            .bind(region_prefix_pattern(*r));
    }
    for (code, county) in &scope.schools {
        q.push(" OR (")
            .push(school_col)
            .push(" = ")
            .bind(code.to_string());
        q.push(" AND ")
            .push(region_col)
            .push(" = ")
            .bind(county.to_string())
            .push(")");
    }
    q.push(")");
}
