//! Transfers through the pages and the API, and the scope matrix for them.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(
    transfers_are_started_and_signed_on_the_pages,
    staff_moves_are_started_and_signed_on_the_pages,
);

fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

async fn transfers_are_started_and_signed_on_the_pages(app: TestApp) {
    for (code, county) in [
        ("1144030501", "440305"),
        ("1144030502", "440305"),
        ("1144030503", "440305"),
    ] {
        Registry(&app.t.db)
            .create_school(
                Actor::Cli,
                &SchoolInput {
                    code: code.into(),
                    name: format!("学校{code}"),
                    kind: "211".into(),
                    urban_rural: "111".into(),
                    county: county.into(),
                    opened_on: "1998-09-01".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let number = Students(&app.t.db)
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
        .student_number;
    let (a, b, c) = (
        school("1144030501", "440305"),
        school("1144030502", "440305"),
        school("1144030503", "440305"),
    );
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    app.user("head.c", c, Some((Role::SchoolAdmin, c)), None)
        .await;
    app.user(
        "edu.ns",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    app.user(
        "edu.gz",
        region("440106"),
        Some((Role::Official, region("440106"))),
        None,
    )
    .await;
    let head_a = app.sign_in("head.a").await;
    let head_b = app.sign_in("head.b").await;
    let head_c = app.sign_in("head.c").await;
    let edu = app.sign_in("edu.ns").await;
    let gz = app.sign_in("edu.gz").await;

    // The receiving school starts it; a wrong name is refused at its field, keeping the input.
    let form = app.get_as(&head_b, "/transfers/new").await;
    assert!(
        form.body.contains("value=\"1144030502\""),
        "prefilled with the user's school"
    );
    let fields = |name: &'static str| {
        vec![
            ("student_number", number.clone()),
            ("name", name.to_owned()),
            ("to_school", "1144030502".to_owned()),
            ("reason", "搬家".to_owned()),
        ]
    };
    let post = |s: &santong_testkit::Session, v: Vec<(&'static str, String)>| {
        let app = &app;
        let s = s.clone();
        async move {
            let refs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
            app.post_as(&s, "/transfers", &refs).await
        }
    };
    let bad = post(&head_b, fields("孙月")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("没有找到学籍号与姓名都相符的学生") && bad.body.contains(&number));
    // Another school cannot start one into someone else's school.
    let other = post(&head_c, fields("孙悦")).await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert!(other.body.contains("请填写您学校的代码"));
    // Nor can the county start one for a school: the school signs its own first step.
    let county = post(&edu, fields("孙悦")).await;
    assert_eq!(county.status, 403, "{}", county.body);
    let ok = post(&head_b, fields("孙悦")).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let page = ok.header("location").unwrap().to_owned();
    let id = page.rsplit('/').next().unwrap().to_owned();

    // The county's inbox has it, with its deadline; the county signs; the school cannot.
    let inbox = app.get_as(&edu, "/transfers").await;
    assert!(inbox.body.contains("孙悦") && inbox.body.contains("转入县（区）"));
    let shown = app.get_as(&head_b, &page).await;
    assert!(shown.body.contains("审批流程") && !shown.body.contains("您的审批意见"));
    let signing = app.get_as(&edu, &page).await;
    assert!(signing.body.contains("您的审批意见"));
    let no = app
        .post_as(
            &head_b,
            &format!("{page}/decide"),
            &[("seq", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(no.status, 403);
    let reject_blank = app
        .post_as(
            &edu,
            &format!("{page}/decide"),
            &[("seq", "1"), ("decision", "reject"), ("note", "")],
        )
        .await;
    assert_eq!(reject_blank.status, 400);
    assert!(reject_blank.body.contains("不同意时请填写说明"));
    let yes = app
        .post_as(
            &edu,
            &format!("{page}/decide"),
            &[("seq", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(yes.status, 303, "{}", yes.body);
    // A second approval of the same step (a stale page) is told what happened.
    let stale = app
        .post_as(
            &edu,
            &format!("{page}/decide"),
            &[("seq", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(stale.status, 409);
    assert!(stale.body.contains("已由他人处理"));

    // The sending school and county finish it through the API.
    let decide = |s: &santong_testkit::Session, seq: i32| {
        let app = &app;
        let s = s.clone();
        let uri = format!("/api/v1/transfers/{id}/decide");
        async move {
            app.post_raw(
                &s,
                &uri,
                &serde_json::json!({"seq": seq, "approve": true}).to_string(),
                &[("content-type", "application/json")],
            )
            .await
        }
    };
    let r = decide(&head_a, 2).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = decide(&edu, 3).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["transfer"]["status"], "completed");
    let done = app.get_as(&head_b, &page).await;
    assert!(done.body.contains("已完成") && done.body.contains("查看学籍档案"));
    let roster = app.get_as(&head_b, "/schools/1144030502/students").await;
    assert!(roster.body.contains("孙悦"));
    let api = app
        .get_as(&head_b, "/api/v1/transfers?box=all")
        .await
        .json();
    assert_eq!(api["total"], 1);

    // Outside both schools and their county: nothing, whatever the route.
    app.assert_out_of_scope(
        &[&head_c, &gz],
        &[page.clone(), format!("/api/v1/transfers/{id}")],
        &[(
            format!("{page}/decide"),
            vec![("seq", "3"), ("decision", "approve")],
        )],
    )
    .await;
    let csv = app.get_as(&head_b, "/transfers/export.csv?box=all").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.starts_with("\u{feff}") && csv.body.contains("孙悦") && csv.body.contains("搬家")
    );
    for s in [&head_c, &gz] {
        let csv = app.get_as(s, "/transfers/export.csv?box=all").await;
        assert_eq!(csv.body.lines().count(), 1, "{}", csv.body);
        let list = app.get_as(s, "/transfers?box=all").await;
        assert!(!list.body.contains("孙悦"));
        let api = app.get_as(s, "/api/v1/transfers?box=all").await.json();
        assert_eq!(api["total"], 0);
    }
}

async fn staff_moves_are_started_and_signed_on_the_pages(app: TestApp) {
    use santong_storage::teachers::{NewTeacher, Teachers};
    for code in ["1144030501", "1144030502", "1144030503"] {
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
    let body = "44030519880512002";
    let idn = format!(
        "{body}{}",
        char::from(santong_domain::registry::id_check_char(body.as_bytes()))
    );
    let number = Teachers(&app.t.db)
        .appoint(
            Actor::Cli,
            "1144030501",
            &NewTeacher {
                name: "王芳".into(),
                sex: "2".into(),
                birth_date: "1988-05-12".into(),
                ethnicity: "01".into(),
                id_number: idn,
                qualification: "primary".into(),
                title: "first".into(),
                subjects: "数学".into(),
                post: "teaching".into(),
                appointed_on: "2015-09-01".into(),
            },
        )
        .await
        .unwrap()
        .teacher_number;
    let (a, b, c) = (
        school("1144030501", "440305"),
        school("1144030502", "440305"),
        school("1144030503", "440305"),
    );
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    app.user("head.c", c, Some((Role::SchoolAdmin, c)), None)
        .await;
    app.user(
        "edu.ns",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    app.user(
        "edu.gz",
        region("440106"),
        Some((Role::Official, region("440106"))),
        None,
    )
    .await;
    let head_a = app.sign_in("head.a").await;
    let head_b = app.sign_in("head.b").await;
    let head_c = app.sign_in("head.c").await;
    let edu = app.sign_in("edu.ns").await;
    let gz = app.sign_in("edu.gz").await;

    let form = app.get_as(&head_b, "/moves/new").await;
    assert!(form.body.contains("教职工号") && form.body.contains("value=\"1144030502\""));
    let bad = app
        .post_as(
            &head_b,
            "/moves",
            &[
                ("teacher_number", number.as_str()),
                ("name", "王方"),
                ("to_school", "1144030502"),
                ("reason", "工作需要"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("没有找到教职工号与姓名都相符的教职工"));
    let ok = app
        .post_as(
            &head_b,
            "/moves",
            &[
                ("teacher_number", number.as_str()),
                ("name", "王芳"),
                ("to_school", "1144030502"),
                ("reason", "工作需要"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let page = ok.header("location").unwrap().to_owned();
    assert!(page.starts_with("/moves/"));
    let id = page.rsplit('/').next().unwrap().to_owned();
    // Within one county: receiving school, county, sending school, county.
    let inbox = app.get_as(&edu, "/moves").await;
    assert!(inbox.body.contains("王芳") && inbox.body.contains("转入县（区）"));
    assert!(!app.get_as(&edu, "/transfers").await.body.contains("王芳"));
    let yes = app
        .post_as(
            &edu,
            &format!("{page}/decide"),
            &[("seq", "1"), ("decision", "approve")],
        )
        .await;
    assert_eq!(yes.status, 303, "{}", yes.body);
    let decide = |s: &santong_testkit::Session, seq: i32| {
        let app = &app;
        let s = s.clone();
        let uri = format!("/api/v1/moves/{id}/decide");
        async move {
            app.post_raw(
                &s,
                &uri,
                &serde_json::json!({"seq": seq, "approve": true}).to_string(),
                &[("content-type", "application/json")],
            )
            .await
        }
    };
    assert_eq!(decide(&head_b, 2).await.status, 403);
    assert_eq!(decide(&head_a, 2).await.status, 200);
    let r = decide(&edu, 3).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["transfer"]["status"], "completed");
    let done = app.get_as(&head_b, &page).await;
    assert!(done.body.contains("已完成") && done.body.contains("查看教职工档案"));
    let staff = app.get_as(&head_b, "/schools/1144030502/teachers").await;
    assert!(staff.body.contains("王芳"));
    let old = app.get_as(&head_a, "/schools/1144030501/teachers").await;
    assert!(!old.body.contains("王芳"));

    app.assert_out_of_scope(
        &[&head_c, &gz],
        &[page.clone(), format!("/api/v1/moves/{id}")],
        &[(
            format!("{page}/decide"),
            vec![("seq", "3"), ("decision", "approve")],
        )],
    )
    .await;
    let csv = app.get_as(&head_b, "/moves/export.csv?box=all").await;
    assert!(csv.body.contains("王芳") && csv.body.contains(&number));
    for s in [&head_c, &gz] {
        assert!(
            !app.get_as(s, "/moves/export.csv?box=all")
                .await
                .body
                .contains("王芳")
        );
        assert!(!app.get_as(s, "/moves?box=all").await.body.contains("王芳"));
        let api = app.get_as(s, "/api/v1/moves?box=all").await.json();
        assert_eq!(api["total"], 0);
    }
}
