//! OneRoster 1.2 CSV (1EdTech), the files an LMS or rostering tool exchanges: which files there
//! are, their columns in the order the binding lists them, which columns must hold a value, and
//! the few conversions between Santong's data and OneRoster's (names in two parts, grade codes,
//! multi-value cells).

/// One CSV file of the binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// `users.csv`
    pub name: &'static str,
    /// The manifest's property for it (`file.users`).
    pub property: &'static str,
    pub columns: &'static [&'static str],
    /// Columns every row must fill.
    pub required: &'static [&'static str],
}

pub const ACADEMIC_SESSIONS: FileSpec = FileSpec {
    name: "academicSessions.csv",
    property: "file.academicSessions",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "title",
        "type",
        "startDate",
        "endDate",
        "parentSourcedId",
        "schoolYear",
    ],
    required: &[
        "sourcedId",
        "title",
        "type",
        "startDate",
        "endDate",
        "schoolYear",
    ],
};

pub const ORGS: FileSpec = FileSpec {
    name: "orgs.csv",
    property: "file.orgs",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "name",
        "type",
        "identifier",
        "parentSourcedId",
    ],
    required: &["sourcedId", "name", "type"],
};

pub const COURSES: FileSpec = FileSpec {
    name: "courses.csv",
    property: "file.courses",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "schoolYearSourcedId",
        "title",
        "courseCode",
        "grades",
        "orgSourcedId",
        "subjects",
        "subjectCodes",
    ],
    required: &["sourcedId", "title", "orgSourcedId"],
};

pub const CLASSES: FileSpec = FileSpec {
    name: "classes.csv",
    property: "file.classes",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "title",
        "grades",
        "courseSourcedId",
        "classCode",
        "classType",
        "location",
        "schoolSourcedId",
        "termSourcedIds",
        "subjects",
        "subjectCodes",
        "periods",
    ],
    required: &[
        "sourcedId",
        "title",
        "courseSourcedId",
        "classType",
        "schoolSourcedId",
        "termSourcedIds",
    ],
};

pub const USERS: FileSpec = FileSpec {
    name: "users.csv",
    property: "file.users",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "enabledUser",
        "username",
        "userIds",
        "givenName",
        "familyName",
        "middleName",
        "identifier",
        "email",
        "sms",
        "phone",
        "agentSourcedIds",
        "grades",
        "password",
        "userMasterIdentifier",
        "resourceSourcedIds",
        "preferredGivenName",
        "preferredMiddleName",
        "preferredFamilyName",
        "primaryOrgSourcedId",
        "pronouns",
    ],
    required: &[
        "sourcedId",
        "enabledUser",
        "username",
        "givenName",
        "familyName",
    ],
};

pub const ROLES: FileSpec = FileSpec {
    name: "roles.csv",
    property: "file.roles",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "userSourcedId",
        "roleType",
        "role",
        "beginDate",
        "endDate",
        "orgSourcedId",
        "userProfileSourcedId",
    ],
    required: &[
        "sourcedId",
        "userSourcedId",
        "roleType",
        "role",
        "orgSourcedId",
    ],
};

pub const ENROLLMENTS: FileSpec = FileSpec {
    name: "enrollments.csv",
    property: "file.enrollments",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "classSourcedId",
        "schoolSourcedId",
        "userSourcedId",
        "role",
        "primary",
        "beginDate",
        "endDate",
    ],
    required: &[
        "sourcedId",
        "classSourcedId",
        "schoolSourcedId",
        "userSourcedId",
        "role",
    ],
};

pub const DEMOGRAPHICS: FileSpec = FileSpec {
    name: "demographics.csv",
    property: "file.demographics",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "birthDate",
        "sex",
        "americanIndianOrAlaskaNative",
        "asian",
        "blackOrAfricanAmerican",
        "nativeHawaiianOrOtherPacificIslander",
        "white",
        "demographicRaceTwoOrMoreRaces",
        "hispanicOrLatinoEthnicity",
        "countryOfBirthCode",
        "stateOfBirthAbbreviation",
        "cityOfBirth",
        "publicSchoolResidenceStatus",
    ],
    required: &["sourcedId"],
};

pub const USER_PROFILES: FileSpec = FileSpec {
    name: "userProfiles.csv",
    property: "file.userProfiles",
    columns: &[
        "sourcedId",
        "status",
        "dateLastModified",
        "userSourcedId",
        "profileType",
        "vendorId",
        "applicationId",
        "description",
        "credentialType",
        "username",
        "password",
    ],
    required: &[
        "sourcedId",
        "userSourcedId",
        "profileType",
        "vendorId",
        "username",
    ],
};

