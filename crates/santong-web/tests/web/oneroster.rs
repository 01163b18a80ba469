//! OneRoster through the pages: the exchange page, the masked and full package downloads, the
//! import of a package with its report, refused packages, and the scope matrix of every route;
//! with the same school, its list of changes of status and that list's export.

use std::io::Read;

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_domain::registry::id_check_char;
use santong_storage::classes::{Classes, NewClass};
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(packages_go_out_and_come_back_through_the_pages);

fn school(code: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}

fn multipart(csrf: &str, fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let b = "santongboundaryOR7";
    let mut body =
        format!("--{b}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n");
    for (k, v) in fields {
        body.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"or.zip\"\r\n\
         Content-Type: application/zip\r\n\r\n"
    ));
    let mut body = body.into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn upload(
    app: &TestApp,
    s: &santong_testkit::Session,
    code: &str,
    fields: &[(&str, &str)],
    file: &[u8],
) -> santong_testkit::TestResponse {
    let (ct, body) = multipart(&s.csrf, fields, file);
    let req = axum::http::Request::post(format!("/schools/{code}/oneroster"))
        .header("cookie", format!("santong_session={}", s.cookie))
        .header("content-type", ct)
        .body(axum::body::Body::from(body))
        .unwrap();
    app.request(req).await
}

fn entry(zip: &[u8], name: &str) -> String {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut s = String::new();
    z.by_name(name).unwrap().read_to_string(&mut s).unwrap();
    s
}

