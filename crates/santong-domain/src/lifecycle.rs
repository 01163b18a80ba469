//! A student's lifecycle (学籍变动): the kinds of event, the status each leaves the student in,
//! and which event may follow which. Storage derives "where is this student on date D" from the
//! latest event in force; these rules decide whether a new event may be written at all.

use serde::{Deserialize, Serialize};

/// Where an event leaves the student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// 在校: on the school's roster and counted in its enrolment.
    In,
    /// 休学: keeps the place (on the roster, marked) but not counted as attending.
    Suspended,
    /// 离校: left the school's roster (graduated, dropped out, died, went abroad).
    Out,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::In => "in",
            Status::Suspended => "suspended",
            Status::Out => "out",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::In, Status::Suspended, Status::Out]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A kind of student event. The type codes follow the JY/T 1001 学籍异动类别 (XJYDLB) values seen
/// in public schemas where one exists (02 留级, 04 跳级, 11 休学, 12 复学, 22 转入, 31 退学,
/// 51 死亡); the others are Santong's own until the standard's text is checked. A transfer is one
/// `transfer_in` event naming the school left (`from_school`), not a pair of out/in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// 招生入学: the first event of every record.
    Enrol,
    /// 升级: to the next grade at the same school (the year-end batch writes these).
    Promote,
    /// 留级: stays in the same grade for another year.
    Repeat,
    /// 跳级: skips one grade.
    Skip,
    /// 休学.
    Suspend,
    /// 复学: back from suspension, or back after dropping out.
    Resume,
    /// 转入: arrives from another school by an approved transfer.
    TransferIn,
    /// 升学: from the last grade of one stage into the first of the next, at a receiving school.
    Progress,
    /// 辍学/退学.
    DropOut,
    /// 死亡.
    Death,
    /// 出境: left to study abroad.
    Abroad,
    /// 毕业: completed the school's last grade.
    Graduate,
    /// 撤销: a compensating event that cancels an earlier one made by mistake.
    Undo,
    /// 重复学籍合并: a second record of the same child ends, merged into the first.
    Merge,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Enrol,
        EventKind::Promote,
        EventKind::Repeat,
        EventKind::Skip,
        EventKind::Suspend,
        EventKind::Resume,
        EventKind::TransferIn,
        EventKind::Progress,
        EventKind::DropOut,
        EventKind::Death,
        EventKind::Abroad,
        EventKind::Graduate,
        EventKind::Undo,
        EventKind::Merge,
    ];

    /// What a person can record by hand on a student's page (promotion too, for the student the
    /// year-end batch left alone); the others come from enrolment, transfers, the batch and undo.
    pub const MANUAL: [EventKind; 9] = [
        EventKind::Promote,
        EventKind::Repeat,
        EventKind::Skip,
        EventKind::Suspend,
        EventKind::Resume,
        EventKind::DropOut,
        EventKind::Death,
        EventKind::Abroad,
        EventKind::Graduate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enrol => "enrol",
            EventKind::Promote => "promote",
            EventKind::Repeat => "repeat",
            EventKind::Skip => "skip",
            EventKind::Suspend => "suspend",
            EventKind::Resume => "resume",
            EventKind::TransferIn => "transfer_in",
            EventKind::Progress => "progress",
            EventKind::DropOut => "drop_out",
            EventKind::Death => "death",
            EventKind::Abroad => "abroad",
            EventKind::Graduate => "graduate",
            EventKind::Undo => "undo",
            EventKind::Merge => "merge",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The type code (see the type's note on where the values come from).
    pub fn code(self) -> &'static str {
        match self {
            EventKind::Enrol => "10",
            EventKind::Promote => "01",
            EventKind::Repeat => "02",
            EventKind::Skip => "04",
            EventKind::Suspend => "11",
            EventKind::Resume => "12",
            EventKind::TransferIn => "22",
            EventKind::Progress => "23",
            EventKind::DropOut => "31",
            EventKind::Death => "51",
            EventKind::Abroad => "71",
            EventKind::Graduate => "60",
            EventKind::Undo => "90",
            EventKind::Merge => "91",
        }
    }

    /// Whether this event may follow one that left the student `from`. `last_kind` is the kind of
    /// that event (resuming after dropping out is allowed, after death or graduation is not).
    pub fn may_follow(self, from: Status, last_kind: EventKind) -> bool {
        use EventKind as K;
        match self {
            K::Enrol | K::Undo => false,
            K::Promote | K::Repeat | K::Skip | K::Suspend | K::Graduate | K::Progress => {
                from == Status::In
            }
            K::Resume => {
                from == Status::Suspended
                    || (from == Status::Out && matches!(last_kind, K::DropOut | K::Abroad))
            }
            K::DropOut | K::Abroad | K::Merge => from != Status::Out,
            K::Death => from != Status::Out || matches!(last_kind, K::DropOut | K::Abroad),
            // Only a student who is in school can move (not while suspended: national rule).
            K::TransferIn => from == Status::In,
        }
    }

    /// The status the student is in after this event.
    pub fn leaves(self) -> Status {
        use EventKind as K;
        match self {
            K::Enrol
            | K::Promote
            | K::Repeat
            | K::Skip
            | K::Resume
            | K::TransferIn
            | K::Progress => Status::In,
            K::Suspend => Status::Suspended,
            K::DropOut | K::Death | K::Abroad | K::Graduate | K::Merge => Status::Out,
            // Undo rows carry the status of what they undid; it is never read from them.
            K::Undo => Status::Out,
        }
    }

    /// The grade after this event, from the grade before it.
    pub fn grade_after(self, grade: u8) -> u8 {
        match self {
            EventKind::Promote => grade.saturating_add(1),
            EventKind::Skip => grade.saturating_add(2),
            _ => grade,
        }
    }
}

