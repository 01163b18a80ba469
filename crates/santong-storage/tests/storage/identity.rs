use santong_domain::identity::{Node, Permission, Role, SchoolCode, Scope};
use santong_domain::region::RegionCode;
use santong_storage::audit::{self, Verification};
use santong_storage::identity::{Actor, Identity, IdentityError, Login, NewUser, Principal};
use santong_testkit::TestDb;
use uuid::Uuid;

const PW: &str = "Kx9!long-enough";

fn region(s: &str) -> Node {
    Node::Region(RegionCode::parse(s).unwrap())
}

fn school(code: &str, county: &str) -> Node {
    Node::School {
        code: SchoolCode::parse(code).unwrap(),
        county: RegionCode::parse(county).unwrap(),
    }
}

/// 南山区 school A and B, 福田区 school C (both in 深圳市), and 天河区 (广州市) school D.
fn a() -> Node {
    school("1144030501", "440305")
}
fn b() -> Node {
    school("1144030502", "440305")
}
fn c() -> Node {
    school("1144030401", "440304")
}
fn d() -> Node {
    school("1144010601", "440106")
}

async fn user(id: &Identity<'_>, name: &str, home: Node, grant: Option<(Role, Node)>) -> Uuid {
    id.create_user(
        Actor::Cli,
        NewUser {
            username: name.into(),
            display_name: name.into(),
            password: Some(PW.into()),
            home,
            system_role: None,
            grant,
        },
    )
    .await
    .unwrap()
    .0
}

async fn login(id: &Identity<'_>, name: &str, pw: &str, ip: &str) -> Login {
    id.authenticate(name, pw, ip, "test").await.unwrap()
}

async fn principal(id: &Identity<'_>, name: &str) -> Principal {
    match login(id, name, PW, "10.0.0.1").await {
        Login::Ok { principal, .. } => *principal,
        other => panic!("{name} cannot sign in: {other:?}"),
    }
}

async fn names(id: &Identity<'_>, p: &Principal) -> Vec<String> {
    let scope = p.scope(Permission::UsersView);
    let page = id.list_users(&scope, None, 100, 0).await.unwrap();
    page.items.into_iter().map(|u| u.username).collect()
}

santong_testkit::conformance!(
    quiet_counters_of_unknown_names_are_purged,
    lifetimes_expire_passwords_sessions_and_tokens,
    locks_grow_with_each_failure,
    scope_filters_people_by_school_and_region,
    grants_follow_separation_of_duties,
    sign_in_is_uniform_for_unknown_wrong_and_disabled,
    parallel_wrong_attempts_stay_within_the_limit,
    a_failing_student_does_not_lock_the_school,
    sessions_revoke_on_password_change_and_disable,
    password_history_and_policy,
    audit_chain_detects_tampering_and_survives_pruning,
    setup_mode_until_the_other_two_admins_exist,
    a_forged_school_county_reaches_nobody,
    administering_needs_outranking_every_role,
    duties_are_made_only_in_setup_and_managed_from_the_cli,
    an_address_over_its_limit_is_slowed_not_blocked,
    second_factor_codes_work_once,
    importing_a_list_is_all_or_nothing,
    a_classmate_cannot_keep_a_teacher_out_of_their_own_browser,
);

async fn a_classmate_cannot_keep_a_teacher_out_of_their_own_browser(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "teacher.a", a(), None).await;
    user(&id, "pupil.a", a(), None).await;
    let nat = "203.0.113.7";
    let Login::Ok {
        device: Some(teacher_device),
        ..
    } = id
        .authenticate_from("teacher.a", PW, nat, "t", None)
        .await
        .unwrap()
    else {
        panic!("a device token")
    };
    let Login::Ok {
        device: Some(pupil_device),
        ..
    } = id
        .authenticate_from("pupil.a", PW, nat, "t", None)
        .await
        .unwrap()
    else {
        panic!()
    };
    // The classmate hammers the teacher's account from their own browser, same address.
    for _ in 0..15 {
        let _ = id
            .authenticate_from("teacher.a", "guess", nat, "t", Some(&pupil_device))
            .await
            .unwrap();
    }
    assert!(id.is_locked("teacher.a").await.unwrap());
    assert!(matches!(
        id.authenticate_from("teacher.a", PW, nat, "t", None)
            .await
            .unwrap(),
        Login::Locked { .. }
    ));
    // From the teacher's own browser the lock does not apply, and no new token is needed.
    let ok = id
        .authenticate_from("teacher.a", PW, nat, "t", Some(&teacher_device))
        .await
        .unwrap();
    assert!(matches!(ok, Login::Ok { device: None, .. }), "{ok:?}");
    // Someone else's device token is no key to this account.
    assert!(matches!(
        id.authenticate_from("teacher.a", PW, nat, "t", Some(&pupil_device))
            .await
            .unwrap(),
        Login::Locked { .. }
    ));
}

