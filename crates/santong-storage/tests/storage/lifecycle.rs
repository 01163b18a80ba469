use chrono::NaiveDate;
use santong_domain::identity::{Node, Permission, Role, Scope};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::lifecycle::{BatchTarget, Exception, NewEvent, YearEnd, YearEndInput};
use santong_storage::registry::{Registry, RegistryError, SchoolInput};
use santong_storage::students::Students;
use santong_testkit::TestDb;

use super::students::{node, person, problems, pupil, ready};

santong_testkit::conformance!(
    events_change_status_and_the_past_stays_answerable,
    mistakes_are_undone_by_compensating_events,
    year_end_batch_runs_dry_then_applies_and_undoes,
    corrections_keep_their_lineage_and_the_number_follows_the_id,
);

fn on(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

pub(super) fn ev(kind: &str, date: &str, reason: &str) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        effective_on: date.into(),
        reason: reason.into(),
        approval_ref: String::new(),
    }
}

async fn roster_names(t: &TestDb, school: &str, date: NaiveDate) -> Vec<(String, i32, String)> {
    Students(&t.db)
        .roster(&Scope::everything(), school, date, 100, 0)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.student.name, p.grade, p.status))
        .collect()
}

async fn events_change_status_and_the_past_stays_answerable(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let all = Scope::everything();
    let mut p = pupil("李明", "2016-03-01", String::new(), "1");
    p.enrolled_on = "2023-09-01".into();
    let id = s
        .enrol(Actor::Cli, "1144030501", &p)
        .await
        .unwrap()
        .student
        .id;
    s.record(
        Actor::Cli,
        &all,
        id,
        &ev("repeat", "2024-09-01", "病假过长"),
    )
    .await
    .unwrap();
    s.record(Actor::Cli, &all, id, &ev("suspend", "2025-03-01", "病休"))
        .await
        .unwrap();
    // Suspended: no promotion, no second suspension.
    for kind in ["skip", "suspend", "graduate"] {
        let got = s
            .record(Actor::Cli, &all, id, &ev(kind, "2025-03-02", "x"))
            .await;
        assert_eq!(
            problems(got.unwrap_err()),
            [("kind".into(), "student-event-not-now")]
        );
    }
    s.record(Actor::Cli, &all, id, &ev("resume", "2025-04-01", "康复"))
        .await
        .unwrap();
    s.record(
        Actor::Cli,
        &all,
        id,
        &ev("drop_out", "2025-06-01", "随父母外出"),
    )
    .await
    .unwrap();
    let lm = |st: &str| vec![("李明".to_string(), 1, st.to_string())];
    assert_eq!(
        roster_names(&t, "1144030501", on(2023, 8, 31)).await,
        vec![]
    );
    assert_eq!(
        roster_names(&t, "1144030501", on(2024, 10, 1)).await,
        lm("in")
    );
    assert_eq!(
        roster_names(&t, "1144030501", on(2025, 3, 15)).await,
        lm("suspended"),
        "a suspended student keeps the place"
    );
    let county = RegionCode::parse("440305").unwrap();
    let db = &t.db;
    let enrolled = |d| async move {
        Students(db)
            .enrolment(&Scope::everything(), county, d)
            .await
            .unwrap()
            .iter()
            .map(|r| r.students)
            .sum::<i64>()
    };
    assert_eq!(
        enrolled(on(2025, 3, 15)).await,
        0,
        "…but is not counted as attending"
    );
    assert_eq!(enrolled(on(2025, 4, 15)).await, 1);
    assert_eq!(roster_names(&t, "1144030501", on(2025, 7, 1)).await, vec![]);
    // Off the roster, the record is still found, with where they left from.
    let now = s.student(&all, id).await.unwrap().unwrap();
    assert_eq!(
        (now.status.as_str(), now.kind.as_str()),
        ("out", "drop_out")
    );
    let history = s.events(&all, id).await.unwrap();
    let kinds: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.kind.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("enrol", "10"),
            ("repeat", "02"),
            ("suspend", "11"),
            ("resume", "12"),
            ("drop_out", "31")
        ]
    );
    assert_eq!(history[1].from_grade, Some(1));
    // Back after dropping out; nothing may be dated before the event in force; unknown and
    // non-manual kinds and empty reasons are refused field by field.
    let got = s
        .record(Actor::Cli, &all, id, &ev("resume", "2025-05-01", "返校"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("effective_on".into(), "student-event-before-last")]
    );
    let got = s
        .record(Actor::Cli, &all, id, &ev("enrol", "2099-01-01", " "))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [
            ("kind".into(), "student-event-bad-kind"),
            ("effective_on".into(), "student-event-bad-date"),
            ("reason".into(), "student-event-reason")
        ]
    );
    s.record(Actor::Cli, &all, id, &ev("resume", "2025-09-01", "返校"))
        .await
        .unwrap();
    assert_eq!(
        roster_names(&t, "1144030501", on(2025, 9, 1)).await,
        lm("in")
    );
    // Grade rules: skipping beyond the school's grades, graduating from a middle grade.
    let got = s
        .record(Actor::Cli, &all, id, &ev("graduate", "", "x"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("kind".into(), "student-graduate-not-last")]
    );
    let mut nine = pupil("王九", "2012-03-01", String::new(), "9");
    nine.enrolled_on = "2025-09-01".into();
    let nine = s
        .enrol(Actor::Cli, "1144030501", &nine)
        .await
        .unwrap()
        .student
        .id;
    let got = s.record(Actor::Cli, &all, nine, &ev("skip", "", "x")).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("kind".into(), "student-event-grade")]
    );
    s.record(Actor::Cli, &all, nine, &ev("graduate", "", "毕业"))
        .await
        .unwrap();

    // Scope: another school's head does not find the student; a teacher may look, not act.
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.9",
    };
    let scope_b = head_b.scope(Permission::RegistryView);
    let got = s
        .record(who(&head_b), &scope_b, id, &ev("suspend", "", "越界"))
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    assert!(s.events(&scope_b, id).await.unwrap().is_empty());
    let teacher = person(&t, "teacher.a", Role::Teacher, node("1144030501", "440305")).await;
    let got = s
        .record(
            who(&teacher),
            &teacher.scope(Permission::RegistryView),
            id,
            &ev("suspend", "", "越权"),
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let head_a = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    s.record(
        who(&head_a),
        &head_a.scope(Permission::RegistryView),
        id,
        &ev("suspend", "", "病休"),
    )
    .await
    .unwrap();
}