/// The rostering files Santong writes, in the order it writes them.
pub const ROSTER_FILES: [FileSpec; 9] = [
    ORGS,
    ACADEMIC_SESSIONS,
    COURSES,
    CLASSES,
    USERS,
    ROLES,
    DEMOGRAPHICS,
    ENROLLMENTS,
    USER_PROFILES,
];

/// The gradebook and resource files of the binding, which Santong neither writes nor reads: the
/// manifest names them `absent`.
pub const ABSENT_FILES: [&str; 11] = [
    "file.categories",
    "file.classResources",
    "file.courseResources",
    "file.lineItemLearningObjectiveIds",
    "file.lineItems",
    "file.lineItemScoreScales",
    "file.resources",
    "file.resultLearningObjectiveIds",
    "file.results",
    "file.resultScoreScales",
    "file.scoreScales",
];

/// How the manifest says a file is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every record of the sender's scope: what is not listed is gone.
    Bulk,
    /// Changes only.
    Delta,
    Absent,
}

impl Delivery {
    /// Case and spaces forgiven; anything else is no answer.
    pub fn parse(s: &str) -> Option<Delivery> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bulk" => Some(Delivery::Bulk),
            "delta" => Some(Delivery::Delta),
            "absent" | "" => Some(Delivery::Absent),
            _ => None,
        }
    }
}

/// A record's `status`: blank is active (1.0 feeds and many bulk files leave it empty).
pub fn to_be_deleted(status: &str) -> bool {
    status.trim().eq_ignore_ascii_case("tobedeleted")
}

/// The values of a multi-value cell (`"09,10"`, `{a,b}` is not the binding but is met).
pub fn values(cell: &str) -> impl Iterator<Item = &str> {
    cell.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The CEDS grade code of grade 1–12 (`03`).
pub fn grade_code(grade: i32) -> String {
    format!("{grade:02}")
}

/// Grade 1–12 from a CEDS code (`03`, `3`); kindergarten and the rest are not grades here.
pub fn grade_of(code: &str) -> Option<i32> {
    code.trim()
        .parse::<i32>()
        .ok()
        .filter(|g| (1..=12).contains(g))
}

/// Two-character surnames common enough that splitting after the first character would be wrong.
const COMPOUND_SURNAMES: [&str; 20] = [
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "令狐", "端木", "独孤", "南宫", "西门", "呼延",
];

/// A name as (familyName, givenName). A Chinese name is surname first; a name with a space is
/// split at its last space the other way round (`Ayşe Kaya` → `Kaya`, `Ayşe`). Joining the two
/// parts as [`join_name`] does gives the name back.
pub fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    if let Some((given, family)) = name.rsplit_once(' ') {
        return (family.to_owned(), given.to_owned());
    }
    if name.chars().count() > 2
        && let Some(s) = COMPOUND_SURNAMES.iter().find(|s| name.starts_with(**s))
    {
        return ((*s).to_owned(), name[s.len()..].to_owned());
    }
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => (first.to_string(), chars.as_str().to_owned()),
        None => (String::new(), String::new()),
    }
}

/// The name from its two parts, as [`split_name`] made them.
pub fn join_name(family: &str, given: &str) -> String {
    let (family, given) = (family.trim(), given.trim());
    let latin = |s: &str| s.chars().any(|c| c.is_ascii_alphabetic());
    if latin(family) || latin(given) {
        format!("{given} {family}").trim().to_owned()
    } else {
        format!("{family}{given}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_join_back() {
        for (name, family, given) in [
            ("王小明", "王", "小明"),
            ("欧阳娜娜", "欧阳", "娜娜"),
            ("欧阳", "欧", "阳"),
            ("李", "李", ""),
            ("Ayşe Kaya", "Kaya", "Ayşe"),
        ] {
            assert_eq!(split_name(name), (family.to_owned(), given.to_owned()));
            assert_eq!(join_name(family, given), name);
        }
    }

    #[test]
    fn multi_value_cells_and_grades() {
        assert_eq!(values("09, 10,11").collect::<Vec<_>>(), ["09", "10", "11"]);
        assert_eq!(values("{a,b}").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(values(" ").count(), 0);
        assert_eq!(grade_of("03"), Some(3));
        assert_eq!(grade_of("KG"), None);
        assert_eq!(grade_of("13"), None);
        assert_eq!(grade_code(3), "03");
    }

    #[test]
    fn every_required_column_is_a_column_and_status_is_forgiving() {
        for f in ROSTER_FILES {
            for r in f.required {
                assert!(f.columns.contains(r), "{} {r}", f.name);
            }
            assert_eq!(f.columns[0], "sourcedId");
        }
        assert!(to_be_deleted(" TobeDeleted "));
        assert!(!to_be_deleted(""));
        assert_eq!(Delivery::parse("BULK"), Some(Delivery::Bulk));
        assert_eq!(Delivery::parse("whenever"), None);
    }
}
