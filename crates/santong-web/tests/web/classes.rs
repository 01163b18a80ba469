//! Classes through the pages and the API, and the scope matrix for them.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(classes_are_opened_and_filled_on_the_pages);

fn school(code: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}

async fn classes_are_opened_and_filled_on_the_pages(app: TestApp) {
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
    let mut ids = vec![];
    for name in ["赵一", "钱二"] {
        ids.push(
            Students(&app.t.db)
                .enrol(
                    Actor::Cli,
                    "1144030501",
                    &NewStudent {
                        name: name.into(),
                        sex: "1".into(),
                        birth_date: "2017-03-01".into(),
                        ethnicity: "01".into(),
                        guardian_name: "家长".into(),
                        guardian_relation: "母亲".into(),
                        guardian_phone: "13812345678".into(),
                        grade: "2".into(),
                        enrolled_on: "2024-09-01".into(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .student
                .id
                .to_string(),
        );
    }
    let (a, b) = (school("1144030501"), school("1144030502"));
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("teacher.a", a, Some((Role::Teacher, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    let gz = Node::Region(RegionCode::parse("440106").unwrap());
    app.user("edu.gz", gz, Some((Role::Official, gz)), None)
        .await;
    let head = app.sign_in("head.a").await;
    let teacher = app.sign_in("teacher.a").await;
    let head_b = app.sign_in("head.b").await;
    let gz = app.sign_in("edu.gz").await;

    let list = "/schools/1144030501/classes?year=2024";
    let page = app.get_as(&head, list).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("新建班级"));
    let bad = app
        .post_as(
            &head,
            "/schools/1144030501/classes",
            &[
                ("school_year", "2024"),
                ("grade", "2"),
                ("name", "二(1)班"),
                ("head_teacher", "head.b"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("班主任须是本校的教师或管理员") && bad.body.contains("二(1)班"));
    let ok = app
        .post_as(
            &head,
            "/schools/1144030501/classes",
            &[
                ("school_year", "2024"),
                ("grade", "2"),
                ("name", "二(1)班"),
                ("head_teacher", "teacher.a"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let class = ok.header("location").unwrap().to_owned();
    let id = class.rsplit('/').next().unwrap().to_owned();
    let shown = app.get_as(&head, &class).await;
    assert!(
        shown.body.contains("赵一") && shown.body.contains("分入本班"),
        "unplaced pupils offered"
    );
    // Ticked boxes: repeated `student` fields.
    let placed = app
        .post_as(
            &head,
            &format!("{class}/members"),
            &[
                ("student", &ids[0]),
                ("student", &ids[1]),
                ("from_on", "2024-09-01"),
            ],
        )
        .await;
    assert_eq!(placed.status, 303, "{}", placed.body);
    let shown = app
        .get_as(&teacher, &format!("{class}?on=2024-10-01"))
        .await;
    assert!(shown.body.contains("id=\"members\">2<") && !shown.body.contains("分入本班"));
    assert!(
        shown.body.contains("2024-2025 · 第一学期"),
        "the term of the day shown"
    );
    let student = app.get_as(&head, &format!("/students/{}", ids[0])).await;
    assert!(
        !student.body.contains("二(1)班"),
        "a class of an earlier school year is not the student's class today"
    );
    let api = app
        .get_as(&head, &format!("/api/v1/classes/{id}?on=2024-10-01"))
        .await
        .json();
    assert_eq!(api["members"].as_array().unwrap().len(), 2);
    let listed = app
        .get_as(&head, "/api/v1/schools/1144030501/classes?year=2024")
        .await
        .json();
    assert_eq!(listed[0]["head_name"], "teacher.a 名");
    // A teacher looks but does not open classes.
    let no = app
        .post_as(
            &teacher,
            "/schools/1144030501/classes",
            &[("school_year", "2024"), ("grade", "2"), ("name", "x")],
        )
        .await;
    assert_eq!(no.status, 403);

    app.assert_out_of_scope(
        &[&head_b, &gz],
        &[
            list.into(),
            class.clone(),
            format!("/api/v1/classes/{id}"),
            "/api/v1/schools/1144030501/classes".into(),
        ],
        &[
            (
                "/schools/1144030501/classes".into(),
                vec![("school_year", "2024"), ("grade", "2"), ("name", "越界班")],
            ),
            (
                format!("{class}/members"),
                vec![("student", &ids[0]), ("from_on", "2024-09-01")],
            ),
        ],
    )
    .await;
}
