//! Identity rules: roles and their permissions, the nodes roles are granted at, the scope a set of
//! grants gives, the password policy, and the sign-in throttle.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::region::RegionCode;

/// What a role allows. Checked in handlers; the *where* is the [`Scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// See accounts in scope.
    UsersView,
    /// Create, disable and reset accounts in scope.
    UsersManage,
    /// Reset the passwords of student accounts in scope.
    StudentPasswordsReset,
    /// Grant and revoke roles in scope; unlock accounts; edit security policy.
    GrantsManage,
    /// Read and export the audit log.
    AuditRead,
    /// Run the system: settings, jobs, reference data.
    SystemOperate,
    /// See the registry in scope: schools, and later classes, students and teachers.
    RegistryView,
    /// Change the registry in scope (schools: at the county or above).
    RegistryManage,
    /// See students' sensitive flags (left-behind, migrant, disability) in scope.
    SensitiveView,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        Permission::UsersView,
        Permission::UsersManage,
        Permission::StudentPasswordsReset,
        Permission::GrantsManage,
        Permission::AuditRead,
        Permission::SystemOperate,
        Permission::RegistryView,
        Permission::RegistryManage,
        Permission::SensitiveView,
    ];

    /// The name used in API token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::UsersView => "users_view",
            Permission::UsersManage => "users_manage",
            Permission::StudentPasswordsReset => "student_passwords_reset",
            Permission::GrantsManage => "grants_manage",
            Permission::AuditRead => "audit_read",
            Permission::SystemOperate => "system_operate",
            Permission::RegistryView => "registry_view",
            Permission::RegistryManage => "registry_manage",
            Permission::SensitiveView => "sensitive_view",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s.trim())
    }
}

/// A role. The three admin roles are the separated duties (三权分立): no account holds two of
/// them, and none of them is combined with an ordinary role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SystemAdmin,
    SecurityAdmin,
    AuditAdmin,
    /// Education bureau official (ministry, province, city or county), granted at a region.
    Official,
    SchoolAdmin,
    Teacher,
    Student,
    Parent,
    /// Resource provider (company).
    Provider,
    /// Expert reviewer of featured lessons.
    Reviewer,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::SystemAdmin,
        Role::SecurityAdmin,
        Role::AuditAdmin,
        Role::Official,
        Role::SchoolAdmin,
        Role::Teacher,
        Role::Student,
        Role::Parent,
        Role::Provider,
        Role::Reviewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemAdmin => "system_admin",
            Role::SecurityAdmin => "security_admin",
            Role::AuditAdmin => "audit_admin",
            Role::Official => "official",
            Role::SchoolAdmin => "school_admin",
            Role::Teacher => "teacher",
            Role::Student => "student",
            Role::Parent => "parent",
            Role::Provider => "provider",
            Role::Reviewer => "reviewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s.trim())
    }

    /// One of the three separated admin duties.
    pub fn is_admin_duty(self) -> bool {
        matches!(
            self,
            Role::SystemAdmin | Role::SecurityAdmin | Role::AuditAdmin
        )
    }

    /// Roles whose sessions are short and whose passwords expire (officials and admins).
    pub fn is_privileged(self) -> bool {
        self.is_admin_duty() || matches!(self, Role::Official | Role::SchoolAdmin)
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::SystemAdmin => &[UsersView, UsersManage, SystemOperate],
            Role::SecurityAdmin => &[UsersView, GrantsManage],
            Role::AuditAdmin => &[AuditRead],
            Role::Official => &[UsersView, RegistryView, RegistryManage],
            Role::SchoolAdmin => &[
                UsersView,
                UsersManage,
                StudentPasswordsReset,
                RegistryView,
                RegistryManage,
                SensitiveView,
            ],
            Role::Teacher => &[StudentPasswordsReset, RegistryView],
            Role::Student | Role::Parent | Role::Provider | Role::Reviewer => &[],
        }
    }

    /// Which roles a holder of `self` may grant to someone else (inside the holder's scope).
    pub fn may_grant(self, other: Role) -> bool {
        match self {
            // The security admin grants every role except the separated admin duties, which are
            // created with their accounts by the system admin during setup.
            Role::SecurityAdmin => !other.is_admin_duty(),
            Role::SchoolAdmin => matches!(other, Role::Teacher | Role::Student | Role::Parent),
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 10-digit school identification code (学校标识码).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SchoolCode(u64);

impl SchoolCode {
    pub fn parse(s: &str) -> Option<SchoolCode> {
        let s = s.trim();
        (s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok().map(SchoolCode))
            .flatten()
    }
}

impl fmt::Display for SchoolCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}", self.0)
    }
}

