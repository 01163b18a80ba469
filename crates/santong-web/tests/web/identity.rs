use axum::http::StatusCode;
use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_testkit::{READY_PASSWORD, TestApp, csrf_in, form_body};

fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}
fn a() -> Node {
    school("1144030501", "440305")
}
fn b() -> Node {
    school("1144030502", "440305")
}
fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

santong_testkit::web_conformance!(
    sign_in_first_change_and_sign_out,
    wrong_password_and_lockout_in_both_languages,
    csrf_and_origin_are_checked,
    user_records_are_out_of_scope_for_other_schools_and_regions,
    setup_mode_and_admin_pages,
    audit_viewer_is_for_the_audit_admin_only,
    my_sessions_can_be_revoked,
    bulk_import_from_csv,
    api_tokens_carry_only_their_scopes,
    teachers_reset_their_students_passwords_on_the_pages,
    admin_actions_succeed_through_the_pages,
);

async fn api_tokens_carry_only_their_scopes(app: TestApp) {
    app.user("admin.a", a(), Some((Role::SchoolAdmin, a())), None)
        .await;
    app.user("teacher.a", a(), Some((Role::Teacher, a())), None)
        .await;
    app.user("teacher.b", b(), Some((Role::Teacher, b())), None)
        .await;
    let s = app.sign_in("admin.a").await;
    // Without credentials the API answers 401 problem+json, not a redirect.
    let anon = app.get("/api/v1/me").await;
    assert_eq!(anon.status, 401);
    assert_eq!(anon.json()["code"], "unauthorized");
    let page = app
        .post_as(
            &s,
            "/account/tokens",
            &[
                ("name", "roster sync"),
                ("scope", "users_view"),
                ("days", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = page
        .body
        .split("id=\"token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("st_"));
    let bearer = format!("Bearer {token}");
    let me = app
        .get_with("/api/v1/me", &[("authorization", &bearer)])
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["permissions"], serde_json::json!(["users_view"]));
    let users = app
        .get_with("/api/v1/users", &[("authorization", &bearer)])
        .await
        .json();
    let names: Vec<_> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin.a", "teacher.a"], "scoped to the school");
    // A token without users_view cannot list users, whatever its owner's roles.
    let narrow = app
        .post_as(
            &s,
            "/account/tokens",
            &[
                ("name", "resets"),
                ("scope", "student_passwords_reset"),
                ("days", "1"),
            ],
        )
        .await;
    let narrow = narrow
        .body
        .split("id=\"token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let denied = app
        .get_with(
            "/api/v1/users",
            &[("authorization", &format!("Bearer {narrow}"))],
        )
        .await;
    assert_eq!(denied.status, 403);
    // Scopes the owner does not hold are refused at creation.
    let bad = app
        .post_as(
            &s,
            "/account/tokens",
            &[("name", "x"), ("scope", "audit_read"), ("days", "1")],
        )
        .await;
    assert_eq!(bad.status, 400);
    // Unknown and revoked tokens: 401.
    let unknown = app
        .get_with("/api/v1/me", &[("authorization", "Bearer st_nope")])
        .await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.json()["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let list = app.get_as(&s, "/account/tokens").await;
    let i = list.body.find("/account/tokens/").unwrap() + "/account/tokens/".len();
    let id = &list.body[i..i + 36];
    assert_eq!(
        app.post_as(&s, &format!("/account/tokens/{id}/revoke"), &[])
            .await
            .status,
        303
    );
    // The newest token (the narrow one) is listed first and is now revoked; the other still works.
    let after = app
        .get_with(
            "/api/v1/me",
            &[("authorization", &format!("Bearer {narrow}"))],
        )
        .await;
    assert_eq!(after.status, 401);
    assert_eq!(
        app.get_with("/api/v1/me", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
}

fn multipart(csrf: &str, csv: &str) -> (String, String) {
    let b = "santongboundary7MA4YWxk";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"_csrf\"\r\n\r\n{csrf}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{b}--\r\n"
    );
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn bulk_import_from_csv(app: TestApp) {
    for (name, role) in [
        ("security", Role::SecurityAdmin),
        ("auditor", Role::AuditAdmin),
    ] {
        app.user(name, Node::Nation, None, Some(role)).await;
    }
    app.user("admin.a", a(), Some((Role::SchoolAdmin, a())), None)
        .await;
    let s = app.sign_in("admin.a").await;
    let form = app.get_as(&s, "/admin/users/import").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("批量导入用户"));
    let bad = "用户名,姓名,角色,行政区划代码,学校标识码\nzhang.san,张三,学生,440305,1144030501\nx,坏,学生,440305,1144030501\nother.school,外校,学生,440305,1144030502\n";
    let (ct, body) = multipart(&s.csrf, bad);
    let res = app
        .post_raw(&s, "/admin/users/import", &body, &[("content-type", &ct)])
        .await;
    assert_eq!(res.status, 422);
    assert!(res.body.contains("没有创建任何账户"));
    assert!(
        res.body.contains("<td>3</td>")
            && res.body.contains("<td>4</td>")
            && !res.body.contains("<td>2</td>"),
        "{}",
        res.body
    );
    let good = "用户名,姓名,角色,行政区划代码,学校标识码\nzhang.san,张三,学生,440305,1144030501\nli.si,李四,学生,440305,1144030501\n";
    let (ct, body) = multipart(&s.csrf, good);
    let res = app
        .post_raw(&s, "/admin/users/import", &body, &[("content-type", &ct)])
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(res.body.starts_with("\u{feff}username,initial_password"));
    assert_eq!(res.body.lines().count(), 3);
    let pw = res
        .body
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_owned();
    let first = app.post_login("zhang.san", &pw, &[]).await;
    assert_eq!(first.header("location"), Some("/account/password"));
    // Without the CSRF token nothing happens.
    let (ct, body) = multipart("wrong", good);
    assert_eq!(
        app.post_raw(&s, "/admin/users/import", &body, &[("content-type", &ct)])
            .await
            .status,
        403
    );
}

async fn sign_in_first_change_and_sign_out(app: TestApp) {
    use santong_storage::identity::{Actor, Identity, NewUser};
    Identity(&app.t.db)
        .create_user(
            Actor::Cli,
            NewUser {
                username: "teacher.a".into(),
                display_name: "王老师".into(),
                password: Some("First!pass-2026".into()),
                home: a(),
                system_role: None,
                grant: Some((Role::Teacher, a())),
            },
        )
        .await
        .unwrap();
    let res = app.post_login("teacher.a", "First!pass-2026", &[]).await;
    assert_eq!(res.status, 303);
    assert_eq!(
        res.header("location"),
        Some("/account/password"),
        "first sign-in forces a change"
    );
    let cookie = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("santong_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let token = cookie
        .trim_start_matches("santong_session=")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let s = santong_testkit::Session {
        username: "teacher.a".into(),
        cookie: token,
        csrf: String::new(),
    };
    // Every other page sends the user to the change form until it is done.
    let home = app.get_as(&s, "/").await;
    assert_eq!(
        (home.status.as_u16(), home.header("location")),
        (303, Some("/account/password"))
    );
    let form = app.get_as(&s, "/account/password").await;
    assert!(form.body.contains("首次登录或密码已过期"));
    let s = santong_testkit::Session {
        csrf: csrf_in(&form.body).unwrap(),
        ..s
    };
    let bad = app
        .post_as(
            &s,
            "/account/password",
            &[
                ("old", "First!pass-2026"),
                ("new", "abc"),
                ("confirm", "abc"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("密码太短"));
    let ok = app
        .post_as(
            &s,
            "/account/password",
            &[
                ("old", "First!pass-2026"),
                ("new", READY_PASSWORD),
                ("confirm", READY_PASSWORD),
            ],
        )
        .await;
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("密码已修改"));
    let home = app.get_as(&s, "/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("王老师") && home.body.contains("退出"));
    // Sign out: the cookie is cleared and the session is dead.
    let out = app.post_as(&s, "/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = app.get_as(&s, "/account").await;
    assert_eq!(after.status, 303);
    assert!(
        after
            .header("location")
            .unwrap()
            .starts_with("/login?next=")
    );
}

async fn wrong_password_and_lockout_in_both_languages(app: TestApp) {
    app.user("teacher.a", a(), Some((Role::Teacher, a())), None)
        .await;
    let wrong = app.post_login("teacher.a", "nope", &[]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("用户名或密码不正确"));
    let unknown = app
        .post_login("nobody", "nope", &[("accept-language", "en")])
        .await;
    assert_eq!(unknown.status, 401);
    assert!(
        unknown
            .body
            .contains("The user name or password is not correct."),
        "same message for unknown accounts"
    );
    for _ in 0..4 {
        app.post_login("teacher.a", "nope", &[]).await;
    }
    let locked = app
        .post_login("teacher.a", READY_PASSWORD, &[("accept-language", "en")])
        .await;
    assert_eq!(locked.status, 429);
    assert!(locked.header("retry-after").is_some());
    assert!(locked.body.contains("Too many attempts"));
    // The security admin unlocks from the user page.
    app.user("security", Node::Nation, None, Some(Role::SecurityAdmin))
        .await;
    let sec = app.sign_in("security").await;
    let uid = santong_storage::identity::Identity(&app.t.db)
        .user_by_username("teacher.a")
        .await
        .unwrap()
        .unwrap()
        .id;
    let page = app.get_as(&sec, &format!("/admin/users/{uid}")).await;
    assert!(page.body.contains("已锁定"), "{}", page.body);
    let unlocked = app
        .post_as(&sec, &format!("/admin/users/{uid}/unlock"), &[])
        .await;
    assert_eq!(unlocked.status, 200);
    assert!(unlocked.body.contains("已解除登录锁定"));
    app.sign_in("teacher.a").await;
}

async fn csrf_and_origin_are_checked(app: TestApp) {
    app.user("teacher.a", a(), None, None).await;
    let s = app.sign_in("teacher.a").await;
    // No token, a wrong token, another site's Origin: all refused.
    let none = app.post_raw(&s, "/logout", "", &[]).await;
    assert_eq!(none.status, 403);
    assert!(none.body.contains("请求来源无法验证"));
    let wrong = app
        .post_raw(&s, "/logout", &form_body(&[("_csrf", "0000")]), &[])
        .await;
    assert_eq!(wrong.status, 403);
    let body = form_body(&[("_csrf", &s.csrf)]);
    let cross = app
        .post_raw(
            &s,
            "/logout",
            &body,
            &[("origin", "https://evil.example"), ("host", "edu.example")],
        )
        .await;
    assert_eq!(cross.status, 403);
    let fetch = app
        .post_raw(&s, "/logout", &body, &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(fetch.status, 403);
    // Still signed in after all that.
    assert_eq!(app.get_as(&s, "/account").await.status, 200);
    let same = app
        .post_raw(
            &s,
            "/logout",
            &body,
            &[("origin", "http://edu.example"), ("host", "edu.example")],
        )
        .await;
    assert_eq!(same.status, 303);
    // Login CSRF: a sign-in post without the cookie token is refused.
    let forged = app
        .request(
            axum::http::Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(form_body(&[
                    ("username", "teacher.a"),
                    ("password", READY_PASSWORD),
                    ("_csrf", "x"),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(forged.status, 403);
}

async fn user_records_are_out_of_scope_for_other_schools_and_regions(app: TestApp) {
    let target = app
        .user("teacher.a", a(), Some((Role::Teacher, a())), None)
        .await;
    let grant = santong_storage::identity::Identity(&app.t.db)
        .grants_of(target)
        .await
        .unwrap()[0]
        .id;
    app.user("admin.a", a(), Some((Role::SchoolAdmin, a())), None)
        .await;
    app.user("admin.b", b(), Some((Role::SchoolAdmin, b())), None)
        .await;
    app.user(
        "official.gz",
        region("440106"),
        Some((Role::Official, region("440100"))),
        None,
    )
    .await;
    app.user("teacher.b", b(), Some((Role::Teacher, b())), None)
        .await;
    let other_school = app.sign_in("admin.b").await;
    let other_region = app.sign_in("official.gz").await;
    let teacher_b = app.sign_in("teacher.b").await;
    let u = format!("/admin/users/{target}");
    app.assert_out_of_scope(
        &[&other_school, &other_region, &teacher_b],
        &[u.clone(), format!("/api/v1/users/{target}")],
        &[
            (format!("{u}/reset-password"), vec![]),
            (format!("{u}/unlock"), vec![]),
            (format!("{u}/disable"), vec![]),
            (format!("{u}/enable"), vec![]),
            (
                format!("{u}/grants"),
                vec![
                    ("role", "student"),
                    ("region", "440305"),
                    ("school", "1144030501"),
                ],
            ),
            (format!("{u}/grants/{grant}/revoke"), vec![]),
        ],
    )
    .await;
    // Every refusal is in the audit log.
    let denied = santong_storage::audit::search(
        &app.t.db,
        &santong_storage::audit::AuditFilter {
            result: Some("denied".into()),
            ..Default::default()
        },
        100,
        0,
    )
    .await
    .unwrap();
    assert!(denied.total >= 18, "{} refusals recorded", denied.total);
    assert!(
        denied
            .items
            .iter()
            .any(|e| e.actor == "admin.b" && e.event == "password.reset")
    );
    // Lists leave them out too.
    let list = app.get_as(&other_school, "/admin/users").await;
    assert!(list.body.contains("admin.b") && !list.body.contains("teacher.a"));
    let list = app.get_as(&other_region, "/admin/users?q=teacher").await;
    assert!(!list.body.contains("teacher.a") && !list.body.contains("teacher.b"));
    // The own school admin sees and manages the record (control for the matrix).
    let own = app.sign_in("admin.a").await;
    let page = app.get_as(&own, &u).await;
    assert_eq!(page.status, 200);
    let reset = app.post_as(&own, &format!("{u}/reset-password"), &[]).await;
    assert_eq!(reset.status, 200);
    assert!(reset.body.contains("密码已重置"));
    // A teacher's list holds students only: not a colleague of another school, not teacher.a.
    let mine = app.get_as(&teacher_b, "/admin/users").await;
    assert_eq!(mine.status, 200);
    assert!(!mine.body.contains("teacher.a"));

    // The rest of the matrix: second-factor reset, creating an account at another school, and the
    // per-account routes of "my account" aimed at someone else's session, token or app.
    let own_session = santong_storage::identity::Identity(&app.t.db)
        .sessions_of(
            santong_storage::identity::Identity(&app.t.db)
                .user_by_username("admin.a")
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap()[0]
        .id;
    let santong_storage::identity::Login::Ok { principal, .. } =
        santong_storage::identity::Identity(&app.t.db)
            .authenticate("admin.a", READY_PASSWORD, "127.0.0.1", "t")
            .await
            .unwrap()
    else {
        panic!("admin.a signs in")
    };
    let (token, _) = santong_storage::identity::Identity(&app.t.db)
        .create_token(
            &principal,
            "127.0.0.1",
            "sync",
            &[santong_domain::identity::Permission::UsersView],
            30,
        )
        .await
        .unwrap();
    app.assert_out_of_scope(
        &[&other_school, &other_region, &teacher_b],
        &[],
        &[
            (format!("{u}/reset-mfa"), vec![]),
            (
                "/admin/users".into(),
                vec![
                    ("username", "intruder"),
                    ("region", "440305"),
                    ("school", "1144030501"),
                ],
            ),
            (format!("/account/sessions/{own_session}/revoke"), vec![]),
            (format!("/account/tokens/{token}/revoke"), vec![]),
            ("/account/apps/c0000/revoke".into(), vec![]),
        ],
    )
    .await;
    assert!(
        santong_storage::identity::Identity(&app.t.db)
            .user_by_username("intruder")
            .await
            .unwrap()
            .is_none()
    );
}

async fn teachers_reset_their_students_passwords_on_the_pages(app: TestApp) {
    let student = app
        .user("student.a", a(), Some((Role::Student, a())), None)
        .await;
    let colleague = app
        .user("teacher.a2", a(), Some((Role::Teacher, a())), None)
        .await;
    let far = app
        .user("student.b", b(), Some((Role::Student, b())), None)
        .await;
    app.user("teacher.a", a(), Some((Role::Teacher, a())), None)
        .await;
    let t = app.sign_in("teacher.a").await;
    let home = app.get_as(&t, "/").await;
    assert!(
        home.body.contains("href=\"/admin/users\""),
        "the nav leads there"
    );
    let list = app.get_as(&t, "/admin/users").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("student.a"));
    assert!(!list.body.contains("teacher.a2") && !list.body.contains("student.b"));
    assert_eq!(
        app.get_as(&t, &format!("/admin/users/{colleague}"))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get_as(&t, &format!("/admin/users/{far}")).await.status,
        404
    );
    let page = app.get_as(&t, &format!("/admin/users/{student}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/reset-password"));
    let reset = app
        .post_as(&t, &format!("/admin/users/{student}/reset-password"), &[])
        .await;
    assert_eq!(reset.status, 200);
    let pw = reset
        .body
        .split("class=\"secret\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the new password is shown once")
        .to_owned();
    // The student signs in with it and must choose a new one.
    let res = app.post_login("student.a", &pw, &[]).await;
    assert_eq!(res.header("location"), Some("/account/password"));
    for target in [colleague, far] {
        let res = app
            .post_as(&t, &format!("/admin/users/{target}/reset-password"), &[])
            .await;
        assert!(res.status == 403 || res.status == 404, "{}", res.status);
    }
}

async fn admin_actions_succeed_through_the_pages(app: TestApp) {
    app.user("security", Node::Nation, None, Some(Role::SecurityAdmin))
        .await;
    app.user("sysadmin", Node::Nation, None, Some(Role::SystemAdmin))
        .await;
    let target = app
        .user(
            "official.ns",
            region("440305"),
            Some((Role::Official, region("440305"))),
            None,
        )
        .await;
    let sec = app.sign_in("security").await;
    let sys = app.sign_in("sysadmin").await;
    let u = format!("/admin/users/{target}");
    let id = santong_storage::identity::Identity(&app.t.db);
    // Grant and revoke (security administrator).
    let res = app
        .post_as(
            &sec,
            &format!("{u}/grants"),
            &[
                ("role", "teacher"),
                ("region", "440305"),
                ("school", "1144030501"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let grants = id.grants_of(target).await.unwrap();
    assert_eq!(grants.len(), 2);
    let teacher_grant = grants.iter().find(|g| g.role == "teacher").unwrap().id;
    let res = app
        .post_as(&sec, &format!("{u}/grants/{teacher_grant}/revoke"), &[])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(id.grants_of(target).await.unwrap().len(), 1);
    // Second factor reset (security administrator).
    assert!(id.mfa_enabled(target).await.unwrap());
    let res = app.post_as(&sec, &format!("{u}/reset-mfa"), &[]).await;
    assert!(
        res.status.is_success() || res.status.is_redirection(),
        "{}",
        res.body
    );
    assert!(!id.mfa_enabled(target).await.unwrap());
    // Disable and enable (system administrator); disabling ends the sessions.
    let victim = app
        .sign_in_with("official.ns", santong_testkit::READY_PASSWORD)
        .await;
    let res = app.post_as(&sys, &format!("{u}/disable"), &[]).await;
    assert!(
        res.status.is_success() || res.status.is_redirection(),
        "{}",
        res.body
    );
    assert!(
        id.user_by_username("official.ns")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_some()
    );
    assert_eq!(
        app.get_as(&victim, "/account").await.status,
        StatusCode::SEE_OTHER
    );
    let res = app.post_as(&sys, &format!("{u}/enable"), &[]).await;
    assert!(
        res.status.is_success() || res.status.is_redirection(),
        "{}",
        res.body
    );
    assert!(
        id.user_by_username("official.ns")
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_none()
    );
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 100, 0)
        .await
        .unwrap();
    for event in [
        "grant.add",
        "grant.revoke",
        "mfa.reset",
        "user.disable",
        "user.enable",
    ] {
        assert!(
            audit
                .items
                .iter()
                .any(|e| e.event == event && e.result == "success"),
            "{event} audited: {:?}",
            audit
                .items
                .iter()
                .map(|e| e.event.clone())
                .collect::<Vec<_>>()
        );
    }
}

async fn setup_mode_and_admin_pages(app: TestApp) {
    use santong_storage::users::Users;
    let created = Users(&app.t.db)
        .ensure_initial_admin()
        .await
        .unwrap()
        .unwrap();
    // First sign-in of the initial admin: change the password, then the setup banner.
    let res = app.post_login("admin", &created.password, &[]).await;
    assert_eq!(res.header("location"), Some("/account/password"));
    let cookie = res
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("santong_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut s = santong_testkit::Session {
        username: "admin".into(),
        cookie,
        csrf: String::new(),
    };
    s.csrf = csrf_in(&app.get_as(&s, "/account/password").await.body).unwrap();
    let changed = app
        .post_as(
            &s,
            "/account/password",
            &[
                ("old", &created.password),
                ("new", READY_PASSWORD),
                ("confirm", READY_PASSWORD),
            ],
        )
        .await;
    assert_eq!(changed.status, 200);
    // An admin must enrol a second factor before anything else.
    let held = app.get_as(&s, "/admin/users").await;
    assert_eq!(held.header("location"), Some("/account/mfa"));
    let enrol = app.get_as(&s, "/account/mfa").await;
    assert!(enrol.body.contains("必须启用两步验证"));
    let uid = santong_storage::identity::Identity(&app.t.db)
        .user_by_username("admin")
        .await
        .unwrap()
        .unwrap()
        .id;
    let wrong = app
        .post_as(&s, "/account/mfa/enable", &[("code", "000000")])
        .await;
    assert_eq!(wrong.status, 400);
    let code = app.totp_code(uid).await;
    let on = app
        .post_as(&s, "/account/mfa/enable", &[("code", &code)])
        .await;
    assert_eq!(on.status, 200);
    assert!(on.body.contains("恢复码"));
    let recovery = on
        .body
        .split("<li class=\"secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    // Next sign-in asks for the second factor; a recovery code works once.
    let res = app.post_login("admin", READY_PASSWORD, &[]).await;
    assert_eq!(res.header("location"), Some("/login/mfa"));
    let pending_cookie = res
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("santong_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut p = santong_testkit::Session {
        username: "admin".into(),
        cookie: pending_cookie,
        csrf: String::new(),
    };
    assert_eq!(
        app.get_as(&p, "/admin/users").await.header("location"),
        Some("/login/mfa?next=%2Fadmin%2Fusers"),
        "nothing before the code, which then leads on"
    );
    p.csrf = csrf_in(&app.get_as(&p, "/login/mfa").await.body).unwrap();
    let bad = app.post_as(&p, "/login/mfa", &[("code", "123456")]).await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("验证码不正确"));
    let good = app.post_as(&p, "/login/mfa", &[("code", &recovery)]).await;
    assert_eq!(good.status, 303);
    assert_eq!(app.get_as(&p, "/admin/users").await.status, 200);
    let again = app.post_login("admin", READY_PASSWORD, &[]).await;
    let c2 = again
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("santong_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut p2 = santong_testkit::Session {
        username: "admin".into(),
        cookie: c2,
        csrf: String::new(),
    };
    p2.csrf = csrf_in(&app.get_as(&p2, "/login/mfa").await.body).unwrap();
    let reused = app.post_as(&p2, "/login/mfa", &[("code", &recovery)]).await;
    assert_eq!(reused.status, 401, "a recovery code works once");
    let users = app.get_as(&s, "/admin/users").await;
    assert!(users.body.contains("系统处于初始设置状态"));
    // Ordinary accounts wait for setup to finish.
    let early = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "teacher.x"), ("region", "440305")],
        )
        .await;
    assert_eq!(early.status, 409);
    let sec = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "security"), ("duty", "security_admin")],
        )
        .await;
    assert_eq!(sec.status, 201, "{}", sec.body);
    assert!(sec.body.contains("初始密码"));
    let aud = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "auditor"), ("duty", "audit_admin")],
        )
        .await;
    assert_eq!(aud.status, 201);
    let users = app.get_as(&s, "/admin/users").await;
    assert!(!users.body.contains("系统处于初始设置状态"));
    let teacher = app
        .post_as(
            &s,
            "/admin/users",
            &[
                ("username", "teacher.x"),
                ("display_name", "李老师"),
                ("region", "440305"),
                ("school", "1144030501"),
            ],
        )
        .await;
    assert_eq!(teacher.status, 201, "{}", teacher.body);
    let dup = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "teacher.x"), ("region", "440305")],
        )
        .await;
    assert_eq!(dup.status, 409);
    assert!(dup.body.contains("该用户名已被使用"));
    let bad = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "x y"), ("region", "440305")],
        )
        .await;
    assert_eq!(bad.status, 400);
    let bad_region = app
        .post_as(
            &s,
            "/admin/users",
            &[("username", "teacher.y"), ("region", "999999")],
        )
        .await;
    assert_eq!(bad_region.status, 400);
    // The system admin holds no grant right (separation of duties).
    let tid = santong_storage::identity::Identity(&app.t.db)
        .user_by_username("teacher.x")
        .await
        .unwrap()
        .unwrap()
        .id;
    let grant = app
        .post_as(
            &s,
            &format!("/admin/users/{tid}/grants"),
            &[
                ("role", "teacher"),
                ("region", "440305"),
                ("school", "1144030501"),
            ],
        )
        .await;
    assert_eq!(grant.status, 403);
}

async fn audit_viewer_is_for_the_audit_admin_only(app: TestApp) {
    app.user("auditor", Node::Nation, None, Some(Role::AuditAdmin))
        .await;
    app.user("sysadmin", Node::Nation, None, Some(Role::SystemAdmin))
        .await;
    app.post_login("sysadmin", "wrong", &[]).await;
    let sys = app.sign_in("sysadmin").await;
    assert_eq!(app.get_as(&sys, "/admin/audit").await.status, 403);
    assert_eq!(
        app.get_as(&sys, "/admin/audit/export.csv").await.status,
        403
    );
    let aud = app.sign_in("auditor").await;
    let page = app
        .get_as(&aud, "/admin/audit?event=login.failure&verify=1")
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("审计链完整"));
    assert!(page.body.contains("login.failure") && !page.body.contains("<td>login.success</td>"));
    let bad = app.get_as(&aud, "/admin/audit?from=yesterday").await;
    assert_eq!(bad.status, 400);
    let csv = app
        .get_as(&aud, "/admin/audit/export.csv?actor=sysadmin")
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(csv.body.starts_with('\u{feff}'));
    assert!(csv.body.contains("login.failure") && csv.body.contains("login.success"));
    assert!(!csv.body.contains(",auditor,"), "filtered by actor");
    // The export itself is audited.
    let after = app.get_as(&aud, "/admin/audit?event=audit.export").await;
    assert!(after.body.contains("<td>auditor</td>"));
}

async fn my_sessions_can_be_revoked(app: TestApp) {
    app.user("teacher.a", a(), None, None).await;
    let one = app.sign_in("teacher.a").await;
    let two = app.sign_in("teacher.a").await;
    let page = app.get_as(&one, "/account").await;
    assert!(page.body.contains("当前会话"));
    let i = page.body.find("/account/sessions/").unwrap() + "/account/sessions/".len();
    let sid = &page.body[i..i + 36];
    let res = app
        .post_as(&one, &format!("/account/sessions/{sid}/revoke"), &[])
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(
        app.get_as(&two, "/account").await.status,
        303,
        "the other session is gone"
    );
    assert_eq!(app.get_as(&one, "/account").await.status, 200);
    let again = app
        .post_as(&one, &format!("/account/sessions/{sid}/revoke"), &[])
        .await;
    assert_eq!(again.status, 404);
}

/// Under TLS every cookie is `__Host-` prefixed and `Secure`; the session still works.
#[tokio::test]
async fn cookies_are_host_only_and_secure_under_tls() {
    use axum::body::Body;
    use axum::http::Request;
    let cfg = santong_web::WebConfig {
        public_url: Some("https://santong.example.cn".into()),
        ..Default::default()
    };
    let app = TestApp::with_config(santong_testkit::BackendKind::Sqlite, cfg)
        .await
        .unwrap();
    app.user("teacher.a", a(), Some((Role::Teacher, a())), None)
        .await;
    let form = app.get("/login").await;
    let set = |res: &santong_testkit::TestResponse| -> Vec<String> {
        res.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let login_cookie = set(&form)
        .into_iter()
        .find(|c| c.starts_with("__Host-santong_login_csrf="))
        .expect("the login CSRF cookie is __Host-");
    assert!(login_cookie.contains("; Secure") && login_cookie.contains("; Path=/"));
    assert!(!login_cookie.to_ascii_lowercase().contains("domain="));
    let pair = login_cookie.split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&form.body).unwrap();
    let res = app
        .request(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", pair)
                .body(Body::from(form_body(&[
                    ("username", "teacher.a"),
                    ("password", READY_PASSWORD),
                    ("_csrf", &csrf),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let cookies = set(&res);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("__Host-santong="))
        .expect("the session cookie is __Host-");
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Lax", "; Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-santong_device="))
    );
    let pair = session.split(';').next().unwrap();
    let me = app.get_with("/account", &[("cookie", pair)]).await;
    assert_eq!(me.status, 200);
    // The plain name is not accepted under TLS.
    let value = pair.split_once('=').unwrap().1;
    let plain = app
        .get_with(
            "/account",
            &[("cookie", &format!("santong_session={value}"))],
        )
        .await;
    assert_eq!(plain.status, 303);
}

/// Turning the second-factor requirement off lets an official in without enrolling.
#[tokio::test]
async fn the_second_factor_requirement_can_be_turned_off() {
    let app = TestApp::new(santong_testkit::BackendKind::Sqlite)
        .await
        .unwrap();
    let id = santong_storage::identity::Identity(&app.t.db);
    id.create_user(
        santong_storage::identity::Actor::Cli,
        santong_storage::identity::NewUser {
            username: "official".into(),
            display_name: "official".into(),
            password: Some(READY_PASSWORD.into()),
            home: region("440305"),
            system_role: None,
            grant: Some((Role::Official, region("440305"))),
        },
    )
    .await
    .unwrap();
    let santong_storage::identity::Login::Ok { principal, .. } = id
        .authenticate("official", READY_PASSWORD, "127.0.0.1", "t")
        .await
        .unwrap()
    else {
        panic!()
    };
    id.change_password(&principal, "127.0.0.1", READY_PASSWORD, "Other!pass-2026")
        .await
        .unwrap();
    let s = app.sign_in_with("official", "Other!pass-2026").await;
    let gated = app.get_as(&s, "/admin/users").await;
    assert_eq!(gated.header("location"), Some("/account/mfa"));
    santong_storage::identity::set_policy(
        &app.t.db,
        "session",
        r#"{"mfa_required_privileged": false}"#,
    )
    .await
    .unwrap();
    assert_eq!(app.get_as(&s, "/admin/users").await.status, 200);
}
