use santong_domain::identity::{Node, Permission, Role, Scope};
use santong_domain::region::RegionCode;
use santong_storage::duplicates::{CaseFilter, Duplicates};
use santong_storage::identity::{Actor, Principal};
use santong_storage::registry::{Registry, RegistryError, SchoolInput};
use santong_storage::students::{Correction, Students};
use santong_testkit::TestDb;
use uuid::Uuid;

use super::lifecycle::ev;
use super::students::{id, node, person, problems, pupil, ready};

santong_testkit::conformance!(
    a_second_record_of_an_id_opens_a_case_seen_by_both_sides_only,
    a_case_merges_and_the_merge_is_undone,
    a_case_closes_by_correction_upgrades_the_temporary_number_and_is_undone,
    three_records_of_one_child_stay_in_one_case_until_merged,
);

fn who(p: &Principal) -> Actor<'_> {
    Actor::User {
        principal: p,
        ip: "10.0.0.9",
    }
}

fn view(p: &Principal) -> Scope {
    p.scope(Permission::RegistryView)
}

/// Schools 01 and 02 in 440305, school 03 in 440304; one child (ID `idn`) enrolled at 01, then
/// at 02. Returns (first record, second record, case).
async fn twice(t: &TestDb, idn: &str) -> (Uuid, Uuid, Uuid) {
    let s = Students(&t.db);
    let first = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("张三", "2016-03-01", idn.into(), "3"),
        )
        .await
        .unwrap();
    assert!(first.student.student_number.starts_with('G'));
    let second = s
        .enrol(
            Actor::Cli,
            "1144030502",
            &pupil("张三", "2016-03-01", idn.into(), "3"),
        )
        .await
        .unwrap();
    assert!(second.student.student_number.starts_with('L'));
    let open = Duplicates(&t.db)
        .open_of(&Scope::everything(), second.student.id)
        .await
        .unwrap();
    assert_eq!(open.len(), 1);
    (first.student.id, second.student.id, open[0])
}

