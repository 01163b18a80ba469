use santong_domain::paging::{PageRequest, Sort};
use santong_domain::region::RegionCode;
use santong_storage::reference::ensure_regions;
use santong_storage::regions::{RegionFilter, RegionSort, Regions};
use santong_testkit::TestDb;

fn rc(s: &str) -> RegionCode {
    RegionCode::parse(s).unwrap()
}

santong_testkit::conformance!(
    loads_once_and_counts,
    children_ancestors_and_paging,
    search_by_name_and_code_prefix,
    retired_codes_resolve,
    demo_is_idempotent,
    concurrent_first_starts_load_once,
);

async fn concurrent_first_starts_load_once(t: TestDb) {
    let other = santong_storage::Db::open(&t.options()).await.unwrap();
    let (a, b) = tokio::join!(ensure_regions(&t.db), ensure_regions(&other));
    let loaded = [a.unwrap(), b.unwrap()];
    assert_eq!(loaded.iter().filter(|l| **l).count(), 1, "{loaded:?}");
    assert_eq!(Regions(&t.db).count().await.unwrap(), 3213);
    other.close().await;
}

async fn loads_once_and_counts(t: TestDb) {
    assert!(ensure_regions(&t.db).await.unwrap());
    assert!(
        !ensure_regions(&t.db).await.unwrap(),
        "second load must be skipped"
    );
    let r = Regions(&t.db);
    assert_eq!(r.count().await.unwrap(), 3213);
    let top = r
        .list(
            &RegionFilter::default(),
            PageRequest { page: 1, size: 100 },
            None,
        )
        .await
        .unwrap();
    assert_eq!(top.total, 34);
    assert_eq!(top.items[0].code, "110000");
    assert_eq!(top.items[0].name, "北京市");
}

async fn children_ancestors_and_paging(t: TestDb) {
    ensure_regions(&t.db).await.unwrap();
    let r = Regions(&t.db);
    let nanshan = r.get(rc("440305")).await.unwrap().unwrap();
    assert_eq!(nanshan.name, "南山区");
    assert_eq!(nanshan.parent_name.as_deref(), Some("深圳市"));
    let chain: Vec<_> = r
        .ancestors(&nanshan)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(chain, ["广东省", "深圳市"]);

    // A county directly under a province (仙桃市) has a one-step chain.
    let xiantao = r.get(rc("429004")).await.unwrap().unwrap();
    let chain: Vec<_> = r
        .ancestors(&xiantao)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.code)
        .collect();
    assert_eq!(chain, ["420000"]);

    let gd = r.get(rc("440000")).await.unwrap().unwrap();
    assert_eq!(gd.child_count, 21);
    let filter = RegionFilter {
        parent: Some(rc("440000")),
        query: None,
    };
    let p1 = r
        .list(&filter, PageRequest { page: 1, size: 10 }, None)
        .await
        .unwrap();
    let p3 = r
        .list(&filter, PageRequest { page: 3, size: 10 }, None)
        .await
        .unwrap();
    assert_eq!((p1.total, p1.items.len(), p3.items.len()), (21, 10, 1));
    assert_eq!(p1.items[0].code, "440100");
    let desc = r
        .list(
            &filter,
            PageRequest::default(),
            Some(Sort {
                field: RegionSort::Code,
                descending: true,
            }),
        )
        .await
        .unwrap();
    assert_eq!(desc.items[0].code, "445300");
    let by_name = r
        .list(
            &filter,
            PageRequest { page: 1, size: 100 },
            Some(Sort {
                field: RegionSort::Name,
                descending: false,
            }),
        )
        .await
        .unwrap();
    let names: Vec<_> = by_name.items.iter().map(|i| i.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names.len(), 21);
    assert_eq!(
        names, sorted,
        "name order is by code point on every backend"
    );
    assert!(r.get(rc("999999")).await.unwrap().is_none());
}

