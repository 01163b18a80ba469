//! Page, size and sort parameters of every list, parsed once with field-level errors.

use serde::Serialize;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// A 1-based page of `size` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageRequest {
    pub page: u32,
    pub size: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl PageRequest {
    pub fn offset(self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.size)
    }

    pub fn limit(self) -> u64 {
        u64::from(self.size)
    }

    /// Number of pages needed for `total` rows (at least one, so "page 1 of 1" reads right).
    pub fn page_count(self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.size)).max(1)
    }
}

/// A sort key chosen from a list's allowed fields; `-field` sorts descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort<F> {
    pub field: F,
    pub descending: bool,
}

/// Why a parameter was refused. Each variant is an i18n key suffix (`field-error-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FieldErrorKind {
    NotANumber,
    OutOfRange,
    UnknownSortField,
    InvalidValue,
    TooLong,
    /// A domain rule, named by its own message key (`registry-bad-id-check-digit`).
    Rule(&'static str),
}

impl FieldErrorKind {
    pub fn key(self) -> &'static str {
        match self {
            Self::NotANumber => "field-error-not-a-number",
            Self::OutOfRange => "field-error-out-of-range",
            Self::UnknownSortField => "field-error-unknown-sort-field",
            Self::InvalidValue => "field-error-invalid-value",
            Self::TooLong => "field-error-too-long",
            Self::Rule(key) => key,
        }
    }

    /// The stable code API clients see.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotANumber => "not-a-number",
            Self::OutOfRange => "out-of-range",
            Self::UnknownSortField => "unknown-sort-field",
            Self::InvalidValue => "invalid-value",
            Self::TooLong => "too-long",
            Self::Rule(key) => key,
        }
    }
}

/// One refused parameter: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
}

impl FieldError {
    pub fn new(field: impl Into<String>, kind: FieldErrorKind) -> Self {
        Self {
            field: field.into(),
            kind,
        }
    }
}

/// Parses `page` and `size`, collecting every problem rather than stopping at the first.
pub fn parse_page(
    page: Option<&str>,
    size: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> PageRequest {
    let mut req = PageRequest::default();
    if let Some(p) = page.filter(|s| !s.is_empty()) {
        match p.trim().parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => req.page = n,
            Ok(_) => errors.push(FieldError::new("page", FieldErrorKind::OutOfRange)),
            Err(_) => errors.push(FieldError::new("page", FieldErrorKind::NotANumber)),
        }
    }
    if let Some(s) = size.filter(|s| !s.is_empty()) {
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => req.size = n,
            Ok(_) => errors.push(FieldError::new("size", FieldErrorKind::OutOfRange)),
            Err(_) => errors.push(FieldError::new("size", FieldErrorKind::NotANumber)),
        }
    }
    req
}

/// Parses `sort` against the list's allowed `(name, field)` pairs.
pub fn parse_sort<F: Copy>(
    sort: Option<&str>,
    allowed: &[(&str, F)],
    errors: &mut Vec<FieldError>,
) -> Option<Sort<F>> {
    let raw = sort.map(str::trim).filter(|s| !s.is_empty())?;
    let (name, descending) = match raw.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    match allowed.iter().find(|(n, _)| *n == name) {
        Some((_, field)) => Some(Sort {
            field: *field,
            descending,
        }),
        None => {
            errors.push(FieldError::new("sort", FieldErrorKind::UnknownSortField));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_and_limits() {
        let mut errs = vec![];
        assert_eq!(parse_page(None, None, &mut errs), PageRequest::default());
        assert_eq!(
            parse_page(Some("3"), Some("50"), &mut errs),
            PageRequest { page: 3, size: 50 }
        );
        assert!(errs.is_empty());
        parse_page(Some("x"), Some("1000"), &mut errs);
        assert_eq!(
            errs,
            vec![
                FieldError::new("page", FieldErrorKind::NotANumber),
                FieldError::new("size", FieldErrorKind::OutOfRange)
            ]
        );
    }

    #[test]
    fn sort_fields() {
        let allowed = [("code", 1), ("name", 2)];
        let mut errs = vec![];
        assert_eq!(
            parse_sort(Some("-name"), &allowed, &mut errs),
            Some(Sort {
                field: 2,
                descending: true
            })
        );
        assert_eq!(parse_sort(Some("password"), &allowed, &mut errs), None);
        assert_eq!(
            errs,
            vec![FieldError::new("sort", FieldErrorKind::UnknownSortField)]
        );
    }

    #[test]
    fn page_arithmetic() {
        let p = PageRequest { page: 3, size: 20 };
        assert_eq!(p.offset(), 40);
        assert_eq!(p.page_count(0), 1);
        assert_eq!(p.page_count(41), 3);
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_stays_in_bounds(p in "\\PC{0,8}", s in "\\PC{0,8}") {
            let mut errs = vec![];
            let req = parse_page(Some(&p), Some(&s), &mut errs);
            prop_assert!(req.page >= 1 && req.size >= 1 && req.size <= MAX_PAGE_SIZE);
        }
    }
}
