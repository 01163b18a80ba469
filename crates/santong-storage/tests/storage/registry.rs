use santong_domain::identity::{Node, Permission, Role, Scope};
use santong_domain::paging::FieldErrorKind;
use santong_domain::region::RegionCode;
use santong_domain::registry::SchoolStatus;
use santong_storage::identity::{Actor, Identity, Login, NewUser, Principal};
use santong_storage::registry::{Registry, RegistryError, SchoolFilter, SchoolInput, SchoolSort};
use santong_testkit::TestDb;

const PW: &str = "Kx9!long-enough";

santong_testkit::conformance!(
    schools_are_created_with_every_field_checked,
    teaching_points_belong_to_an_open_school_of_their_county,
    edits_keep_history_and_refuse_stale_forms,
    closing_and_merging,
    schools_are_scoped_like_people,
    lists_filter_sort_and_page,
    structure_rules_and_merge_history,
    concurrent_mergers_cannot_point_at_each_other,
    names_sort_both_ways,
    conditions_are_recorded_per_school_year,
);

fn input(code: &str, name: &str, kind: &str, county: &str) -> SchoolInput {
    SchoolInput {
        code: code.into(),
        name: name.into(),
        kind: kind.into(),
        urban_rural: "111".into(),
        county: county.into(),
        opened_on: "2001-09-01".into(),
        ..Default::default()
    }
}

async fn ready(t: &TestDb) -> Registry<'_> {
    santong_storage::reference::ensure_regions(&t.db)
        .await
        .unwrap();
    Registry(&t.db)
}

fn problems(e: RegistryError) -> Vec<(String, &'static str)> {
    match e {
        RegistryError::Fields(f) => f
            .into_iter()
            .map(|f| match f.kind {
                FieldErrorKind::Rule(k) => (f.field, k),
                other => (f.field, other.key()),
            })
            .collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

async fn person(t: &TestDb, name: &str, role: Role, at: Node) -> Principal {
    let id = Identity(&t.db);
    id.create_user(
        Actor::Cli,
        NewUser {
            username: name.into(),
            display_name: name.into(),
            password: Some(PW.into()),
            home: at,
            system_role: None,
            grant: Some((role, at)),
        },
    )
    .await
    .unwrap();
    match id.authenticate(name, PW, "10.0.0.1", "t").await.unwrap() {
        Login::Ok { principal, .. } => *principal,
        other => panic!("{other:?}"),
    }
}

fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

async fn schools_are_created_with_every_field_checked(t: TestDb) {
    let r = ready(&t).await;
    let s = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "南山实验学校", "312", "440305"),
        )
        .await
        .unwrap();
    assert_eq!(s.grades, "1-9", "a nine-year school's grades by default");
    assert_eq!(s.status, "open");
    // Everything wrong at once: every problem is reported, nothing is written.
    let bad = SchoolInput {
        code: "12345".into(),
        name: " ".into(),
        kind: "999".into(),
        urban_rural: "x".into(),
        county: "440300".into(),
        grades: "1-13".into(),
        opened_on: "2099-01-01".into(),
        ..Default::default()
    };
    let got = problems(r.create_school(Actor::Cli, &bad).await.unwrap_err());
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    for f in [
        "code",
        "name",
        "kind",
        "urban_rural",
        "county",
        "grades",
        "opened_on",
    ] {
        assert!(fields.contains(&f), "{f} reported: {got:?}");
    }
    // A prefecture is no county; a retired or unknown code neither.
    let got = problems(
        r.create_school(Actor::Cli, &input("1144030599", "某学校", "211", "999999"))
            .await
            .unwrap_err(),
    );
    assert_eq!(got, vec![("county".to_string(), "registry-bad-county")]);
    // Grades must fit the kind: a primary school has no grade 9.
    let mut p = input("1144030598", "某小学", "211", "440305");
    p.grades = "1-9".into();
    let got = problems(r.create_school(Actor::Cli, &p).await.unwrap_err());
    assert_eq!(got, vec![("grades".to_string(), "registry-bad-grades")]);
    // The same code twice.
    let got = problems(
        r.create_school(Actor::Cli, &input("1144030501", "重复", "211", "440305"))
            .await
            .unwrap_err(),
    );
    assert_eq!(got, vec![("code".to_string(), "registry-code-taken")]);
    let all = r
        .list_schools(&Scope::everything(), &SchoolFilter::default(), 100, 0)
        .await
        .unwrap();
    assert_eq!(all.total, 1);
}

