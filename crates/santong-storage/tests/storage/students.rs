use santong_domain::identity::{Node, Permission, Role, SchoolCode, Scope};
use santong_domain::paging::FieldErrorKind;
use santong_domain::region::RegionCode;
use santong_domain::registry::{StudentNumber, id_check_char};
use santong_storage::identity::{Actor, Identity, Login, NewUser, Principal};
use santong_storage::registry::{Registry, RegistryError, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestDb;

const PW: &str = "Kx9!long-enough";

santong_testkit::conformance!(
    students_are_enrolled_with_every_field_checked,
    rosters_answer_for_any_date_within_scope,
    the_full_record_is_shown_for_a_purpose_and_audited,
    rosters_filter_by_grade_and_name_and_sort,
);

/// A valid ID number: region, birth date, sequence (odd = male), check character.
pub(super) fn id(region: &str, birth: &str, seq: u32) -> String {
    let body = format!("{region}{birth}{seq:03}");
    format!("{body}{}", char::from(id_check_char(body.as_bytes())))
}

pub(super) fn node(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

pub(super) async fn ready(t: &TestDb) {
    santong_storage::reference::ensure_regions(&t.db)
        .await
        .unwrap();
    for (code, county) in [("1144030501", "440305"), ("1144030502", "440305")] {
        Registry(&t.db)
            .create_school(
                Actor::Cli,
                &SchoolInput {
                    code: code.into(),
                    name: format!("学校{code}"),
                    kind: "312".into(),
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

pub(super) fn pupil(name: &str, birth: &str, id_number: String, grade: &str) -> NewStudent {
    NewStudent {
        name: name.into(),
        sex: "1".into(),
        birth_date: birth.into(),
        ethnicity: "01".into(),
        id_number,
        guardian_name: "王芳".into(),
        guardian_relation: "母亲".into(),
        guardian_phone: "13812345678".into(),
        grade: grade.into(),
        enrolled_on: "2024-09-01".into(),
        ..Default::default()
    }
}

pub(super) fn problems(e: RegistryError) -> Vec<(String, &'static str)> {
    match e {
        RegistryError::Fields(f) => f
            .into_iter()
            .map(|f| match f.kind {
                FieldErrorKind::Rule(k) => (f.field, k),
                other => (f.field, other.key()),
            })
            .collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

pub(super) async fn person(t: &TestDb, name: &str, role: Role, at: Node) -> Principal {
    let id = Identity(&t.db);
    id.create_user(
        Actor::Cli,
        NewUser {
            username: name.into(),
            display_name: name.into(),
            password: Some(PW.into()),
            home: at,
            system_role: None,
            grant: Some((role, at)),
        },
    )
    .await
    .unwrap();
    match id.authenticate(name, PW, "10.0.0.1", "t").await.unwrap() {
        Login::Ok { principal, .. } => *principal,
        other => panic!("{other:?}"),
    }
}

async fn students_are_enrolled_with_every_field_checked(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    // With an ID number: the official G-number.
    let a = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("李明", "2018-03-05", id("440305", "20180305", 11), "1"),
        )
        .await
        .unwrap();
    assert!(a.student.student_number.starts_with("G440305"));
    // Region and check character only: the birth date is shown beside it, the sequence is not.
    let full = a.student.id_number.clone().unwrap();
    assert_eq!(
        a.student.id_masked().unwrap(),
        format!("440305***********{}", &full[17..])
    );
    assert!(!a.student.number_masked().contains(&full[6..17]));
    assert!(!a.student.id_region_retired);
    // Without: J-numbers from the county, the birth date and a sequence.
    let b = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("张伟", "2018-03-05", String::new(), "1"),
        )
        .await
        .unwrap();
    let c = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("赵强", "2018-03-05", String::new(), "1"),
        )
        .await
        .unwrap();
    assert!(b.student.student_number.starts_with("J44030520180305000"));
    assert!(c.student.student_number.starts_with("J44030520180305001"));
    // An ID whose region code was retired (莱芜市 371202, merged into 济南 in 2019) is accepted
    // and flagged.
    let old = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("刘洋", "2017-06-01", id("371202", "20170601", 31), "2"),
        )
        .await
        .unwrap();
    assert!(old.student.id_region_retired);
    // The same ID twice, while the first record holds its place: the second record gets a
    // temporary L-number (area, birth date, four digits) and a duplicate case opens.
    let twice = s
        .enrol(
            Actor::Cli,
            "1144030502",
            &pupil("李明", "2018-03-05", id("440305", "20180305", 11), "1"),
        )
        .await
        .unwrap();
    let n = &twice.student.student_number;
    assert!(n.starts_with("L44030520180305") && n.len() == 19, "{n}");
    assert!(StudentNumber::parse(n).is_some_and(|n| n.is_temporary()));
    let audit = santong_storage::audit::search(&t.db, &Default::default(), 50, 0)
        .await
        .unwrap();
    assert!(audit.items.iter().any(|e| e.event == "duplicate.open"));
    let _ = a;
    // A region code that never existed is refused.
    let got = problems(
        s.enrol(
            Actor::Cli,
            "1144030501",
            &pupil("无名", "2018-03-05", id("990000", "20180305", 11), "1"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        got,
        vec![("id_number".to_string(), "student-id-unknown-region")]
    );
    // J-numbers follow the highest in use, and two enrolments at once get two numbers.
    let (p1, p2) = (
        pupil("并发甲", "2018-03-05", String::new(), "1"),
        pupil("并发乙", "2018-03-05", String::new(), "1"),
    );
    let (x, y) = tokio::join!(
        s.enrol(Actor::Cli, "1144030501", &p1),
        s.enrol(Actor::Cli, "1144030501", &p2),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x.student.student_number, y.student.student_number);
    let mut seqs = vec![
        &x.student.student_number[15..18],
        &y.student.student_number[15..18],
    ];
    seqs.sort_unstable();
    assert_eq!(seqs, ["002", "003"]);
    // Everything wrong: bad check digit, a 40-year-old first-grader, a grade the school lacks,
    // a bad phone — each named, nothing written.
    let mut bad = pupil("", "1984-01-01", "44030520180305011X".into(), "13");
    bad.guardian_phone = "12345".into();
    bad.ethnicity = "99".into();
    let got = problems(s.enrol(Actor::Cli, "1144030501", &bad).await.unwrap_err());
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    for f in ["name", "id_number", "grade", "guardian_phone", "ethnicity"] {
        assert!(fields.contains(&f), "{f}: {got:?}");
    }
    let got = problems(
        s.enrol(
            Actor::Cli,
            "1144030501",
            &pupil("老学生", "1984-01-01", String::new(), "1"),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(got, vec![("birth_date".to_string(), "student-age-outlier")]);
    // The ID must agree with the birth date and the sex given.
    let mut girl = pupil("王丽", "2018-03-06", id("440305", "20180305", 12), "1");
    girl.sex = "1".into();
    let got = problems(s.enrol(Actor::Cli, "1144030501", &girl).await.unwrap_err());
    assert!(
        got.contains(&("id_number".to_string(), "student-id-birth-mismatch")),
        "{got:?}"
    );
    assert!(
        got.contains(&("id_number".to_string(), "student-id-sex-mismatch")),
        "{got:?}"
    );
    let roster = s
        .roster(
            &Scope::everything(),
            "1144030501",
            chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            100,
            0,
        )
        .await
        .unwrap();
    assert_eq!(roster.total, 6, "nothing half-written by the refusals");
}

async fn rosters_answer_for_any_date_within_scope(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let mut early = pupil("早入学", "2017-05-01", String::new(), "2");
    early.enrolled_on = "2023-09-01".into();
    s.enrol(Actor::Cli, "1144030501", &early).await.unwrap();
    s.enrol(
        Actor::Cli,
        "1144030501",
        &pupil("晚入学", "2018-05-01", String::new(), "1"),
    )
    .await
    .unwrap();
    s.enrol(
        Actor::Cli,
        "1144030502",
        &pupil("别校", "2018-05-01", String::new(), "1"),
    )
    .await
    .unwrap();
    let on = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let names = |p: santong_storage::Page<santong_storage::students::Placed>| {
        p.items
            .into_iter()
            .map(|x| x.student.name)
            .collect::<Vec<_>>()
    };
    let all = Scope::everything();
    assert!(
        names(
            s.roster(&all, "1144030501", on(2023, 8, 31), 10, 0)
                .await
                .unwrap()
        )
        .is_empty()
    );
    assert_eq!(
        names(
            s.roster(&all, "1144030501", on(2024, 1, 1), 10, 0)
                .await
                .unwrap()
        ),
        ["早入学"]
    );
    assert_eq!(
        names(
            s.roster(&all, "1144030501", on(2024, 9, 1), 10, 0)
                .await
                .unwrap()
        ),
        ["晚入学", "早入学"],
        "by grade, then name"
    );
    // The other school's head sees neither roster nor record of this school.
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let scope_b = head_b.scope(Permission::RegistryView);
    assert_eq!(
        s.roster(&scope_b, "1144030501", on(2025, 1, 1), 10, 0)
            .await
            .unwrap()
            .total,
        0
    );
    assert_eq!(
        s.roster(&scope_b, "1144030502", on(2025, 1, 1), 10, 0)
            .await
            .unwrap()
            .total,
        1
    );
    let theirs = s
        .roster(&all, "1144030501", on(2025, 1, 1), 10, 0)
        .await
        .unwrap()
        .items[0]
        .student
        .id;
    assert!(s.student(&scope_b, theirs).await.unwrap().is_none());
    // …and cannot enrol there; a teacher cannot enrol at all.
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.9",
    };
    let got = s
        .enrol(
            who(&head_b),
            "1144030501",
            &pupil("越界", "2018-05-01", String::new(), "1"),
        )
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    let teacher = person(&t, "teacher.b", Role::Teacher, node("1144030502", "440305")).await;
    let got = s
        .enrol(
            who(&teacher),
            "1144030502",
            &pupil("老师录", "2018-05-01", String::new(), "1"),
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
}

async fn the_full_record_is_shown_for_a_purpose_and_audited(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let p = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("李明", "2018-03-05", id("440305", "20180305", 11), "1"),
        )
        .await
        .unwrap();
    let head = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let who = Actor::User {
        principal: &head,
        ip: "10.0.0.9",
    };
    let scope = head.scope(Permission::RegistryView);
    let got = s.view_full(who, &scope, p.student.id, " ").await;
    assert!(
        matches!(got, Err(RegistryError::Fields(_))),
        "a purpose is required"
    );
    let pasted = format!("核对 {}", p.student.id_number.clone().unwrap());
    let got = s
        .view_full(
            Actor::User {
                principal: &head,
                ip: "10.0.0.9",
            },
            &scope,
            p.student.id,
            &pasted,
        )
        .await;
    assert!(
        matches!(got, Err(RegistryError::Fields(_))),
        "no ID number in the purpose"
    );
    let full = s
        .view_full(
            Actor::User {
                principal: &head,
                ip: "10.0.0.9",
            },
            &scope,
            p.student.id,
            "核对学籍信息",
        )
        .await
        .unwrap();
    assert_eq!(full.student.id_number.as_deref().map(str::len), Some(18));
    let audit = santong_storage::audit::search(&t.db, &Default::default(), 20, 0)
        .await
        .unwrap();
    let view = audit
        .items
        .iter()
        .find(|e| e.event == "student.view_full")
        .expect("the view is audited");
    assert_eq!(view.detail, "核对学籍信息");
    assert_eq!(view.actor, "head.a");
    // No ID number anywhere in the log.
    let idn = full.student.id_number.unwrap();
    assert!(
        audit
            .items
            .iter()
            .all(|e| !e.detail.contains(&idn) && !e.target.contains(&idn[..17]))
    );
}

async fn rosters_filter_by_grade_and_name_and_sort(t: TestDb) {
    use santong_storage::students::{RosterFilter, RosterSort};
    ready(&t).await;
    let s = Students(&t.db);
    for (name, birth, grade) in [
        ("王小明", "2017-05-01", "2"),
        ("李小红", "2016-04-01", "3"),
        ("王大力", "2016-09-01", "3"),
        ("赵六", "2017-01-01", "2"),
    ] {
        s.enrol(
            Actor::Cli,
            "1144030501",
            &pupil(name, birth, String::new(), grade),
        )
        .await
        .unwrap();
    }
    let all = Scope::everything();
    let on = santong_storage::registry::today();
    let names = |f: RosterFilter| {
        let s = &s;
        let all = &all;
        async move {
            s.roster_filtered(all, "1144030501", on, &f, 50, 0)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| p.student.name)
                .collect::<Vec<_>>()
        }
    };
    let by = |grade: Option<i32>, text: &str, sort: RosterSort, descending: bool| RosterFilter {
        grade,
        text: Some(text.to_owned()).filter(|t| !t.is_empty()),
        sort,
        descending,
    };
    assert_eq!(
        names(by(Some(3), "", RosterSort::Birth, false)).await,
        ["李小红", "王大力"]
    );
    assert_eq!(
        names(by(None, "王", RosterSort::Birth, true)).await,
        ["王小明", "王大力"]
    );
    // LIKE wildcards are taken literally.
    assert!(
        names(by(None, "%", RosterSort::Grade, false))
            .await
            .is_empty()
    );
    assert_eq!(
        names(by(Some(1), "", RosterSort::Name, false)).await.len(),
        0
    );
    // Only names are searched: a number in a link may be an ID number.
    let number = s.roster(&all, "1144030501", on, 50, 0).await.unwrap().items[0]
        .student
        .student_number
        .clone();
    assert!(
        names(by(None, &number, RosterSort::Grade, false))
            .await
            .is_empty()
    );
}
