//! Reading cells the way schools type them (导入): full-width characters and stray spaces, dates
//! in every common shape including Excel serial numbers, `x` for the ID check character, and coded
//! fields given by code or by name. Each parser is total: it returns `None` rather than guess.

use chrono::{Datelike, NaiveDate};

use crate::registry::{Ethnicity, Sex};

/// Half-width, trimmed text with runs of spaces collapsed: full-width ASCII (Ａ１，) becomes ASCII,
/// the ideographic space and no-break spaces become spaces.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let c = match c {
            // A byte-order mark left inside (a GB18030 file's, or a pasted one) is no text.
            '\u{feff}' => continue,
            '\u{3000}' | '\u{00a0}' | '\u{2002}'..='\u{200b}' | '\t' => ' ',
            '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
            c => c,
        };
        if c == ' ' {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// How an uploaded text file was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    /// GB18030, which reads GBK and GB2312 too (what Excel saves as CSV on a Chinese Windows).
    Gb18030,
    Utf16,
}

/// Why a file is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotText {
    #[error("the file is empty")]
    Empty,
    /// Control bytes or sequences no encoding reads: a binary file (an .xlsx saved as .csv, say).
    #[error("the file is not text")]
    Binary,
}

/// Decodes an uploaded CSV: a byte-order mark decides (UTF-8 or UTF-16); otherwise UTF-8 if the
/// bytes are valid UTF-8, else GB18030. The mark is dropped. Files with NUL bytes or that GB18030
/// cannot read either are refused as binary.
pub fn decode_text(bytes: &[u8]) -> Result<(String, TextEncoding), NotText> {
    if bytes.is_empty() {
        return Err(NotText::Empty);
    }
    if let Some((enc, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, malformed) = enc.decode_without_bom_handling(&bytes[bom..]);
        if malformed {
            return Err(NotText::Binary);
        }
        let kind = if enc == encoding_rs::UTF_8 {
            TextEncoding::Utf8
        } else {
            TextEncoding::Utf16
        };
        return Ok((text.into_owned(), kind));
    }
    if bytes.contains(&0) {
        return Err(NotText::Binary);
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok((s.to_owned(), TextEncoding::Utf8));
    }
    let (text, malformed) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
    // GB18030 reads nearly any bytes; a Latin-1 or Big5 file comes out as control or
    // private-use characters, which no school's spreadsheet holds.
    let implausible = text
        .chars()
        .any(|c| ('\u{80}'..='\u{9f}').contains(&c) || ('\u{e000}'..='\u{f8ff}').contains(&c));
    if malformed || implausible {
        return Err(NotText::Binary);
    }
    Ok((text.into_owned(), TextEncoding::Gb18030))
}

/// Excel's day 0 for serial dates (its 1900 leap-year bug makes 1899-12-30 the right origin for
/// every serial from 61, 1900-03-01, on).
fn excel_origin() -> NaiveDate {
    NaiveDate::from_ymd_opt(1899, 12, 30).unwrap_or_default()
}

/// A date as people and spreadsheets write it: `2014-09-01`, `2014/9/1`, `2014.9.1`, `20140901`,
/// `2014年9月1日` (spaces allowed), an Excel serial of five or six digits (`41883`, also with a
/// time fraction, `41883.5`), or a date-time whose time is dropped (`2014-09-01 00:00:00`).
/// Years 1900–2199 only. Shorter numbers (`2014`, `61`) are refused, not read as serials.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let s = normalize(raw);
    let s = if s.contains('年') {
        s.replace(' ', "")
    } else {
        s.split([' ', 'T']).next().unwrap_or("").to_owned()
    };
    let s = s.as_str();
    if s.is_empty() {
        return None;
    }
    let in_range = |d: NaiveDate| (1900..2200).contains(&d.year()).then_some(d);
    // All digits: eight are yyyymmdd; five or six (a fraction is the time of day) a serial, which
    // from 10000 on is 1927 or later, so a year or a small count is never taken for one.
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    if int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit()) {
        return match (int.len(), s.contains('.')) {
            (8, false) => NaiveDate::parse_from_str(int, "%Y%m%d")
                .ok()
                .and_then(in_range),
            (5..=6, _) if !frac.is_empty() => {
                let n: i64 = int.parse().ok()?;
                (10_000..=109_572)
                    .contains(&n)
                    .then(|| excel_origin() + chrono::Duration::days(n))
                    .and_then(in_range)
            }
            _ => None,
        };
    }
    let s = s.trim_end_matches('日');
    let parts: Vec<&str> = s.split(['-', '/', '.', '年', '月']).collect();
    match parts.as_slice() {
        [y, m, d] if y.len() == 4 && (1..=2).contains(&m.len()) && (1..=2).contains(&d.len()) => {
            NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
                .and_then(in_range)
        }
        _ => None,
    }
}

