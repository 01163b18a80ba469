use santong_domain::identity::{Node, Permission, Role, Scope};
use santong_domain::lifecycle::{TRANSFER_STEP_WORKING_DAYS, add_working_days};
use santong_domain::region::RegionCode;
use santong_storage::identity::{Actor, Principal};
use santong_storage::lifecycle::NewEvent;
use santong_storage::registry::{Registry, RegistryError, SchoolInput, today};
use santong_storage::students::Students;
use santong_storage::transfers::{NewTransfer, TransferBox, Transfers};
use santong_testkit::TestDb;

use super::students::{node, person, problems, pupil};

santong_testkit::conformance!(
    a_cross_province_transfer_goes_through_every_step,
    transfers_are_refused_rejected_and_raced_cleanly,
    a_staff_move_goes_through_the_same_chain,
);

async fn schools(t: &TestDb) {
    santong_storage::reference::ensure_regions(&t.db)
        .await
        .unwrap();
    for (code, county) in [
        ("1111010501", "110105"),
        ("1144030501", "440305"),
        ("1144030502", "440305"),
        ("1144030503", "440305"),
    ] {
        Registry(&t.db)
            .create_school(
                Actor::Cli,
                &SchoolInput {
                    code: code.into(),
                    name: format!("学校{code}"),
                    kind: "211".into(),
                    urban_rural: "111".into(),
                    county: county.into(),
                    opened_on: "2000-09-01".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
}

/// Enrols a pupil at `school` and gives back (id, national student number).
async fn enrol(
    t: &TestDb,
    school: &str,
    name: &str,
    birth: &str,
    grade: &str,
) -> (uuid::Uuid, String) {
    let p = Students(&t.db)
        .enrol(
            Actor::Cli,
            school,
            &pupil(name, birth, String::new(), grade),
        )
        .await
        .unwrap();
    (p.student.id, p.student.student_number)
}

fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

fn who(p: &Principal) -> Actor<'_> {
    Actor::User {
        principal: p,
        ip: "10.0.0.1",
    }
}

fn ask(number: &str, name: &str, to: &str) -> NewTransfer {
    NewTransfer {
        student_number: number.into(),
        name: name.into(),
        to_school: to.into(),
        reason: "随父母工作调动".into(),
    }
}

async fn a_cross_province_transfer_goes_through_every_step(t: TestDb) {
    schools(&t).await;
    let (sid, number) = enrol(&t, "1111010501", "刘洋", "2016-03-01", "3").await;
    let head_sz = person(
        &t,
        "head.sz",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let edu_ns = person(&t, "edu.ns", Role::Official, region("440305")).await;
    let edu_gd = person(&t, "edu.gd", Role::Official, region("440000")).await;
    let edu_bj = person(&t, "edu.bj", Role::Official, region("110000")).await;
    let head_bj = person(
        &t,
        "head.bj",
        Role::SchoolAdmin,
        node("1111010501", "110105"),
    )
    .await;
    let edu_cy = person(&t, "edu.cy", Role::Official, region("110105")).await;
    let other = person(
        &t,
        "head.other",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let tr = Transfers(&t.db);

    // A number alone finds nobody: the name must match too, and the lookup is audited.
    let got = tr
        .start(who(&head_sz), &ask(&number, "刘阳", "1144030501"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("student_number".into(), "transfer-no-student")]
    );
    let got = tr
        .start(who(&head_sz), &ask(&number, "刘洋", "1111010501"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("to_school".into(), "transfer-bad-school")],
        "not their school"
    );
    let d = tr
        .start(
            who(&head_sz),
            &ask(&number.to_lowercase(), "刘洋", "1144030501"),
        )
        .await
        .unwrap();
    let id = d.transfer.id;
    let roles: Vec<&str> = d.steps.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "receiving_school",
            "receiving_county",
            "receiving_province",
            "sending_province",
            "sending_school",
            "sending_county"
        ]
    );
    assert_eq!(d.steps[0].decision.as_deref(), Some("approved"));
    assert_eq!(d.transfer.current_step, Some(1));
    assert_eq!(
        d.steps[1].due_on,
        Some(add_working_days(today(), TRANSFER_STEP_WORKING_DAYS))
    );
    assert!(!d.transfer.overdue());
    assert!(
        d.transfer.number_masked() == number,
        "J-numbers are shown whole"
    );
    let again = tr
        .start(who(&head_sz), &ask(&number, "刘洋", "1144030501"))
        .await;
    assert_eq!(
        problems(again.unwrap_err()),
        [("student_number".into(), "transfer-pending")]
    );

    // The county does not start one for its school (it would sign two steps).
    let got = tr
        .start(who(&edu_ns), &ask(&number, "刘洋", "1144030501"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    // Inboxes: only the node whose turn it is; the other school of the county sees nothing.
    let inbox = |p: &Principal| {
        let p = p.clone();
        let db = t.db.clone();
        async move {
            Transfers(&db)
                .list(
                    &who(&p),
                    &p.scope(Permission::RegistryView),
                    TransferBox::Inbox,
                    10,
                    0,
                )
                .await
                .unwrap()
                .total
        }
    };
    assert_eq!(inbox(&edu_ns).await, 1);
    assert_eq!(inbox(&edu_gd).await, 0);
    assert_eq!(inbox(&head_bj).await, 0);
    let all_other = tr
        .list(
            &who(&other),
            &other.scope(Permission::RegistryView),
            TransferBox::All,
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(all_other.total, 0);
    assert!(
        tr.detail(&other.scope(Permission::RegistryView), id)
            .await
            .unwrap()
            .is_none()
    );

    // Each level signs its own step: the province cannot sign for the county.
    let scope = |p: &Principal| p.scope(Permission::RegistryView);
    let got = tr
        .decide(who(&edu_gd), &scope(&edu_gd), id, 1, true, "")
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    tr.decide(who(&edu_ns), &scope(&edu_ns), id, 1, true, "同意")
        .await
        .unwrap();
    let late = tr
        .decide(who(&edu_ns), &scope(&edu_ns), id, 1, true, "")
        .await;
    assert_eq!(
        problems(late.unwrap_err()),
        [("step".into(), "transfer-changed")]
    );
    tr.decide(who(&edu_gd), &scope(&edu_gd), id, 2, true, "")
        .await
        .unwrap();
    // The sending side sees it once it is theirs (and before: it involves their school).
    assert!(tr.detail(&scope(&head_bj), id).await.unwrap().is_some());
    tr.decide(who(&edu_bj), &scope(&edu_bj), id, 3, true, "")
        .await
        .unwrap();
    tr.decide(who(&head_bj), &scope(&head_bj), id, 4, true, "档案已移交")
        .await
        .unwrap();
    let done = tr
        .decide(who(&edu_cy), &scope(&edu_cy), id, 5, true, "")
        .await
        .unwrap();
    assert_eq!(done.transfer.status, "completed");

    // The student has moved, with the history; the old school no longer has them.
    let s = Students(&t.db);
    let now = s.student(&scope(&head_sz), sid).await.unwrap().unwrap();
    assert_eq!(
        (now.school_code.as_str(), now.grade, now.kind.as_str()),
        ("1144030501", 3, "transfer_in")
    );
    let history = s.events(&scope(&head_sz), sid).await.unwrap();
    assert_eq!(history[0].school_code, "1111010501", "the dossier travels");
    assert_eq!(history[1].from_school.as_deref(), Some("1111010501"));
    assert_eq!(history[1].code, "22");
    assert!(s.student(&scope(&head_bj), sid).await.unwrap().is_none());
    let undo = s
        .undo(Actor::Cli, &Scope::everything(), sid, history[1].id, "x")
        .await;
    assert_eq!(
        problems(undo.unwrap_err()),
        [("event".into(), "student-undo-transfer")]
    );
    let audit = santong_storage::audit::search(&t.db, &Default::default(), 100, 0)
        .await
        .unwrap();
    for e in [
        "transfer.lookup",
        "transfer.start",
        "transfer.approve",
        "transfer.complete",
    ] {
        assert!(audit.items.iter().any(|a| a.event == e), "{e}");
    }
    assert!(
        audit
            .items
            .iter()
            .any(|a| a.event == "transfer.lookup" && a.result == "denied")
    );
}

async fn transfers_are_refused_rejected_and_raced_cleanly(t: TestDb) {
    schools(&t).await;
    let head_a = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let edu_ns = person(&t, "edu.ns", Role::Official, region("440305")).await;
    let edu_ns2 = person(&t, "edu.ns2", Role::Official, region("440305")).await;
    let teacher = person(&t, "teacher.b", Role::Teacher, node("1144030502", "440305")).await;
    let tr = Transfers(&t.db);
    let (sid, number) = enrol(&t, "1144030501", "陈静", "2016-03-01", "3").await;

    // Within a province: four steps. A teacher may not start one.
    let got = tr
        .start(who(&teacher), &ask(&number, "陈静", "1144030502"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let got = tr
        .start(who(&head_b), &ask(&number, "陈静", "1144030502"))
        .await
        .unwrap();
    assert_eq!(got.steps.len(), 4);
    let id = got.transfer.id;
    // Rejecting needs a reason; then the transfer is closed and a new one may start.
    let scope = |p: &Principal| p.scope(Permission::RegistryView);
    let got = tr
        .decide(who(&edu_ns), &scope(&edu_ns), id, 1, false, " ")
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("note".into(), "transfer-reject-reason")]
    );
    let rejected = tr
        .decide(who(&edu_ns), &scope(&edu_ns), id, 1, false, "学位已满")
        .await
        .unwrap();
    assert_eq!(
        (
            rejected.transfer.status.as_str(),
            rejected.transfer.current_step
        ),
        ("rejected", None)
    );

    // Two county officials approve at once: one wins, the other is told the step moved on.
    let id = tr
        .start(who(&head_b), &ask(&number, "陈静", "1144030502"))
        .await
        .unwrap()
        .transfer
        .id;
    let (s1, s2) = (scope(&edu_ns), scope(&edu_ns2));
    let (a, b) = tokio::join!(
        tr.decide(who(&edu_ns), &s1, id, 1, true, ""),
        tr.decide(who(&edu_ns2), &s2, id, 1, true, ""),
    );
    let oks = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(oks, 1, "{a:?} {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert_eq!(
        problems(loser.unwrap_err()),
        [("step".into(), "transfer-changed")]
    );

    // Suspended meanwhile: the last signature is refused and nothing moves.
    tr.decide(who(&head_a), &scope(&head_a), id, 2, true, "")
        .await
        .unwrap();
    Students(&t.db)
        .record(
            Actor::Cli,
            &Scope::everything(),
            sid,
            &NewEvent {
                kind: "suspend".into(),
                reason: "病休".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = tr
        .decide(who(&edu_ns), &scope(&edu_ns), id, 3, true, "")
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("step".into(), "transfer-student-changed")]
    );
    let still = tr.detail(&Scope::everything(), id).await.unwrap().unwrap();
    assert_eq!(
        (still.transfer.status.as_str(), still.transfer.current_step),
        ("pending", Some(3))
    );
    assert!(
        still.steps[3].decision.is_none(),
        "the refused approval left no trace"
    );

    // Not while suspended; not to a closed school; not into a grade the school lacks; not in
    // the graduating year where the province says so.
    let (_, other) = enrol(&t, "1144030501", "周七", "2016-03-01", "3").await;
    let got = tr
        .start(Actor::Cli, &ask(&number, "陈静", "1144030503"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("student_number".into(), "transfer-suspended")]
    );
    Registry(&t.db)
        .close_school(Actor::Cli, "1144030503", 1, "2025-07-31", None, "撤并")
        .await
        .unwrap();
    let got = tr
        .start(Actor::Cli, &ask(&other, "周七", "1144030503"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("to_school".into(), "registry-not-open")]
    );
    let (_, sixth) = enrol(&t, "1144030501", "吴六", "2013-03-01", "6").await;
    let rule = |p: &[&str]| {
        serde_json::to_string(&santong_domain::lifecycle::TransferPolicy {
            no_graduating_year_provinces: p.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    };
    santong_storage::identity::set_policy(&t.db, "transfer", &rule(&["11", "44"]))
        .await
        .unwrap();
    let got = tr
        .start(who(&head_b), &ask(&sixth, "吴六", "1144030502"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("student_number".into(), "transfer-graduating-year")]
    );
    santong_storage::identity::set_policy(&t.db, "transfer", &rule(&["11"]))
        .await
        .unwrap();
    tr.start(who(&head_b), &ask(&sixth, "吴六", "1144030502"))
        .await
        .unwrap();
}

async fn a_staff_move_goes_through_the_same_chain(t: TestDb) {
    use santong_storage::teachers::{NewTeacher, Teachers};
    use santong_storage::transfers::{NewMove, Subject};
    schools(&t).await;
    let tt = Teachers(&t.db);
    let hire = |name: &str, seq: u32| NewTeacher {
        name: name.into(),
        sex: "2".into(),
        birth_date: "1988-05-12".into(),
        ethnicity: "01".into(),
        id_number: super::students::id("440305", "19880512", seq),
        qualification: "primary".into(),
        title: "first".into(),
        subjects: "数学".into(),
        post: "teaching".into(),
        appointed_on: "2020-09-01".into(),
    };
    let wang = tt
        .appoint(Actor::Cli, "1144030501", &hire("王老师", 2))
        .await
        .unwrap();
    let li = tt
        .appoint(Actor::Cli, "1144030501", &hire("李老师", 4))
        .await
        .unwrap();
    let head_to = person(
        &t,
        "head.bj",
        Role::SchoolAdmin,
        node("1111010501", "110105"),
    )
    .await;
    let head_from = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let head_other = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let county_to = person(
        &t,
        "edu.bj",
        Role::Official,
        Node::Region(RegionCode::parse("110105").unwrap()),
    )
    .await;
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.7",
    };
    let m = Transfers(&t.db);
    let ask = |number: &str, name: &str| NewMove {
        teacher_number: number.into(),
        name: name.into(),
        to_school: "1111010501".into(),
        reason: "夫妻团聚".into(),
    };
    // Number and name must both match; the county does not start for its school.
    let got = m
        .start_move(who(&head_to), &ask(&wang.teacher_number, "王老帅"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("teacher_number".into(), "move-no-teacher")]
    );
    let got = m
        .start_move(who(&county_to), &ask(&wang.teacher_number, "王老师"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let d = m
        .start_move(who(&head_to), &ask(&wang.teacher_number, "王老师"))
        .await
        .unwrap();
    let id = d.transfer.id;
    // Across provinces: six steps, the receiving school's own signed, the county's open.
    let roles: Vec<&str> = d.steps.iter().map(|s| s.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "receiving_school",
            "receiving_county",
            "receiving_province",
            "sending_province",
            "sending_school",
            "sending_county"
        ]
    );
    assert_eq!(d.transfer.current_step, Some(1));
    assert_eq!(
        d.steps[1].due_on,
        Some(add_working_days(today(), TRANSFER_STEP_WORKING_DAYS))
    );
    let got = m
        .start_move(who(&head_to), &ask(&wang.teacher_number, "王老师"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("teacher_number".into(), "move-pending")]
    );
    // The sending school sees it; a school that is neither side does not.
    for (p, seen) in [(&head_from, 1), (&head_other, 0)] {
        let all = m
            .list_of(
                Subject::Staff,
                &who(p),
                &p.scope(Permission::RegistryView),
                TransferBox::All,
                10,
                0,
            )
            .await
            .unwrap();
        assert_eq!(all.total, seen, "{}", p.user.username);
    }
    assert!(
        m.detail_of(
            Subject::Staff,
            &head_other.scope(Permission::RegistryView),
            id
        )
        .await
        .unwrap()
        .is_none()
    );
    // Students' transfers are another list.
    assert_eq!(
        m.list(&Actor::Cli, &Scope::everything(), TransferBox::All, 10, 0)
            .await
            .unwrap()
            .total,
        0
    );
    // Only the step's own node signs; two at once: one wins.
    let scope_to = county_to.scope(Permission::RegistryView);
    let got = m
        .decide_of(
            Subject::Staff,
            who(&head_from),
            &head_from.scope(Permission::RegistryView),
            id,
            1,
            true,
            "",
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let (x, y) = tokio::join!(
        m.decide_of(Subject::Staff, who(&county_to), &scope_to, id, 1, true, ""),
        m.decide_of(Subject::Staff, who(&county_to), &scope_to, id, 1, true, ""),
    );
    assert!(x.is_ok() != y.is_ok(), "{x:?} {y:?}");
    let all = Scope::everything();
    for seq in 2..=5 {
        m.decide_of(Subject::Staff, Actor::Cli, &all, id, seq, true, "")
            .await
            .unwrap();
    }
    let done = m
        .detail_of(Subject::Staff, &all, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.transfer.status, "completed");
    // The person is on the new staff from today and was on the old one until then.
    let staff = |school: &'static str, d: chrono::NaiveDate| {
        let tt = &tt;
        let all = &all;
        async move {
            tt.staff(all, school, d, 50, 0)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(staff("1111010501", today()).await, ["王老师"]);
    assert_eq!(staff("1144030501", today()).await, ["李老师"]);
    let before = today().pred_opt().unwrap();
    assert!(
        staff("1144030501", before)
            .await
            .contains(&"王老师".to_string())
    );
    // A rejection leaves the person where they are.
    let d = m
        .start_move(who(&head_to), &ask(&li.teacher_number, "李老师"))
        .await
        .unwrap();
    // Nor is the move cut short by recording a leave at the old school.
    let got = tt.leave(Actor::Cli, &all, li.id, "", "辞职").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("reason".into(), "teacher-move-pending")]
    );
    let got = m
        .decide_of(
            Subject::Staff,
            who(&county_to),
            &scope_to,
            d.transfer.id,
            1,
            false,
            " ",
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("note".into(), "transfer-reject-reason")]
    );
    let r = m
        .decide_of(
            Subject::Staff,
            who(&county_to),
            &scope_to,
            d.transfer.id,
            1,
            false,
            "编制已满",
        )
        .await
        .unwrap();
    assert_eq!(r.transfer.status, "rejected");
    assert_eq!(staff("1144030501", today()).await, ["李老师"]);
}