impl TryFrom<String> for SchoolCode {
    type Error = &'static str;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SchoolCode::parse(&s).ok_or("a school code has ten digits")
    }
}

impl From<SchoolCode> for String {
    fn from(c: SchoolCode) -> String {
        c.to_string()
    }
}

/// Where a role is granted and where an account belongs: the nation, a region, or a school (which
/// lies in a county).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Node {
    Nation,
    Region(RegionCode),
    School {
        code: SchoolCode,
        county: RegionCode,
    },
}

impl Node {
    /// The code written in grants and shown to users: `000000` for the nation.
    pub fn code(&self) -> String {
        match self {
            Node::Nation => "000000".into(),
            Node::Region(r) => r.to_string(),
            Node::School { code, .. } => code.to_string(),
        }
    }

    /// The region part: for a school, its county.
    pub fn region(&self) -> Option<RegionCode> {
        match self {
            Node::Nation => None,
            Node::Region(r) => Some(*r),
            Node::School { county, .. } => Some(*county),
        }
    }

    /// True when `other` lies in this node's subtree (itself included).
    pub fn contains(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::Nation, _) => true,
            (_, Node::Nation) => false,
            (Node::Region(r), o) => o.region().is_some_and(|c| region_contains(*r, c)),
            // Until the registry vouches for school codes, a school is its code *and* county: a
            // grant naming another county's school code reaches nobody there.
            (Node::School { code, county }, Node::School { code: c, county: k }) => {
                code == c && county == k
            }
            (Node::School { .. }, Node::Region(_)) => false,
        }
    }
}

/// Region containment from the code structure alone: a province holds every code with its first
/// two digits, a prefecture every code with its first four, a county only itself. This matches the
/// tree because a county's parent is its XXYY00 prefecture whenever that exists.
pub fn region_contains(outer: RegionCode, inner: RegionCode) -> bool {
    if outer.is_province_shaped() {
        inner.province() == outer
    } else if outer.is_prefecture_shaped() {
        inner.prefecture() == outer && inner != inner.province()
    } else {
        outer == inner
    }
}

/// The LIKE pattern matching every region code inside `r` (`44%`, `4403%`, `440305`).
pub fn region_prefix_pattern(r: RegionCode) -> String {
    let s = r.to_string();
    if r.is_province_shaped() {
        format!("{}%", &s[..2])
    } else if r.is_prefecture_shaped() {
        format!("{}%", &s[..4])
    } else {
        s
    }
}

/// The part of the tree a caller may see for one permission: the union of the nodes of the
/// grants that carry it. Storage turns it into a WHERE clause; an empty scope sees nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub nation: bool,
    pub regions: Vec<RegionCode>,
    /// Schools as (code, county).
    pub schools: Vec<(SchoolCode, RegionCode)>,
}

impl Scope {
    pub fn everything() -> Self {
        Scope {
            nation: true,
            ..Scope::default()
        }
    }