/// A resident ID number as typed: half-width, no spaces, the check character upper-case. The
/// checks themselves are [`crate::registry::ResidentId::parse`]'s.
pub fn id_number(raw: &str) -> String {
    normalize(raw).replace(' ', "").to_uppercase()
}

/// Sex by GB/T 2261.1 code or by name: `1`, `男`, `男性`, `M`, `male`; `2`, `女`, `女性`, `F`,
/// `female`.
pub fn sex(raw: &str) -> Option<Sex> {
    let s = normalize(raw).to_lowercase();
    match s.as_str() {
        "1" | "男" | "男性" | "m" | "male" => Sex::parse("1"),
        "2" | "女" | "女性" | "f" | "female" => Sex::parse("2"),
        _ => None,
    }
}

/// An ethnic group by GB/T 3304 code (`1` or `01`), Chinese name with or without 族 (`汉族`,
/// `汉`), or romanised name (`Han`, any case).
pub fn ethnicity(raw: &str) -> Option<Ethnicity> {
    let s = normalize(raw);
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 2 {
        return Ethnicity::parse(&format!("{:0>2}", s));
    }
    let lower = s.to_lowercase();
    Ethnicity::all()
        .iter()
        .find(|(_, zh, roman)| {
            *zh == s || zh.trim_end_matches('族') == s || roman.to_lowercase() == lower
        })
        .and_then(|(code, _, _)| Ethnicity::parse(code))
}

/// A grade as schools write it: `3`, `3年级`, `三年级`, `初一` … `初三` (7–9), `高一` … `高三`
/// (10–12), `Grade 3`. Grades 1–12 only.
pub fn grade(raw: &str) -> Option<u8> {
    let s = normalize(raw).replace(' ', "").to_lowercase();
    let s = s.trim_start_matches("grade").trim_end_matches('级');
    let s = s.trim_end_matches('年');
    let numeral = |t: &str| -> Option<u8> {
        if let Ok(n) = t.parse::<u8>() {
            return Some(n);
        }
        let ones = ["一", "二", "三", "四", "五", "六", "七", "八", "九"];
        match t {
            "十" => Some(10),
            "十一" => Some(11),
            "十二" => Some(12),
            _ => ones.iter().position(|o| *o == t).map(|i| i as u8 + 1),
        }
    };
    let g = if let Some(rest) = s.strip_prefix('初') {
        numeral(rest).filter(|n| (1..=3).contains(n)).map(|n| n + 6)
    } else if let Some(rest) = s.strip_prefix('高') {
        numeral(rest).filter(|n| (1..=3).contains(n)).map(|n| n + 9)
    } else {
        numeral(s)
    }?;
    (1..=12).contains(&g).then_some(g)
}

/// A field of a student import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudentColumn {
    Name,
    Sex,
    BirthDate,
    Ethnicity,
    IdNumber,
    StudentNumber,
    Grade,
    EnrolledOn,
    HouseholdRegion,
    GuardianName,
    GuardianRelation,
    GuardianPhone,
}