async fn search_by_name_and_code_prefix(t: TestDb) {
    ensure_regions(&t.db).await.unwrap();
    let r = Regions(&t.db);
    let q = |s: &str| RegionFilter {
        parent: None,
        query: Some(s.into()),
    };
    let page = PageRequest { page: 1, size: 100 };
    let found = r.list(&q("南山"), page, None).await.unwrap();
    assert!(found.items.iter().any(|i| i.code == "440305"));
    let chaoyang = r.list(&q("朝阳区"), page, None).await.unwrap();
    assert!(chaoyang.total >= 2, "Beijing and Changchun both have one");
    assert!(chaoyang.items.iter().all(|i| i.parent_name.is_some()));
    let prefix = r.list(&q("4403"), page, None).await.unwrap();
    assert!(prefix.total >= 9 && prefix.items.iter().all(|i| i.code.starts_with("4403")));
    // Wildcards in input are literal, never patterns.
    assert_eq!(r.list(&q("%"), page, None).await.unwrap().total, 0);
    assert_eq!(r.list(&q("_"), page, None).await.unwrap().total, 0);
}

async fn retired_codes_resolve(t: TestDb) {
    ensure_regions(&t.db).await.unwrap();
    let r = Regions(&t.db);
    // 莱芜市 was merged into 济南市.
    let s = r.successors(rc("371200")).await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].code.as_str(), s[0].name.as_str(), s[0].year),
        ("370100", "济南市", 2018)
    );
    let h = r.history(rc("371200")).await.unwrap();
    assert_eq!(h[0].name, "莱芜市");
    assert_eq!(h[0].status, "retired");
    // 莱城区 → 莱芜区 (370116).
    let s = r.successors(rc("371202")).await.unwrap();
    assert_eq!(
        s.iter().map(|x| x.code.as_str()).collect::<Vec<_>>(),
        ["370116"]
    );
    // A current code has no successors.
    assert!(r.successors(rc("440305")).await.unwrap().is_empty());
}

async fn demo_is_idempotent(t: TestDb) {
    use santong_storage::demo;
    let first = demo::seed(&t.db).await.unwrap();
    assert!(first.county_set);
    // 广东省 2019: 10,565 primary, 3,712 junior, 1,008 senior schools over 122 counties → 87,
    // 30 and 8 for an average county, plus three teaching points.
    assert_eq!(first.schools, 87 + 30 + 8 + 3);
    // 广东省 2019 enrolment per school (primary 978, junior 1,048, senior 1,823) at 1/50: 20 per
    // primary, 21 per junior, 36 per senior school, half-way for nine-year schools, 4 per
    // teaching point.
    assert!((2500..3200).contains(&first.students), "{}", first.students);
    // A class per grade of every school, everyone placed.
    assert!(first.classes > 300, "{}", first.classes);
    // Four transfers from the other province's demo school: three waiting, one done.
    assert_eq!(first.transfers, 4);
    // One child enrolled at the sending school and again in the county: one open case.
    assert_eq!(first.duplicates, 1);
    // 广东省 2019 full-time teachers per school (primary about 53, junior about 88, senior about
    // 148) at 1/50: one to three per school, at least one everywhere.
    assert!((128..400).contains(&first.teachers), "{}", first.teachers);
    let cases = santong_storage::duplicates::Duplicates(&t.db)
        .list(
            &santong_domain::identity::Scope::everything(),
            santong_storage::duplicates::CaseFilter::Open,
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(cases.total, 1);
    assert!(cases.items[0].student.is_temporary());
    let all = santong_storage::transfers::Transfers(&t.db)
        .list(
            &santong_storage::identity::Actor::Cli,
            &santong_domain::identity::Scope::everything(),
            santong_storage::transfers::TransferBox::All,
            10,
            0,
        )
        .await
        .unwrap();
    let mut states: Vec<(String, Option<i32>)> = all
        .items
        .iter()
        .map(|x| (x.status.clone(), x.current_step))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("completed".to_string(), None),
            ("pending".to_string(), Some(1)),
            ("pending".to_string(), Some(2)),
            ("pending".to_string(), Some(3))
        ]
    );
    let second = demo::seed(&t.db).await.unwrap();
    assert_eq!(
        second,
        demo::DemoReport {
            regions_loaded: false,
            county_set: false,
            schools: 0,
            students: 0,
            classes: 0,
            transfers: 0,
            duplicates: 0,
            teachers: 0
        }
    );
    let points = santong_storage::registry::Registry(&t.db)
        .list_schools(
            &santong_domain::identity::Scope::everything(),
            &santong_storage::registry::SchoolFilter {
                kind: santong_domain::registry::SchoolKind::parse("218"),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(points.total, 3);
    assert_eq!(points.items[0].parent_code.as_deref(), Some("1440305001"));
    assert_eq!(demo::county(&t.db).await.unwrap(), Some(rc("440305")));
}
