use chrono::NaiveDate;
use santong_domain::identity::{Permission, Role, Scope};
use santong_domain::registry::SchoolYear;
use santong_storage::classes::{Classes, NewClass};
use santong_storage::identity::Actor;
use santong_storage::lifecycle::NewEvent;
use santong_storage::registry::RegistryError;
use santong_storage::students::Students;
use santong_testkit::TestDb;

use super::students::{node, person, problems, pupil, ready};

santong_testkit::conformance!(classes_hold_their_members_by_date_within_scope);

fn on(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn class(year: &str, grade: &str, name: &str, head: &str) -> NewClass {
    NewClass {
        school_year: year.into(),
        grade: grade.into(),
        name: name.into(),
        head_teacher: head.into(),
    }
}

async fn classes_hold_their_members_by_date_within_scope(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let mut ids = vec![];
    for name in ["甲", "乙", "丙"] {
        ids.push(
            s.enrol(
                Actor::Cli,
                "1144030501",
                &pupil(name, "2017-03-01", String::new(), "2"),
            )
            .await
            .unwrap()
            .student
            .id,
        );
    }
    let older = s
        .enrol(
            Actor::Cli,
            "1144030501",
            &pupil("丁", "2015-03-01", String::new(), "4"),
        )
        .await
        .unwrap()
        .student
        .id;
    let head = person(
        &t,
        "head.a",
        Role::SchoolAdmin,
        node("1144030501", "440305"),
    )
    .await;
    person(&t, "teacher.a", Role::Teacher, node("1144030501", "440305")).await;
    person(&t, "teacher.b", Role::Teacher, node("1144030502", "440305")).await;
    let who = Actor::User {
        principal: &head,
        ip: "10.0.0.1",
    };
    let c = Classes(&t.db);
    // Field by field: a teacher of another school cannot head it, a grade the school lacks.
    let got = c
        .create(who, "1144030501", &class("2024", "13", " ", "teacher.b"))
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [
            ("grade".into(), "student-bad-grade"),
            ("name".into(), "class-bad-name"),
            ("head_teacher".into(), "class-bad-teacher")
        ]
    );
    let one = c
        .create(
            who,
            "1144030501",
            &class("2024-2025", "2", "二年级1班", "teacher.a"),
        )
        .await
        .unwrap();
    assert_eq!(one.head_name.as_deref(), Some("teacher.a"));
    let two = c
        .create(who, "1144030501", &class("2024", "2", "二年级2班", ""))
        .await
        .unwrap();
    let dup = c
        .create(who, "1144030501", &class("2024", "2", "二年级1班", ""))
        .await;
    assert_eq!(
        problems(dup.unwrap_err()),
        [("name".into(), "class-name-taken")]
    );

    // All or nothing: a student of another grade spoils the lot.
    let all = Scope::everything();
    let got = c
        .assign(who, &all, one.id, &[ids[0], older], "2024-09-01")
        .await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("students".into(), "class-student-not-here")]
    );
    let got = c.assign(who, &all, one.id, &ids, "2025-09-01").await;
    assert_eq!(
        problems(got.unwrap_err()),
        [("from_on".into(), "class-bad-date")]
    );
    assert_eq!(
        c.assign(who, &all, one.id, &ids, "2024-09-01")
            .await
            .unwrap(),
        3
    );
    let year = SchoolYear(2024);
    let unplaced = c.unplaced(&all, &one, on(2024, 10, 1), 50).await.unwrap();
    assert!(unplaced.is_empty());
    // Moving 丙 to class 2 from 1 March ends the first membership that day.
    c.assign(who, &all, two.id, &[ids[2]], "2025-03-01")
        .await
        .unwrap();
    let names = |v: Vec<santong_storage::classes::MemberRow>| {
        let mut n: Vec<String> = v.into_iter().map(|m| m.name).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(c.members(&all, one.id, on(2025, 2, 28)).await.unwrap()),
        ["丙", "乙", "甲"]
    );
    assert_eq!(
        names(c.members(&all, one.id, on(2025, 3, 1)).await.unwrap()),
        ["乙", "甲"]
    );
    assert_eq!(
        names(c.members(&all, two.id, on(2025, 3, 1)).await.unwrap()),
        ["丙"]
    );
    assert_eq!(
        c.class_of(ids[2], "1144030501", on(2025, 3, 1))
            .await
            .unwrap()
            .map(|x| x.1),
        Some("二年级2班".to_string())
    );
    // Back to class 1 the same day, and placed in class 1 again later: one row in force each
    // time, never two, never none.
    c.assign(who, &all, one.id, &[ids[2]], "2025-03-01")
        .await
        .unwrap();
    assert_eq!(
        names(c.members(&all, one.id, on(2025, 3, 1)).await.unwrap()),
        ["丙", "乙", "甲"]
    );
    assert!(
        c.members(&all, two.id, on(2025, 3, 1))
            .await
            .unwrap()
            .is_empty()
    );
    c.assign(who, &all, one.id, &[ids[0], ids[0]], "2025-03-10")
        .await
        .unwrap();
    assert_eq!(
        names(c.members(&all, one.id, on(2025, 3, 15)).await.unwrap()),
        ["丙", "乙", "甲"]
    );
    assert_eq!(
        c.class_of(ids[2], "1144030502", on(2025, 3, 1))
            .await
            .unwrap(),
        None,
        "a class is the student's only at its own school"
    );
    // A student who drops out leaves the class list without anyone editing it.
    s.record(
        Actor::Cli,
        &all,
        ids[1],
        &NewEvent {
            kind: "drop_out".into(),
            effective_on: "2025-04-01".into(),
            reason: "随父母外出".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        names(c.members(&all, one.id, on(2025, 4, 1)).await.unwrap()),
        ["丙", "甲"]
    );
    let listed = c
        .list(&all, "1144030501", year, on(2025, 4, 1))
        .await
        .unwrap();
    let sizes: Vec<(String, i64)> = listed.iter().map(|x| (x.name.clone(), x.members)).collect();
    assert_eq!(
        sizes,
        [("二年级1班".to_string(), 2), ("二年级2班".to_string(), 0)]
    );

    // Scope: another school's head sees no class and places no one; a teacher only looks.
    let head_b = person(
        &t,
        "head.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let scope_b = head_b.scope(Permission::RegistryView);
    assert!(
        c.list(&scope_b, "1144030501", year, on(2025, 4, 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.class(&scope_b, one.id, on(2025, 4, 1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        c.members(&scope_b, one.id, on(2025, 2, 1))
            .await
            .unwrap()
            .is_empty()
    );
    let b = Actor::User {
        principal: &head_b,
        ip: "10.0.0.2",
    };
    let got = c.assign(b, &scope_b, one.id, &ids, "2024-09-01").await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    let got = c
        .create(b, "1144030501", &class("2024", "2", "越界班", ""))
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    let teacher = person(&t, "teacher.c", Role::Teacher, node("1144030501", "440305")).await;
    let got = c
        .create(
            Actor::User {
                principal: &teacher,
                ip: "10.0.0.3",
            },
            "1144030501",
            &class("2024", "2", "老师开的班", ""),
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
}