impl StudentColumn {
    /// Every field, in the order of the import template.
    pub const ALL: [StudentColumn; 12] = [
        Self::Name,
        Self::Sex,
        Self::BirthDate,
        Self::Ethnicity,
        Self::IdNumber,
        Self::StudentNumber,
        Self::Grade,
        Self::EnrolledOn,
        Self::HouseholdRegion,
        Self::GuardianName,
        Self::GuardianRelation,
        Self::GuardianPhone,
    ];

    /// The field's name in forms and field errors (`birth_date`).
    pub fn field(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Sex => "sex",
            Self::BirthDate => "birth_date",
            Self::Ethnicity => "ethnicity",
            Self::IdNumber => "id_number",
            Self::StudentNumber => "student_number",
            Self::Grade => "grade",
            Self::EnrolledOn => "enrolled_on",
            Self::HouseholdRegion => "household_region",
            Self::GuardianName => "guardian_name",
            Self::GuardianRelation => "guardian_relation",
            Self::GuardianPhone => "guardian_phone",
        }
    }

    /// Whether a sheet must have the column (the others may be left out or empty).
    pub fn required(self) -> bool {
        !matches!(
            self,
            Self::IdNumber | Self::StudentNumber | Self::EnrolledOn | Self::HouseholdRegion
        )
    }
}

/// A field of an import template: its order, form name, whether a sheet must have it, and the
/// header spellings that name it.
pub trait Column: Copy + Eq + Sized + 'static {
    /// Every field, in the order of the template.
    fn all() -> &'static [Self];
    /// The field's name in forms, field errors and message keys (`birth_date`).
    fn field(self) -> &'static str;
    fn required(self) -> bool;
    /// Header spellings, as [`header_key`] leaves them.
    fn aliases(self) -> &'static [&'static str];
}

impl Column for StudentColumn {
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn field(self) -> &'static str {
        StudentColumn::field(self)
    }
    fn required(self) -> bool {
        StudentColumn::required(self)
    }
    fn aliases(self) -> &'static [&'static str] {
        STUDENT_ALIASES
            .iter()
            .find(|(c, _)| *c == self)
            .map_or(&[], |(_, a)| a)
    }
}

/// A header as compared with aliases: normalised, a note in brackets (出生日期（必填）) cut, no
/// spaces, underscores, dashes, stars or quotes, lower case.
pub fn header_key(header: &str) -> String {
    let h = normalize(header);
    let h = h.split(['(', '（']).next().unwrap_or("");
    h.replace([' ', '_', '-', '*', '\''], "").to_lowercase()
}

/// The field of kind `C` a header names, if any.
pub fn column_of<C: Column>(header: &str) -> Option<C> {
    let h = header_key(header);
    C::all()
        .iter()
        .copied()
        .find(|c| c.aliases().contains(&h.as_str()))
}

/// The field of each header of a sheet (`None`: a column the import ignores), refusing a sheet
/// where two columns name the same field rather than letting one of them win silently.
pub fn columns<C: Column, S: AsRef<str>>(headers: &[S]) -> Result<Vec<Option<C>>, SameField> {
    let cols: Vec<Option<C>> = headers.iter().map(|h| column_of(h.as_ref())).collect();
    for (i, a) in cols.iter().enumerate() {
        if let Some(a) = a
            && let Some(j) = cols[i + 1..].iter().position(|b| b.as_ref() == Some(a))
        {
            return Err(SameField {
                first: i + 1,
                second: i + j + 2,
                field: a.field(),
            });
        }
    }
    Ok(cols)
}

/// A field of a staff import (教职工).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherColumn {
    Name,
    Sex,
    BirthDate,
    Ethnicity,
    IdNumber,
    Qualification,
    Title,
    Subjects,
    Post,
    AppointedOn,
}

impl TeacherColumn {
    pub const ALL: [TeacherColumn; 10] = [
        Self::Name,
        Self::Sex,
        Self::BirthDate,
        Self::Ethnicity,
        Self::IdNumber,
        Self::Qualification,
        Self::Title,
        Self::Subjects,
        Self::Post,
        Self::AppointedOn,
    ];
}