async fn importing_a_list_is_all_or_nothing(t: TestDb) {
    santong_storage::reference::ensure_regions(&t.db)
        .await
        .unwrap();
    let id = Identity(&t.db);
    user(&id, "taken.name", a(), None).await;
    let bad = "\u{feff}用户名,姓名,角色,行政区划代码,学校标识码,初始密码\n\
        zhang.san,张三,学生,440305,1144030501,\n\
        taken.name,重名,学生,440305,1144030501,\n\
        li.si,李四,wizard,440305,1144030501,\n\
        wang.wu,王五,教师,999999,,\n\
        zhao.liu,赵六,teacher,440305,1144030501,123456\n\
        zhang.san,张三二,学生,440305,1144030501,\n";
    let Err(rows) = id.import_users(Actor::Cli, bad.as_bytes()).await else {
        panic!("must refuse")
    };
    let lines: Vec<usize> = rows.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [4], "parse errors are reported first: {rows:?}");
    let bad = bad.replace("wizard", "教师");
    let Err(rows) = id.import_users(Actor::Cli, bad.as_bytes()).await else {
        panic!("must refuse")
    };
    let lines: Vec<usize> = rows.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 5, 6, 7], "{rows:?}");
    assert!(
        id.user_by_username("zhang.san").await.unwrap().is_none(),
        "nothing was created"
    );
    // Tab-separated, as pasted from Excel, English headers.
    let good = "username\tname\trole\tregion\tschool\tpassword\n\
        zhang.san\t张三\tstudent\t440305\t1144030501\t\n\
        li.si\t李四\tteacher\t440305\t1144030501\tKx9!long-enough\n";
    let created = id.import_users(Actor::Cli, good.as_bytes()).await.unwrap();
    assert_eq!(created.len(), 2);
    assert!(created[0].1.is_some() && created[1].1.is_none());
    let li = id.user_by_username("li.si").await.unwrap().unwrap();
    assert_eq!(id.grants_of(li.id).await.unwrap()[0].role, "teacher");
    assert!(matches!(
        login(&id, "li.si", PW, "ip").await,
        Login::Ok {
            must_change: true,
            ..
        }
    ));
    // A school admin imports only into their school.
    finish_setup(&id).await;
    user(&id, "admin.b", b(), Some((Role::SchoolAdmin, b()))).await;
    let pb = principal(&id, "admin.b").await;
    let mixed = "username,role,region,school\nok.b,student,440305,1144030502\nnot.mine,student,440305,1144030501\n";
    let Err(rows) = id
        .import_users(
            Actor::User {
                principal: &pb,
                ip: "ip",
            },
            mixed.as_bytes(),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, 3);
    assert!(matches!(rows[0].1, IdentityError::Forbidden));
    assert!(id.user_by_username("ok.b").await.unwrap().is_none());
}

async fn finish_setup(id: &Identity<'_>) {
    for (name, role) in [
        ("security", Role::SecurityAdmin),
        ("auditor", Role::AuditAdmin),
    ] {
        id.create_user(
            Actor::Cli,
            NewUser {
                username: name.into(),
                display_name: name.into(),
                password: None,
                home: Node::Nation,
                system_role: Some(role),
                grant: None,
            },
        )
        .await
        .unwrap();
    }
}

async fn a_forged_school_county_reaches_nobody(t: TestDb) {
    let id = Identity(&t.db);
    finish_setup(&id).await;
    // A school admin granted at a whole county (南山区).
    user(
        &id,
        "county.admin",
        region("440305"),
        Some((Role::SchoolAdmin, region("440305"))),
    )
    .await;
    // A real student of school D in 天河区 (广州).
    let victim = user(&id, "pupil.d", d(), Some((Role::Student, d()))).await;
    let admin = principal(&id, "county.admin").await;
    // The admin names school D's code with their own county: allowed, but it is not school D.
    let forged = school("1144010601", "440305");
    let actor = Actor::User {
        principal: &admin,
        ip: "10.0.0.1",
    };
    id.create_user(
        actor,
        NewUser {
            username: "fake.teacher".into(),
            display_name: "x".into(),
            password: Some(PW.into()),
            home: forged,
            system_role: None,
            grant: Some((Role::Teacher, forged)),
        },
    )
    .await
    .unwrap();
    let fake = principal(&id, "fake.teacher").await;
    let fake_actor = Actor::User {
        principal: &fake,
        ip: "10.0.0.1",
    };
    assert!(matches!(
        id.reset_password(fake_actor, victim).await,
        Err(IdentityError::NotFound)
    ));
    assert!(
        id.get_user(&fake.scope(Permission::StudentPasswordsReset), victim)
            .await
            .unwrap()
            .is_none()
    );
}

