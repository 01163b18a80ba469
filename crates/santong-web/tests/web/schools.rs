//! Schools through the pages and the API, and the scope matrix for them.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(
    officials_open_edit_and_merge_schools_on_the_pages,
    the_api_lists_reads_and_creates_schools,
    schools_are_out_of_scope_for_other_schools_and_regions,
    schools_report_their_conditions,
    students_are_enrolled_and_shown_masked,
);

fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}
fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

async fn seed(app: &TestApp, code: &str, name: &str, county: &str) {
    Registry(&app.t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: code.into(),
                name: name.into(),
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

async fn officials_open_edit_and_merge_schools_on_the_pages(app: TestApp) {
    app.user(
        "official.ns",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    let s = app.sign_in("official.ns").await;
    let home = app.get_as(&s, "/").await;
    assert!(
        home.body.contains("href=\"/schools\""),
        "the nav leads there"
    );
    assert!(
        app.get_as(&s, "/schools")
            .await
            .body
            .contains("/schools/new")
    );
    // Bad input: every field's message, in Chinese, nothing written.
    let bad = app
        .post_as(
            &s,
            "/schools",
            &[
                ("code", "123"),
                ("name", "x"),
                ("kind", "211"),
                ("urban_rural", "111"),
                ("county", "440300"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    for msg in [
        "学校标识码为 10 位数字",
        "学校名称应为 2 至 60 个字符",
        "县级行政区划",
    ] {
        assert!(bad.body.contains(msg), "{msg}: {}", bad.body);
    }
    assert_eq!(
        Registry(&app.t.db)
            .list_schools(
                &santong_domain::identity::Scope::everything(),
                &Default::default(),
                10,
                0
            )
            .await
            .unwrap()
            .total,
        0
    );
    let fields = [
        ("code", "1144030501"),
        ("name", "南山实验小学"),
        ("kind", "211"),
        ("urban_rural", "111"),
        ("county", "440305"),
        ("opened_on", "1998-09-01"),
    ];
    let ok = app.post_as(&s, "/schools", &fields).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.header("location"), Some("/schools/1144030501"));
    let page = app.get_as(&s, "/schools/1144030501").await;
    assert!(page.body.contains("南山实验小学") && page.body.contains("正常办学"));
    assert!(page.body.contains("创建"), "history shows the opening");
    // Edit with a reason; the same form again is stale.
    let mut edit = fields.to_vec();
    edit[1] = ("name", "南山区实验小学");
    edit.push(("version", "1"));
    edit.push(("reason", "更名"));
    let res = app.post_as(&s, "/schools/1144030501", &edit).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let stale = app.post_as(&s, "/schools/1144030501", &edit).await;
    assert_eq!(stale.status, 409);
    assert!(stale.body.contains("已被他人修改"));
    // The page that comes back keeps the version the form was loaded with: saving it again is
    // still refused instead of overwriting.
    assert!(
        stale.body.contains(r#"name="version" value="1""#),
        "{}",
        stale.body
    );
    let page = app.get_as(&s, "/schools/1144030501").await;
    assert!(
        page.body
            .contains("学校名称: 南山实验小学 → 南山区实验小学"),
        "{}",
        page.body
    );
    // Merge another school into it.
    seed(&app, "1144030502", "村小", "440305").await;
    let refused = app
        .post_as(
            &s,
            "/schools/1144030502/close",
            &[
                ("version", "1"),
                ("on", "2025-07-31"),
                ("into", "1144030599"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("请填写原因") && refused.body.contains("只能并入"));
    let merged = app
        .post_as(
            &s,
            "/schools/1144030502/close",
            &[
                ("version", "1"),
                ("on", "2025-07-31"),
                ("into", "1144030501"),
                ("reason", "布局调整"),
            ],
        )
        .await;
    assert_eq!(merged.status, StatusCode::SEE_OTHER, "{}", merged.body);
    let page = app.get_as(&s, "/schools/1144030502").await;
    assert!(page.body.contains("已合并") && page.body.contains("/schools/1144030501"));
    // Lists filter and page.
    let list = app.get_as(&s, "/schools?status=merged").await;
    assert!(list.body.contains("村小") && !list.body.contains("南山区实验小学"));
    let bad = app.get_as(&s, "/schools?sort=colour").await;
    assert_eq!(bad.status, 400);
    // English too.
    let en = app
        .get_with(
            "/schools/1144030502?lang=en",
            &[("cookie", &format!("santong_session={}", s.cookie))],
        )
        .await;
    assert!(en.body.contains("Merged"));
}

async fn the_api_lists_reads_and_creates_schools(app: TestApp) {
    app.user(
        "official.ns",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    let id = santong_storage::identity::Identity(&app.t.db);
    let santong_storage::identity::Login::Ok { principal, .. } = id
        .authenticate(
            "official.ns",
            santong_testkit::READY_PASSWORD,
            "127.0.0.1",
            "t",
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    let (_, token) = id
        .create_token(
            &principal,
            "127.0.0.1",
            "sync",
            &[
                santong_domain::identity::Permission::RegistryView,
                santong_domain::identity::Permission::RegistryManage,
            ],
            30,
        )
        .await
        .unwrap();
    let auth = format!("Bearer {token}");
    let post = |body: serde_json::Value| {
        Request::post("/api/v1/schools")
            .header("authorization", auth.clone())
            .header("content-type", "application/json")
            .header("accept-language", "en")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let bad = app
        .request(post(serde_json::json!({
            "code": "1", "name": "A", "kind": "218", "urban_rural": "220", "county": "440305"
        })))
        .await;
    assert_eq!(bad.status, 400);
    let codes: Vec<String> = bad.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes.contains(&"registry-bad-code".to_owned()), "{codes:?}");
    assert!(
        codes.contains(&"registry-parent-required".to_owned()),
        "{codes:?}"
    );
    assert!(bad.body.contains("A teaching point needs its parent"));
    let ok = app
        .request(post(serde_json::json!({
            "code": "1144030501", "name": "南山小学", "kind": "211", "urban_rural": "111",
            "county": "440305", "opened_on": "2001-09-01"
        })))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.json()["grades"], "1-6");
    let list = app
        .get_with(
            "/api/v1/schools?kind=211&sort=-name",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.json()["total"], 1);
    let one = app
        .get_with("/api/v1/schools/1144030501", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(one["history"][0]["kind"], "create");
    assert_eq!(one["version"], 1);
    // Missing fields are field errors like the others, not a parse failure.
    let missing = app
        .request(post(serde_json::json!({ "name": "只有名字" })))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(missing.json()["errors"].as_array().unwrap().len() >= 4);
    // Edit and close through the API; a stale version is 409.
    let put = |body: serde_json::Value| {
        Request::put("/api/v1/schools/1144030501")
            .header("authorization", auth.clone())
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let edited = app
        .request(put(serde_json::json!({
            "version": 1, "name": "南山区小学", "kind": "211", "urban_rural": "111", "reason": "更名"
        })))
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(edited.json()["version"], 2);
    let stale = app
        .request(put(serde_json::json!({
            "version": 1, "name": "别名", "kind": "211", "urban_rural": "111"
        })))
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["code"], "stale");
    let closed = app
        .request(
            Request::post("/api/v1/schools/1144030501/close")
                .header("authorization", auth.clone())
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::json!({ "version": 2, "on": "2025-07-31", "reason": "撤销" })
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.json()["status"], "closed");
}

async fn schools_are_out_of_scope_for_other_schools_and_regions(app: TestApp) {
    seed(&app, "1144030501", "南山小学", "440305").await;
    seed(&app, "1144030502", "南山二小", "440305").await;
    seed(&app, "1144010601", "天河小学", "440106").await;
    app.user(
        "official.gz",
        region("440106"),
        Some((Role::Official, region("440106"))),
        None,
    )
    .await;
    let b = school("1144030502", "440305");
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    app.user("teacher.b", b, Some((Role::Teacher, b)), None)
        .await;
    let gz = app.sign_in("official.gz").await;
    let head_b = app.sign_in("head.b").await;
    let teacher_b = app.sign_in("teacher.b").await;
    let u = "/schools/1144030501".to_owned();
    app.assert_out_of_scope(
        &[&gz, &head_b, &teacher_b],
        &[u.clone(), "/api/v1/schools/1144030501".into()],
        &[
            (
                u.clone(),
                vec![
                    ("name", "改名"),
                    ("kind", "211"),
                    ("urban_rural", "111"),
                    ("version", "1"),
                ],
            ),
            (
                format!("{u}/close"),
                vec![("on", "2025-07-31"), ("reason", "x"), ("version", "1")],
            ),
            (
                format!("{u}/conditions"),
                vec![("school_year", "2024"), ("classrooms", "1")],
            ),
            (
                "/schools".into(),
                vec![
                    ("code", "1144030509"),
                    ("name", "越界"),
                    ("kind", "211"),
                    ("urban_rural", "111"),
                    ("county", "440305"),
                ],
            ),
        ],
    )
    .await;
    // An outsider cannot tell an existing school from a missing one.
    for s in [&gz, &head_b, &teacher_b] {
        let there = app.get_as(s, &u).await;
        let nowhere = app.get_as(s, "/schools/1144030599").await;
        assert_eq!(there.status, nowhere.status);
        let there = app.get_as(s, "/api/v1/schools/1144030501").await;
        let nowhere = app.get_as(s, "/api/v1/schools/1144030599").await;
        assert_eq!(
            (there.status, there.json()["code"].clone()),
            (nowhere.status, nowhere.json()["code"].clone())
        );
    }
    // Lists leave them out.
    let list = app.get_as(&gz, "/schools").await;
    assert!(list.body.contains("天河小学") && !list.body.contains("南山"));
    let list = app.get_as(&teacher_b, "/schools").await;
    assert!(list.body.contains("南山二小") && !list.body.contains("南山小学"));
    // So do exports, which are audited with their size.
    let csv = app.get_as(&gz, "/schools/export.csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.body.starts_with("\u{feff}学校标识码,"), "{}", csv.body);
    assert!(csv.body.contains("天河小学") && !csv.body.contains("南山"));
    assert_eq!(csv.body.lines().count(), 2);
    let csv = app
        .get_as(&teacher_b, "/schools/export.csv?q=%E5%8D%97%E5%B1%B1")
        .await;
    assert!(csv.body.contains("南山二小") && !csv.body.contains("南山小学"));
    let bad = app.get_as(&gz, "/schools/export.csv?kind=999").await;
    assert_eq!(bad.status, 400);
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 50, 0)
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.event == "school.export" && e.detail.contains("\"rows\":1"))
    );
    // A school's head sees the school but the county opens and closes schools.
    let own = app
        .post_as(
            &head_b,
            "/schools/1144030502/close",
            &[("on", "2025-07-31"), ("reason", "x"), ("version", "1")],
        )
        .await;
    assert_eq!(own.status, 403);
    assert!(
        santong_storage::registry::Registry(&app.t.db)
            .list_schools(
                &santong_domain::identity::Scope::everything(),
                &Default::default(),
                10,
                0
            )
            .await
            .unwrap()
            .items
            .iter()
            .all(|s| s.status == "open" && s.code != "1144030509")
    );
}

async fn schools_report_their_conditions(app: TestApp) {
    seed(&app, "1144030501", "南山小学", "440305").await;
    let a = school("1144030501", "440305");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("teacher.a", a, Some((Role::Teacher, a)), None)
        .await;
    let head = app.sign_in("head.a").await;
    let teacher = app.sign_in("teacher.a").await;
    let page = app.get_as(&head, "/schools/1144030501").await;
    assert!(
        page.body.contains("/schools/1144030501/conditions"),
        "the school reports"
    );
    assert!(
        !app.get_as(&teacher, "/schools/1144030501")
            .await
            .body
            .contains("/conditions\"")
    );
    let fields = |mm: &'static str, mbps: &'static str| {
        vec![
            ("school_year", "2024"),
            ("building_area_m2", "12000"),
            ("classrooms", "36"),
            ("multimedia_classrooms", mm),
            ("computers", "120"),
            ("student_terminals", "90"),
            ("broadband", "fibre"),
            ("bandwidth_mbps", mbps),
        ]
    };
    let bad = app
        .post_as(&head, "/schools/1144030501/conditions", &fields("40", ""))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("多媒体教室数不能多于教室数") && bad.body.contains("请填写带宽"));
    let ok = app
        .post_as(
            &head,
            "/schools/1144030501/conditions",
            &fields("30", "1000"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let page = app.get_as(&teacher, "/schools/1144030501").await;
    assert!(page.body.contains("2024-2025") && page.body.contains("1000 Mbps"));
    let refused = app
        .post_as(
            &teacher,
            "/schools/1144030501/conditions",
            &fields("30", "100"),
        )
        .await;
    assert_eq!(refused.status, 403);
    let api = app
        .get_as(&teacher, "/api/v1/schools/1144030501")
        .await
        .json();
    assert_eq!(api["conditions"][0]["bandwidth_mbps"], 1000);
}

fn valid_id(region: &str, birth: &str, seq: u32) -> String {
    let body = format!("{region}{birth}{seq:03}");
    format!(
        "{body}{}",
        char::from(santong_domain::registry::id_check_char(body.as_bytes()))
    )
}

async fn students_are_enrolled_and_shown_masked(app: TestApp) {
    seed(&app, "1144030501", "南山小学", "440305").await;
    seed(&app, "1144030502", "南山二小", "440305").await;
    let a = school("1144030501", "440305");
    let b = school("1144030502", "440305");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    app.user("teacher.a", a, Some((Role::Teacher, a)), None)
        .await;
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    app.user(
        "official.gz",
        region("440106"),
        Some((Role::Official, region("440106"))),
        None,
    )
    .await;
    let head = app.sign_in("head.a").await;
    let teacher = app.sign_in("teacher.a").await;
    let head_b = app.sign_in("head.b").await;
    let gz = app.sign_in("official.gz").await;
    let idn = valid_id("440305", "20180305", 11);
    let fields = |id: &str, birth: &'static str| {
        vec![
            ("name", "李明".to_owned()),
            ("sex", "1".to_owned()),
            ("birth_date", birth.to_owned()),
            ("ethnicity", "01".to_owned()),
            ("id_number", id.to_owned()),
            ("guardian_name", "王芳".to_owned()),
            ("guardian_relation", "母亲".to_owned()),
            ("guardian_phone", "138 1234 5678".to_owned()),
            ("grade", "1".to_owned()),
            ("enrolled_on", "2024-09-01".to_owned()),
            ("left_behind", "on".to_owned()),
        ]
    };
    let post = |s: &santong_testkit::Session, v: Vec<(&'static str, String)>| {
        let app = &app;
        let s = s.clone();
        async move {
            let refs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
            app.post_as(&s, "/schools/1144030501/students", &refs).await
        }
    };
    // A wrong check digit and a birth date the ID contradicts: messages at their fields.
    let mut wrong = idn.clone();
    wrong.replace_range(17..18, if idn.ends_with('0') { "1" } else { "0" });
    let bad = post(&head, fields(&wrong, "2018-03-05")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("校验位不符"), "{}", bad.body);
    let bad = post(&head, fields(&idn, "2018-03-06")).await;
    assert!(bad.body.contains("身份证件号与出生日期不一致"));
    let ok = post(&head, fields(&idn, "2018-03-05")).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let student = ok.header("location").unwrap().to_owned();
    // Lists and the record show masks; the full ID appears only for a stated purpose.
    let roster = app.get_as(&teacher, "/schools/1144030501/students").await;
    assert_eq!(roster.status, 200);
    assert!(
        roster.body.contains("李明")
            && !roster.body.contains(&idn)
            && !roster.body.contains("13812345678")
    );
    assert!(roster.body.contains("440305***********"));
    assert!(
        !roster.body.contains(&idn[6..17]),
        "no birth date and sequence together"
    );
    assert!(
        !roster.body.contains("/students/new"),
        "teachers do not enrol"
    );
    let page = app.get_as(&teacher, &student).await;
    assert!(!page.body.contains(&idn) && page.body.contains("138****5678"));
    assert!(
        !page.body.contains("留守儿童"),
        "sensitive flags need their permission"
    );
    assert!(app.get_as(&head, &student).await.body.contains("留守儿童"));
    let full = app
        .post_as(
            &teacher,
            &format!("{student}/full"),
            &[("purpose", "核对学籍信息")],
        )
        .await;
    assert_eq!(full.status, 200);
    assert!(full.body.contains(&idn) && full.body.contains("+8613812345678"));
    assert_eq!(full.header("cache-control"), Some("no-store"));
    let no_purpose = app
        .post_as(&teacher, &format!("{student}/full"), &[("purpose", "")])
        .await;
    assert_eq!(no_purpose.status, 400);
    assert!(!no_purpose.body.contains(&idn));
    // Past dates: nobody was there before the enrolment.
    let before = app
        .get_as(&head, "/schools/1144030501/students?on=2024-08-31")
        .await;
    assert!(!before.body.contains("李明"));
    // The API shows the same masks.
    let api = app
        .get_as(&head, "/api/v1/schools/1144030501/students")
        .await;
    assert_eq!(api.header("cache-control"), Some("no-store"));
    let api = api.json();
    assert_eq!(api["total"], 1);
    assert!(
        api["items"][0]["student_number"]
            .as_str()
            .unwrap()
            .contains("********")
    );
    assert!(!api.to_string().contains(&idn));
    // Another school and another region: nothing, whatever the route.
    let id = student.rsplit('/').next().unwrap().to_owned();
    app.assert_out_of_scope(
        &[&head_b, &gz],
        &[
            "/schools/1144030501/students".into(),
            student.clone(),
            format!("/api/v1/students/{id}"),
            "/api/v1/schools/1144030501/students".into(),
        ],
        &[
            (format!("{student}/full"), vec![("purpose", "越权查看")]),
            (
                "/schools/1144030501/students".into(),
                vec![("name", "越界"), ("grade", "1")],
            ),
        ],
    )
    .await;
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 100, 0)
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.event == "student.view_full" && e.actor == "teacher.a")
    );
    assert!(
        audit
            .items
            .iter()
            .all(|e| !e.detail.contains(&idn) && !e.target.contains(&idn))
    );
}
