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

/// Names a sheet may give for a code besides the code itself: the labels of the forms first,
/// then the short forms and the names of older templates.
type Names = &'static [(&'static str, &'static [&'static str])];

const QUALIFICATION_NAMES: Names = &[
    ("kindergarten", &["幼儿园教师资格", "幼儿园", "幼儿园教师"]),
    ("primary", &["小学教师资格", "小学", "小学教师"]),
    (
        "junior",
        &[
            "初级中学教师资格",
            "初中教师资格",
            "初级中学",
            "初中",
            "初中教师",
        ],
    ),
    (
        "senior",
        &[
            "高级中学教师资格",
            "高中教师资格",
            "高级中学",
            "高中",
            "高中教师",
        ],
    ),
    (
        "vocational",
        &[
            "中等职业学校教师资格",
            "中职教师资格",
            "中等职业学校",
            "中职",
        ],
    ),
    ("none", &["无", "暂无"]),
];

const TITLE_NAMES: Names = &[
    ("senior_full", &["正高级教师", "正高级", "正高"]),
    ("senior", &["高级教师", "高级", "中学高级教师", "副高级"]),
    (
        "first",
        &["一级教师", "一级", "中学一级教师", "小学高级教师"],
    ),
    (
        "second",
        &["二级教师", "二级", "中学二级教师", "小学一级教师"],
    ),
    (
        "third",
        &[
            "三级教师",
            "三级",
            "中学三级教师",
            "小学二级教师",
            "小学三级教师",
        ],
    ),
    ("none", &["未定职级", "无", "暂无"]),
];

const POST_NAMES: Names = &[
    ("teaching", &["专任教师", "教学", "教师"]),
    ("admin", &["行政人员", "行政"]),
    ("support", &["教辅人员", "教辅"]),
    ("service", &["工勤人员", "工勤"]),
];

fn by_code_or_name(allowed: &[&'static str], names: Names, raw: &str) -> Option<&'static str> {
    let raw = raw.trim();
    parse_code(allowed, raw).or_else(|| {
        names
            .iter()
            .find(|(_, n)| n.contains(&raw))
            .map(|(code, _)| *code)
    })
}

/// 教师资格种类 by code or name, as a sheet gives it.
pub fn qualification(raw: &str) -> Option<&'static str> {
    by_code_or_name(&QUALIFICATIONS, QUALIFICATION_NAMES, raw)
}

/// 专业技术职务 by code or name.
pub fn title(raw: &str) -> Option<&'static str> {
    by_code_or_name(&TITLES, TITLE_NAMES, raw)
}

/// 岗位类别 by code or name.
pub fn post(raw: &str) -> Option<&'static str> {
    by_code_or_name(&POSTS, POST_NAMES, raw)
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
        // A sheet's names: the same word means one thing per field (高级 title vs 高中).
        assert_eq!(title("高级教师"), Some("senior"));
        assert_eq!(title("未定职级"), Some("none"));
        assert_eq!(title("高中"), None);
        assert_eq!(qualification("初中"), Some("junior"));
        assert_eq!(qualification("高中教师资格"), Some("senior"));
        assert_eq!(qualification("无"), Some("none"));
        assert_eq!(post("专任教师"), Some("teaching"));
        assert_eq!(post(" admin "), Some("admin"));
        assert_eq!(post("无"), None);
        assert_eq!(post("一级教师"), None);
    }
}