async fn packages_go_out_and_come_back_through_the_pages(app: TestApp) {
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
    let elsewhere = Node::Region(RegionCode::parse("440303").unwrap());
    app.user("edu.lh", elsewhere, Some((Role::Official, elsewhere)), None)
        .await;
    let body17 = "44030520170302011";
    let idn = format!("{body17}{}", char::from(id_check_char(body17.as_bytes())));
    let pupil = Students(&app.t.db)
        .enrol(
            Actor::Cli,
            "1144030501",
            &NewStudent {
                name: "王小明".into(),
                sex: "1".into(),
                birth_date: "2017-03-02".into(),
                ethnicity: "01".into(),
                id_number: idn.clone(),
                guardian_name: "王芳".into(),
                guardian_relation: "母亲".into(),
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
    let class = Classes(&app.t.db)
        .create(
            Actor::Cli,
            "1144030501",
            &NewClass {
                school_year: String::new(),
                grade: "3".into(),
                name: "三(1)班".into(),
                head_teacher: "head.a".into(),
            },
        )
        .await
        .unwrap();
    Classes(&app.t.db)
        .assign(
            Actor::Cli,
            &santong_domain::identity::Scope::everything(),
            class.id,
            &[pupil],
            "",
        )
        .await
        .unwrap();

    let s = app.sign_in("head.a").await;
    let school_page = app.get_as(&s, "/schools/1144030501").await;
    assert!(school_page.body.contains("/schools/1144030501/oneroster"));
    let page = app.get_as(&s, "/schools/1144030501/oneroster").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("OneRoster 数据交换"), "{}", page.body);
    assert!(page.body.len() < 60_000);

    // The masked package: a zip with the rostering files, no ID number in it.
    let zip = app.get_as(&s, "/schools/1144030501/oneroster.zip").await;
    assert_eq!(zip.status, 200);
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    assert_eq!(zip.header("cache-control"), Some("no-store"));
    let users = entry(&zip.bytes, "users.csv");
    assert!(users.contains(&pupil.to_string()));
    assert!(!users.contains(&idn));
    assert!(entry(&zip.bytes, "enrollments.csv").contains(&class.id.to_string()));
    // The full package needs a purpose and the form's token.
    let refused = app
        .post_as(&s, "/schools/1144030501/oneroster.zip", &[("full", "1")])
        .await;
    assert_eq!(refused.status, 400);
    let full = app
        .post_as(
            &s,
            "/schools/1144030501/oneroster.zip",
            &[("full", "1"), ("purpose", "与学习平台核对名单")],
        )
        .await;
    assert_eq!(full.status, 200);
    assert!(entry(&full.bytes, "users.csv").contains(&format!("G{idn}")));
    let audited: i64 = app
        .t
        .db
        .scalar_unchecked("SELECT COUNT(*) FROM audit_event WHERE event = 'oneroster.export'")
        .await
        .unwrap();
    assert_eq!(audited, 2);

    // The package back: a dry run first, then for real; nothing changes.
    let dry = upload(
        &app,
        &s,
        "1144030501",
        &[("mode", "all"), ("dry_run", "1")],
        &zip.bytes,
    )
    .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert!(dry.body.contains("检查结果（未写入）"), "{}", dry.body);
    let done = upload(&app, &s, "1144030501", &[("mode", "all")], &zip.bytes).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("已导入"), "{}", done.body);
    assert!(done.body.contains("编入班级 0 人次"), "{}", done.body);
    // Garbage is refused with its reason; an empty upload too.
    let junk = upload(
        &app,
        &s,
        "1144030501",
        &[("mode", "all")],
        b"not a zip at all",
    )
    .await;
    assert_eq!(junk.status, 422);
    assert!(junk.body.contains("这不是 zip 数据包"), "{}", junk.body);
    let empty = upload(&app, &s, "1144030501", &[("mode", "all")], b"").await;
    assert_eq!(empty.status, 422);

    // The school's changes of status: the enrolment, masked, and its export (audited).
    // The enrolment took effect on 2024-09-01, before this school year (the default span).
    let events = app
        .get_as(&s, "/schools/1144030501/events?from=2024-01-01")
        .await;
    assert_eq!(events.status, 200);
    assert!(
        events.body.contains("王小明") && events.body.contains("入学"),
        "{}",
        events.body
    );
    assert!(!events.body.contains(&idn));
    let bad = app
        .get_as(&s, "/schools/1144030501/events?from=2025-13-01")
        .await;
    assert_eq!(bad.status, 400);
    let csv = app
        .get_as(&s, "/schools/1144030501/events/export.csv?from=2024-01-01")
        .await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.starts_with("\u{feff}生效日期,变动类别"),
        "{}",
        csv.body
    );
    assert_eq!(csv.body.lines().count(), 2, "{}", csv.body);
    assert!(!csv.body.contains(&idn));
    let xlsx = app
        .get_as(&s, "/schools/1144030501/events/export.xlsx")
        .await;
    assert!(xlsx.bytes.starts_with(b"PK"));
    let none = app
        .get_as(
            &s,
            "/schools/1144030501/events?from=2000-01-01&until=2000-12-31",
        )
        .await;
    assert!(none.body.contains("这段时间没有学籍变动"), "{}", none.body);

    // Another school's administrator and another county's official reach none of it.
    let hb = app.sign_in("head.b").await;
    let lh = app.sign_in("edu.lh").await;
    app.assert_out_of_scope(
        &[&hb, &lh],
        &[
            "/schools/1144030501/oneroster".into(),
            "/schools/1144030501/oneroster.zip".into(),
            "/schools/1144030501/events".into(),
            "/schools/1144030501/events/export.csv".into(),
            "/schools/1144030501/events/export.xlsx".into(),
        ],
        &[(
            "/schools/1144030501/oneroster.zip".into(),
            vec![("full", "1"), ("purpose", "核对")],
        )],
    )
    .await;
    // head.b's own upload of head.a's package places nobody at head.a's school.
    let theirs = upload(&app, &hb, "1144030502", &[("mode", "valid")], &zip.bytes).await;
    assert!(
        theirs.body.contains("机构不是您管理的开办中的学校"),
        "{}",
        theirs.body
    );
    let outsider_upload = upload(&app, &lh, "1144030501", &[("mode", "all")], &zip.bytes).await;
    assert!(matches!(outsider_upload.status.as_u16(), 403 | 404));
}