    pub fn of_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        let mut s = Scope::default();
        for n in nodes {
            match n {
                Node::Nation => s.nation = true,
                Node::Region(r) => s.regions.push(*r),
                Node::School { code, county } => s.schools.push((*code, *county)),
            }
        }
        s.regions.sort();
        s.regions.dedup();
        s.schools.sort();
        s.schools.dedup();
        s
    }

    pub fn is_empty(&self) -> bool {
        !self.nation && self.regions.is_empty() && self.schools.is_empty()
    }

    pub fn contains(&self, node: &Node) -> bool {
        self.nation
            || self.regions.iter().any(|r| Node::Region(*r).contains(node))
            || match node {
                Node::School { code, county } => self.schools.contains(&(*code, *county)),
                _ => false,
            }
    }
}

/// Password rules; the defaults follow 等保 level 3 for privileged accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    pub min_length: usize,
    /// How many of: lower case, upper case, digits, other characters.
    pub min_classes: usize,
    /// Earlier passwords that may not be reused.
    pub history: usize,
    /// Days before officials and admins must change their password; 0 = never.
    pub max_age_days_privileged: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            min_classes: 3,
            history: 5,
            max_age_days_privileged: 90,
        }
    }
}

/// Why a new password is refused. Each is an i18n key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PasswordProblem {
    TooShort,
    TooFewClasses,
    Common,
    ContainsUsername,
    Reused,
}

impl PasswordProblem {
    pub fn key(self) -> &'static str {
        match self {
            PasswordProblem::TooShort => "password-too-short",
            PasswordProblem::TooFewClasses => "password-too-few-classes",
            PasswordProblem::Common => "password-common",
            PasswordProblem::ContainsUsername => "password-contains-username",
            PasswordProblem::Reused => "password-reused",
        }
    }
}

/// Passwords refused whatever the policy: the most common ones in Chinese and global leak lists,
/// and keyboard walks.
const COMMON_PASSWORDS: &[&str] = &[
    "123456",
    "12345678",
    "123456789",
    "1234567890",
    "111111",
    "000000",
    "888888",
    "666666",
    "123123",
    "654321",
    "112233",
    "520520",
    "5201314",
    "1314520",
    "woaini",
    "woaini1314",
    "iloveyou",
    "password",
    "password1",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "admin",
    "admin123",
    "admin@123",
    "root",
    "root123",
    "qwerty",
    "qwerty123",
    "qwertyuiop",
    "1qaz2wsx",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "zxcvbnm",
    "asdfghjkl",
    "abc123",
    "abc12345",
    "abcd1234",
    "a123456",
    "a12345678",
    "aa123456",
    "qq123456",
    "letmein",
    "welcome",
    "welcome1",
    "changeme",
    "huawei123",
    "test123",
    "test1234",
    "abc@123",
    "Aa123456",
    "Abc123456",
    "Abcd1234",
    "Qwer1234",
    "Admin123",
    "Admin@123",
    "Password1",
    "Password@123",
    "P@ssw0rd",
    "Passw0rd!",
    "Aa123456!",
    "santong",
    "santong123",
    "Santong123",
    "Santong@123",
    // Eight or more characters from three classes: what a policy like ours lets through unless
    // listed (admin and school defaults seen in leak lists and vendor manuals).
    "Qq123456",
    "Qq123456!",
    "Zxcv1234",
    "Asdf1234",
    "Abc@1234",
    "Abc123!@#",
    "Qwe123!@#",
    "Aa123456789",
    "Aa112233",
    "Aa123123",
    "Woaini1314",
    "Woaini520",
    "1qaz@WSX",
    "1qaz!QAZ",
    "1qazZAQ!",
    "Zaq12wsx",
    "Qaz123456",
    "Admin@2024",
    "Admin@2025",
    "Admin@2026",
    "Admin@1234",
    "Admin123!",
    "Root@123",
    "Root@1234",
    "Welcome@123",
    "Welcome123",
    "Huawei@123",
    "Huawei12#$",
    "Test@123",
    "Test@1234",
    "Pass@1234",
    "Passw0rd@",
    "P@ssw0rd1",
    "P@ssw0rd123",
    "Password123",
    "Password!",
    "Change_me1",
    "Changeme123",
    "Sa123456",
    "Jiaoyu123",
    "Jiaoyu@123",
    "Xuexiao123",
    "Xuexiao@123",
    "Teacher123",
    "Teacher@123",
    "Student123",
    "Student@123",
    "School@123",
    "Laoshi123",
    "Xuesheng123",
    "Zhongguo123",
    "China@123",
    "China123!",
    "Beijing123",
    "Shenzhen123",
];