async fn mistakes_are_undone_by_compensating_events(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let all = Scope::everything();
    let mut p = pupil("张三", "2016-03-01", String::new(), "2");
    p.enrolled_on = "2024-09-01".into();
    let enrolment = s.enrol(Actor::Cli, "1144030501", &p).await.unwrap();
    let id = enrolment.student.id;
    let oops = s
        .record(
            Actor::Cli,
            &all,
            id,
            &ev("drop_out", "2025-03-01", "误操作"),
        )
        .await
        .unwrap();
    assert!(
        roster_names(&t, "1144030501", on(2025, 5, 1))
            .await
            .is_empty()
    );
    let undo = s
        .undo(Actor::Cli, &all, id, oops.id, "录错了")
        .await
        .unwrap();
    assert_eq!((undo.kind.as_str(), undo.undoes), ("undo", Some(oops.id)));
    // The past is answered as now known: the student never left.
    assert_eq!(
        roster_names(&t, "1144030501", on(2025, 5, 1)).await,
        [("张三".to_string(), 2, "in".to_string())]
    );
    let history = s.events(&all, id).await.unwrap();
    assert_eq!(history.len(), 3, "nothing deleted");
    assert_eq!(history[1].undone_by, Some(undo.id));
    // Only the event in force, and never the enrolment.
    let got = s.undo(Actor::Cli, &all, id, oops.id, "再撤").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("event".into(), "student-undo-not-latest")]
    );
    let enrol_event = history[0].id;
    let got = s.undo(Actor::Cli, &all, id, enrol_event, "撤入学").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("event".into(), "student-undo-enrol")]
    );
    let got = s.undo(Actor::Cli, &all, id, enrol_event, "").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("reason".into(), "student-event-reason")]
    );
}

