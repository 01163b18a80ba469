//! Teachers and staff (教职工): the coded fields of the record and the staff number.

/// 教师资格种类 (the kind of teaching certificate held).
pub const QUALIFICATIONS: [&str; 6] = [
    "kindergarten",
    "primary",
    "junior",
    "senior",
    "vocational",
    "none",
];

/// 专业技术职务 (professional title of primary and secondary teachers since the 2015 reform).
pub const TITLES: [&str; 6] = ["senior_full", "senior", "first", "second", "third", "none"];

/// 岗位类别 (post).
pub const POSTS: [&str; 4] = ["teaching", "admin", "support", "service"];

/// One of `allowed`, as given (trimmed).
pub fn parse_code(allowed: &[&'static str], raw: &str) -> Option<&'static str> {
    allowed.iter().copied().find(|c| *c == raw.trim())
}

/// The staff number: `T`, the county of first appointment, the year and a sequence. It says
/// nothing about the person (unlike a G student number), so lists can show it whole.
pub fn teacher_number(county: &str, year: i32, seq: u32) -> Option<String> {
    (county.len() == 6 && county.bytes().all(|b| b.is_ascii_digit()) && seq < 100_000)
        .then(|| format!("T{county}{year:04}{seq:05}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_codes() {
        assert_eq!(
            teacher_number("440305", 2026, 7).as_deref(),
            Some("T440305202600007")
        );
        assert_eq!(teacher_number("44030", 2026, 7), None);
        assert_eq!(teacher_number("440305", 2026, 100_000), None);
        assert_eq!(parse_code(&TITLES, " first "), Some("first"));
        assert_eq!(parse_code(&POSTS, "boss"), None);
    }
}