async fn teaching_points_belong_to_an_open_school_of_their_county(t: TestDb) {
    let r = ready(&t).await;
    r.create_school(
        Actor::Cli,
        &input("1144030501", "中心小学", "211", "440305"),
    )
    .await
    .unwrap();
    r.create_school(
        Actor::Cli,
        &input("1144030401", "福田小学", "211", "440304"),
    )
    .await
    .unwrap();
    let mut point = input("1144030511", "山背教学点", "218", "440305");
    let got = problems(r.create_school(Actor::Cli, &point).await.unwrap_err());
    assert_eq!(
        got,
        vec![("parent_code".to_string(), "registry-parent-required")]
    );
    point.parent_code = "1144030401".into();
    let got = problems(r.create_school(Actor::Cli, &point).await.unwrap_err());
    assert_eq!(
        got,
        vec![("parent_code".to_string(), "registry-bad-parent")]
    );
    point.parent_code = "1144030501".into();
    point.grades = "1-3".into();
    let p = r.create_school(Actor::Cli, &point).await.unwrap();
    assert_eq!(p.parent_code.as_deref(), Some("1144030501"));
    // A school that is no teaching point has no parent.
    let mut wrong = input("1144030502", "第二小学", "211", "440305");
    wrong.parent_code = "1144030501".into();
    let got = problems(r.create_school(Actor::Cli, &wrong).await.unwrap_err());
    assert_eq!(
        got,
        vec![("parent_code".to_string(), "registry-parent-only-for-points")]
    );
    let points = r
        .list_schools(
            &Scope::everything(),
            &SchoolFilter {
                parent: Some("1144030501".into()),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(points.total, 1);
}

async fn edits_keep_history_and_refuse_stale_forms(t: TestDb) {
    let r = ready(&t).await;
    let s = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "南山小学", "211", "440305"),
        )
        .await
        .unwrap();
    let mut changed = input("1144030501", "南山区第一小学", "211", "440305");
    changed.urban_rural = "112".into();
    r.edit_school(Actor::Cli, &s.code, s.version, &changed, "更名")
        .await
        .unwrap();
    // The same form again: the version moved on, so it is refused rather than overwriting.
    let again = r
        .edit_school(
            Actor::Cli,
            &s.code,
            s.version,
            &input("1144030501", "别的名字", "211", "440305"),
            "",
        )
        .await;
    assert!(matches!(again, Err(RegistryError::Stale)), "{again:?}");
    let now = r
        .school(&Scope::everything(), &s.code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.name, "南山区第一小学");
    assert_eq!(now.urban_rural, "112");
    assert_eq!(now.version, 2);
    let h = r.history(&s.code).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].kind, "edit");
    assert_eq!(h[0].reason, "更名");
    let changes: serde_json::Value = serde_json::from_str(&h[0].changes).unwrap();
    assert_eq!(changes["name"][0], "南山小学");
    assert_eq!(changes["name"][1], "南山区第一小学");
    assert!(changes.get("kind").is_none(), "only what changed");
    let audit = santong_storage::audit::search(&t.db, &Default::default(), 10, 0)
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.event == "school.edit" && e.scope == "1144030501")
    );
}