async fn other_county_school(t: &TestDb) {
    Registry(&t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: "1144030401".into(),
                name: "福田学校".into(),
                kind: "211".into(),
                urban_rural: "111".into(),
                county: "440304".into(),
                opened_on: "2000-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

async fn a_second_record_of_an_id_opens_a_case_seen_by_both_sides_only(t: TestDb) {
    ready(&t).await;
    other_county_school(&t).await;
    let idn = id("440305", "20160301", 13);
    let (first, second, case) = twice(&t, &idn).await;
    let d = Duplicates(&t.db);
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
    let county = person(
        &t,
        "county",
        Role::Official,
        Node::Region(RegionCode::parse("440305").unwrap()),
    )
    .await;
    let stranger = person(
        &t,
        "head.c",
        Role::SchoolAdmin,
        node("1144030401", "440304"),
    )
    .await;
    let far = person(
        &t,
        "county.c",
        Role::Official,
        Node::Region(RegionCode::parse("440304").unwrap()),
    )
    .await;
    for p in [&head_a, &head_b, &county] {
        let list = d.list(&view(p), CaseFilter::Open, 20, 0).await.unwrap();
        assert_eq!(list.total, 1, "{}", p.user.username);
        let c = &list.items[0];
        assert_eq!((c.id, c.student.id, c.other.id), (case, second, first));
        assert!(c.student.is_temporary() && !c.other.is_temporary());
        // Lists never show the ID number behind a G-number.
        assert!(!c.other.number_masked().contains(&idn[6..14]));
    }
    for p in [&stranger, &far] {
        assert_eq!(
            d.list(&view(p), CaseFilter::All, 20, 0)
                .await
                .unwrap()
                .total,
            0
        );
        assert!(d.case(&view(p), case).await.unwrap().is_none());
        let got = d.merge(who(p), &view(p), case, "同一人").await;
        assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    }
    // The first school sees the case but may not end the second school's record.
    let got = d.merge(who(&head_a), &view(&head_a), case, "同一人").await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    // A third enrolment of the same ID opens a second case against the official record.
    let third = Students(&t.db)
        .enrol(
            Actor::Cli,
            "1144030401",
            &pupil("张三", "2016-03-01", idn.clone(), "3"),
        )
        .await
        .unwrap();
    let cases = d.open_of(&Scope::everything(), first).await.unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(
        d.list(&view(&stranger), CaseFilter::Open, 20, 0)
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(
        d.open_of(&Scope::everything(), third.student.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // A record that left school is not a place held: its ID is not enrolled again.
    let s = Students(&t.db);
    let all = Scope::everything();
    let idn2 = id("440305", "20160301", 33);
    let gone = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("李四", "2016-03-01", idn2.clone(), "3"),
        )
        .await
        .unwrap();
    s.record(
        Actor::Cli,
        &all,
        gone.student.id,
        &ev("drop_out", "", "外出务工"),
    )
    .await
    .unwrap();
    let got = s
        .enrol(
            Actor::Cli,
            "1144030502",
            &pupil("李四", "2016-03-01", idn2, "3"),
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("id_number".into(), "student-already-enrolled")]
    );
}

async fn a_case_merges_and_the_merge_is_undone(t: TestDb) {
    ready(&t).await;
    let idn = id("440305", "20160301", 13);
    let (first, second, case) = twice(&t, &idn).await;
    let d = Duplicates(&t.db);
    let s = Students(&t.db);
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let county = person(
        &t,
        "county",
        Role::Official,
        Node::Region(RegionCode::parse("440305").unwrap()),
    )
    .await;
    let got = d.merge(who(&head_b), &view(&head_b), case, " ").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("reason".into(), "student-event-reason")]
    );
    // Two people merge at once: one wins, the other is told the case moved on.
    let (vb, vc) = (view(&head_b), view(&county));
    let (x, y) = tokio::join!(
        d.merge(who(&head_b), &vb, case, "同一人，保留原学籍"),
        d.merge(who(&county), &vc, case, "同一人"),
    );
    let (won, lost) = if x.is_ok() { (x, y) } else { (y, x) };
    let merged = won.unwrap();
    match lost.unwrap_err() {
        RegistryError::Fields(f) => assert_eq!(f[0].field, "case"),
        RegistryError::Stale => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(merged.status, "merged");
    assert_eq!(
        (merged.student.status.as_str(), merged.student.kind.as_str()),
        ("out", "merge")
    );
    assert_eq!(merged.other.status, "in");
    // The merged record leaves the second school's roster; the first keeps the child.
    let today = santong_storage::registry::today();
    let roster_b = s
        .roster(&Scope::everything(), "1144030502", today, 50, 0)
        .await
        .unwrap();
    assert!(roster_b.items.iter().all(|p| p.student.id != second));
    let roster_a = s
        .roster(&Scope::everything(), "1144030501", today, 50, 0)
        .await
        .unwrap();
    assert!(roster_a.items.iter().any(|p| p.student.id == first));
    assert!(
        d.open_of(&Scope::everything(), first)
            .await
            .unwrap()
            .is_empty()
    );
    // The merge is undone from its case, not by hand on the record.
    let events = s.events(&Scope::everything(), second).await.unwrap();
    let merge = events.iter().find(|e| e.kind == "merge").unwrap();
    assert_eq!(merge.code, "91");
    let got = s
        .undo(Actor::Cli, &Scope::everything(), second, merge.id, "误操作")
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("event".into(), "student-undo-merge")]
    );
    let back = d
        .undo(who(&head_b), &view(&head_b), case, "并非同一人，需核实")
        .await
        .unwrap();
    assert_eq!(back.status, "open");
    assert_eq!(back.student.status, "in");
    let roster_b = s
        .roster(&Scope::everything(), "1144030502", today, 50, 0)
        .await
        .unwrap();
    assert!(roster_b.items.iter().any(|p| p.student.id == second));
    let steps: Vec<String> = d
        .steps(case)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.action)
        .collect();
    assert_eq!(steps, ["open", "merge", "undo"]);
    let got = d.undo(who(&head_b), &view(&head_b), case, "再撤销").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("case".into(), "duplicate-not-resolved")]
    );
}

