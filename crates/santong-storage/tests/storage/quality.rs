use santong_domain::identity::{Permission, Role, Scope};
use santong_domain::quality::Rule;
use santong_storage::identity::Actor;
use santong_storage::quality::{Quality, Rollup};
use santong_storage::registry::{Registry, SchoolInput, today};
use santong_storage::students::Students;
use santong_testkit::TestDb;

use super::students::{id, node, person, pupil, ready};

santong_testkit::conformance!(quality_rules_flag_records_within_scope);

async fn quality_rules_flag_records_within_scope(t: TestDb) {
    ready(&t).await;
    let s = Students(&t.db);
    let enrol = |name: &'static str, birth: &'static str, idn: String, grade: &'static str| {
        let s = &s;
        async move {
            s.enrol(Actor::Cli, "1144030501", &pupil(name, birth, idn, grade))
                .await
                .unwrap()
                .student
                .id
        }
    };
    // Clean: an ID number that agrees, the usual age.
    let grade3 = (today().format("%Y").to_string().parse::<i32>().unwrap() - 8).to_string();
    let clean_birth: &'static str = Box::leak(format!("{grade3}-03-01").into_boxed_str());
    let clean_id = id("440305", &clean_birth.replace('-', ""), 11);
    let clean = enrol("李明", clean_birth, clean_id, "3").await;
    // No ID number, twice the same name and birth date.
    let twin_a = enrol("王芳芳", clean_birth, String::new(), "3").await;
    let twin_b = enrol("王芳芳", clean_birth, String::new(), "3").await;
    // Enrolled at 8 in grade 1 (allowed then), older than the grade by more than two years now.
    let old = enrol("赵强", "2016-03-01", id("440305", "20160301", 13), "1").await;
    // The other school has a teaching point whose parent was unlinked (legacy data).
    Registry(&t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: "1144030511".into(),
                name: "山背教学点".into(),
                kind: "218".into(),
                urban_rural: "220".into(),
                county: "440305".into(),
                parent_code: "1144030502".into(),
                opened_on: "2000-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    t.db.execute_unchecked("UPDATE school SET parent_code = NULL WHERE code = '1144030511'")
        .await
        .unwrap();

    let q = Quality(&t.db);
    let all = q
        .schools(&Scope::everything(), None, today())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let a = all.iter().find(|s| s.code == "1144030501").unwrap();
    assert_eq!(a.students, 4);
    assert_eq!(a.issues.get(&Rule::MissingId), Some(&2));
    assert_eq!(a.issues.get(&Rule::SameNameBirth), Some(&2));
    assert_eq!(a.issues.get(&Rule::AgeGrade), Some(&1));
    assert_eq!(a.issues.get(&Rule::InvalidId), None);
    // Four students with no teacher: too small a school to judge its ratio (under 60 pupils).
    assert_eq!(a.issues.get(&Rule::PupilTeacherRatio), None);
    // Score: 5 records (4 students and the school), 5 problems.
    assert_eq!(a.score(), Some(0.0));
    let point = all.iter().find(|s| s.code == "1144030511").unwrap();
    assert_eq!(point.issues.get(&Rule::OrphanTeachingPoint), Some(&1));
    let region = Rollup::of(&all);
    assert_eq!(region.schools, 3);
    assert_eq!(region.issue_count(), 6);
    // The list of one rule, linked by record; the clean pupil is in none.
    let (_, ages) = q
        .issues(
            &Scope::everything(),
            "1144030501",
            Some(Rule::AgeGrade),
            today(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ages.len(), 1);
    assert_eq!(ages[0].subject, old.to_string());
    let (_, every) = q
        .issues(&Scope::everything(), "1144030501", None, today())
        .await
        .unwrap()
        .unwrap();
    assert!(every.iter().all(|i| i.subject != clean.to_string()));
    assert!(every.iter().any(|i| i.subject == twin_a.to_string()));
    assert!(every.iter().any(|i| i.subject == twin_b.to_string()));
    // A policy switches a rule off.
    santong_storage::identity::set_policy(&t.db, "quality", r#"{"disabled":["missing-id"]}"#)
        .await
        .unwrap();
    let all = q
        .schools(&Scope::everything(), None, today())
        .await
        .unwrap();
    let a = all.iter().find(|s| s.code == "1144030501").unwrap();
    assert_eq!(a.issues.get(&Rule::MissingId), None);
    // Scope: the other school's administrator sees neither this school nor its records.
    let other = person(
        &t,
        "admin.b",
        Role::SchoolAdmin,
        node("1144030502", "440305"),
    )
    .await;
    let theirs = q
        .schools(&other.scope(Permission::RegistryView), None, today())
        .await
        .unwrap();
    assert_eq!(
        theirs.iter().map(|s| s.code.as_str()).collect::<Vec<_>>(),
        ["1144030502"]
    );
    assert!(
        q.issues(
            &other.scope(Permission::RegistryView),
            "1144030501",
            None,
            today()
        )
        .await
        .unwrap()
        .is_none()
    );
}