async fn closing_and_merging(t: TestDb) {
    let r = ready(&t).await;
    let a = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "中心小学", "211", "440305"),
        )
        .await
        .unwrap();
    let b = r
        .create_school(Actor::Cli, &input("1144030502", "村小", "211", "440305"))
        .await
        .unwrap();
    let mut point = input("1144030511", "教学点", "218", "440305");
    point.parent_code = a.code.clone();
    let p = r.create_school(Actor::Cli, &point).await.unwrap();
    // The parent cannot close while its teaching point is open; a reason is required.
    let got = problems(
        r.close_school(Actor::Cli, &a.code, a.version, "2025-07-31", None, "")
            .await
            .unwrap_err(),
    );
    assert!(
        got.contains(&("status".to_string(), "registry-points-still-open")),
        "{got:?}"
    );
    assert!(
        got.contains(&("reason".to_string(), "registry-reason-required")),
        "{got:?}"
    );
    // A merge target must be another open school of the county, not one's own teaching point.
    let got = problems(
        r.close_school(
            Actor::Cli,
            &a.code,
            a.version,
            "2025-07-31",
            Some(&p.code),
            "撤并",
        )
        .await
        .unwrap_err(),
    );
    assert!(
        got.contains(&("into".to_string(), "registry-bad-merge-target")),
        "{got:?}"
    );
    r.close_school(
        Actor::Cli,
        &p.code,
        p.version,
        "2025-07-31",
        None,
        "生源不足",
    )
    .await
    .unwrap();
    r.close_school(
        Actor::Cli,
        &b.code,
        b.version,
        "2025-07-31",
        Some(&a.code),
        "布局调整",
    )
    .await
    .unwrap();
    let merged = r
        .school(&Scope::everything(), &b.code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(merged.status(), Some(SchoolStatus::Merged));
    assert_eq!(merged.merged_into.as_deref(), Some("1144030501"));
    assert_eq!(merged.closed_on.unwrap().to_string(), "2025-07-31");
    // Closed is closed: no second closure, no edit, no merging into it.
    let got = problems(
        r.close_school(Actor::Cli, &b.code, merged.version, "2025-08-01", None, "x")
            .await
            .unwrap_err(),
    );
    assert!(got.contains(&("status".to_string(), "registry-not-open")));
    let c = r
        .create_school(Actor::Cli, &input("1144030503", "新校", "211", "440305"))
        .await
        .unwrap();
    let got = problems(
        r.close_school(
            Actor::Cli,
            &c.code,
            c.version,
            "2025-07-31",
            Some(&b.code),
            "x",
        )
        .await
        .unwrap_err(),
    );
    assert!(got.contains(&("into".to_string(), "registry-bad-merge-target")));
    let h = r.history(&b.code).await.unwrap();
    assert_eq!(h[0].kind, "merge");
    assert_eq!(h[0].effective_on.to_string(), "2025-07-31");
}

