use santong_testkit::TestApp;

santong_testkit::web_conformance!(
    home_in_chinese_by_default,
    home_in_english_by_header_query_and_cookie,
    language_switch_sets_cookie_and_returns,
    browse_guangdong_shenzhen_nanshan,
    region_list_paging_sorting_and_search,
    retired_code_page_names_successor,
    unknown_region_is_a_translated_404,
    bad_query_parameter_is_400_with_field,
    pages_stay_small,
);

async fn home_in_chinese_by_default(app: TestApp) {
    let res = app.get("/").await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains(r#"<html lang="zh-CN">"#));
    assert!(res.body.contains("欢迎使用三通"));
    assert!(res.body.contains("3213"), "home shows the region count");
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(!res.body.contains("<script"), "pages need no JavaScript");
}

async fn home_in_english_by_header_query_and_cookie(app: TestApp) {
    let by_header = app
        .get_with("/", &[("accept-language", "en-US,en;q=0.9,zh;q=0.5")])
        .await;
    assert!(by_header.body.contains("Welcome to Santong"));
    let by_query = app.get("/?lang=en").await;
    assert!(by_query.body.contains(r#"<html lang="en">"#));
    let by_cookie = app.get_with("/", &[("cookie", "theme=x; lang=en")]).await;
    assert!(by_cookie.body.contains("Welcome to Santong"));
    // The query wins over the cookie, the cookie over the header.
    let both = app.get_with("/?lang=zh-CN", &[("cookie", "lang=en")]).await;
    assert!(both.body.contains("欢迎使用三通"));
    let cookie_vs_header = app
        .get_with("/", &[("cookie", "lang=zh-CN"), ("accept-language", "en")])
        .await;
    assert!(cookie_vs_header.body.contains("欢迎使用三通"));
    assert!(
        by_header
            .header("vary")
            .unwrap_or("")
            .contains("Accept-Language")
    );
}

async fn language_switch_sets_cookie_and_returns(app: TestApp) {
    let page = app.get("/regions/440000?page=1&lang=zh-CN").await;
    assert!(
        page.body
            .contains(r#"href="/lang/en?next=%2Fregions%2F440000%3Fpage%3D1""#),
        "{}",
        page.body
    );
    let res = app
        .get("/lang/en?next=%2Fregions%2F440000%3Fpage%3D1")
        .await;
    assert_eq!(res.status, 303);
    assert_eq!(res.header("location"), Some("/regions/440000?page=1"));
    let cookie = res.header("set-cookie").unwrap();
    assert!(cookie.starts_with("lang=en;") && cookie.contains("SameSite=Lax"));
    // Never an open redirect.
    for evil in [
        "https%3A%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        let res = app.get(&format!("/lang/en?next={evil}")).await;
        assert_eq!(res.status, 303, "{evil}");
        assert_eq!(res.header("location"), Some("/"), "{evil}");
    }
    assert_eq!(app.get("/lang/fr").await.status, 404);
}

async fn browse_guangdong_shenzhen_nanshan(app: TestApp) {
    let top = app.get("/regions").await;
    assert!(top.body.contains(r#"<a href="/regions/440000">广东省</a>"#));
    let gd = app.get("/regions/440000").await;
    assert!(gd.body.contains(r#"<a href="/regions/440300">深圳市</a>"#));
    let sz = app.get("/regions/440300").await;
    assert!(sz.body.contains(r#"<a href="/regions/440305">南山区</a>"#));
    let ns = app.get("/regions/440305").await;
    assert_eq!(ns.status, 200);
    let crumbs = ns
        .body
        .split(r#"<nav class="crumbs""#)
        .nth(1)
        .unwrap()
        .split("</nav>")
        .next()
        .unwrap();
    let order: Vec<usize> = ["全国", "广东省", "深圳市", "南山区"]
        .iter()
        .map(|n| crumbs.find(n).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "breadcrumb order: {crumbs}"
    );
    assert!(crumbs.contains(r#"<a href="/regions/440300">深圳市</a>"#));
    assert!(crumbs.contains(r#"<span aria-current="page">南山区</span>"#));
    let en = app.get("/regions/440305?lang=en").await;
    assert!(en.body.contains(">China</a>") && en.body.contains("County"));
}

async fn region_list_paging_sorting_and_search(app: TestApp) {
    let p1 = app.get("/regions/440000").await;
    assert!(p1.body.contains("第 1 / 2 页，共 21 条"), "{}", p1.body);
    assert!(
        p1.body
            .contains(r#"<a rel="next" href="/regions/440000?page=2">"#)
    );
    let p2 = app.get("/regions/440000?page=2").await;
    assert!(p2.body.contains("445300") && !p2.body.contains(">440100<"));
    let by_name = app.get("/regions/440000?sort=-code").await;
    let first = by_name.body.find("445300").unwrap();
    let later = by_name.body.find("445100").unwrap();
    assert!(first < later);
    let found = app.get("/regions?q=%E5%8D%97%E5%B1%B1").await; // 南山
    assert!(found.body.contains("440305") && found.body.contains("“南山”"));
    let none = app
        .get("/regions?q=%E4%B8%8D%E5%AD%98%E5%9C%A8%E7%9A%84%E5%9C%B0%E6%96%B9")
        .await;
    assert!(none.body.contains("没有找到符合条件的行政区划"));
    let escaped = app.get("/regions?q=%3Cscript%3E").await;
    assert!(!escaped.body.contains("<script>"));
    assert!(escaped.body.contains("&lt;script&gt;") || escaped.body.contains("&#60;script&#62;"));
}

async fn retired_code_page_names_successor(app: TestApp) {
    let res = app.get("/regions/371200").await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("莱芜市"));
    assert!(
        res.body
            .contains("自 2018 年版代码表起由 济南市（370100）承继。"),
        "{}",
        res.body
    );
    assert!(res.body.contains(r#"href="/regions/370100""#));
    let en = app
        .get_with("/regions/371200", &[("accept-language", "en")])
        .await;
    assert!(
        en.body
            .contains("Succeeded by 济南市 (370100) as of the 2018 code list.")
    );
}

async fn unknown_region_is_a_translated_404(app: TestApp) {
    let zh = app.get("/regions/999999").await;
    assert_eq!(zh.status, 404);
    assert!(zh.body.contains("没有代码为 999999 的行政区划。"));
    assert!(zh.body.contains(r#"<html lang="zh-CN">"#));
    let en = app
        .get_with("/regions/999999", &[("accept-language", "en")])
        .await;
    assert!(en.body.contains("There is no region with code 999999."));
    let bad = app.get("/regions/abc").await;
    assert_eq!(bad.status, 404);
    assert!(bad.body.contains("“abc”不是有效的行政区划代码"));
    let nowhere = app
        .get_with("/no/such/page", &[("accept-language", "en")])
        .await;
    assert_eq!(nowhere.status, 404);
    assert!(
        nowhere
            .body
            .contains("The page you asked for does not exist.")
    );
}

async fn bad_query_parameter_is_400_with_field(app: TestApp) {
    let res = app.get("/regions/440000?page=abc").await;
    assert_eq!(res.status, 400);
    assert!(res.body.contains("参数 page 应为数字。"));
}

async fn pages_stay_small(app: TestApp) {
    let css = app.get(santong_web::assets::css_url()).await;
    for path in [
        "/",
        "/regions",
        "/regions/440000",
        "/regions/440305",
        "/regions/371200",
        "/nope",
    ] {
        for lang in ["zh-CN", "en"] {
            let res = app.get_with(path, &[("accept-language", lang)]).await;
            let total = res.body.len() + css.body.len();
            assert!(
                total <= 60 * 1024,
                "{path} ({lang}) is {total} bytes with its stylesheet"
            );
        }
    }
}