impl Column for TeacherColumn {
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn field(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Sex => "sex",
            Self::BirthDate => "birth_date",
            Self::Ethnicity => "ethnicity",
            Self::IdNumber => "id_number",
            Self::Qualification => "qualification",
            Self::Title => "title",
            Self::Subjects => "subjects",
            Self::Post => "post",
            Self::AppointedOn => "appointed_on",
        }
    }
    fn required(self) -> bool {
        !matches!(self, Self::Ethnicity | Self::Subjects | Self::AppointedOn)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Name => &["姓名", "教师姓名", "教职工姓名", "name", "fullname"],
            // The person's other fields are spelled as in student sheets.
            Self::Sex => Column::aliases(StudentColumn::Sex),
            Self::BirthDate => Column::aliases(StudentColumn::BirthDate),
            Self::Ethnicity => Column::aliases(StudentColumn::Ethnicity),
            Self::IdNumber => Column::aliases(StudentColumn::IdNumber),
            Self::Qualification => &[
                "教师资格",
                "教师资格种类",
                "资格种类",
                "qualification",
                "teachingcertificate",
            ],
            Self::Title => &[
                "职称",
                "专业技术职务",
                "专业技术职称",
                "职务",
                "title",
                "professionaltitle",
            ],
            Self::Subjects => &["任教学科", "学科", "任教科目", "subjects", "subject"],
            Self::Post => &["岗位类别", "岗位", "岗位类型", "post", "position"],
            Self::AppointedOn => &[
                "到校日期",
                "任职日期",
                "聘任日期",
                "到岗日期",
                "appointedon",
                "startdate",
            ],
        }
    }
}

/// A field of a class import (班级).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassColumn {
    SchoolYear,
    Grade,
    Name,
    HeadTeacher,
}

impl ClassColumn {
    pub const ALL: [ClassColumn; 4] =
        [Self::SchoolYear, Self::Grade, Self::Name, Self::HeadTeacher];
}

impl Column for ClassColumn {
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn field(self) -> &'static str {
        match self {
            Self::SchoolYear => "school_year",
            Self::Grade => "grade",
            Self::Name => "class_name",
            Self::HeadTeacher => "head_teacher",
        }
    }
    fn required(self) -> bool {
        matches!(self, Self::Grade | Self::Name)
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::SchoolYear => &["学年", "学年度", "schoolyear", "year"],
            Self::Grade => Column::aliases(StudentColumn::Grade),
            Self::Name => &[
                "班级",
                "班级名称",
                "班名",
                "班号",
                "class",
                "classname",
                "name",
            ],
            Self::HeadTeacher => &[
                "班主任",
                "班主任用户名",
                "班主任账号",
                "headteacher",
                "homeroomteacher",
            ],
        }
    }
}

/// A field of an import of a county's schools and teaching points (学校名录).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchoolColumn {
    Code,
    Name,
    Kind,
    UrbanRural,
    ParentCode,
    Grades,
    OpenedOn,
}

impl SchoolColumn {
    pub const ALL: [SchoolColumn; 7] = [
        Self::Code,
        Self::Name,
        Self::Kind,
        Self::UrbanRural,
        Self::ParentCode,
        Self::Grades,
        Self::OpenedOn,
    ];
}

impl Column for SchoolColumn {
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn field(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Name => "school_name",
            Self::Kind => "kind",
            Self::UrbanRural => "urban_rural",
            Self::ParentCode => "parent_code",
            Self::Grades => "grades",
            Self::OpenedOn => "opened_on",
        }
    }
    fn required(self) -> bool {
        matches!(
            self,
            Self::Code | Self::Name | Self::Kind | Self::UrbanRural
        )
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Code => &["学校标识码", "学校代码", "标识码", "schoolcode", "code"],
            Self::Name => &["学校名称", "学校", "名称", "schoolname", "name"],
            Self::Kind => &["办学类型", "办学类型码", "学校类型", "kind", "schooltype"],
            Self::UrbanRural => &[
                "城乡类型",
                "城乡分类",
                "城乡类型码",
                "urbanrural",
                "urbanrural",
            ],
            Self::ParentCode => &[
                "上级学校标识码",
                "所属学校标识码",
                "上级学校",
                "所属学校",
                "parentcode",
                "parentschool",
            ],
            Self::Grades => &["年级", "开设年级", "grades"],
            Self::OpenedOn => &["开办日期", "建校日期", "成立日期", "openedon", "opened"],
        }
    }
}

