//! The duplicate queue through the pages and the API, and the scope matrix for it.

use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_domain::registry::id_check_char;
use santong_storage::identity::Actor;
use santong_storage::registry::{Registry, SchoolInput};
use santong_storage::students::{NewStudent, Students};
use santong_testkit::TestApp;

santong_testkit::web_conformance!(duplicates_are_seen_by_both_sides_and_merged_on_the_pages);

fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

async fn duplicates_are_seen_by_both_sides_and_merged_on_the_pages(app: TestApp) {
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
    let body = "44030520160301002";
    let idn = format!("{body}{}", char::from(id_check_char(body.as_bytes())));
    let child = NewStudent {
        name: "孙悦".into(),
        sex: "2".into(),
        birth_date: "2016-03-01".into(),
        ethnicity: "01".into(),
        id_number: idn.clone(),
        guardian_name: "孙强".into(),
        guardian_relation: "父亲".into(),
        guardian_phone: "13812345678".into(),
        grade: "3".into(),
        enrolled_on: "2024-09-01".into(),
        ..Default::default()
    };
    let s = Students(&app.t.db);
    s.enrol(Actor::Cli, "1144030501", &child).await.unwrap();
    let second = s
        .enrol(Actor::Cli, "1144030502", &child)
        .await
        .unwrap()
        .student;
    assert!(second.student_number.starts_with('L'));
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

    // The second school's record says so, and links the case.
    let record = app
        .get_as(&head_b, &format!("/students/{}", second.id))
        .await;
    assert!(
        record.body.contains("存在待处理的重复学籍案件"),
        "{}",
        record.body
    );
    let case = record
        .body
        .split("href=\"/duplicates/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let page = format!("/duplicates/{case}");
    // Both schools and the county see it in their queue; nobody sees the ID number.
    for who in [&head_a, &head_b, &edu] {
        let q = app.get_as(who, "/duplicates").await;
        assert!(q.body.contains(&page), "{}", who.username);
        assert!(!q.body.contains(&idn));
        let d = app.get_as(who, &page).await;
        assert_eq!(d.status, 200);
        assert!(!d.body.contains(&idn));
    }
    // Each school reads the other side's name masked, and no birth date: entering someone's ID
    // number does not tell who and where the child is. The county sees both.
    let seen_by_a = app.get_as(&head_a, &page).await.body;
    assert!(seen_by_a.contains("孙*") && seen_by_a.contains("孙悦"));
    // The temporary number holds the birth date: the other school sees it masked too.
    assert!(!seen_by_a.contains(&second.student_number));
    assert!(
        app.get_as(&head_b, &page)
            .await
            .body
            .contains(&second.student_number)
    );
    let listed = app.get_as(&head_a, "/api/v1/duplicates").await.json();
    assert_eq!(listed["items"][0]["student"]["name"], "孙*");
    assert!(listed["items"][0]["student"]["birth_date"].is_null());
    assert_eq!(listed["items"][0]["other"]["name"], "孙悦");
    let by_county = app.get_as(&edu, "/api/v1/duplicates").await.json();
    assert_eq!(by_county["items"][0]["student"]["name"], "孙悦");
    // Only the second school (or its superiors) may merge its record away.
    assert!(
        !app.get_as(&head_a, &page)
            .await
            .body
            .contains("合并学籍</button>")
    );
    assert!(
        app.get_as(&head_b, &page)
            .await
            .body
            .contains("合并学籍</button>")
    );
    let refused = app
        .post_as(
            &head_a,
            &format!("{page}/merge"),
            &[("reason", "同一人"), ("confirm", "on")],
        )
        .await;
    assert_eq!(refused.status, 403);
    let unconfirmed = app
        .post_as(&head_b, &format!("{page}/merge"), &[("reason", "同一人")])
        .await;
    assert_eq!(unconfirmed.status, 400);
    assert!(unconfirmed.body.contains("请勾选确认后再合并"));
    let merged = app
        .post_as(
            &head_b,
            &format!("{page}/merge"),
            &[("reason", "同一人"), ("confirm", "on")],
        )
        .await;
    assert_eq!(merged.status, 303, "{}", merged.body);
    let shown = app.get_as(&head_b, &page).await;
    assert!(shown.body.contains("已合并") && shown.body.contains("已合并注销"));
    let again = app
        .post_as(
            &head_b,
            &format!("{page}/merge"),
            &[("reason", "同一人"), ("confirm", "on")],
        )
        .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("已被他人处理"));
    let roster = app.get_as(&head_b, "/schools/1144030502/students").await;
    assert!(!roster.body.contains("孙悦"));
    // Through the API: the first school may not undo the second's merge; the county may.
    let undo = |who: &santong_testkit::Session| {
        let app = &app;
        let who = who.clone();
        let uri = format!("/api/v1/duplicates/{case}/undo");
        async move {
            app.post_raw(
                &who,
                &uri,
                &serde_json::json!({"reason": "核实后并非同一人"}).to_string(),
                &[("content-type", "application/json")],
            )
            .await
        }
    };
    assert_eq!(undo(&head_a).await.status, 403);
    let r = undo(&edu).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "open");
    assert_eq!(r.json()["student"]["status"], "in");
    let list = app.get_as(&head_a, "/api/v1/duplicates").await.json();
    assert_eq!(list["total"], 1);
    assert!(!list.to_string().contains(&idn));

    // Outside both schools and their county: nothing, whatever the route.
    app.assert_out_of_scope(
        &[&head_c, &gz],
        &[page.clone(), format!("/api/v1/duplicates/{case}")],
        &[
            (
                format!("{page}/merge"),
                vec![("reason", "同一人"), ("confirm", "on")],
            ),
            (format!("{page}/undo"), vec![("reason", "撤销")]),
        ],
    )
    .await;
    for who in [&head_c, &gz] {
        assert!(
            !app.get_as(who, "/duplicates?show=all")
                .await
                .body
                .contains("孙悦")
        );
        let api = app.get_as(who, "/api/v1/duplicates?show=all").await.json();
        assert_eq!(api["total"], 0);
    }
}