async fn administering_needs_outranking_every_role(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "admin.a", a(), Some((Role::SchoolAdmin, a()))).await;
    user(&id, "teacher.a", a(), Some((Role::Teacher, a()))).await;
    // Belongs to school A but is a provincial official.
    let official = user(
        &id,
        "official.gd",
        a(),
        Some((Role::Official, region("440000"))),
    )
    .await;
    let colleague = user(&id, "admin2.a", a(), Some((Role::SchoolAdmin, a()))).await;
    let pupil = user(&id, "pupil.a", a(), Some((Role::Student, a()))).await;
    let both = user(&id, "pupil.teacher", a(), Some((Role::Student, a()))).await;
    id.grant(Actor::Cli, both, Role::Teacher, a())
        .await
        .unwrap();
    let admin = principal(&id, "admin.a").await;
    let act = Actor::User {
        principal: &admin,
        ip: "ip",
    };
    assert!(matches!(
        id.reset_password(act, official).await,
        Err(IdentityError::Forbidden)
    ));
    assert!(matches!(
        id.set_disabled(act, official, true).await,
        Err(IdentityError::Forbidden)
    ));
    assert!(matches!(
        id.reset_password(act, colleague).await,
        Err(IdentityError::Forbidden)
    ));
    id.reset_password(act, pupil).await.unwrap();
    let teacher = principal(&id, "teacher.a").await;
    let tact = Actor::User {
        principal: &teacher,
        ip: "ip",
    };
    assert!(
        matches!(
            id.reset_password(tact, both).await,
            Err(IdentityError::Forbidden)
        ),
        "not a pure student"
    );
    id.reset_password(tact, pupil).await.unwrap();
}

async fn duties_are_made_only_in_setup_and_managed_from_the_cli(t: TestDb) {
    let id = Identity(&t.db);
    let created = santong_storage::users::Users(&t.db)
        .ensure_initial_admin()
        .await
        .unwrap()
        .unwrap();
    let Login::Ok { principal: sys, .. } = login(&id, "admin", &created.password, "ip").await
    else {
        panic!()
    };
    let act = Actor::User {
        principal: &sys,
        ip: "ip",
    };
    let duty = |name: &str, role| NewUser {
        username: name.into(),
        display_name: name.into(),
        password: None,
        home: Node::Nation,
        system_role: Some(role),
        grant: None,
    };
    let (sec, _) = id
        .create_user(act, duty("security", Role::SecurityAdmin))
        .await
        .unwrap();
    assert!(
        matches!(
            id.create_user(act, duty("security2", Role::SecurityAdmin))
                .await,
            Err(IdentityError::Forbidden)
        ),
        "one holder"
    );
    id.create_user(act, duty("auditor", Role::AuditAdmin))
        .await
        .unwrap();
    assert!(
        matches!(
            id.create_user(act, duty("auditor2", Role::AuditAdmin))
                .await,
            Err(IdentityError::Forbidden)
        ),
        "setup is over"
    );
    assert!(matches!(
        id.set_disabled(act, sec, true).await,
        Err(IdentityError::Forbidden)
    ));
    assert!(matches!(
        id.reset_password(act, sec).await,
        Err(IdentityError::Forbidden)
    ));
    // The operator at the console still can.
    id.set_disabled(Actor::Cli, sec, true).await.unwrap();
}

async fn an_address_over_its_limit_is_slowed_not_blocked(t: TestDb) {
    let policy = santong_domain::identity::ThrottlePolicy {
        ip_max_failures: 3,
        ip_slow_secs: 0,
        ..Default::default()
    };
    santong_storage::settings::Settings(&t.db)
        .set("policy.throttle", &serde_json::to_string(&policy).unwrap())
        .await
        .unwrap();
    let id = Identity(&t.db);
    user(&id, "pupil.a", a(), None).await;
    // A pupil sprays made-up names from the school's address.
    for i in 0..10 {
        assert!(matches!(
            login(&id, &format!("made.up{i}"), "x", "203.0.113.9").await,
            Login::Invalid
        ));
    }
    // The right password from the same address still works.
    assert!(matches!(
        login(&id, "pupil.a", PW, "203.0.113.9").await,
        Login::Ok { .. }
    ));
}