impl PasswordPolicy {
    /// Checks a new password (reuse is checked separately against stored hashes).
    pub fn check(&self, username: &str, password: &str) -> Vec<PasswordProblem> {
        let mut problems = vec![];
        if password.chars().count() < self.min_length {
            problems.push(PasswordProblem::TooShort);
        }
        let classes = [
            password.chars().any(|c| c.is_lowercase()),
            password.chars().any(|c| c.is_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_ascii_alphanumeric()),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if classes < self.min_classes {
            problems.push(PasswordProblem::TooFewClasses);
        }
        let lower = password.to_lowercase();
        if COMMON_PASSWORDS.iter().any(|c| c.to_lowercase() == lower) {
            problems.push(PasswordProblem::Common);
        }
        let user = username.trim().to_lowercase();
        if user.chars().count() >= 3 && lower.contains(&user) {
            problems.push(PasswordProblem::ContainsUsername);
        }
        problems
    }
}

/// Limits of the sign-in throttle.
///
/// Three counters: per account (a classmate can hold a teacher off only briefly: escalating waits,
/// capped low) and per account and address (the attacker's own pair: a longer cap), both counted
/// before the password is checked so parallel attempts cannot slip past them; and per address
/// (failures only), which slows an address down but never blocks it, so a whole school behind one
/// NAT address keeps signing in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlePolicy {
    pub account_free_failures: u32,
    pub account_max_lock_secs: u64,
    pub pair_free_failures: u32,
    pub pair_max_lock_secs: u64,
    pub ip_max_failures: u32,
    pub ip_window_secs: u64,
    /// How long the address stays over its limit once it hits it.
    pub ip_lock_secs: u64,
    /// The extra wait of each attempt from an address over its limit.
    pub ip_slow_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            account_max_lock_secs: 300,
            pair_free_failures: 10,
            pair_max_lock_secs: 3600,
            ip_max_failures: 500,
            ip_window_secs: 600,
            ip_lock_secs: 300,
            ip_slow_secs: 2,
        }
    }
}

/// Session lifetimes: short for officials and admins (等保: automatic sign-out when idle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionPolicy {
    pub idle_secs_privileged: u64,
    pub absolute_secs_privileged: u64,
    pub idle_secs: u64,
    pub absolute_secs: u64,
    /// Officials and the admin duties must enrol a second factor (TOTP).
    pub mfa_required_privileged: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            mfa_required_privileged: true,
            idle_secs_privileged: 15 * 60,
            absolute_secs_privileged: 8 * 3600,
            idle_secs: 2 * 3600,
            absolute_secs: 7 * 24 * 3600,
        }
    }
}

