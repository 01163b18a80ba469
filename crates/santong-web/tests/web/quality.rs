//! Data quality pages: the overview by school and the records to fix, with the scope matrix.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(quality_lists_records_to_fix_within_scope);

fn school(code: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}

async fn quality_lists_records_to_fix_within_scope(app: TestApp) {
    for code in ["1144030501", "1144030502"] {
        Registry(&app.t.db)
            .create_school(
                Actor::Cli,
                &SchoolInput {
                    code: code.into(),
                    name: format!("学校{code}"),
                    kind: "211".into(),
                    urban_rural: "111".into(),
                    county: "440305".into(),
                    opened_on: "1998-09-01".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let id = Students(&app.t.db)
        .enrol(
            Actor::Cli,
            "1144030501",
            &NewStudent {
                name: "孙悦".into(),
                sex: "2".into(),
                birth_date: "2016-03-01".into(),
                ethnicity: "01".into(),
                guardian_name: "孙强".into(),
                guardian_relation: "父亲".into(),
                guardian_phone: "13812345678".into(),
                grade: "3".into(),
                enrolled_on: "2024-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .student
        .id;
    let (a, b) = (school("1144030501"), school("1144030502"));
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    let gz = Node::Region(RegionCode::parse("440100").unwrap());
    app.user("edu.gz", gz, Some((Role::Official, gz)), None)
        .await;
    let s = app.sign_in("head.a").await;
    let page = app.get_as(&s, "/quality").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("数据质量") && page.body.contains("学校1144030501"));
    assert!(page.body.len() < 60_000);
    let detail = app.get_as(&s, "/quality/1144030501?rule=missing-id").await;
    assert_eq!(detail.status, 200);
    assert!(
        detail.body.contains(&format!("/students/{id}")),
        "{}",
        detail.body
    );
    assert!(detail.body.contains("缺少身份证件号"));
    let en = app
        .get_with(
            "/quality/1144030501?lang=en",
            &[("cookie", &format!("santong_session={}", s.cookie))],
        )
        .await;
    assert!(en.body.contains("No ID number"), "{}", en.body);
    assert_eq!(
        app.get_as(&s, "/quality/1144030501?rule=nope").await.status,
        404
    );
    assert_eq!(app.get_as(&s, "/quality?region=12").await.status, 404);
    // The other school's head sees only their own school; another region's official nothing.
    let other = app.sign_in("head.b").await;
    let theirs = app.get_as(&other, "/quality").await;
    assert!(!theirs.body.contains("学校1144030501"));
    let outsiders = [other, app.sign_in("edu.gz").await];
    app.assert_out_of_scope(
        &outsiders.iter().collect::<Vec<_>>(),
        &[
            "/quality/1144030501".to_owned(),
            "/quality/1144030501?rule=missing-id".to_owned(),
        ],
        &[],
    )
    .await;
}