async fn second_factor_codes_work_once(t: TestDb) {
    use santong_domain::totp;
    let id = Identity(&t.db);
    let uid = user(
        &id,
        "official.sz",
        region("440300"),
        Some((Role::Official, region("440300"))),
    )
    .await;
    let p = principal(&id, "official.sz").await;
    assert!(!p.mfa_enabled);
    let secret = totp::base32_decode(&id.mfa_begin(&p).await.unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(
        matches!(
            id.mfa_enable(&p, "ip", "000000").await,
            Err(IdentityError::WrongCode)
        ) || totp::code_at(&secret, totp::step_of(now)) == 0
    );
    let codes = id
        .mfa_enable(
            &p,
            "ip",
            &format!("{:06}", totp::code_at(&secret, totp::step_of(now))),
        )
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    assert!(id.mfa_enabled(uid).await.unwrap());
    // Sign-in now stops at the second factor.
    let Login::Ok {
        principal: pending,
        mfa_pending: true,
        ..
    } = login(&id, "official.sz", PW, "ip").await
    else {
        panic!("expected a pending second factor")
    };
    assert!(matches!(
        id.mfa_complete(&pending, "ip", "000001").await.unwrap(),
        Login::Invalid
    ));
    let next = format!("{:06}", totp::code_at(&secret, totp::step_of(now) + 1));
    assert!(matches!(
        id.mfa_complete(&pending, "ip", &next).await.unwrap(),
        Login::Ok { .. }
    ));
    // The same code again (replay) fails; a recovery code works once.
    let Login::Ok {
        principal: again, ..
    } = login(&id, "official.sz", PW, "ip").await
    else {
        panic!()
    };
    assert!(matches!(
        id.mfa_complete(&again, "ip", &next).await.unwrap(),
        Login::Invalid
    ));
    assert!(matches!(
        id.mfa_complete(&again, "ip", &codes[0].to_uppercase())
            .await
            .unwrap(),
        Login::Ok { .. }
    ));
    let Login::Ok {
        principal: third, ..
    } = login(&id, "official.sz", PW, "ip").await
    else {
        panic!()
    };
    assert!(matches!(
        id.mfa_complete(&third, "ip", &codes[0]).await.unwrap(),
        Login::Invalid
    ));
    // The security admin resets a lost factor.
    id.mfa_reset(Actor::Cli, uid).await.unwrap();
    assert!(!id.mfa_enabled(uid).await.unwrap());
}

async fn scope_filters_people_by_school_and_region(t: TestDb) {
    let id = Identity(&t.db);
    let admin_a = user(&id, "admin.a", a(), Some((Role::SchoolAdmin, a()))).await;
    user(&id, "teacher.a", a(), Some((Role::Teacher, a()))).await;
    let tb = user(&id, "teacher.b", b(), Some((Role::Teacher, b()))).await;
    user(&id, "teacher.c", c(), Some((Role::Teacher, c()))).await;
    let td = user(&id, "teacher.d", d(), Some((Role::Teacher, d()))).await;
    user(
        &id,
        "official.sz",
        region("440300"),
        Some((Role::Official, region("440300"))),
    )
    .await;

    let pa = principal(&id, "admin.a").await;
    assert_eq!(pa.user.id, admin_a);
    assert_eq!(names(&id, &pa).await, ["admin.a", "teacher.a"]);
    // Another school's record is invisible, by id too.
    assert!(
        id.get_user(&pa.scope(Permission::UsersView), tb)
            .await
            .unwrap()
            .is_none()
    );
    let official = principal(&id, "official.sz").await;
    assert_eq!(
        names(&id, &official).await,
        [
            "admin.a",
            "official.sz",
            "teacher.a",
            "teacher.b",
            "teacher.c"
        ],
        "深圳 sees its schools, not 广州's"
    );
    assert!(
        id.get_user(&official.scope(Permission::UsersView), td)
            .await
            .unwrap()
            .is_none()
    );
    // A teacher holds no UsersView: sees nobody.
    let teacher = principal(&id, "teacher.a").await;
    assert!(names(&id, &teacher).await.is_empty());
    assert!(Scope::default().is_empty());

    // Mutations outside scope look like "not found".
    let actor = Actor::User {
        principal: &pa,
        ip: "10.0.0.1",
    };
    assert!(matches!(
        id.reset_password(actor, tb).await,
        Err(IdentityError::NotFound)
    ));
    assert!(matches!(
        id.set_disabled(actor, td, true).await,
        Err(IdentityError::NotFound)
    ));
    assert!(matches!(
        id.unlock(actor, tb).await,
        Err(IdentityError::NotFound)
    ));
    let new_b = NewUser {
        username: "intruder".into(),
        display_name: "x".into(),
        password: Some(PW.into()),
        home: b(),
        system_role: None,
        grant: None,
    };
    assert!(matches!(
        id.create_user(actor, new_b).await,
        Err(IdentityError::Forbidden)
    ));
}

async fn grants_follow_separation_of_duties(t: TestDb) {
    let id = Identity(&t.db);
    let (_, _) = id
        .create_user(
            Actor::Cli,
            NewUser {
                username: "sec".into(),
                display_name: "安全管理员".into(),
                password: Some(PW.into()),
                home: Node::Nation,
                system_role: Some(Role::SecurityAdmin),
                grant: None,
            },
        )
        .await
        .unwrap();
    let admin_a = user(&id, "admin.a", a(), Some((Role::SchoolAdmin, a()))).await;
    let pupil = user(&id, "pupil.a", a(), None).await;
    let sec = principal(&id, "sec").await;
    let sec_actor = Actor::User {
        principal: &sec,
        ip: "10.0.0.2",
    };
    // The security admin grants ordinary roles anywhere, never admin duties.
    id.grant(sec_actor, pupil, Role::Student, a())
        .await
        .unwrap();
    assert!(matches!(
        id.grant(sec_actor, pupil, Role::AuditAdmin, Node::Nation)
            .await,
        Err(IdentityError::SeparationOfDuties)
    ));
    // Admin-duty accounts hold nothing else; nobody grants themselves.
    assert!(matches!(
        id.grant(sec_actor, sec.user.id, Role::Teacher, a()).await,
        Err(IdentityError::SeparationOfDuties)
    ));
    let pa = principal(&id, "admin.a").await;
    let a_actor = Actor::User {
        principal: &pa,
        ip: "10.0.0.3",
    };
    assert!(matches!(
        id.grant(a_actor, admin_a, Role::Teacher, a()).await,
        Err(IdentityError::SelfGrant)
    ));
    // A school admin grants teacher/student/parent at their own school only.
    id.grant(a_actor, pupil, Role::Parent, a()).await.unwrap();
    assert!(matches!(
        id.grant(a_actor, pupil, Role::Official, a()).await,
        Err(IdentityError::Forbidden)
    ));
    assert!(matches!(
        id.grant(a_actor, pupil, Role::Teacher, b()).await,
        Err(IdentityError::Forbidden)
    ));
    let roles: Vec<_> = id
        .grants_of(pupil)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.role)
        .collect();
    assert_eq!(roles, ["student", "parent"]);
    // Creating an admin duty is the system admin's (or the CLI's), and with no grant.
    let sys = id
        .create_user(
            Actor::Cli,
            NewUser {
                username: "sys2".into(),
                display_name: "sys".into(),
                password: Some(PW.into()),
                home: Node::Nation,
                system_role: Some(Role::SystemAdmin),
                grant: Some((Role::Teacher, a())),
            },
        )
        .await;
    assert!(matches!(sys, Err(IdentityError::SeparationOfDuties)));
    let dup = NewUser {
        username: "ADMIN.A".into(),
        display_name: "dup".into(),
        password: Some(PW.into()),
        home: a(),
        system_role: None,
        grant: None,
    };
    assert!(matches!(
        id.create_user(Actor::Cli, dup).await,
        Err(IdentityError::UsernameTaken)
    ));
    // Grants and revocations are audited.
    let events = audit::search(
        &t.db,
        &audit::AuditFilter {
            event: Some("grant.add".into()),
            ..Default::default()
        },
        50,
        0,
    )
    .await
    .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.actor == "sec" && e.target == "pupil.a" && e.detail == "student")
    );
}