/// A step of a transfer's approval chain (转学审批), in the order the steps are taken. The
/// receiving school starts the transfer, which is its own step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStep {
    ReceivingSchool,
    ReceivingCounty,
    ReceivingProvince,
    SendingProvince,
    SendingSchool,
    SendingCounty,
}

impl TransferStep {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStep::ReceivingSchool => "receiving_school",
            TransferStep::ReceivingCounty => "receiving_county",
            TransferStep::ReceivingProvince => "receiving_province",
            TransferStep::SendingProvince => "sending_province",
            TransferStep::SendingSchool => "sending_school",
            TransferStep::SendingCounty => "sending_county",
        }
    }

    pub fn parse(s: &str) -> Option<TransferStep> {
        Self::chain(true).into_iter().find(|k| k.as_str() == s)
    }

    /// The chain: the two provinces take part only when the transfer crosses a provincial border.
    pub fn chain(cross_province: bool) -> Vec<TransferStep> {
        use TransferStep as T;
        if cross_province {
            vec![
                T::ReceivingSchool,
                T::ReceivingCounty,
                T::ReceivingProvince,
                T::SendingProvince,
                T::SendingSchool,
                T::SendingCounty,
            ]
        } else {
            vec![
                T::ReceivingSchool,
                T::ReceivingCounty,
                T::SendingSchool,
                T::SendingCounty,
            ]
        }
    }
}

/// Per-province transfer rules an operator sets (`santong policy set transfer '{…}'`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferPolicy {
    /// Provinces (two-digit codes, `"44"`) where no transfer is allowed out of or into a
    /// school's last grade.
    pub no_graduating_year_provinces: Vec<String>,
}

impl TransferPolicy {
    /// Whether the rule holds for a school in `county`.
    pub fn no_graduating_year(&self, county: &str) -> bool {
        self.no_graduating_year_provinces
            .iter()
            .any(|p| p.len() == 2 && county.starts_with(p.as_str()))
    }
}

/// Working days each party has to act on a transfer (national rule).
pub const TRANSFER_STEP_WORKING_DAYS: u32 = 10;

/// `n` working days (Monday to Friday) after `from`. Public holidays and the make-up working
/// weekends of the official calendar are not known here, so a deadline near one is a little
/// early; it errs on the side of flagging.
pub fn add_working_days(from: chrono::NaiveDate, n: u32) -> chrono::NaiveDate {
    use chrono::Datelike;
    let mut d = from;
    let mut left = n;
    while left > 0 {
        d = d.succ_opt().unwrap_or(d);
        if d.weekday().number_from_monday() <= 5 {
            left -= 1;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_codes_are_distinct() {
        let mut codes = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert!(codes.insert(k.code()), "duplicate code {}", k.code());
        }
        assert_eq!(EventKind::parse("enrol "), None);
    }

    #[test]
    fn transitions() {
        use EventKind as K;
        assert!(K::Suspend.may_follow(Status::In, K::Enrol));
        assert!(!K::Suspend.may_follow(Status::Suspended, K::Suspend));
        assert!(!K::Promote.may_follow(Status::Suspended, K::Suspend));
        assert!(!K::TransferIn.may_follow(Status::Suspended, K::Suspend));
        assert!(K::Resume.may_follow(Status::Suspended, K::Suspend));
        assert!(K::Resume.may_follow(Status::Out, K::DropOut));
        assert!(!K::Resume.may_follow(Status::Out, K::Graduate));
        assert!(!K::Resume.may_follow(Status::Out, K::Death));
        assert!(!K::Death.may_follow(Status::Out, K::Death));
        assert!(!K::Graduate.may_follow(Status::Out, K::Graduate));
        assert!(!K::Enrol.may_follow(Status::In, K::Enrol));
        assert_eq!(K::Skip.grade_after(3), 5);
        assert_eq!(K::Repeat.grade_after(3), 3);
        assert_eq!(K::DropOut.leaves(), Status::Out);
    }

    #[test]
    fn working_days_skip_weekends_and_chains_follow_the_border() {
        let d = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        // Friday 2026-11-27 + 10 working days = Friday 2026-12-11.
        assert_eq!(add_working_days(d(2026, 11, 27), 10), d(2026, 12, 11));
        // From a Saturday: the next Monday is the first.
        assert_eq!(add_working_days(d(2026, 11, 28), 1), d(2026, 11, 30));
        assert_eq!(TransferStep::chain(false).len(), 4);
        assert_eq!(
            TransferStep::chain(true)[2..4],
            [
                TransferStep::ReceivingProvince,
                TransferStep::SendingProvince
            ]
        );
        for s in TransferStep::chain(true) {
            assert_eq!(TransferStep::parse(s.as_str()), Some(s));
        }
    }
}