/// A field of an import of school conditions (办学条件), one row per school and school year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionColumn {
    Code,
    SchoolYear,
    BuildingArea,
    Classrooms,
    MultimediaClassrooms,
    Computers,
    StudentTerminals,
    Broadband,
    BandwidthMbps,
    BroadbandSince,
}

impl ConditionColumn {
    pub const ALL: [ConditionColumn; 10] = [
        Self::Code,
        Self::SchoolYear,
        Self::BuildingArea,
        Self::Classrooms,
        Self::MultimediaClassrooms,
        Self::Computers,
        Self::StudentTerminals,
        Self::Broadband,
        Self::BandwidthMbps,
        Self::BroadbandSince,
    ];
}

impl Column for ConditionColumn {
    fn all() -> &'static [Self] {
        &Self::ALL
    }
    fn field(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::SchoolYear => "school_year",
            Self::BuildingArea => "building_area_m2",
            Self::Classrooms => "classrooms",
            Self::MultimediaClassrooms => "multimedia_classrooms",
            Self::Computers => "computers",
            Self::StudentTerminals => "student_terminals",
            Self::Broadband => "broadband",
            Self::BandwidthMbps => "bandwidth_mbps",
            Self::BroadbandSince => "broadband_since",
        }
    }
    fn required(self) -> bool {
        !matches!(
            self,
            Self::SchoolYear | Self::BandwidthMbps | Self::BroadbandSince
        )
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Code => Column::aliases(SchoolColumn::Code),
            Self::SchoolYear => Column::aliases(ClassColumn::SchoolYear),
            Self::BuildingArea => &[
                "建筑面积",
                "校舍建筑面积",
                "建筑面积平方米",
                "buildingarea",
                "buildingaream2",
            ],
            Self::Classrooms => &["教室数", "教室", "普通教室数", "classrooms"],
            Self::MultimediaClassrooms => &["多媒体教室数", "多媒体教室", "multimediaclassrooms"],
            Self::Computers => &["计算机数", "计算机台数", "计算机", "computers"],
            Self::StudentTerminals => {
                &["学生终端数", "学生用终端数", "学生终端", "studentterminals"]
            }
            Self::Broadband => &["宽带接入方式", "宽带接入", "接入方式", "宽带", "broadband"],
            Self::BandwidthMbps => &["带宽", "出口带宽", "带宽mbps", "bandwidth", "bandwidthmbps"],
            Self::BroadbandSince => &["接入日期", "宽带接入日期", "broadbandsince"],
        }
    }
}

/// 宽带接入方式 by code (fibre) or name (光纤); 未接入 / 无 is none.
pub fn broadband(raw: &str) -> Option<crate::registry::Broadband> {
    let raw = normalize(raw);
    let code = match raw.as_str() {
        "光纤" | "光纤接入" => "fibre",
        "DSL" | "ADSL" | "dsl" | "adsl" => "dsl",
        "无线" | "无线接入" | "4G" | "5G" => "wireless",
        "卫星" | "卫星接入" => "satellite",
        "未接入" | "无" => "none",
        other => other,
    };
    crate::registry::Broadband::parse(code)
}