async fn sign_in_is_uniform_for_unknown_wrong_and_disabled(t: TestDb) {
    let id = Identity(&t.db);
    let uid = user(&id, "teacher.a", a(), Some((Role::Teacher, a()))).await;
    assert!(matches!(
        login(&id, "teacher.a", PW, "10.0.0.1").await,
        Login::Ok {
            must_change: true,
            ..
        }
    ));
    assert!(matches!(
        login(&id, "Teacher.A ", PW, "10.0.0.1").await,
        Login::Ok { .. }
    ));
    assert!(matches!(
        login(&id, "teacher.a", "wrong", "10.0.0.1").await,
        Login::Invalid
    ));
    assert!(matches!(
        login(&id, "nobody", "wrong", "10.0.0.1").await,
        Login::Invalid
    ));
    id.set_disabled(Actor::Cli, uid, true).await.unwrap();
    assert!(matches!(
        login(&id, "teacher.a", PW, "10.0.0.1").await,
        Login::Invalid
    ));
    id.set_disabled(Actor::Cli, uid, false).await.unwrap();
    assert!(matches!(
        login(&id, "teacher.a", PW, "10.0.0.1").await,
        Login::Ok { .. }
    ));
}

async fn parallel_wrong_attempts_stay_within_the_limit(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "teacher.a", a(), None).await;
    let mut tasks = vec![];
    for i in 0..20 {
        let db = t.db.clone();
        tasks.push(tokio::spawn(async move {
            Identity(&db)
                .authenticate("teacher.a", "wrong", &format!("10.1.0.{}", i % 3), "t")
                .await
                .unwrap()
        }));
    }
    let mut invalid = 0;
    let mut locked = 0;
    for task in tasks {
        match task.await.unwrap() {
            Login::Invalid => invalid += 1,
            Login::Locked { .. } => locked += 1,
            Login::Ok { .. } => panic!("wrong password accepted"),
        }
    }
    // 5 free failures per account by default; the 5th sets the first lock.
    assert_eq!(
        (invalid, locked),
        (5, 15),
        "password checks must not exceed the limit"
    );
    assert!(id.is_locked("teacher.a").await.unwrap());
    // Even the right password waits out the lock.
    assert!(matches!(
        login(&id, "teacher.a", PW, "10.9.9.9").await,
        Login::Locked { .. }
    ));
    // Admin unlock.
    let uid = id.user_by_username("teacher.a").await.unwrap().unwrap().id;
    id.unlock(Actor::Cli, uid).await.unwrap();
    assert!(matches!(
        login(&id, "teacher.a", PW, "10.0.0.1").await,
        Login::Ok { .. }
    ));
    let locked_events = audit::search(
        &t.db,
        &audit::AuditFilter {
            event: Some("login.locked".into()),
            ..Default::default()
        },
        100,
        0,
    )
    .await
    .unwrap();
    // One event per account and address a minute, not one per attempt: the three addresses of
    // the burst and the later attempt.
    assert_eq!(locked_events.total, 4);
}