/// A user name: 3–32 of `a-z 0-9 . _ -`, starting with a letter or digit, stored in lower case.
/// Real names (Chinese) are display names, not user names.
pub fn parse_username(s: &str) -> Option<String> {
    let u = s.trim().to_ascii_lowercase();
    let ok = (3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && u.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    ok.then_some(u)
}

/// An e-mail address, loosely: one `@`, a dotted domain, no spaces; at most 254 characters.
pub fn parse_email(s: &str) -> Option<String> {
    let e = s.trim();
    let (local, domain) = e.split_once('@')?;
    let ok = e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A mainland mobile number (11 digits from 1[3-9]), with or without `+86`/`86`, spaces or
/// dashes; stored as `+86` and the 11 digits (E.164, as the `phone_number` claim wants).
pub fn parse_mobile(s: &str) -> Option<String> {
    let digits: String = s
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    let national = match digits.len() {
        13 => digits.strip_prefix("86")?,
        11 => digits.as_str(),
        _ => return None,
    };
    let b = national.as_bytes();
    let ok = b.iter().all(u8::is_ascii_digit) && b[0] == b'1' && (b'3'..=b'9').contains(&b[1]);
    ok.then(|| format!("+86{national}"))
}

/// A phone number for lists: `+86 138****5678`.
pub fn mask_phone(p: &str) -> String {
    let national = p.strip_prefix("+86").unwrap_or(p);
    if national.len() == 11 && national.is_ascii() {
        format!("{}****{}", &national[..3], &national[7..])
    } else {
        "****".into()
    }
}

/// The client address as the throttle counts it: IPv4-mapped IPv6 as plain IPv4, and IPv6 by its
/// /64 (one subscriber gets a whole /64, so counting single addresses would give a sprayer
/// unlimited keys). Anything unparsable is kept as is.
pub fn throttle_address(ip: &str) -> String {
    use std::net::IpAddr;
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// How long a counter with `failures` consecutive failures stays locked: nothing up to `free`,
/// then 1 s, 2 s, 4 s … up to `cap`.
pub fn escalating_lock(failures: u32, free: u32, cap: Duration) -> Option<Duration> {
    if failures < free {
        return None;
    }
    let exp = (failures - free).min(20);
    Some(Duration::from_secs(1u64 << exp).min(cap))
}

#[cfg(test)]
mod tests {
    #[test]
    fn contact_details() {
        assert_eq!(
            parse_email(" li@School.CN ").as_deref(),
            Some("li@school.cn")
        );
        assert_eq!(parse_email("no-at.cn"), None);
        assert_eq!(parse_email("a@b"), None);
        assert_eq!(parse_email("a b@c.cn"), None);
        assert_eq!(
            parse_mobile("138 1234 5678").as_deref(),
            Some("+8613812345678")
        );
        assert_eq!(
            parse_mobile("+86-13812345678").as_deref(),
            Some("+8613812345678")
        );
        assert_eq!(parse_mobile("12812345678"), None);
        assert_eq!(parse_mobile("010-12345678"), None);
        assert_eq!(mask_phone("+8613812345678"), "138****5678");
    }

    use super::*;
    use proptest::prelude::*;

    fn rc(s: &str) -> RegionCode {
        RegionCode::parse(s).unwrap()
    }

    fn school(code: &str, county: &str) -> Node {
        Node::School {
            code: SchoolCode::parse(code).unwrap(),
            county: rc(county),
        }
    }

    #[test]
    fn region_containment_follows_the_tree() {
        assert!(region_contains(rc("440000"), rc("440305")));
        assert!(region_contains(rc("440300"), rc("440305")));
        assert!(!region_contains(rc("440300"), rc("440000")));
        assert!(!region_contains(rc("440300"), rc("440100")));
        assert!(region_contains(rc("440305"), rc("440305")));
        assert!(!region_contains(rc("440305"), rc("440306")));
        // Municipality districts hang off the province directly.
        assert!(region_contains(rc("110000"), rc("110105")));
        assert_eq!(region_prefix_pattern(rc("440000")), "44%");
        assert_eq!(region_prefix_pattern(rc("440300")), "4403%");
        assert_eq!(region_prefix_pattern(rc("440305")), "440305");
    }

    #[test]
    fn nodes_and_scopes() {
        let a = school("1144030501", "440305");
        let b = school("1144030502", "440305");
        let c = school("1144010601", "440106");
        assert!(Node::Region(rc("440300")).contains(&a));
        assert!(!Node::Region(rc("440300")).contains(&c));
        assert!(a.contains(&a) && !a.contains(&b));
        assert!(!a.contains(&Node::Region(rc("440305"))));
        let s = Scope::of_nodes(&[a, Node::Region(rc("440100"))]);
        assert!(s.contains(&a) && s.contains(&c) && !s.contains(&b));
        assert!(Scope::default().is_empty() && !Scope::default().contains(&a));
        assert!(Scope::everything().contains(&Node::Nation));
    }

    #[test]
    fn separation_of_duties() {
        for r in Role::ALL {
            assert!(!r.may_grant(Role::SystemAdmin) && !r.may_grant(Role::AuditAdmin));
        }
        assert!(Role::SecurityAdmin.may_grant(Role::Official));
        assert!(Role::SchoolAdmin.may_grant(Role::Teacher));
        assert!(!Role::SchoolAdmin.may_grant(Role::SchoolAdmin));
        assert!(!Role::SystemAdmin.may_grant(Role::Teacher));
        assert_eq!(Role::AuditAdmin.permissions(), &[Permission::AuditRead]);
        assert_eq!(Role::parse("teacher"), Some(Role::Teacher));
    }

    #[test]
    fn password_policy() {
        let p = PasswordPolicy::default();
        assert!(p.check("zhang.san", "Kx9!long-enough").is_empty());
        assert_eq!(p.check("u", "Ab1!"), [PasswordProblem::TooShort]);
        assert_eq!(
            p.check("u", "alllowercase"),
            [PasswordProblem::TooFewClasses]
        );
        assert!(p.check("u", "Admin@123").contains(&PasswordProblem::Common));
        // Common passwords that meet length and classes are refused by the list alone.
        for pw in ["Jiaoyu@123", "1qaz@WSX", "Woaini1314", "Teacher@123"] {
            assert_eq!(p.check("u", pw), vec![PasswordProblem::Common], "{pw}");
        }
        assert!(
            p.check("wangwu", "Wangwu-2024x")
                .contains(&PasswordProblem::ContainsUsername)
        );
        // Chinese characters count as "other" characters and as length.
        assert!(p.check("li", "学习使我快乐2024a").is_empty());
    }

    #[test]
    fn lock_escalates_and_caps() {
        let cap = Duration::from_secs(300);
        assert_eq!(escalating_lock(4, 5, cap), None);
        assert_eq!(escalating_lock(5, 5, cap), Some(Duration::from_secs(1)));
        assert_eq!(escalating_lock(8, 5, cap), Some(Duration::from_secs(8)));
        assert_eq!(escalating_lock(40, 5, cap), Some(cap));
    }

    #[test]
    fn throttle_addresses() {
        assert_eq!(throttle_address("203.0.113.7"), "203.0.113.7");
        assert_eq!(throttle_address("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(
            throttle_address("2001:db8:1:2:aaaa::1"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            throttle_address("2001:db8:1:2:bbbb::9"),
            throttle_address("2001:db8:1:2::5")
        );
        assert_eq!(throttle_address("unknown"), "unknown");
    }

    #[test]
    fn usernames() {
        assert_eq!(parse_username(" Zhang.San "), Some("zhang.san".into()));
        assert_eq!(parse_username("s2024001"), Some("s2024001".into()));
        assert_eq!(parse_username("ab"), None);
        assert_eq!(parse_username("张三"), None);
        assert_eq!(parse_username("-abc"), None);
        assert_eq!(parse_username("a b c"), None);
    }

    proptest! {
        #[test]
        fn containment_agrees_with_prefix_pattern(outer in 10_000u32..1_000_000, inner in 10_000u32..1_000_000) {
            let (o, i) = (RegionCode::parse(&format!("{outer:06}")).unwrap(), RegionCode::parse(&format!("{inner:06}")).unwrap());
            let pat = region_prefix_pattern(o);
            let like = match pat.strip_suffix('%') {
                Some(p) => i.to_string().starts_with(p) && !(o.is_prefecture_shaped() && i == i.province()),
                None => pat == i.to_string(),
            };
            prop_assert_eq!(region_contains(o, i), like);
        }

        #[test]
        fn school_codes_parse_only_ten_digits(s in "\\PC{0,12}") {
            if let Some(c) = SchoolCode::parse(&s) {
                prop_assert_eq!(c.to_string(), s.trim());
            }
        }
    }
}
