//! Teachers through the pages and the API, and the scope matrix for them.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_domain::registry::id_check_char;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(staff_are_appointed_and_shown_masked);

fn school(code: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}

fn id_number(body17: &str) -> String {
    format!("{body17}{}", char::from(id_check_char(body17.as_bytes())))
}

async fn staff_are_appointed_and_shown_masked(app: TestApp) {
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

    let idn = id_number("44030519880512002");
    let fields = |birth: &'static str| {
        vec![
            ("name", "林老师".to_owned()),
            ("sex", "2".to_owned()),
            ("birth_date", birth.to_owned()),
            ("ethnicity", "01".to_owned()),
            ("id_number", idn.clone()),
            ("qualification", "primary".to_owned()),
            ("title", "first".to_owned()),
            ("subjects", "数学".to_owned()),
            ("post", "teaching".to_owned()),
            ("appointed_on", "2020-09-01".to_owned()),
        ]
    };
    let post = |s: &santong_testkit::Session, v: Vec<(&'static str, String)>| {
        let app = &app;
        let s = s.clone();
        async move {
            let refs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
            app.post_as(&s, "/schools/1144030501/teachers", &refs).await
        }
    };
    let form = app.get_as(&head, "/schools/1144030501/teachers/new").await;
    assert!(form.body.contains("一级教师") && form.body.contains("小学教师资格"));
    let bad = post(&head, fields("1988-05-13")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("身份证件号与出生日期不一致") && bad.body.contains("林老师"));
    let ok = post(&head, fields("1988-05-12")).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let page = ok.header("location").unwrap().to_owned();
    let id = page.rsplit('/').next().unwrap().to_owned();
    let list = app.get_as(&teacher, "/schools/1144030501/teachers").await;
    assert!(list.body.contains("林老师") && list.body.contains("T4403052020"));
    assert!(!list.body.contains(&idn) && !list.body.contains(&idn[6..17]));
    assert!(!list.body.contains("聘任教职工"), "teachers do not appoint");
    let shown = app.get_as(&head, &page).await;
    assert!(shown.body.contains("登记离岗") && !shown.body.contains(&idn));
    let api = app
        .get_as(&head, &format!("/api/v1/teachers/{id}"))
        .await
        .json();
    assert_eq!(api["title"], "first");
    assert!(!api.to_string().contains(&idn));
    let no = post(&teacher, fields("1988-05-12")).await;
    assert_eq!(no.status, 403);

    app.assert_out_of_scope(
        &[&head_b, &gz],
        &[
            "/schools/1144030501/teachers".into(),
            page.clone(),
            format!("/api/v1/teachers/{id}"),
            "/api/v1/schools/1144030501/teachers".into(),
        ],
        &[
            (format!("{page}/leave"), vec![("reason", "越界")]),
            (
                "/schools/1144030501/teachers".into(),
                vec![("name", "越界")],
            ),
        ],
    )
    .await;
    // Leaving: off the staff from that day, the record kept.
    let left = app
        .post_as(
            &head,
            &format!("{page}/leave"),
            &[("effective_on", "2024-07-31"), ("reason", "退休")],
        )
        .await;
    assert_eq!(left.status, 303, "{}", left.body);
    let now = app.get_as(&head, "/schools/1144030501/teachers").await;
    assert!(!now.body.contains("林老师"));
    let then = app
        .get_as(&head, "/schools/1144030501/teachers?on=2024-07-30")
        .await;
    assert!(then.body.contains("林老师"));
    assert!(app.get_as(&head, &page).await.body.contains("已离岗"));
    // The list filters by name or subject and sorts; an unknown order is refused.
    let found = app
        .get_as(
            &head,
            "/schools/1144030501/teachers?on=2024-07-30&q=%E6%9E%97&sort=-number",
        )
        .await;
    assert!(found.body.contains("林老师"));
    let api = app
        .get_as(
            &head,
            "/api/v1/schools/1144030501/teachers?on=2024-07-30&q=%E6%97%A0%E6%AD%A4%E4%BA%BA",
        )
        .await
        .json();
    assert_eq!(api["total"], 0);
    let bad = app
        .get_as(&head, "/schools/1144030501/teachers?sort=age")
        .await;
    assert_eq!(bad.status, 400);
    // As CSV, ID numbers masked; audited; nothing for another school or a teacher asking for
    // full data.
    let csv = app
        .get_as(
            &head,
            "/schools/1144030501/teachers/export.csv?on=2024-07-30",
        )
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.body.starts_with("\u{feff}教职工号,") && csv.body.contains("林老师"));
    assert!(csv.body.contains("********"));
    assert!(
        app.get_as(&head_b, "/schools/1144030501/teachers/export.csv")
            .await
            .status
            .is_client_error()
    );
    // A link cannot ask for full data.
    let linked = app
        .get_as(
            &teacher,
            "/schools/1144030501/teachers/export.csv?on=2024-07-30&full=1&purpose=%E6%A0%B8%E5%AF%B9",
        )
        .await;
    assert!(linked.status == 200 && linked.body.contains("********"));
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 50, 0)
        .await
        .unwrap();
    assert!(audit.items.iter().any(|e| e.event == "teacher.export"));
}