async fn quiet_counters_of_unknown_names_are_purged(t: TestDb) {
    let id = Identity(&t.db);
    let old = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    t.db.execute_unchecked(&format!(
        "INSERT INTO login_throttle (key, failures, first_failure_at) VALUES ('a:ghost', 3, '{old}')"
    ))
    .await
    .unwrap();
    let _ = login(&id, "sprayed.name", "wrong", "10.5.5.5").await;
    // Rows touched by a no-op update tell what is there.
    let there = |key: &str| {
        let sql = format!("UPDATE login_throttle SET failures = failures WHERE key = '{key}'");
        let db = t.db.clone();
        async move { db.execute_unchecked(&sql).await.unwrap() }
    };
    assert_eq!(there("a:ghost").await, 0, "the quiet counter is gone");
    assert_eq!(there("a:sprayed.name").await, 1, "today's counter stays");
}

async fn a_failing_student_does_not_lock_the_school(t: TestDb) {
    let id = Identity(&t.db);
    for i in 0..20 {
        user(&id, &format!("s{i:03}"), a(), Some((Role::Student, a()))).await;
    }
    let nat = "203.0.113.7";
    for _ in 0..12 {
        let _ = login(&id, "s000", "wrong", nat).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The failing account's own lock is short (capped at 5 minutes by default)…
    let Login::Locked { retry_after } = login(&id, "s000", PW, nat).await else {
        panic!("s000 is not locked")
    };
    assert!(retry_after <= 300, "{retry_after}");
    // …and everyone else behind the same address signs in.
    for i in 1..20 {
        assert!(
            matches!(
                login(&id, &format!("s{i:03}"), PW, nat).await,
                Login::Ok { .. }
            ),
            "s{i:03}"
        );
    }
}

async fn sessions_revoke_on_password_change_and_disable(t: TestDb) {
    let id = Identity(&t.db);
    let uid = user(&id, "teacher.a", a(), None).await;
    let Login::Ok {
        token: t1,
        principal: p1,
        ..
    } = login(&id, "teacher.a", PW, "10.0.0.1").await
    else {
        panic!()
    };
    let Login::Ok { token: t2, .. } = login(&id, "teacher.a", PW, "10.0.0.2").await else {
        panic!()
    };
    assert_ne!(t1, t2, "a new session id at every sign-in");
    let s1 = id.session(&t1).await.unwrap().unwrap();
    assert_eq!(s1.user.id, uid);
    assert_eq!(s1.csrf.len(), 64);
    assert_eq!(id.sessions_of(uid).await.unwrap().len(), 2);
    assert!(id.session("not-a-token").await.unwrap().is_none());

    // Changing the password keeps this session and ends the others.
    id.change_password(&p1, "10.0.0.1", PW, "New!pass-2026x")
        .await
        .unwrap();
    assert!(id.session(&t1).await.unwrap().is_some());
    assert!(id.session(&t2).await.unwrap().is_none());

    // Revoking one's own session from "my sessions".
    let Login::Ok { token: t3, .. } = login(&id, "teacher.a", "New!pass-2026x", "10.0.0.3").await
    else {
        panic!()
    };
    let s3 = id.session(&t3).await.unwrap().unwrap();
    assert!(
        id.end_session(&s1, "10.0.0.1", s3.session_id.unwrap())
            .await
            .unwrap()
    );
    assert!(id.session(&t3).await.unwrap().is_none());

    // A privileged role granted mid-session brings the shorter lifetime with it.
    id.grant(Actor::Cli, uid, Role::Official, region("440300"))
        .await
        .unwrap();
    assert!(id.session(&t1).await.unwrap().is_some());
    t.db.execute_unchecked("UPDATE user_session SET created_at = '2000-01-01T00:00:00Z'")
        .await
        .unwrap();
    assert!(
        id.session(&t1).await.unwrap().is_none(),
        "older than 8 hours for an official"
    );
    id.revoke_grant(Actor::Cli, uid, id.grants_of(uid).await.unwrap()[0].id)
        .await
        .unwrap();
    assert!(
        id.session(&t1).await.unwrap().is_some(),
        "a teacher's session lasts a week"
    );

    // Disabling ends every session.
    id.set_disabled(Actor::Cli, uid, true).await.unwrap();
    assert!(id.session(&t1).await.unwrap().is_none());
}

async fn password_history_and_policy(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "teacher.a", a(), None).await;
    let p = principal(&id, "teacher.a").await;
    let err = |r: Result<(), IdentityError>| match r {
        Err(IdentityError::Password(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        id.change_password(&p, "ip", "wrong", "Other!pass-1").await,
        Err(IdentityError::WrongPassword)
    ));
    use santong_domain::identity::PasswordProblem as P;
    assert_eq!(err(id.change_password(&p, "ip", PW, PW).await), [P::Reused]);
    assert_eq!(
        err(id.change_password(&p, "ip", PW, "short").await),
        [P::TooShort, P::TooFewClasses]
    );
    assert!(err(id.change_password(&p, "ip", PW, "Admin@123").await).contains(&P::Common));
    id.change_password(&p, "ip", PW, "Second!pass-1")
        .await
        .unwrap();
    id.change_password(&p, "ip", "Second!pass-1", "Third!pass-1")
        .await
        .unwrap();
    // Guessing the current password through the change form is throttled too.
    for _ in 0..5 {
        assert!(matches!(
            id.change_password(&p, "ip", "guess", "Fourth!pass-1").await,
            Err(IdentityError::WrongPassword)
        ));
    }
    assert!(matches!(
        id.change_password(&p, "ip", "Third!pass-1", "Fourth!pass-1")
            .await,
        Err(IdentityError::TooManyAttempts(_))
    ));
    t.db.execute_unchecked("DELETE FROM login_throttle")
        .await
        .unwrap();
    // The first password is in the history: refused.
    assert_eq!(
        err(id.change_password(&p, "ip", "Third!pass-1", PW).await),
        [P::Reused]
    );
}

async fn audit_chain_detects_tampering_and_survives_pruning(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "teacher.a", a(), None).await;
    for _ in 0..3 {
        let _ = login(&id, "teacher.a", "wrong", "10.0.0.1").await;
    }
    let Verification::Intact { events, .. } = audit::verify(&t.db).await.unwrap() else {
        panic!("intact")
    };
    assert_eq!(events, 4);

    // Changing a row breaks it at that row.
    t.db.execute_unchecked("UPDATE audit_event SET detail = 'edited' WHERE seq = 2")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&t.db).await.unwrap(),
        Verification::Broken { seq: 2, .. }
    ));
    t.db.execute_unchecked("UPDATE audit_event SET detail = '' WHERE seq = 2")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&t.db).await.unwrap(),
        Verification::Intact { .. }
    ));
    // Removing a row in the middle, or the last one, is found too.
    t.db.execute_unchecked("DELETE FROM audit_event WHERE seq = 4")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&t.db).await.unwrap(),
        Verification::Broken { seq: 4, .. }
    ));

    // Retention on a fresh chain: everything older than 0 days goes, a checkpoint keeps the rest
    // verifiable.
    let fresh = TestDb::new(t.kind).await.unwrap();
    let id2 = Identity(&fresh.db);
    user(&id2, "teacher.b", b(), None).await;
    let _ = login(&id2, "teacher.b", "wrong", "10.0.0.1").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let removed = audit::prune(&fresh.db, 0).await.unwrap();
    assert_eq!(removed, 2);
    let _ = login(&id2, "teacher.b", "wrong", "10.0.0.1").await;
    match audit::verify(&fresh.db).await.unwrap() {
        Verification::Intact { events, from_seq } => assert_eq!((events, from_seq), (2, 2)),
        other => panic!("{other:?}"),
    }
}