async fn year_end_batch_runs_dry_then_applies_and_undoes(t: TestDb) {
    ready(&t).await;
    for (code, kind) in [("1144030503", "211"), ("1144030504", "311")] {
        Registry(&t.db)
            .create_school(
                Actor::Cli,
                &SchoolInput {
                    code: code.into(),
                    name: format!("学校{code}"),
                    kind: kind.into(),
                    urban_rural: "111".into(),
                    county: "440305".into(),
                    opened_on: "2000-09-01".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let s = Students(&t.db);
    let all = Scope::everything();
    let enrol =
        |school: &'static str, name: &'static str, birth: &'static str, grade: &'static str| {
            let s = Students(&t.db);
            async move {
                let mut p = pupil(name, birth, String::new(), grade);
                p.enrolled_on = "2024-09-01".into();
                s.enrol(Actor::Cli, school, &p).await.unwrap().student.id
            }
        };
    enrol("1144030501", "一年级", "2018-03-01", "1").await;
    enrol("1144030501", "五年级", "2014-03-01", "5").await;
    enrol("1144030501", "九年级", "2010-03-01", "9").await;
    let resting = enrol("1144030501", "休学生", "2016-03-01", "3").await;
    s.record(
        Actor::Cli,
        &all,
        resting,
        &ev("suspend", "2025-03-01", "病休"),
    )
    .await
    .unwrap();
    // Enrolled at 4 in grade 2 (three years off: allowed), in grade 3 at 5: flagged, still promoted.
    enrol("1144030501", "小年龄", "2020-06-01", "2").await;
    enrol("1144030503", "小学毕业", "2013-03-01", "6").await;
    enrol("1144030502", "别校生", "2017-03-01", "2").await;

    let y = YearEnd(&t.db);
    let school = BatchTarget::School("1144030501".into());
    let input = YearEndInput {
        effective_on: "2025-09-01".into(),
        receiving_school: String::new(),
    };
    let plan = y.plan(&Actor::Cli, &school, &input).await.unwrap();
    assert_eq!(
        (plan.promoted, plan.graduated, plan.progressed, plan.skipped),
        (3, 1, 0, 1)
    );
    let mut flagged: Vec<(String, Exception)> = plan
        .exceptions
        .iter()
        .map(|e| (e.name.clone(), e.exception))
        .collect();
    flagged.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        flagged,
        [
            ("休学生".to_string(), Exception::Suspended),
            ("小年龄".to_string(), Exception::AgeOutlier)
        ]
    );
    // The dry run wrote nothing.
    let before = roster_names(&t, "1144030501", on(2025, 9, 1)).await;
    assert_eq!(before.len(), 5);

    let batch = y.apply(Actor::Cli, &school, &input).await.unwrap();
    assert_eq!((batch.promoted, batch.graduated, batch.skipped), (3, 1, 1));
    let after = roster_names(&t, "1144030501", on(2025, 9, 1)).await;
    // (Sorted here: name collation differs between the backends.)
    let mut grades: Vec<(String, i32)> = after.iter().map(|r| (r.0.clone(), r.1)).collect();
    grades.sort();
    assert_eq!(
        grades,
        [
            ("一年级".to_string(), 2),
            ("五年级".to_string(), 6),
            ("休学生".to_string(), 3),
            ("小年龄".to_string(), 3)
        ],
        "promoted, the suspended student left alone, grade 9 graduated"
    );
    assert_eq!(
        roster_names(&t, "1144030501", on(2025, 8, 31)).await.len(),
        5
    );
    // Run again: everyone has moved on already.
    let again = y.apply(Actor::Cli, &school, &input).await;
    assert_eq!(
        problems(again.unwrap_err()),
        [("batch".into(), "batch-nothing")]
    );
    // Nor a day later: one promotion per school year.
    let next_day = YearEndInput {
        effective_on: "2025-09-02".into(),
        receiving_school: String::new(),
    };
    let again = y.apply(Actor::Cli, &school, &next_day).await;
    assert_eq!(
        problems(again.unwrap_err()),
        [("batch".into(), "batch-nothing")]
    );

    // A primary school's last grade goes on to a receiving junior secondary school.
    let primary = BatchTarget::School("1144030503".into());
    let bad = YearEndInput {
        effective_on: "2025-09-01".into(),
        receiving_school: "1144030501".into(),
    };
    let got = y.apply(Actor::Cli, &primary, &bad).await;
    assert!(got.is_ok(), "a nine-year school takes grade 7 too: {got:?}");
    y.undo(Actor::Cli, &all, got.unwrap().id).await.unwrap();
    let wrong = YearEndInput {
        effective_on: "2025-09-01".into(),
        receiving_school: "1144030503".into(),
    };
    let got = y.apply(Actor::Cli, &primary, &wrong).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("receiving_school".into(), "batch-bad-receiving")]
    );
    let onward = YearEndInput {
        effective_on: "2025-09-01".into(),
        receiving_school: "1144030504".into(),
    };
    // A school's head cannot put its leavers on another school's roster: the county can.
    let head_p = person(
        &t,
        "head.p",
        Role::SchoolAdmin,
        node("1144030503", "440305"),
    )
    .await;
    let got = y
        .plan(
            &Actor::User {
                principal: &head_p,
                ip: "10.0.0.9",
            },
            &primary,
            &onward,
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("receiving_school".into(), "batch-bad-receiving")]
    );
    let b2 = y.apply(Actor::Cli, &primary, &onward).await.unwrap();
    assert_eq!(b2.progressed, 1);
    assert_eq!(
        roster_names(&t, "1144030504", on(2025, 9, 1)).await,
        [("小学毕业".to_string(), 7, "in".to_string())]
    );

    // Undo is refused while a student of the batch has a later event, then goes through.
    let one = after
        .iter()
        .find(|r| r.0 == "一年级")
        .map(|r| r.0.clone())
        .unwrap();
    let one_id = s
        .roster(&all, "1144030501", on(2025, 9, 1), 100, 0)
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.student.name == one)
        .unwrap()
        .student
        .id;
    let later = s
        .record(
            Actor::Cli,
            &all,
            one_id,
            &ev("suspend", "2025-10-01", "病休"),
        )
        .await
        .unwrap();
    // Back at school after the batch: still promoted once this school year, not twice.
    let resumed = s
        .record(
            Actor::Cli,
            &all,
            one_id,
            &ev("resume", "2025-10-02", "康复"),
        )
        .await
        .unwrap();
    let later_batch = YearEndInput {
        effective_on: "2025-10-03".into(),
        receiving_school: String::new(),
    };
    let got = y.apply(Actor::Cli, &school, &later_batch).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("batch".into(), "batch-nothing")]
    );
    let got = y.undo(Actor::Cli, &all, batch.id).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("batch".into(), "batch-later-events")]
    );
    assert!(
        y.batch(&all, batch.id)
            .await
            .unwrap()
            .unwrap()
            .undone_at
            .is_none(),
        "the refused undo left the batch as it was"
    );
    s.undo(Actor::Cli, &all, one_id, resumed.id, "录错了")
        .await
        .unwrap();
    s.undo(Actor::Cli, &all, one_id, later.id, "录错了")
        .await
        .unwrap();
    let undone = y.undo(Actor::Cli, &all, batch.id).await.unwrap();
    assert!(undone.undone_at.is_some());
    let mut back = roster_names(&t, "1144030501", on(2025, 9, 1)).await;
    let mut before = before;
    back.sort();
    before.sort();
    assert_eq!(back, before);
    let got = y.undo(Actor::Cli, &all, batch.id).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("batch".into(), "batch-already-undone")]
    );

    // Scope: a county batch needs the county; another school's head finds neither school nor
    // batch; a teacher may not run one.
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.9",
    };
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let got = y.plan(&who(&head_b), &school, &input).await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    let got = y
        .plan(&who(&head_b), &BatchTarget::County("440305".into()), &input)
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    assert!(
        y.batch(&head_b.scope(Permission::RegistryView), b2.id)
            .await
            .unwrap()
            .is_none()
    );
    let teacher = person(&t, "teacher.a", Role::Teacher, node("1144030501", "440305")).await;
    let got = y.plan(&who(&teacher), &school, &input).await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let official = person(
        &t,
        "county.edu",
        Role::Official,
        Node::Region(RegionCode::parse("440305").unwrap()),
    )
    .await;
    let county = BatchTarget::County("440305".into());
    let plan = y.plan(&who(&official), &county, &input).await.unwrap();
    // Both middle-school rosters (the progressed student moved already), the other school's
    // grade 2, and the undone batch's students again.
    assert_eq!((plan.promoted, plan.graduated), (4, 1));
    let done = y.apply(who(&official), &county, &input).await.unwrap();
    assert!(
        y.batches(&official.scope(Permission::RegistryView), 10)
            .await
            .unwrap()
            .iter()
            .any(|b| b.id == done.id)
    );
}

