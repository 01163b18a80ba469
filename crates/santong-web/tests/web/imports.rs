//! Student imports through the pages: upload, check (as a job), preview, commit, rejected-rows
//! report, undo, and the scope matrix for every import route.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_domain::registry::id_check_char;
use santong_storage::identity::Actor;
use santong_storage::jobs::{Worker, WorkerOptions};
use santong_storage::registry::{Registry, SchoolInput};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(
    students_are_imported_through_the_pages,
    a_full_export_imports_back_unchanged,
    staff_are_imported_through_the_pages,
    a_countys_schools_are_imported_through_the_pages,
);

fn school(code: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}

fn multipart(csrf: &str, mode: &str, name: &str, file: &[u8]) -> (String, Vec<u8>) {
    let b = "santongboundaryQ2xk9";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\n{mode}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn upload(
    app: &TestApp,
    s: &santong_testkit::Session,
    code: &str,
    mode: &str,
    file: &[u8],
) -> santong_testkit::TestResponse {
    let (ct, body) = multipart(&s.csrf, mode, "学生.csv", file);
    let req = axum::http::Request::post(format!("/schools/{code}/import"))
        .header("cookie", format!("santong_session={}", s.cookie))
        .header("content-type", ct)
        .body(axum::body::Body::from(body))
        .unwrap();
    app.request(req).await
}

fn worker(app: &TestApp) -> Worker {
    Worker::new(app.t.db.clone(), WorkerOptions::default())
        .register(
            santong_storage::imports::CHECK_JOB,
            santong_storage::imports::check_job,
        )
        .register(
            santong_storage::imports::COMMIT_JOB,
            santong_storage::imports::commit_job,
        )
}

async fn students_are_imported_through_the_pages(app: TestApp) {
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
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    app.user(
        "edu.sz",
        Node::Region(RegionCode::parse("440100").unwrap()),
        Some((
            Role::Official,
            Node::Region(RegionCode::parse("440100").unwrap()),
        )),
        None,
    )
    .await;
    let ns = Node::Region(RegionCode::parse("440305").unwrap());
    app.user("edu.ns", ns, Some((Role::Official, ns)), None)
        .await;
    let s = app.sign_in("head.a").await;
    let page = app.get_as(&s, "/schools/1144030501/import").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("导入学生"), "{}", page.body);
    assert!(page.body.len() < 60_000);
    // Templates: an XLSX (a zip) with its drop-downs, and a CSV with the header.
    let xlsx = app
        .get_as(&s, "/schools/1144030501/import/template.xlsx")
        .await;
    assert_eq!(xlsx.status, 200);
    assert!(xlsx.body.starts_with("PK\u{3}\u{4}"));
    let csv = app
        .get_as(&s, "/schools/1144030501/import/template.csv")
        .await;
    assert!(
        csv.body.starts_with("\u{feff}姓名,性别,出生日期"),
        "{}",
        csv.body
    );
    // Upload: a good row, a bad one (formula in the name, bad sex) — in GBK, as Excel saves it.
    let body17 = "44030520160302011";
    let idn = format!("{body17}{}", char::from(id_check_char(body17.as_bytes())));
    let text = format!(
        "姓名,性别,出生日期,民族,身份证号,年级,监护人,与学生关系,监护人电话\r\n\
         张三,男,2016/3/2,汉族,{idn},三年级,王芳,母亲,13812345678\r\n\
         =HYPERLINK(\"x\"),X,2016-03-03,汉族,,3,王芳,母亲,13812345679\r\n"
    );
    let (gbk, _, _) = encoding_rs::GBK.encode(&text);
    let res = upload(&app, &s, "1144030501", "all", &gbk).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let at = res.header("location").unwrap().to_owned();
    assert!(at.starts_with("/imports/"));
    let waiting = app.get_as(&s, &at).await;
    assert!(
        waiting.body.contains("http-equiv=\"refresh\""),
        "{}",
        waiting.body
    );
    assert!(worker(&app).run_once().await.unwrap());
    let preview = app.get_as(&s, &at).await;
    assert!(
        preview.body.contains("data-state=\"checked\""),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("<dd id=\"new\">1</dd>"));
    assert!(preview.body.contains("<dd id=\"rejected\">1</dd>"));
    assert!(preview.body.contains("class=\"bad\""));
    assert!(preview.body.contains("性别："));
    // The full ID number never shows in the preview.
    assert!(!preview.body.contains(&idn));
    // The rejected-rows report: the original row with 错误说明, the formula neutralised.
    let report = app.get_as(&s, &format!("{at}/rejects.csv")).await;
    assert_eq!(report.status, 200);
    assert!(
        report.body.starts_with("\u{feff}姓名,性别"),
        "{}",
        report.body
    );
    assert!(report.body.contains("错误说明"));
    assert!(
        report.body.contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        report.body
    );
    // The county official manages the school but has no right to full personal data.
    let county = app.sign_in("edu.ns").await;
    assert_eq!(
        app.get_as(&county, &format!("{at}/rejects.csv"))
            .await
            .status,
        403
    );
    assert_eq!(app.get_as(&county, &at).await.status, 200);
    let report = app.get_as(&s, &format!("{at}/rejects.xlsx")).await;
    assert!(report.body.starts_with("PK\u{3}\u{4}"));
    // Everything from the outside: another school's head and another region's official.
    let outsiders = [app.sign_in("head.b").await, app.sign_in("edu.sz").await];
    let gets = vec![
        "/schools/1144030501/import".to_owned(),
        "/schools/1144030501/import/template.xlsx".to_owned(),
        at.clone(),
        format!("{at}/rejects.csv"),
        format!("{at}/rejects.xlsx"),
        // The Excel twins of the school's list exports, and the class list.
        "/schools/1144030501/students/export.xlsx".to_owned(),
        "/schools/1144030501/teachers/export.xlsx".to_owned(),
        "/schools/1144030501/classes/export.csv".to_owned(),
        "/schools/1144030501/classes/export.xlsx".to_owned(),
    ];
    let posts = vec![
        (format!("{at}/commit"), vec![("mode", "valid")]),
        (format!("{at}/cancel"), vec![]),
        (format!("{at}/undo"), vec![("confirm", "on")]),
    ];
    app.assert_out_of_scope(&outsiders.iter().collect::<Vec<_>>(), &gets, &posts)
        .await;
    let up = upload(&app, &outsiders[0], "1144030501", "all", &gbk).await;
    assert!(up.status == 404 || up.status == 403, "{}", up.status);
    // The page offers only the valid rows; commit them through the job.
    assert!(preview.body.contains("name=\"mode\" value=\"valid\""));
    let done = app
        .post_as(&s, &format!("{at}/commit"), &[("mode", "valid")])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(worker(&app).run_once().await.unwrap());
    let committed = app.get_as(&s, &at).await;
    assert!(
        committed.body.contains("data-state=\"committed\""),
        "{}",
        committed.body
    );
    let roster = app.get_as(&s, "/schools/1144030501/students").await;
    assert!(roster.body.contains("张三"), "{}", roster.body);
    // Undo asks for a confirmation, then takes the batch back.
    let unconfirmed = app.post_as(&s, &format!("{at}/undo"), &[]).await;
    assert_eq!(unconfirmed.status, 422);
    let undone = app
        .post_as(&s, &format!("{at}/undo"), &[("confirm", "on")])
        .await;
    assert_eq!(undone.status, 303);
    let roster = app.get_as(&s, "/schools/1144030501/students").await;
    assert!(!roster.body.contains("张三"));
    // A file that is no spreadsheet: refused on its batch page in the user's language.
    let res = upload(&app, &s, "1144030501", "all", b"\x00\x01\x02binary").await;
    assert_eq!(res.status, 303);
    let at = res.header("location").unwrap().to_owned();
    assert!(worker(&app).run_once().await.unwrap());
    let failed = app.get_as(&s, &at).await;
    assert!(
        failed.body.contains("data-state=\"failed\""),
        "{}",
        failed.body
    );
    assert!(failed.body.contains("id=\"file-error\""));
    let empty = upload(&app, &s, "1144030501", "all", b"").await;
    assert_eq!(empty.status, 422);
}