async fn setup_mode_until_the_other_two_admins_exist(t: TestDb) {
    let id = Identity(&t.db);
    let created = santong_storage::users::Users(&t.db)
        .ensure_initial_admin()
        .await
        .unwrap()
        .unwrap();
    assert!(!id.setup_complete().await.unwrap());
    let Login::Ok {
        principal: sys,
        must_change,
        ..
    } = login(&id, "admin", &created.password, "10.0.0.1").await
    else {
        panic!()
    };
    assert!(must_change);
    let actor = Actor::User {
        principal: &sys,
        ip: "10.0.0.1",
    };
    let duty = |name: &str, role| NewUser {
        username: name.into(),
        display_name: name.into(),
        password: None,
        home: Node::Nation,
        system_role: Some(role),
        grant: None,
    };
    // The system admin cannot make another system admin, nor grant ordinary roles.
    assert!(matches!(
        id.create_user(actor, duty("sys2", Role::SystemAdmin)).await,
        Err(IdentityError::Forbidden)
    ));
    let (_, pw) = id
        .create_user(actor, duty("security", Role::SecurityAdmin))
        .await
        .unwrap();
    assert!(pw.is_some(), "a generated password is returned once");
    assert!(!id.setup_complete().await.unwrap());
    id.create_user(actor, duty("auditor", Role::AuditAdmin))
        .await
        .unwrap();
    assert!(id.setup_complete().await.unwrap());
}