/// 办学类型 by code (211) or by name (小学), as GB/T 33782 names them.
pub fn school_kind(raw: &str) -> Option<crate::registry::SchoolKind> {
    const NAMES: [(&str, &str); 23] = [
        ("111", "幼儿园"),
        ("119", "附设幼儿班"),
        ("211", "小学"),
        ("218", "小学教学点"),
        ("219", "附设小学班"),
        ("311", "初级中学"),
        ("312", "九年一贯制学校"),
        ("319", "附设普通初中班"),
        ("341", "完全中学"),
        ("342", "高级中学"),
        ("345", "十二年一贯制学校"),
        ("349", "附设普通高中班"),
        ("361", "调整后中等职业学校"),
        ("362", "中等技术学校"),
        ("363", "中等师范学校"),
        ("364", "成人中等专业学校"),
        ("365", "职业高中学校"),
        ("366", "技工学校"),
        ("511", "盲人学校"),
        ("512", "聋人学校"),
        ("513", "培智学校"),
        ("514", "其他特教学校"),
        ("519", "附设特教班"),
    ];
    let raw = normalize(raw);
    let code = NAMES
        .iter()
        .find(|(_, name)| *name == raw || (raw == "教学点" && *name == "小学教学点"))
        .map_or(raw.as_str(), |(code, _)| code);
    crate::registry::SchoolKind::parse(code)
}

/// 城乡类型 by code (111) or by name (主城区).
pub fn urban_rural(raw: &str) -> Option<crate::registry::UrbanRural> {
    const NAMES: [(&str, &str); 7] = [
        ("111", "主城区"),
        ("112", "城乡结合区"),
        ("121", "镇中心区"),
        ("122", "镇乡结合区"),
        ("123", "特殊区域"),
        ("210", "乡中心区"),
        ("220", "村庄"),
    ];
    let raw = normalize(raw);
    let code = NAMES
        .iter()
        .find(|(_, name)| *name == raw)
        .map_or(raw.as_str(), |(code, _)| code);
    crate::registry::UrbanRural::parse(code)
}

/// Header spellings seen in provincial templates and English sheets, compared after
/// [`normalize`], without spaces and case-insensitively.
const STUDENT_ALIASES: &[(StudentColumn, &[&str])] = &[
    (
        StudentColumn::Name,
        &["姓名", "学生姓名", "name", "studentname", "fullname"],
    ),
    (StudentColumn::Sex, &["性别", "性别码", "sex", "gender"]),
    (
        StudentColumn::BirthDate,
        &[
            "出生日期",
            "出生年月日",
            "生日",
            "birthdate",
            "dateofbirth",
            "dob",
            "birthday",
        ],
    ),
    (
        StudentColumn::Ethnicity,
        &["民族", "民族码", "ethnicity", "ethnicgroup"],
    ),
    (
        StudentColumn::IdNumber,
        &[
            "身份证件号",
            "身份证号",
            "身份证号码",
            "公民身份号码",
            "证件号码",
            "idnumber",
            "idno",
            "residentid",
        ],
    ),
    (
        StudentColumn::StudentNumber,
        &[
            "全国学籍号",
            "学籍号",
            "studentnumber",
            "nationalstudentnumber",
        ],
    ),
    (StudentColumn::Grade, &["年级", "grade", "gradelevel"]),
    (
        StudentColumn::EnrolledOn,
        &[
            "入学日期",
            "入校日期",
            "enrolledon",
            "enrollmentdate",
            "entrydate",
        ],
    ),
    (
        StudentColumn::HouseholdRegion,
        &[
            "户籍所在地",
            "户口所在地",
            "户籍所在地行政区划",
            "户籍",
            "householdregion",
            "householdregistration",
            "hukou",
        ],
    ),
    (
        StudentColumn::GuardianName,
        &[
            "监护人",
            "监护人姓名",
            "家长姓名",
            "guardian",
            "guardianname",
            "parentname",
        ],
    ),
    (
        StudentColumn::GuardianRelation,
        &["监护人关系", "与学生关系", "relation", "relationship"],
    ),
    (
        StudentColumn::GuardianPhone,
        &[
            "监护人手机号",
            "监护人电话",
            "联系电话",
            "家长电话",
            "phone",
            "guardianphone",
            "guardiansmobile",
            "mobile",
        ],
    ),
];

/// The student field a header names, if any.
pub fn student_column(header: &str) -> Option<StudentColumn> {
    column_of(header)
}

/// Two headers of one sheet that name the same field (1-based column numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SameField {
    pub first: usize,
    pub second: usize,
    /// The field's name ([`Column::field`]).
    pub field: &'static str,
}

