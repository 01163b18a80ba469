//! Administrative regions (行政区划) keyed by GB/T 2260 six-digit codes, and the rule that maps a
//! retired code to the code(s) that replaced it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A six-digit GB/T 2260 code such as `440305` (南山区). The province is the first two digits,
/// the prefecture the first four.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    #[error("a region code has exactly six digits")]
    Length,
    #[error("a region code has only the digits 0-9")]
    NotDigits,
    #[error("no province has the code prefix 00")]
    ZeroProvince,
}

impl RegionCode {
    pub fn parse(s: &str) -> Result<Self, RegionCodeError> {
        let s = s.trim();
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionCodeError::NotDigits);
        }
        if s.len() != 6 {
            return Err(RegionCodeError::Length);
        }
        let n: u32 = s.parse().map_err(|_| RegionCodeError::NotDigits)?;
        if n < 10_000 {
            return Err(RegionCodeError::ZeroProvince);
        }
        Ok(Self(n))
    }

    /// The code of the province this code lies in (`44xxxx` → `440000`).
    pub fn province(self) -> RegionCode {
        RegionCode(self.0 / 10_000 * 10_000)
    }

    /// The prefecture-shaped code (`4403xx` → `440300`); it may not exist (municipality districts).
    pub fn prefecture(self) -> RegionCode {
        RegionCode(self.0 / 100 * 100)
    }

    pub fn is_province_shaped(self) -> bool {
        self.0.is_multiple_of(10_000)
    }

    pub fn is_prefecture_shaped(self) -> bool {
        self.0.is_multiple_of(100) && !self.is_province_shaped()
    }

    pub fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({self})")
    }
}

impl FromStr for RegionCode {
    type Err = RegionCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for RegionCode {
    type Error = RegionCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RegionCode> for String {
    fn from(c: RegionCode) -> Self {
        c.to_string()
    }
}

/// Level in the hierarchy nation → province → prefecture → county.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionLevel {
    Province,
    Prefecture,
    County,
}

impl RegionLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Province => "province",
            Self::Prefecture => "prefecture",
            Self::County => "county",
        }
    }

    /// Accepts the English names of the current list and the 省级/地级/县级 of the history file.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "province" | "省级" => Some(Self::Province),
            "prefecture" | "地级" => Some(Self::Prefecture),
            "county" | "县级" => Some(Self::County),
            _ => None,
        }
    }
}

/// Status of a code in the 1981–2024 history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStatus {
    /// 在用: still in use.
    Current,
    /// 弃用: abolished.
    Retired,
    /// 变更: the unit was changed (renamed, re-graded) and the row closed.
    Changed,
}

impl HistoryStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "在用" => Some(Self::Current),
            "弃用" => Some(Self::Retired),
            "变更" => Some(Self::Changed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Changed => "changed",
        }
    }
}

/// One row of the history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub code: RegionCode,
    pub name: String,
    pub level: RegionLevel,
    pub status: HistoryStatus,
    pub start_year: u16,
    /// First year the code no longer appears in (exclusive), when it was closed.
    pub end_year: Option<u16>,
    /// Codes that took over the territory. `Some(year)` marks a partial move before the end.
    pub new_codes: Vec<(RegionCode, Option<u16>)>,
}

/// Parses the `new_codes` field: `371203[2006];370116`.
pub fn parse_new_codes(s: &str) -> Result<Vec<(RegionCode, Option<u16>)>, RegionCodeError> {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('[') {
            Some((code, rest)) => {
                let year = rest.trim_end_matches(']').parse::<u16>().ok();
                Ok((RegionCode::parse(code)?, year))
            }
            None => Ok((RegionCode::parse(p)?, None)),
        })
        .collect()
}

/// A code that replaced a retired one, and the year of the change as the history file records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Successor {
    pub code: RegionCode,
    pub year: u16,
}