async fn schools_are_scoped_like_people(t: TestDb) {
    let r = ready(&t).await;
    let ns = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "南山小学", "211", "440305"),
        )
        .await
        .unwrap();
    r.create_school(
        Actor::Cli,
        &input("1144010601", "天河小学", "211", "440106"),
    )
    .await
    .unwrap();
    let sz = person(&t, "official.sz", Role::Official, region("440300")).await;
    let gz = person(&t, "official.gz", Role::Official, region("440106")).await;
    let head = person(&t, "head.ns", Role::SchoolAdmin, ns.node()).await;
    let view = |p: &Principal| p.scope(Permission::RegistryView);
    let names = |page: santong_storage::Page<santong_storage::registry::SchoolRow>| {
        page.items.into_iter().map(|s| s.code).collect::<Vec<_>>()
    };
    let f = SchoolFilter::default();
    assert_eq!(
        names(r.list_schools(&view(&sz), &f, 10, 0).await.unwrap()),
        ["1144030501"]
    );
    assert_eq!(
        names(r.list_schools(&view(&gz), &f, 10, 0).await.unwrap()),
        ["1144010601"]
    );
    assert_eq!(
        names(r.list_schools(&view(&head), &f, 10, 0).await.unwrap()),
        ["1144030501"]
    );
    assert!(r.school(&view(&gz), "1144030501").await.unwrap().is_none());
    // Another region's official cannot change it (and learns nothing: not found).
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.9",
    };
    let got = r
        .edit_school(
            who(&gz),
            &ns.code,
            ns.version,
            &input("1144030501", "改名", "211", "440305"),
            "",
        )
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    // The school's own administrator sees it but opening, editing and closing schools is the
    // county's work.
    let got = r
        .edit_school(
            who(&head),
            &ns.code,
            ns.version,
            &input("1144030501", "改名", "211", "440305"),
            "",
        )
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let got = r
        .create_school(who(&head), &input("1144030502", "新学校", "211", "440305"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    // The city's official may.
    r.edit_school(
        who(&sz),
        &ns.code,
        ns.version,
        &input("1144030501", "南山区小学", "211", "440305"),
        "更名",
    )
    .await
    .unwrap();
    let got = r
        .create_school(who(&gz), &input("1144030502", "越界学校", "211", "440305"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
}

async fn lists_filter_sort_and_page(t: TestDb) {
    let r = ready(&t).await;
    for (i, (kind, name)) in [
        ("211", "乙小学"),
        ("311", "甲中学"),
        ("211", "丙小学"),
        ("342", "丁高中"),
    ]
    .iter()
    .enumerate()
    {
        r.create_school(
            Actor::Cli,
            &input(&format!("11440305{:02}", i + 1), name, kind, "440305"),
        )
        .await
        .unwrap();
    }
    let all = Scope::everything();
    let primary = r
        .list_schools(
            &all,
            &SchoolFilter {
                kind: santong_domain::registry::SchoolKind::parse("211"),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(primary.total, 2);
    let found = r
        .list_schools(
            &all,
            &SchoolFilter {
                text: Some("中学".into()),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(found.total, 1);
    let desc = r
        .list_schools(
            &all,
            &SchoolFilter {
                sort: SchoolSort::Code,
                descending: true,
                ..Default::default()
            },
            2,
            0,
        )
        .await
        .unwrap();
    assert_eq!(desc.total, 4);
    assert_eq!(desc.items.len(), 2);
    assert_eq!(desc.items[0].code, "1144030504");
    let page2 = r
        .list_schools(
            &all,
            &SchoolFilter {
                sort: SchoolSort::Code,
                descending: true,
                ..Default::default()
            },
            2,
            2,
        )
        .await
        .unwrap();
    assert_eq!(page2.items[1].code, "1144030501");
    let elsewhere = r
        .list_schools(
            &all,
            &SchoolFilter {
                region: RegionCode::parse("440106").ok(),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.total, 0);
}

async fn structure_rules_and_merge_history(t: TestDb) {
    let r = ready(&t).await;
    let a = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "中心小学", "211", "440305"),
        )
        .await
        .unwrap();
    let mut point = input("1144030511", "教学点", "218", "440305");
    point.parent_code = a.code.clone();
    let p = r.create_school(Actor::Cli, &point).await.unwrap();
    // A school with a teaching point cannot become a teaching point or a kindergarten.
    let mut as_point = input("1144030501", "中心小学", "111", "440305");
    as_point.grades = "0".into();
    let got = problems(
        r.edit_school(Actor::Cli, &a.code, a.version, &as_point, "")
            .await
            .unwrap_err(),
    );
    assert_eq!(got, vec![("kind".to_string(), "registry-has-points")]);
    // Nothing merges into a teaching point.
    let b = r
        .create_school(Actor::Cli, &input("1144030502", "村小", "211", "440305"))
        .await
        .unwrap();
    let got = problems(
        r.close_school(
            Actor::Cli,
            &b.code,
            b.version,
            "2025-07-31",
            Some(&p.code),
            "x",
        )
        .await
        .unwrap_err(),
    );
    assert!(got.contains(&("into".to_string(), "registry-bad-merge-target")));
    // A closure cannot be dated ahead.
    let got = problems(
        r.close_school(Actor::Cli, &b.code, b.version, "2099-07-31", None, "x")
            .await
            .unwrap_err(),
    );
    assert!(got.contains(&("on".to_string(), "registry-bad-close-date")));
    // The receiving school's history records what it took in.
    r.close_school(
        Actor::Cli,
        &b.code,
        b.version,
        "2025-07-31",
        Some(&a.code),
        "布局调整",
    )
    .await
    .unwrap();
    let h = r.history(&a.code).await.unwrap();
    assert_eq!(h[0].kind, "absorb");
    assert!(h[0].changes.contains("1144030502"));
    // A closed school does not change any more.
    let closed = r
        .school(&Scope::everything(), &b.code)
        .await
        .unwrap()
        .unwrap();
    let got = problems(
        r.edit_school(
            Actor::Cli,
            &b.code,
            closed.version,
            &input("1144030502", "改名", "211", "440305"),
            "",
        )
        .await
        .unwrap_err(),
    );
    assert!(got.contains(&("status".to_string(), "registry-not-open")));
}

async fn concurrent_mergers_cannot_point_at_each_other(t: TestDb) {
    let r = ready(&t).await;
    let a = r
        .create_school(Actor::Cli, &input("1144030501", "甲校", "211", "440305"))
        .await
        .unwrap();
    let b = r
        .create_school(Actor::Cli, &input("1144030502", "乙校", "211", "440305"))
        .await
        .unwrap();
    let (r1, r2) = (Registry(&t.db), Registry(&t.db));
    let (x, y) = tokio::join!(
        r1.close_school(
            Actor::Cli,
            &a.code,
            a.version,
            "2025-07-31",
            Some(&b.code),
            "合并"
        ),
        r2.close_school(
            Actor::Cli,
            &b.code,
            b.version,
            "2025-07-31",
            Some(&a.code),
            "合并"
        ),
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one merger wins: {x:?} / {y:?}"
    );
    let open: Vec<_> = r
        .list_schools(
            &Scope::everything(),
            &SchoolFilter {
                status: Some(SchoolStatus::Open),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap()
        .items;
    assert_eq!(open.len(), 1, "one school remains open");
    // Two creations of one code at once: one school, one field error.
    let (i1, i2) = (
        input("1144030509", "丙校", "211", "440305"),
        input("1144030509", "丁校", "211", "440305"),
    );
    let (x, y) = tokio::join!(
        r1.create_school(Actor::Cli, &i1),
        r2.create_school(Actor::Cli, &i2),
    );
    let errs: Vec<_> = [x, y].into_iter().filter_map(Result::err).collect();
    assert_eq!(errs.len(), 1);
    assert!(
        matches!(&errs[0], RegistryError::Fields(f) if f[0].field == "code"),
        "{errs:?}"
    );
}

async fn names_sort_both_ways(t: TestDb) {
    let r = ready(&t).await;
    for (code, name) in [
        ("1144030501", "Beta School"),
        ("1144030502", "Alpha School"),
        ("1144030503", "Gamma School"),
    ] {
        r.create_school(Actor::Cli, &input(code, name, "211", "440305"))
            .await
            .unwrap();
    }
    let names = |desc: bool| {
        let r = Registry(&t.db);
        async move {
            r.list_schools(
                &Scope::everything(),
                &SchoolFilter {
                    sort: SchoolSort::Name,
                    descending: desc,
                    ..Default::default()
                },
                10,
                0,
            )
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(false).await,
        ["Alpha School", "Beta School", "Gamma School"]
    );
    assert_eq!(
        names(true).await,
        ["Gamma School", "Beta School", "Alpha School"]
    );
}

async fn conditions_are_recorded_per_school_year(t: TestDb) {
    use santong_storage::registry::ConditionInput;
    let r = ready(&t).await;
    let s = r
        .create_school(
            Actor::Cli,
            &input("1144030501", "南山小学", "211", "440305"),
        )
        .await
        .unwrap();
    let good = |year: &str, broadband: &str, mbps: &str| ConditionInput {
        school_year: year.into(),
        building_area_m2: "12000".into(),
        classrooms: "36".into(),
        multimedia_classrooms: "30".into(),
        computers: "120".into(),
        student_terminals: "90".into(),
        broadband: broadband.into(),
        bandwidth_mbps: mbps.into(),
        broadband_since: String::new(),
    };
    let head = person(&t, "head.a", Role::SchoolAdmin, s.node()).await;
    let teacher = person(&t, "teacher.a", Role::Teacher, s.node()).await;
    let far = person(&t, "official.gz", Role::Official, region("440106")).await;
    let who = |p| Actor::User {
        principal: p,
        ip: "10.0.0.9",
    };
    // The school reports its own conditions; a teacher may not; another region sees nothing.
    let row = r
        .record_conditions(who(&head), &s.code, &good("2024", "fibre", "1000"))
        .await
        .unwrap();
    assert_eq!((row.school_year, row.bandwidth_mbps), (2024, Some(1000)));
    let got = r
        .record_conditions(who(&teacher), &s.code, &good("2024", "fibre", "100"))
        .await;
    assert!(matches!(got, Err(RegistryError::Forbidden)), "{got:?}");
    let got = r
        .record_conditions(who(&far), &s.code, &good("2024", "fibre", "100"))
        .await;
    assert!(matches!(got, Err(RegistryError::NotFound)), "{got:?}");
    // Everything wrong at once.
    let bad = ConditionInput {
        school_year: "1990".into(),
        building_area_m2: "-5".into(),
        classrooms: "10".into(),
        multimedia_classrooms: "12".into(),
        computers: "many".into(),
        student_terminals: "0".into(),
        broadband: "none".into(),
        bandwidth_mbps: "100".into(),
        broadband_since: String::new(),
    };
    let got = problems(
        r.record_conditions(Actor::Cli, &s.code, &bad)
            .await
            .unwrap_err(),
    );
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    for f in [
        "school_year",
        "building_area_m2",
        "multimedia_classrooms",
        "computers",
        "bandwidth_mbps",
    ] {
        assert!(fields.contains(&f), "{f}: {got:?}");
    }
    // Connected without a bandwidth is refused too.
    let got = problems(
        r.record_conditions(Actor::Cli, &s.code, &good("2024", "fibre", ""))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        got,
        vec![("bandwidth_mbps".to_string(), "registry-bad-bandwidth")]
    );
    // A correction of the same year replaces it; another year adds one.
    r.record_conditions(Actor::Cli, &s.code, &good("2024", "fibre", "500"))
        .await
        .unwrap();
    r.record_conditions(Actor::Cli, &s.code, &good("2023", "dsl", "100"))
        .await
        .unwrap();
    let all = r.conditions(&s.code).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].school_year, all[0].bandwidth_mbps),
        (2024, Some(500))
    );
    assert_eq!(all[1].broadband, "dsl");
}
