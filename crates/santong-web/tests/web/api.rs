use santong_testkit::TestApp;

santong_testkit::web_conformance!(
    list_provinces_and_children,
    search_and_sort,
    region_detail_current_and_retired,
    unknown_code_is_problem_json,
    bad_parameters_list_every_field,
);

async fn list_provinces_and_children(app: TestApp) {
    let top = app.get("/api/v1/regions").await;
    assert_eq!(top.status, 200);
    assert_eq!(top.header("content-type"), Some("application/json"));
    let j = top.json();
    assert_eq!(
        (j["total"].as_u64(), j["page"].as_u64(), j["size"].as_u64()),
        (Some(34), Some(1), Some(20))
    );
    assert_eq!(j["pages"], 2);
    assert_eq!(j["items"][0]["code"], "110000");
    let sz = app
        .get("/api/v1/regions?parent=440300&size=100")
        .await
        .json();
    assert_eq!(
        sz["items"].as_array().unwrap().len(),
        sz["total"].as_u64().unwrap() as usize
    );
    assert!(
        sz["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "南山区")
    );
}

async fn search_and_sort(app: TestApp) {
    let j = app.get("/api/v1/regions?q=%E6%B7%B1%E5%9C%B3").await.json(); // 深圳
    assert_eq!(j["items"][0]["code"], "440300");
    let j = app
        .get("/api/v1/regions?q=4403&sort=-code&size=3")
        .await
        .json();
    let codes: Vec<_> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(codes, sorted);
    assert_eq!(codes.len(), 3);
}

async fn region_detail_current_and_retired(app: TestApp) {
    let j = app.get("/api/v1/regions/440305").await.json();
    assert_eq!(j["current"], true);
    assert_eq!(j["region"]["name"], "南山区");
    let names: Vec<_> = j["ancestors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, ["广东省", "深圳市"]);
    let j = app.get("/api/v1/regions/371200").await.json();
    assert_eq!(j["current"], false);
    assert!(j["region"].is_null());
    assert_eq!(j["successors"][0]["code"], "370100");
    assert_eq!(j["successors"][0]["year"], 2018);
    assert_eq!(j["history"][0]["name"], "莱芜市");
}

async fn unknown_code_is_problem_json(app: TestApp) {
    let zh = app.get("/api/v1/regions/999999").await;
    assert_eq!(zh.status, 404);
    assert_eq!(zh.header("content-type"), Some("application/problem+json"));
    let j = zh.json();
    assert_eq!(j["code"], "region_not_found");
    assert_eq!(j["status"], 404);
    assert_eq!(j["title"], "未找到");
    assert_eq!(j["detail"], "没有代码为 999999 的行政区划。");
    let en = app
        .get_with("/api/v1/regions/999999", &[("accept-language", "en")])
        .await
        .json();
    assert_eq!(en["detail"], "There is no region with code 999999.");
    let nothing = app.get("/api/v1/nothing").await;
    assert_eq!(nothing.status, 404);
    assert_eq!(nothing.json()["code"], "not_found");
}

async fn bad_parameters_list_every_field(app: TestApp) {
    let res = app
        .get_with(
            "/api/v1/regions?page=0&size=x&sort=password&parent=12&lang=en",
            &[],
        )
        .await;
    assert_eq!(res.status, 400);
    let j = res.json();
    assert_eq!(j["code"], "invalid_parameters");
    let fields: Vec<_> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("page".to_owned(), "out-of-range".to_owned()),
            ("size".to_owned(), "not-a-number".to_owned()),
            ("sort".to_owned(), "unknown-sort-field".to_owned()),
            ("parent".to_owned(), "invalid-value".to_owned()),
        ]
    );
    assert_eq!(j["errors"][0]["detail"], "Parameter page is out of range.");
    let long = app
        .get(&format!("/api/v1/regions?q={}", "a".repeat(41)))
        .await;
    assert_eq!(long.json()["errors"][0]["code"], "too-long");
}

#[tokio::test]
async fn openapi_document_snapshot() {
    let app = TestApp::new(santong_testkit::BackendKind::Sqlite)
        .await
        .unwrap();
    let res = app.get("/api/v1/openapi.json").await;
    assert_eq!(res.status, 200);
    let doc = res.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    insta::assert_json_snapshot!("openapi", doc);
}