/// For every code in `history` that is not in use today, the current codes that took it over.
///
/// The final disposition of a closed row is its untagged `new_codes`; a prefecture abolished
/// without any (371200 莱芜市) is followed through its counties, whose successors' current parents
/// are its successors. Chains (A → B → C) are followed until they reach a current code.
/// `parent_of` answers for current codes only.
pub fn resolve_successors(
    history: &[HistoryEntry],
    is_current: impl Fn(RegionCode) -> bool,
    parent_of: impl Fn(RegionCode) -> Option<RegionCode>,
) -> HashMap<RegionCode, Vec<Successor>> {
    // The latest closed row of each code decides where it went.
    let mut last: HashMap<RegionCode, &HistoryEntry> = HashMap::new();
    for e in history.iter().filter(|e| e.end_year.is_some()) {
        let keep = last
            .get(&e.code)
            .is_none_or(|prev| prev.start_year < e.start_year);
        if keep {
            last.insert(e.code, e);
        }
    }

    let direct = |entry: &HistoryEntry| -> Vec<RegionCode> {
        entry
            .new_codes
            .iter()
            .filter(|(_, y)| y.is_none())
            .map(|(c, _)| *c)
            .collect()
    };

    let mut out = HashMap::new();
    for (&code, entry) in &last {
        if is_current(code) {
            continue;
        }
        let year = entry.end_year.unwrap_or_default();
        let mut first = direct(entry);
        let mut via_children = false;
        if first.is_empty() && entry.level != RegionLevel::County {
            via_children = true;
            first = last
                .values()
                .filter(|child| {
                    child.code != code
                        && child.end_year == entry.end_year
                        && child.level == RegionLevel::County
                        && match entry.level {
                            RegionLevel::Prefecture => child.code.prefecture() == code,
                            _ => child.code.province() == code,
                        }
                })
                .flat_map(|child| direct(child))
                .collect();
        }

        let mut found = BTreeSet::new();
        let mut stack: Vec<(RegionCode, u8)> = first.into_iter().map(|c| (c, 0)).collect();
        let mut seen = BTreeSet::new();
        while let Some((c, depth)) = stack.pop() {
            if !seen.insert(c) || depth > 12 {
                continue;
            }
            if is_current(c) {
                let target = if via_children {
                    parent_of(c).unwrap_or(c)
                } else {
                    c
                };
                found.insert(target);
            } else if let Some(next) = last.get(&c) {
                stack.extend(direct(next).into_iter().map(|n| (n, depth + 1)));
            }
        }
        if !found.is_empty() {
            out.insert(
                code,
                found
                    .into_iter()
                    .map(|c| Successor { code: c, year })
                    .collect(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rc(s: &str) -> RegionCode {
        RegionCode::parse(s).unwrap()
    }

    #[test]
    fn parses_and_rejects_codes() {
        assert_eq!(rc("440305").to_string(), "440305");
        assert_eq!(rc(" 110000 ").province(), rc("110000"));
        assert_eq!(rc("440305").prefecture(), rc("440300"));
        assert!(rc("440300").is_prefecture_shaped());
        assert!(rc("440000").is_province_shaped());
        assert_eq!(RegionCode::parse("44030"), Err(RegionCodeError::Length));
        assert_eq!(RegionCode::parse("44030x"), Err(RegionCodeError::NotDigits));
        assert_eq!(
            RegionCode::parse("001234"),
            Err(RegionCodeError::ZeroProvince)
        );
        assert_eq!(
            RegionCode::parse("４４０３０５"),
            Err(RegionCodeError::NotDigits)
        );
    }

    #[test]
    fn parses_new_codes_with_years() {
        assert_eq!(
            parse_new_codes("371203[2006];370116").unwrap(),
            vec![(rc("371203"), Some(2006)), (rc("370116"), None)]
        );
        assert!(parse_new_codes("").unwrap().is_empty());
        assert!(parse_new_codes("12x").is_err());
    }

    fn entry(code: &str, level: RegionLevel, end: Option<u16>, new: &str) -> HistoryEntry {
        HistoryEntry {
            code: rc(code),
            name: String::new(),
            level,
            status: if end.is_some() {
                HistoryStatus::Retired
            } else {
                HistoryStatus::Current
            },
            start_year: 1992,
            end_year: end,
            new_codes: parse_new_codes(new).unwrap(),
        }
    }

    #[test]
    fn laiwu_resolves_to_jinan_through_its_counties() {
        let history = vec![
            entry("371200", RegionLevel::Prefecture, Some(2018), ""),
            entry(
                "371202",
                RegionLevel::County,
                Some(2018),
                "371203[2006];370116",
            ),
            entry("371203", RegionLevel::County, Some(2018), "370117"),
            entry("370116", RegionLevel::County, None, ""),
            entry("370117", RegionLevel::County, None, ""),
        ];
        let current = [rc("370100"), rc("370116"), rc("370117")];
        let map = resolve_successors(&history, |c| current.contains(&c), |c| Some(c.prefecture()));
        assert_eq!(
            map[&rc("371200")],
            vec![Successor {
                code: rc("370100"),
                year: 2018
            }]
        );
        assert_eq!(
            map[&rc("371202")],
            vec![Successor {
                code: rc("370116"),
                year: 2018
            }]
        );
        assert!(!map.contains_key(&rc("370116")));
    }

    #[test]
    fn chains_are_followed_to_a_current_code() {
        let history = vec![
            entry("130107", RegionLevel::County, Some(1989), "130121"),
            HistoryEntry {
                start_year: 1983,
                ..entry("130121", RegionLevel::County, Some(1995), "130199")
            },
            entry("130199", RegionLevel::County, None, ""),
        ];
        let map = resolve_successors(&history, |c| c == rc("130199"), |_| None);
        assert_eq!(
            map[&rc("130107")],
            vec![Successor {
                code: rc("130199"),
                year: 1989
            }]
        );
    }

    #[test]
    fn cycles_terminate() {
        let history = vec![
            entry("130107", RegionLevel::County, Some(1989), "130121"),
            entry("130121", RegionLevel::County, Some(1990), "130107"),
        ];
        let map = resolve_successors(&history, |_| false, |_| None);
        assert!(map.is_empty());
    }

    proptest! {
        #[test]
        fn any_six_digit_code_round_trips(n in 10_000u32..1_000_000) {
            let s = format!("{n:06}");
            prop_assert_eq!(RegionCode::parse(&s).unwrap().to_string(), s);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,12}") {
            let _ = RegionCode::parse(&s);
            let _ = parse_new_codes(&s);
        }
    }
}