/// [`columns`] of a student sheet.
pub fn student_columns<S: AsRef<str>>(
    headers: &[S],
) -> Result<Vec<Option<StudentColumn>>, SameField> {
    columns(headers)
}

/// One CSV cell. A value that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`,
/// `@`, a tab or a carriage return) gets a leading apostrophe — unless it is only digits, spaces,
/// dots, parentheses and signs (a phone number such as `+86 138 0013 8000`, a negative number),
/// which cannot call anything and is kept as it is.
pub fn csv_field(v: &str) -> String {
    // Only a plain negative number is left alone: anything else a spreadsheet would compute
    // (`+86 138…` is summed, `-1+1` evaluated) or run.
    let harmless = |s: &str| {
        let body = s.strip_prefix('-').unwrap_or("");
        let mut parts = body.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) && !harmless(v) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// Appends one CSV line (CRLF, as Excel writes them).
pub fn push_line<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(f.as_ref()));
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, day)
    }

    #[test]
    fn dates_in_every_common_shape() {
        for s in [
            "2014-09-01",
            "2014/9/1",
            "2014.9.1",
            "20140901",
            "2014年9月1日",
            "２０１４－０９－０１",
            " 2014-09-01 00:00:00 ",
            "2014-09-01T08:00:00",
            "41883",
            "41883.0",
        ] {
            assert_eq!(parse_date(s), d(2014, 9, 1), "{s}");
        }
        for s in [
            "",
            "2014-13-01",
            "2014-02-30",
            "14-9-1",
            "abc",
            "60",
            "1",
            "2014年9月",
            "123456789",
            "61",
            "2014",
            "201409",
            "41883.",
            "1.5",
        ] {
            assert_eq!(parse_date(s), None, "{s}");
        }
        assert_eq!(parse_date("41883.75"), d(2014, 9, 1));
        assert_eq!(parse_date("2014年 9月 1日"), d(2014, 9, 1));
        // Serials count from 1899-12-30 (Excel's fictitious 1900-02-29 makes that the origin).
        assert_eq!(parse_date("10000"), d(1927, 5, 18));
    }

    #[test]
    fn text_is_normalised() {
        assert_eq!(normalize("\u{3000}张　三 \u{a0}"), "张 三");
        assert_eq!(normalize("ＡＢＣ１２３，"), "ABC123,");
        assert_eq!(id_number(" 44030520160301001x "), "44030520160301001X");
        assert_eq!(
            id_number("４４０３０５ ２０１６０３０１ ００１Ｘ"),
            "44030520160301001X"
        );
    }

    #[test]
    fn codes_or_names() {
        assert_eq!(sex("男"), Sex::parse("1"));
        assert_eq!(sex(" ２ "), Sex::parse("2"));
        assert_eq!(sex("Female"), Sex::parse("2"));
        assert_eq!(sex("3"), None);
        assert_eq!(ethnicity("汉族"), Ethnicity::parse("01"));
        assert_eq!(ethnicity("汉"), Ethnicity::parse("01"));
        assert_eq!(ethnicity("1"), Ethnicity::parse("01"));
        assert_eq!(ethnicity("han"), Ethnicity::parse("01"));
        assert_eq!(ethnicity("蒙古族"), Ethnicity::parse("02"));
        assert_eq!(ethnicity("火星族"), None);
        assert_eq!(ethnicity(""), None);
    }

    #[test]
    fn grades_as_written() {
        for (s, g) in [
            ("3", 3),
            ("３", 3),
            ("3年级", 3),
            ("三年级", 3),
            ("初一", 7),
            ("初三", 9),
            ("高二", 11),
            ("Grade 3", 3),
            ("十二年级", 12),
        ] {
            assert_eq!(grade(s), Some(g), "{s}");
        }
        for s in ["", "0", "13", "初四", "高", "abc", "3.5"] {
            assert_eq!(grade(s), None, "{s}");
        }
    }

    #[test]
    fn headers_by_alias() {
        assert_eq!(student_column("姓名"), Some(StudentColumn::Name));
        assert_eq!(student_column("*出生日期"), Some(StudentColumn::BirthDate));
        assert_eq!(
            student_column("Date of Birth"),
            Some(StudentColumn::BirthDate)
        );
        assert_eq!(
            student_column("身份证件号（必填）"),
            Some(StudentColumn::IdNumber)
        );
        assert_eq!(
            student_column("出生日期(yyyy-mm-dd)"),
            Some(StudentColumn::BirthDate)
        );
        assert_eq!(
            student_column("公民身份号码"),
            Some(StudentColumn::IdNumber)
        );
        assert_eq!(student_column("ID_No"), Some(StudentColumn::IdNumber));
        assert_eq!(student_column("备注"), None);
        assert_eq!(student_column("\u{feff}姓名"), Some(StudentColumn::Name));
        // Headers too vague to trust are not taken.
        for h in ["关系", "手机号", "nation", "studentid", "学籍辅号"] {
            assert_eq!(student_column(h), None, "{h}");
        }
        assert_eq!(
            student_columns(&["姓名", "备注", "学生姓名"]),
            Err(SameField {
                first: 1,
                second: 3,
                field: "name"
            })
        );
        assert_eq!(
            student_columns(&["姓名", "性别"]),
            Ok(vec![Some(StudentColumn::Name), Some(StudentColumn::Sex)])
        );
    }

    #[test]
    fn uploads_decode_by_mark_or_content() {
        let utf8 = "姓名,性别\r\n张三,男\r\n";
        let with_bom = [&[0xef, 0xbb, 0xbf][..], utf8.as_bytes()].concat();
        assert_eq!(
            decode_text(&with_bom),
            Ok((utf8.to_owned(), TextEncoding::Utf8))
        );
        assert_eq!(
            decode_text(utf8.as_bytes()),
            Ok((utf8.to_owned(), TextEncoding::Utf8))
        );
        let (gbk, _, _) = encoding_rs::GBK.encode(utf8);
        assert_eq!(
            decode_text(&gbk),
            Ok((utf8.to_owned(), TextEncoding::Gb18030))
        );
        let mut utf16 = vec![0xff, 0xfe];
        for u in utf8.encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(
            decode_text(&utf16),
            Ok((utf8.to_owned(), TextEncoding::Utf16))
        );
        assert_eq!(decode_text(b""), Err(NotText::Empty));
        // An .xlsx renamed to .csv: a zip, with NUL bytes.
        assert_eq!(
            decode_text(b"PK\x03\x04\x14\x00\x06\x00"),
            Err(NotText::Binary)
        );
        assert_eq!(decode_text(&[0x81, 0x20, 0xff]), Err(NotText::Binary));
        // Latin-1 is not taken for Chinese.
        assert_eq!(
            decode_text(b"Jos\xe9 Mart\xednez,\xe9l\xe8ve"),
            Err(NotText::Binary)
        );
    }

    proptest! {
        /// Every date of the range reads back from each way of writing it.
        #[test]
        fn every_shape_reads_back(days in 0i64..100_000) {
            let date = NaiveDate::from_ymd_opt(1901, 1, 1).unwrap() + chrono::Duration::days(days);
            prop_assume!(date.year() < 2200);
            let (y, m, dd) = (date.year(), date.month(), date.day());
            for s in [
                date.format("%Y-%m-%d").to_string(),
                format!("{y}/{m}/{dd}"),
                date.format("%Y%m%d").to_string(),
                format!("{y}年{m}月{dd}日"),
            ] {
                prop_assert_eq!(parse_date(&s), Some(date), "{}", s);
            }
            let serial = (date - excel_origin()).num_days();
            if serial >= 10_000 {
                prop_assert_eq!(parse_date(&serial.to_string()), Some(date));
            }
        }

        /// Normalising twice changes nothing, and never leaves edge or double spaces.
        #[test]
        fn normalize_is_idempotent(s in "\\PC{0,30}") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once.clone());
            prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
        }
    }
}