async fn corrections_keep_their_lineage_and_the_number_follows_the_id(t: TestDb) {
    use santong_storage::students::Correction;
    ready(&t).await;
    let s = Students(&t.db);
    let all = Scope::everything();
    let mut p = pupil("王小二", "2016-03-01", String::new(), "3");
    p.enrolled_on = "2024-09-01".into();
    let placed = s.enrol(Actor::Cli, "1144030501", &p).await.unwrap();
    let id = placed.student.id;
    assert!(placed.student.student_number.starts_with('J'));
    let idn = super::students::id("440305", "20160301", 13);
    // Nothing changed, a bad ID, no reason: refused, nothing written.
    let same = Correction {
        name: "王小二".into(),
        reason: "核对".into(),
        ..Default::default()
    };
    let got = s.correct(Actor::Cli, &all, id, &same).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("reason".into(), "student-nothing-to-correct")]
    );
    let wrong = Correction {
        id_number: super::students::id("440305", "20160302", 13),
        reason: "补录身份证件号".into(),
        ..Default::default()
    };
    let got = s.correct(Actor::Cli, &all, id, &wrong).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("id_number".into(), "student-id-birth-mismatch")]
    );
    // The right ID and a corrected name: the number becomes G + ID, the lineage is kept.
    let fixed = s
        .correct(
            Actor::Cli,
            &all,
            id,
            &Correction {
                name: "王晓二".into(),
                id_number: idn.clone(),
                reason: "按户口簿更正".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fixed.student.student_number, format!("G{idn}"));
    assert_eq!(fixed.student.name, "王晓二");
    let lineage = s.corrections(&all, id).await.unwrap();
    let fields: Vec<&str> = lineage.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields.len(), 3);
    for f in ["name", "id_number", "student_number"] {
        assert!(fields.contains(&f), "{f}");
    }
    let shown = lineage
        .iter()
        .find(|c| c.field == "id_number")
        .unwrap()
        .shown();
    assert_eq!(shown.0, "");
    assert!(!shown.1.contains(&idn[6..17]), "masked");
    // The same child is not given a second official number: not by correction.
    let other = s
        .enrol(
            Actor::Cli,
            "1144030502",
            &pupil("李四", "2016-03-01", String::new(), "3"),
        )
        .await
        .unwrap()
        .student
        .id;
    let got = s
        .correct(
            Actor::Cli,
            &all,
            other,
            &Correction {
                id_number: idn.clone(),
                reason: "补录".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("id_number".into(), "student-already-enrolled")]
    );
    // Scope: another school's head does not find the record; a teacher may not correct it.
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let got = s
        .correct(
            Actor::User {
                principal: &head_b,
                ip: "10.0.0.1",
            },
            &head_b.scope(Permission::RegistryView),
            id,
            &same,
        )
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    assert!(
        s.corrections(&head_b.scope(Permission::RegistryView), id)
            .await
            .unwrap()
            .is_empty()
    );
    let teacher = person(&t, "teacher.a", Role::Teacher, node("1144030501", "440305")).await;
    let got = s
        .correct(
            Actor::User {
                principal: &teacher,
                ip: "10.0.0.2",
            },
            &teacher.scope(Permission::RegistryView),
            id,
            &same,
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
}