async fn lifetimes_expire_passwords_sessions_and_tokens(t: TestDb) {
    let id = Identity(&t.db);
    let teacher = user(&id, "teacher.a", a(), Some((Role::Teacher, a()))).await;
    let official = user(
        &id,
        "official",
        region("440305"),
        Some((Role::Official, region("440305"))),
    )
    .await;
    // Both start with a password to change; change it so only age can force a change.
    for (name, uid) in [("teacher.a", teacher), ("official", official)] {
        let p = principal(&id, name).await;
        id.change_password(&p, "10.0.0.1", PW, "Aged!pass-2026")
            .await
            .unwrap();
        let _ = uid;
    }
    let old = (chrono::Utc::now() - chrono::Duration::days(91)).to_rfc3339();
    t.db.execute_unchecked(&format!(
        "UPDATE app_user SET password_changed_at = '{old}'"
    ))
    .await
    .unwrap();
    // 90 days is the limit for officials and admins only.
    let Login::Ok { must_change, .. } = login(&id, "official", "Aged!pass-2026", "10.0.0.1").await
    else {
        panic!()
    };
    assert!(must_change, "an official's password expires after 90 days");
    let Login::Ok {
        must_change, token, ..
    } = login(&id, "teacher.a", "Aged!pass-2026", "10.0.0.1").await
    else {
        panic!()
    };
    assert!(!must_change, "a teacher's does not");

    // Idle timeout: two hours for a teacher.
    assert!(id.session(&token).await.unwrap().is_some());
    let idle = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    t.db.execute_unchecked(&format!("UPDATE user_session SET last_seen_at = '{idle}'"))
        .await
        .unwrap();
    assert!(id.session(&token).await.unwrap().is_none(), "idle too long");

    // API tokens end at their expiry.
    let Login::Ok { principal: p, .. } =
        login(&id, "teacher.a", "Aged!pass-2026", "10.0.0.1").await
    else {
        panic!()
    };
    let (_, tok) = id
        .create_token(
            &p,
            "10.0.0.1",
            "sync",
            &[Permission::StudentPasswordsReset],
            1,
        )
        .await
        .unwrap();
    assert!(id.token_principal(&tok).await.unwrap().is_some());
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    t.db.execute_unchecked(&format!("UPDATE api_token SET expires_at = '{past}'"))
        .await
        .unwrap();
    assert!(id.token_principal(&tok).await.unwrap().is_none(), "expired");
}

async fn locks_grow_with_each_failure(t: TestDb) {
    let id = Identity(&t.db);
    user(&id, "teacher.a", a(), None).await;
    let mut waits = vec![];
    for _ in 0..8 {
        // Clear the lock (not the count) so the next failure is checked and escalates.
        t.db.execute_unchecked("UPDATE login_throttle SET locked_until = NULL")
            .await
            .unwrap();
        let _ = login(&id, "teacher.a", "wrong", "10.0.0.1").await;
        if let Login::Locked { retry_after } = login(&id, "teacher.a", "wrong", "10.0.0.1").await {
            waits.push(retry_after);
        }
    }
    assert!(waits.len() >= 3, "{waits:?}");
    assert!(
        waits.windows(2).all(|w| w[0] <= w[1]) && waits.last() > waits.first(),
        "each lock at least as long as the one before: {waits:?}"
    );
}
