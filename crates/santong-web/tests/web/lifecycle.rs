//! A student's lifecycle through the pages and the API: recording a change, undoing it, the
//! year-end wizard, and the scope matrix for all of their routes.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::{Session, TestApp};

santong_testkit::web_conformance!(students_change_status_and_years_end_on_the_pages);

fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

async fn seed(app: &TestApp, code: &str) {
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

async fn pupil(app: &TestApp, name: &str, birth: &str, grade: &str) -> String {
    Students(&app.t.db)
        .enrol(
            Actor::Cli,
            "1144030501",
            &NewStudent {
                name: name.into(),
                sex: "2".into(),
                birth_date: birth.into(),
                ethnicity: "01".into(),
                guardian_name: "王芳".into(),
                guardian_relation: "母亲".into(),
                guardian_phone: "13812345678".into(),
                grade: grade.into(),
                enrolled_on: "2024-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .student
        .id
        .to_string()
}

async fn json_post(
    app: &TestApp,
    s: &Session,
    uri: &str,
    body: serde_json::Value,
) -> santong_testkit::TestResponse {
    app.post_raw(
        s,
        uri,
        &body.to_string(),
        &[("content-type", "application/json")],
    )
    .await
}

async fn students_change_status_and_years_end_on_the_pages(app: TestApp) {
    seed(&app, "1144030501").await;
    seed(&app, "1144030502").await;
    let a = school("1144030501", "440305");
    let b = school("1144030502", "440305");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("teacher.a", a, Some((Role::Teacher, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    let gz = Node::Region(RegionCode::parse("440106").unwrap());
    app.user("official.gz", gz, Some((Role::Official, gz)), None)
        .await;
    let head = app.sign_in("head.a").await;
    let teacher = app.sign_in("teacher.a").await;
    let head_b = app.sign_in("head.b").await;
    let gz = app.sign_in("official.gz").await;
    let id = pupil(&app, "李小红", "2017-03-01", "1").await;
    let page = format!("/students/{id}");

    // The head sees the history and the form; a refused change keeps what was typed.
    let shown = app.get_as(&head, &page).await;
    assert!(shown.body.contains("学籍变动记录") && shown.body.contains("登记学籍变动"));
    assert!(
        shown.body.contains("入学") && shown.body.contains(">10<"),
        "enrolment with its code"
    );
    let events = format!("{page}/events");
    let bad = app
        .post_as(
            &head,
            &events,
            &[
                ("kind", "suspend"),
                ("effective_on", "2025-03-01"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("请填写原因") && bad.body.contains("2025-03-01"));
    let ok = app
        .post_as(
            &head,
            &events,
            &[
                ("kind", "suspend"),
                ("effective_on", "2025-03-01"),
                ("reason", "病休"),
                ("approval_ref", "南教〔2025〕3号"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let shown = app.get_as(&head, &page).await;
    assert!(shown.body.contains("休学") && shown.body.contains("南教〔2025〕3号"));
    let roster = app.get_as(&head, "/schools/1144030501/students").await;
    assert!(roster.body.contains("李小红") && roster.body.contains("休学"));
    // The roster filters by name (kept in the pager and form) and refuses a grade it cannot have.
    let found = app
        .get_as(
            &head,
            "/schools/1144030501/students?q=%E5%B0%8F%E7%BA%A2&sort=-name",
        )
        .await;
    assert!(found.body.contains("李小红") && found.body.contains("value=\"小红\""));
    let none = app
        .get_as(
            &head,
            "/schools/1144030501/students?q=%E6%97%A0%E6%AD%A4%E4%BA%BA",
        )
        .await;
    assert!(!none.body.contains("李小红"));
    let api = app
        .get_as(
            &head,
            "/api/v1/schools/1144030501/students?q=%E5%B0%8F%E7%BA%A2",
        )
        .await
        .json();
    assert_eq!(api["total"], 1);
    let bad = app
        .get_as(&head, "/schools/1144030501/students?grade=99&sort=height")
        .await;
    assert_eq!(bad.status, 400);
    // The roster as CSV: BOM, Chinese header, the page's columns (no phones); the export is
    // audited with its size.
    let csv = app
        .get_as(
            &head,
            "/schools/1144030501/students/export.csv?q=%E5%B0%8F%E7%BA%A2",
        )
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(
        csv.body.starts_with("\u{feff}全国学籍号,姓名,"),
        "{}",
        csv.body
    );
    assert!(csv.body.contains("李小红") && !csv.body.contains("5678"));
    assert_eq!(csv.body.lines().count(), 2);
    // A link cannot ask for full data: only the form's post, with a purpose, by someone with the
    // sensitive-data permission, for today.
    let linked = app
        .get_as(
            &head,
            "/schools/1144030501/students/export.csv?full=1&purpose=%E6%A0%B8%E5%AF%B9",
        )
        .await;
    assert!(linked.status == 200 && !linked.body.contains("13812345678"));
    let url = "/schools/1144030501/students/export.csv";
    let no = app
        .post_as(&teacher, url, &[("full", "1"), ("purpose", "核对")])
        .await;
    assert_eq!(no.status, 403);
    let no = app.post_as(&head, url, &[("full", "1")]).await;
    assert_eq!(no.status, 400);
    let no = app
        .post_as(
            &head,
            url,
            &[("full", "1"), ("purpose", "核对"), ("on", "2025-09-01")],
        )
        .await;
    assert_eq!(no.status, 400);
    let full = app
        .post_as(&head, url, &[("full", "1"), ("purpose", "核对")])
        .await;
    assert_eq!(full.status, 200);
    assert!(full.body.contains("13812345678") && full.body.contains("留守儿童"));
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 50, 0)
        .await
        .unwrap();
    let exports: Vec<serde_json::Value> = audit
        .items
        .iter()
        .filter(|e| e.event == "student.export")
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert!(
        exports
            .iter()
            .any(|d| d["rows"] == 1 && d["full"] == false && d["q"] == "小红"),
        "{exports:?}"
    );
    assert!(
        exports
            .iter()
            .any(|d| d["full"] == true && d["purpose"] == "核对")
    );
    // Another school's head gets nothing.
    let other = app
        .get_as(&head_b, "/schools/1144030501/students/export.csv")
        .await;
    assert_eq!(other.status, 404);
    // A teacher reads the history but records nothing.
    let seen = app.get_as(&teacher, &page).await;
    assert!(seen.body.contains("休学") && !seen.body.contains("登记学籍变动"));
    let no = app
        .post_as(&teacher, &events, &[("kind", "resume"), ("reason", "x")])
        .await;
    assert_eq!(no.status, 403);

    // Undo asks first, wants a reason, and leaves the original marked.
    let api_events = format!("/api/v1{events}");
    let list = app.get_as(&head, &api_events).await.json();
    let suspend = list[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (list[1]["kind"].as_str(), list[1]["code"].as_str()),
        (Some("suspend"), Some("11"))
    );
    let undo = format!("{events}/{suspend}/undo");
    let confirm = app.get_as(&head, &undo).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("确认撤销"));
    let refused = app.post_as(&head, &undo, &[("reason", "")]).await;
    assert_eq!(refused.status, 400);
    let done = app.post_as(&head, &undo, &[("reason", "登记错了")]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let list = app.get_as(&head, &api_events).await.json();
    assert_eq!(list.as_array().unwrap().len(), 3, "nothing deleted");
    assert!(list[1]["undone_by"].is_string());
    assert_eq!(list[2]["undoes"].as_str(), Some(suspend.as_str()));
    let api_student = app.get_as(&head, &format!("/api/v1{page}")).await.json();
    assert_eq!(api_student["status"], "in");

    // The API records with field-level problems.
    let bad = json_post(
        &app,
        &head,
        &api_events,
        serde_json::json!({"kind": "enrol", "reason": "x"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["errors"][0]["code"], "student-event-bad-kind");

    // Corrections: refused field by field, then kept with the old value.
    let fix = format!("{page}/corrections");
    let bad = app
        .post_as(
            &head,
            &fix,
            &[("birth_date", "2017-13-01"), ("reason", "更正")],
        )
        .await;
    assert_eq!(bad.status, 400);
    let ok = app
        .post_as(
            &head,
            &fix,
            &[("name", "李晓红"), ("reason", "按户口簿更正")],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let shown = app.get_as(&head, &page).await;
    assert!(
        shown.body.contains("更正记录")
            && shown.body.contains("李小红")
            && shown.body.contains("李晓红")
    );
    let no = app
        .post_as(&teacher, &fix, &[("name", "李红"), ("reason", "x")])
        .await;
    assert_eq!(no.status, 403);

    // Year-end: preview writes nothing, applying needs the tick, the batch can be undone.
    let _second = pupil(&app, "王小明", "2014-03-01", "4").await;
    let _last = pupil(&app, "赵六年", "2012-03-01", "6").await;
    let wizard = app.get_as(&head, "/year-end").await;
    assert_eq!(wizard.status, 200);
    assert!(
        wizard.body.contains("value=\"1144030501\""),
        "prefilled with the user's school"
    );
    let preview = app
        .get_as(
            &head,
            "/year-end?preview=1&school=1144030501&effective_on=2025-09-01",
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(
        preview.body.contains("id=\"promoted\">2<") && preview.body.contains("id=\"graduated\">1<")
    );
    let before = app
        .get_as(&head, "/schools/1144030501/students?on=2025-09-01")
        .await;
    assert!(
        before.body.contains("<td>6</td>"),
        "the preview wrote nothing"
    );
    let fields = [
        ("school", "1144030501"),
        ("county", ""),
        ("effective_on", "2025-09-01"),
        ("receiving_school", ""),
    ];
    let unticked = app.post_as(&head, "/year-end", &fields).await;
    assert_eq!(unticked.status, 400);
    assert!(unticked.body.contains("请勾选确认"));
    let mut ticked = fields.to_vec();
    ticked.push(("confirm", "on"));
    let applied = app.post_as(&head, "/year-end", &ticked).await;
    assert_eq!(applied.status, 303, "{}", applied.body);
    let batch = applied.header("location").unwrap().to_owned();
    let after = app
        .get_as(&head, "/schools/1144030501/students?on=2025-09-01")
        .await;
    assert!(!after.body.contains("赵六年") && after.body.contains("<td>5</td>"));
    let again = app.post_as(&head, "/year-end", &ticked).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("没有需要升级的学生"));
    let batch_page = app.get_as(&head, &batch).await;
    assert!(batch_page.body.contains("撤销整批"));
    let batch_id = batch.rsplit('/').next().unwrap().to_owned();
    let api_batch = app
        .get_as(&head, &format!("/api/v1/year-end/batches/{batch_id}"))
        .await
        .json();
    assert_eq!(
        (
            api_batch["promoted"].as_i64(),
            api_batch["graduated"].as_i64()
        ),
        (Some(2), Some(1))
    );

    // Nobody from another school or region reaches any of it.
    app.assert_out_of_scope(
        &[&head_b, &gz],
        &[
            undo.clone(),
            api_events.clone(),
            batch.clone(),
            format!("/api/v1/year-end/batches/{batch_id}"),
        ],
        &[
            (
                events.clone(),
                vec![("kind", "suspend"), ("reason", "越界")],
            ),
            (format!("{events}/{suspend}/undo"), vec![("reason", "越界")]),
            (
                format!("{page}/corrections"),
                vec![("name", "越界"), ("reason", "越界")],
            ),
            (
                "/year-end".into(),
                vec![
                    ("school", "1144030501"),
                    ("effective_on", "2025-09-01"),
                    ("confirm", "on"),
                ],
            ),
            (format!("{batch}/undo"), vec![("confirm", "on")]),
        ],
    )
    .await;
    for s in [&head_b, &gz] {
        let plan = json_post(
            &app,
            s,
            "/api/v1/year-end/plan",
            serde_json::json!({"school": "1144030501"}),
        )
        .await;
        assert_eq!(plan.status, 404, "{}", plan.body);
        let undo = json_post(
            &app,
            s,
            &format!("/api/v1/year-end/batches/{batch_id}/undo"),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(undo.status, 404);
        let rec = json_post(
            &app,
            s,
            &api_events,
            serde_json::json!({"kind": "suspend", "reason": "x"}),
        )
        .await;
        assert_eq!(rec.status, 404);
    }
    let theirs = app.get_as(&head_b, "/year-end").await;
    assert!(
        !theirs.body.contains(&batch_id),
        "their list leaves the batch out"
    );

    // Undo the batch: everyone is back where they were.
    let undone = app
        .post_as(&head, &format!("{batch}/undo"), &[("confirm", "on")])
        .await;
    assert_eq!(undone.status, 303, "{}", undone.body);
    assert!(
        app.get_as(&head, &batch)
            .await
            .body
            .contains("id=\"undone\"")
    );
    let back = app
        .get_as(&head, "/schools/1144030501/students?on=2025-09-01")
        .await;
    assert!(back.body.contains("赵六年") && back.body.contains("<td>6</td>"));
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 200, 0)
        .await
        .unwrap();
    for event in [
        "student.event",
        "student.undo",
        "student.batch",
        "student.batch_undo",
    ] {
        assert!(
            audit
                .items
                .iter()
                .any(|e| e.event == event && e.result == "success"),
            "{event}"
        );
    }
}