async fn a_case_closes_by_correction_upgrades_the_temporary_number_and_is_undone(t: TestDb) {
    ready(&t).await;
    let idn = id("440305", "20160301", 13);
    let (first, second, case) = twice(&t, &idn).await;
    let d = Duplicates(&t.db);
    let s = Students(&t.db);
    let all = Scope::everything();
    let head_a = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let temporary = s
        .student(&all, second)
        .await
        .unwrap()
        .unwrap()
        .student
        .student_number;
    // Correcting another field keeps the temporary number and the case.
    s.correct(
        Actor::Cli,
        &all,
        second,
        &Correction {
            name: "张叁".into(),
            reason: "按户口簿更正".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.student(&all, second)
            .await
            .unwrap()
            .unwrap()
            .student
            .student_number,
        temporary
    );
    assert_eq!(d.open_of(&all, second).await.unwrap(), [case]);
    // The first school's record had the wrong ID number: corrected, the case closes, and the
    // second record's temporary number becomes official.
    let right = id("440305", "20160301", 53);
    s.correct(
        who(&head_a),
        &view(&head_a),
        first,
        &Correction {
            id_number: right.clone(),
            reason: "身份证件号录入错误".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = d.case(&all, case).await.unwrap().unwrap();
    assert_eq!(
        (c.status.as_str(), c.corrected_id),
        ("corrected", Some(first))
    );
    let a = s.student(&all, first).await.unwrap().unwrap().student;
    let b = s.student(&all, second).await.unwrap().unwrap().student;
    assert_eq!(a.student_number, format!("G{right}"));
    assert_eq!(b.student_number, format!("G{idn}"));
    let lineage = s.corrections(&all, second).await.unwrap();
    let up = lineage
        .iter()
        .find(|c| c.field == "student_number")
        .unwrap();
    assert_eq!(up.old_value.as_deref(), Some(temporary.as_str()));
    // Undone: both numbers and the ID number are restored, the case is open again.
    let back = d
        .undo(who(&head_a), &view(&head_a), case, "原号码无误")
        .await
        .unwrap();
    assert_eq!(back.status, "open");
    let a = s.student(&all, first).await.unwrap().unwrap().student;
    let b = s.student(&all, second).await.unwrap().unwrap().student;
    assert_eq!(
        (a.student_number.as_str(), a.id_number.as_deref()),
        (format!("G{idn}").as_str(), Some(idn.as_str()))
    );
    assert_eq!(b.student_number, temporary);
    // This time the second record is the wrong one: it gets G + its right number, nothing else
    // changes, and the first record keeps its number.
    s.correct(
        Actor::Cli,
        &all,
        second,
        &Correction {
            id_number: right.clone(),
            reason: "身份证件号录入错误".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = d.case(&all, case).await.unwrap().unwrap();
    assert_eq!(
        (c.status.as_str(), c.corrected_id),
        ("corrected", Some(second))
    );
    let b = s.student(&all, second).await.unwrap().unwrap().student;
    assert_eq!(b.student_number, format!("G{right}"));
    let steps: Vec<String> = d
        .steps(case)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.action)
        .collect();
    assert_eq!(steps, ["open", "correct", "undo", "correct"]);
}

async fn three_records_of_one_child_stay_in_one_case_until_merged(t: TestDb) {
    ready(&t).await;
    other_county_school(&t).await;
    let idn = id("440305", "20160301", 13);
    let (first, second, case1) = twice(&t, &idn).await;
    let s = Students(&t.db);
    let d = Duplicates(&t.db);
    let all = Scope::everything();
    let third = s
        .enrol(
            Actor::Cli,
            "1144030401",
            &pupil("张三", "2016-03-01", idn.clone(), "3"),
        )
        .await
        .unwrap()
        .student
        .id;
    let case2 = d.open_of(&all, third).await.unwrap()[0];
    // The first record's ID was wrong. The other two still share theirs: one case stays open
    // between them, the other closes.
    s.correct(
        Actor::Cli,
        &all,
        first,
        &Correction {
            id_number: id("440305", "20160301", 53),
            reason: "身份证件号录入错误".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c1 = d.case(&all, case1).await.unwrap().unwrap();
    assert_eq!((c1.status.as_str(), c1.other.id), ("open", third));
    assert_eq!(
        d.case(&all, case2).await.unwrap().unwrap().status,
        "corrected"
    );
    let number = |id| {
        let s = &s;
        let all = &all;
        async move {
            s.student(all, id)
                .await
                .unwrap()
                .unwrap()
                .student
                .student_number
        }
    };
    assert!(number(second).await.starts_with('L') && number(third).await.starts_with('L'));
    // No ID or phone number goes into a reason both schools read.
    let got = d.merge(Actor::Cli, &all, case1, &format!("即{idn}")).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("reason".into(), "student-reason-no-numbers")]
    );
    // Merged: the kept record is the only one with the ID now and gets its official number.
    d.merge(Actor::Cli, &all, case1, "同一人").await.unwrap();
    assert_eq!(number(third).await, format!("G{idn}"));
    // Undone: the number goes back, the case is open again.
    d.undo(Actor::Cli, &all, case1, "需再核实").await.unwrap();
    assert!(number(third).await.starts_with('L'));
    assert_eq!(d.case(&all, case1).await.unwrap().unwrap().status, "open");
    // A record that left cannot be merged into.
    s.record(Actor::Cli, &all, third, &ev("drop_out", "", "外出"))
        .await
        .unwrap();
    let got = d.merge(Actor::Cli, &all, case1, "同一人").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("case".into(), "duplicate-other-left")]
    );
    assert_eq!(d.case(&all, case1).await.unwrap().unwrap().status, "open");
}