/// Round trip: the roster exported in full (CSV and XLSX) imports back into the same school with
/// every row matched and nothing changed.
async fn a_full_export_imports_back_unchanged(app: TestApp) {
    Registry(&app.t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: "1144030501".into(),
                name: "学校甲".into(),
                kind: "211".into(),
                urban_rural: "111".into(),
                county: "440305".into(),
                opened_on: "1998-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = school("1144030501");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    let students = santong_storage::students::Students(&app.t.db);
    for (i, (name, birth, with_id)) in [
        ("张三", "2016-03-02", true),
        ("李四", "2017-05-06", false),
        ("阿依古丽", "2015-11-30", true),
    ]
    .into_iter()
    .enumerate()
    {
        let digits = birth.replace('-', "");
        let body = format!("440305{digits}{:03}", 20 + 2 * i + 1);
        let id_number = if with_id {
            format!("{body}{}", char::from(id_check_char(body.as_bytes())))
        } else {
            String::new()
        };
        let grade = (2024 - birth[..4].parse::<i32>().unwrap() - 5).to_string();
        students
            .enrol(
                Actor::Cli,
                "1144030501",
                &santong_storage::students::NewStudent {
                    name: name.into(),
                    sex: "1".into(),
                    birth_date: birth.into(),
                    ethnicity: if i == 2 { "05".into() } else { "01".into() },
                    id_number,
                    household_region: "440305".into(),
                    guardian_name: "王芳".into(),
                    guardian_relation: "母亲".into(),
                    guardian_phone: "13812345678".into(),
                    grade,
                    enrolled_on: "2024-09-01".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let s = app.sign_in("head.a").await;
    let school_row = Registry(&app.t.db)
        .school(&santong_domain::identity::Scope::everything(), "1144030501")
        .await
        .unwrap()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("santong-roundtrip-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for ext in ["csv", "xlsx"] {
        let res = app
            .post_as(
                &s,
                &format!("/schools/1144030501/students/export.{ext}"),
                &[("full", "1"), ("purpose", "核对学籍")],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        let path = dir.join(format!("roster.{ext}"));
        std::fs::write(&path, &res.bytes).unwrap();
        let outcome = santong_storage::imports::Imports(&app.t.db)
            .check_file(
                santong_storage::imports::Kind::Students,
                &santong_storage::imports::Place::School(school_row.clone()),
                &path,
                &santong_storage::sheet::Limits::default(),
                &santong_storage::imports::Progress::default(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            (
                outcome.tally.rows,
                outcome.tally.unchanged,
                outcome.tally.rejected
            ),
            (3, 3, 0),
            "{ext}: {:?}",
            outcome.rejects
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The class list exports too (no class yet: the header alone), audited.
    let classes = app
        .get_as(&s, "/schools/1144030501/classes/export.csv")
        .await;
    assert_eq!(classes.status, 200);
    assert!(classes.body.starts_with('\u{feff}'), "{}", classes.body);
    let xlsx = app
        .get_as(&s, "/schools/1144030501/classes/export.xlsx")
        .await;
    assert!(xlsx.bytes.starts_with(b"PK\x03\x04"));
}

/// An upload over the configured limit is refused with the limit named, and no batch is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_are_refused() {
    let config = santong_web::WebConfig {
        upload_limit: 4096,
        ..Default::default()
    };
    let Some(app) = TestApp::with_config(santong_testkit::BackendKind::Sqlite, config).await else {
        return;
    };
    Registry(&app.t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: "1144030501".into(),
                name: "学校甲".into(),
                kind: "211".into(),
                urban_rural: "111".into(),
                county: "440305".into(),
                opened_on: "1998-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = school("1144030501");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    let s = app.sign_in("head.a").await;
    let big = vec![b'a'; 10_000];
    let res = upload(&app, &s, "1144030501", "all", &big).await;
    assert_eq!(res.status, 413, "{}", res.body);
    assert!(
        res.body.contains("4.0 KiB") || res.body.contains("4 KiB"),
        "{}",
        res.body
    );
    let batches = santong_storage::imports::Imports(&app.t.db)
        .batches(&santong_domain::identity::Scope::everything(), None, 10)
        .await
        .unwrap();
    assert!(batches.is_empty());
}

/// The staff list of a school from a sheet: the page of the kind, its template, the upload, the
/// check and commit jobs, the staff list, undo.
async fn staff_are_imported_through_the_pages(app: TestApp) {
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
    app.user("head.b", b, Some((Role::SchoolAdmin, b)), None)
        .await;
    let s = app.sign_in("head.a").await;
    let list = app.get_as(&s, "/schools/1144030501/teachers").await;
    assert!(
        list.body
            .contains("/schools/1144030501/import?kind=teachers")
    );
    let page = app
        .get_as(&s, "/schools/1144030501/import?kind=teachers")
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("导入教职工") && page.body.contains("教师资格"));
    assert!(page.body.contains("name=\"kind\" value=\"teachers\""));
    assert_eq!(
        app.get_as(&s, "/schools/1144030501/import?kind=pets")
            .await
            .status,
        404
    );
    let csv = app
        .get_as(&s, "/schools/1144030501/import/template.csv?kind=teachers")
        .await;
    assert!(
        csv.body
            .starts_with("\u{feff}姓名,性别,出生日期,民族,身份证件号,教师资格,职称"),
        "{}",
        csv.body
    );
    let xlsx = app
        .get_as(&s, "/schools/1144030501/import/template.xlsx?kind=teachers")
        .await;
    assert!(xlsx.bytes.starts_with(b"PK"));
    let body17 = "44030519850601011";
    let idn = format!("{body17}{}", char::from(id_check_char(body17.as_bytes())));
    let text = format!(
        "姓名,性别,出生日期,身份证号,教师资格,职称,岗位类别\r\n\
         李老师,男,1985-06-01,{idn},小学教师资格,一级教师,专任教师\r\n"
    );
    let b = "santongboundaryT9";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nteachers\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nall\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"教职工.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n",
        s.csrf
    )
    .into_bytes();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let req = axum::http::Request::post("/schools/1144030501/import")
        .header("cookie", format!("santong_session={}", s.cookie))
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(axum::body::Body::from(body))
        .unwrap();
    let res = app.request(req).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let at = res.header("location").unwrap().to_owned();
    assert!(worker(&app).run_once().await.unwrap());
    let preview = app.get_as(&s, &at).await;
    assert!(
        preview.body.contains("<dd id=\"new\">1</dd>"),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("import?kind=teachers"));
    assert!(!preview.body.contains(&idn));
    let done = app
        .post_as(&s, &format!("{at}/commit"), &[("mode", "all")])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(worker(&app).run_once().await.unwrap());
    let staff = app.get_as(&s, "/schools/1144030501/teachers").await;
    assert!(staff.body.contains("李老师"), "{}", staff.body);
    // The other school's head sees none of it.
    let hb = app.sign_in("head.b").await;
    app.assert_out_of_scope(
        &[&hb],
        &[
            "/schools/1144030501/import?kind=teachers".to_owned(),
            "/schools/1144030501/import/template.csv?kind=teachers".to_owned(),
            at.clone(),
        ],
        &[(format!("{at}/undo"), vec![("confirm", "on")])],
    )
    .await;
    let undone = app
        .post_as(&s, &format!("{at}/undo"), &[("confirm", "on")])
        .await;
    assert_eq!(undone.status, 303);
    let staff = app.get_as(&s, "/schools/1144030501/teachers").await;
    assert!(!staff.body.contains("李老师"));
    // Classes have their page and templates too, linked from the class list.
    let classes = app.get_as(&s, "/schools/1144030501/classes").await;
    assert!(
        classes
            .body
            .contains("/schools/1144030501/import?kind=classes")
    );
    let page = app
        .get_as(&s, "/schools/1144030501/import?kind=classes")
        .await;
    assert!(page.body.contains("导入班级"), "{}", page.body);
    let csv = app
        .get_as(&s, "/schools/1144030501/import/template.csv?kind=classes")
        .await;
    assert!(
        csv.body.starts_with("\u{feff}学年,年级,班级名称,班主任"),
        "{}",
        csv.body
    );
    let xlsx = app
        .get_as(&s, "/schools/1144030501/import/template.xlsx?kind=classes")
        .await;
    assert!(xlsx.bytes.starts_with(b"PK"));
}

/// A county official's school import: the county's page, its template, upload, check, commit.
async fn a_countys_schools_are_imported_through_the_pages(app: TestApp) {
    Registry(&app.t.db)
        .create_school(
            Actor::Cli,
            &SchoolInput {
                code: "1144030501".into(),
                name: "学校甲".into(),
                kind: "211".into(),
                urban_rural: "111".into(),
                county: "440305".into(),
                opened_on: "1998-09-01".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ns = Node::Region(RegionCode::parse("440305").unwrap());
    app.user("edu.ns", ns, Some((Role::Official, ns)), None)
        .await;
    let a = school("1144030501");
    app.user("head.a", a, Some((Role::SchoolAdmin, a)), None)
        .await;
    let s = app.sign_in("edu.ns").await;
    let list = app.get_as(&s, "/schools").await;
    assert!(
        list.body.contains("/regions/440305/import?kind=schools"),
        "{}",
        list.body
    );
    let page = app.get_as(&s, "/regions/440305/import").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("导入学校") && page.body.contains("办学类型"));
    // The county's page imports schools only.
    assert_eq!(
        app.get_as(&s, "/regions/440305/import?kind=students")
            .await
            .status,
        404
    );
    let csv = app
        .get_as(&s, "/regions/440305/import/template.csv?kind=schools")
        .await;
    assert!(
        csv.body
            .starts_with("\u{feff}学校标识码,学校名称,办学类型,城乡类型"),
        "{}",
        csv.body
    );
    let b = "santongboundaryS3";
    let text = "学校标识码,学校名称,办学类型,城乡类型\r\n1144030509,新村小学,小学,村庄\r\n";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nschools\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nall\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"学校.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n",
        s.csrf
    )
    .into_bytes();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let req = axum::http::Request::post("/regions/440305/import")
        .header("cookie", format!("santong_session={}", s.cookie))
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(axum::body::Body::from(body))
        .unwrap();
    let res = app.request(req).await;
    assert_eq!(res.status, 303, "{}", res.body);
    let at = res.header("location").unwrap().to_owned();
    assert!(worker(&app).run_once().await.unwrap());
    let preview = app.get_as(&s, &at).await;
    assert!(
        preview.body.contains("<dd id=\"new\">1</dd>"),
        "{}",
        preview.body
    );
    assert!(preview.body.contains("/regions/440305/import?kind=schools"));
    let done = app
        .post_as(&s, &format!("{at}/commit"), &[("mode", "all")])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(worker(&app).run_once().await.unwrap());
    let opened = app.get_as(&s, "/schools/1144030509").await;
    assert_eq!(opened.status, 200);
    assert!(opened.body.contains("新村小学"));
    // The county's conditions have their page and template beside the schools'.
    let page = app.get_as(&s, "/regions/440305/import").await;
    assert!(page.body.contains("/regions/440305/import?kind=conditions"));
    let conditions = app
        .get_as(&s, "/regions/440305/import?kind=conditions")
        .await;
    assert_eq!(conditions.status, 200);
    assert!(
        conditions.body.contains("导入办学条件"),
        "{}",
        conditions.body
    );
    let csv = app
        .get_as(&s, "/regions/440305/import/template.csv?kind=conditions")
        .await;
    assert!(
        csv.body
            .starts_with("\u{feff}学校标识码,学年,建筑面积（平方米）,教室数"),
        "{}",
        csv.body
    );
    let xlsx = app
        .get_as(&s, "/regions/440305/import/template.xlsx?kind=conditions")
        .await;
    assert!(xlsx.bytes.starts_with(b"PK"));
    // A school's administrator and another county's official reach neither the county's page
    // nor its batch.
    let lh = Node::Region(RegionCode::parse("440303").unwrap());
    app.user("edu.lh", lh, Some((Role::Official, lh)), None)
        .await;
    let head = app.sign_in("head.a").await;
    let other = app.sign_in("edu.lh").await;
    app.assert_out_of_scope(
        &[&head, &other],
        &[
            "/regions/440305/import".to_owned(),
            "/regions/440305/import/template.csv?kind=schools".to_owned(),
            at.clone(),
        ],
        &[(format!("{at}/undo"), vec![("confirm", "on")])],
    )
    .await;
}
