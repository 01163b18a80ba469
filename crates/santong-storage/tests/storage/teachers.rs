use chrono::NaiveDate;
use santong_domain::identity::{Permission, Role, Scope};
use santong_storage::identity::Actor;
use santong_storage::registry::RegistryError;
use santong_storage::teachers::{NewTeacher, Teachers};
use santong_testkit::TestDb;

use super::students::{id, node, person, problems, ready};

santong_testkit::conformance!(teachers_have_one_number_and_a_staff_on_any_date);

fn on(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn teacher(name: &str, idn: String, on: &str) -> NewTeacher {
    NewTeacher {
        name: name.into(),
        sex: "2".into(),
        birth_date: "1988-05-12".into(),
        ethnicity: "01".into(),
        id_number: idn,
        qualification: "primary".into(),
        title: "first".into(),
        subjects: "语文".into(),
        post: "teaching".into(),
        appointed_on: on.into(),
    }
}

async fn teachers_have_one_number_and_a_staff_on_any_date(t: TestDb) {
    ready(&t).await;
    let tt = Teachers(&t.db);
    // Field by field: an ID for someone else's birthday, unknown codes, a child's birth date.
    let mut bad = teacher("王老师", id("440305", "19880513", 2), "2020-09-01");
    bad.title = "professor".into();
    bad.post = String::new();
    let got = tt.appoint(Actor::Cli, "1144030501", &bad).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [
            ("id_number".into(), "student-id-birth-mismatch"),
            ("title".into(), "teacher-bad-code"),
            ("post".into(), "teacher-bad-code")
        ]
    );
    let mut child = teacher("小孩", id("440305", "20150513", 2), "2020-09-01");
    child.birth_date = "2015-05-13".into();
    let got = tt.appoint(Actor::Cli, "1144030501", &child).await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("birth_date".into(), "teacher-bad-birth")]
    );

    let idn = id("440305", "19880512", 2);
    let a = tt
        .appoint(
            Actor::Cli,
            "1144030501",
            &teacher("王老师", idn.clone(), "2020-09-01"),
        )
        .await
        .unwrap();
    assert_eq!(a.teacher_number, "T440305202000001");
    assert_eq!(a.id_masked(), format!("440305***********{}", &idn[17..]));
    assert!(
        !format!("{a:?}").contains(&idn),
        "Debug never prints the ID number"
    );
    // One person, one number: not a second record, not on two staffs.
    let got = tt
        .appoint(
            Actor::Cli,
            "1144030502",
            &teacher("王老师", idn.clone(), "2021-09-01"),
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("id_number".into(), "teacher-elsewhere")]
    );
    let got = tt
        .appoint(
            Actor::Cli,
            "1144030501",
            &teacher("王老师", idn.clone(), "2021-09-01"),
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("id_number".into(), "teacher-on-staff-here")]
    );
    let got = tt
        .appoint(
            Actor::Cli,
            "1144030502",
            &teacher("王先生", idn.clone(), "2021-09-01"),
        )
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("name".into(), "teacher-name-mismatch")]
    );
    let all = Scope::everything();
    let left = tt
        .leave(Actor::Cli, &all, a.id, "2023-07-31", "调离")
        .await
        .unwrap();
    assert_eq!(left.kind, "leave");
    let early = tt
        .appoint(
            Actor::Cli,
            "1144030502",
            &teacher("王老师", idn.clone(), "2023-07-01"),
        )
        .await;
    assert_eq!(
        problems(early.unwrap_err()),
        [("appointed_on".into(), "student-event-before-last")]
    );
    let again = tt
        .appoint(
            Actor::Cli,
            "1144030502",
            &teacher("王老师", idn.clone(), "2023-09-01"),
        )
        .await
        .unwrap();
    assert_eq!(
        (again.id, again.teacher_number.as_str()),
        (a.id, "T440305202000001")
    );
    let staff = |school: &'static str, d| {
        let db = t.db.clone();
        async move {
            Teachers(&db)
                .staff(&Scope::everything(), school, d, 10, 0)
                .await
                .unwrap()
                .total
        }
    };
    assert_eq!(staff("1144030501", on(2020, 8, 31)).await, 0);
    assert_eq!(staff("1144030501", on(2022, 1, 1)).await, 1);
    assert_eq!(staff("1144030501", on(2023, 8, 1)).await, 0);
    assert_eq!(staff("1144030502", on(2023, 9, 1)).await, 1);
    let got = tt.leave(Actor::Cli, &all, a.id, "2023-08-01", "x").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("effective_on".into(), "student-event-before-last")]
    );

    // Racing: two new people at once get two numbers; one person twice at once, one record.
    let (p1, p2) = (
        teacher("赵老师", id("440305", "19880512", 4), "2020-09-02"),
        teacher("钱老师", id("440305", "19880512", 6), "2020-09-02"),
    );
    let (x, y) = tokio::join!(
        tt.appoint(Actor::Cli, "1144030501", &p1),
        tt.appoint(Actor::Cli, "1144030501", &p2),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_ne!(x.teacher_number, y.teacher_number);
    let p3 = teacher("孙老师", id("440305", "19880512", 8), "2020-09-02");
    let (x, y) = tokio::join!(
        tt.appoint(Actor::Cli, "1144030501", &p3),
        tt.appoint(Actor::Cli, "1144030502", &p3),
    );
    assert_eq!(
        [x.is_ok(), y.is_ok()].iter().filter(|o| **o).count(),
        1,
        "{x:?} {y:?}"
    );
    let loser = if x.is_ok() { y } else { x };
    assert_eq!(
        problems(loser.unwrap_err()),
        [("id_number".into(), "teacher-elsewhere")]
    );

    // Scope: another school's head sees nobody here; a teacher does not appoint.
    let head_a = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    let scope_a = head_a.scope(Permission::RegistryView);
    assert!(
        tt.teacher(&scope_a, a.id).await.unwrap().is_none(),
        "works at the other school now"
    );
    assert_eq!(
        tt.staff(&scope_a, "1144030502", on(2024, 1, 1), 10, 0)
            .await
            .unwrap()
            .total,
        0
    );
    let got = tt
        .leave(
            Actor::User {
                principal: &head_a,
                ip: "10.0.0.1",
            },
            &scope_a,
            a.id,
            "",
            "越界",
        )
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    let colleague = person(&t, "teacher.b", Role::Teacher, node("1144030502", "440305")).await;
    let got = tt
        .appoint(
            Actor::User {
                principal: &colleague,
                ip: "10.0.0.2",
            },
            "1144030502",
            &teacher("李老师", id("440305", "19900101", 3), ""),
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
}
