use axum::body::Body;
use axum::http::Request;
use santong_testkit::{BackendKind, TestApp};
use santong_web::WebConfig;

santong_testkit::web_conformance!(health_and_readiness, static_assets_are_hashed_and_cached);

async fn health_and_readiness(app: TestApp) {
    let h = app.get("/healthz").await;
    assert_eq!((h.status.as_u16(), h.body.as_str()), (200, "ok"));
    let r = app.get("/readyz").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "ready"));
    app.t.db.close().await;
    let down = app.get("/readyz").await;
    assert_eq!(down.status, 503);
    assert!(down.body.contains("服务暂时不可用"));
}

async fn static_assets_are_hashed_and_cached(app: TestApp) {
    let url = santong_web::assets::css_url();
    assert!(url.starts_with("/static/app-") && url.ends_with(".css"));
    let css = app.get(url).await;
    assert_eq!(css.status, 200);
    assert_eq!(
        css.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(app.get("/static/app-000000000000.css").await.status, 404);
    assert!(
        !css.header("vary").unwrap_or("").contains("Accept-Language"),
        "hashed assets do not vary by language"
    );
    let home = app.get("/").await;
    assert!(home.body.contains(url));
}

async fn sqlite_app() -> TestApp {
    TestApp::new(BackendKind::Sqlite).await.unwrap()
}

#[tokio::test]
async fn security_headers_and_request_id() {
    let app = sqlite_app().await;
    let res = app.get("/").await;
    let csp = res.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("same-origin"));
    assert_eq!(res.header("x-frame-options"), Some("DENY"));
    assert!(
        res.header("strict-transport-security").is_none(),
        "no HSTS without TLS"
    );
    let id = res.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36);
    let again = app.get("/").await;
    assert_ne!(again.header("x-request-id"), Some(id));
    // An id given by a proxy is kept.
    let given = app
        .get_with("/healthz", &[("x-request-id", "abc-123")])
        .await;
    assert_eq!(given.header("x-request-id"), Some("abc-123"));
    // The error page shows the id, so a user can quote it.
    let err = app
        .get_with("/regions/999999", &[("x-request-id", "req-42")])
        .await;
    assert!(err.body.contains("req-42"));
}

#[tokio::test]
async fn hsts_behind_tls() {
    let cfg = WebConfig {
        public_url: Some("https://edu.example.cn".into()),
        ..WebConfig::default()
    };
    let app = TestApp::with_config(BackendKind::Sqlite, cfg)
        .await
        .unwrap();
    let res = app.get("/").await;
    assert!(
        res.header("strict-transport-security")
            .unwrap()
            .contains("max-age=31536000")
    );
}

#[tokio::test]
async fn compression_when_accepted() {
    let app = sqlite_app().await;
    let gz = app
        .get_with("/regions", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let br = app.get_with("/regions", &[("accept-encoding", "br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    let plain = app.get("/regions").await;
    assert!(plain.header("content-encoding").is_none());
}

#[tokio::test]
async fn body_over_the_limit_is_413_translated() {
    let cfg = WebConfig {
        body_limit: 1024,
        ..WebConfig::default()
    };
    let app = TestApp::with_config(BackendKind::Sqlite, cfg)
        .await
        .unwrap();
    let req = Request::post("/api/v1/regions")
        .header("content-length", "4096")
        .header("accept-language", "en")
        .body(Body::from(vec![b'x'; 4096]))
        .unwrap();
    let res = app.request(req).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    let j = res.json();
    assert_eq!(j["code"], "payload_too_large");
    assert_eq!(j["detail"], "The request is too large: the limit is 1 KiB.");
    assert_eq!(j["title"], "Content too large");
    let page = app
        .request(
            Request::post("/regions")
                .header("content-length", "4096")
                .body(Body::from(vec![b'x'; 4096]))
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, 413);
    assert!(page.body.contains("提交的内容太大，超过了 1 KiB 的上限。"));
}

#[tokio::test]
async fn wrong_method_is_405_translated() {
    let app = sqlite_app().await;
    let res = app
        .request(Request::post("/regions").body(Body::empty()).unwrap())
        .await;
    assert_eq!(res.status, 405);
    assert!(res.body.contains("该地址不支持此操作"));
    assert!(res.header("allow").unwrap_or("").contains("GET"));
}

/// Behind a trusted proxy the client is the address the proxy saw; anyone else's
/// `X-Forwarded-For` is ignored. What the audit log records shows which one was used.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    use axum::extract::ConnectInfo;
    let cfg = WebConfig {
        trusted_proxies: vec![santong_domain::net::IpNet::parse("10.0.0.0/8").unwrap()],
        ..WebConfig::default()
    };
    let app = TestApp::with_config(BackendKind::Sqlite, cfg)
        .await
        .unwrap();
    for (peer, expected) in [
        ("10.0.0.2:4000", "198.51.100.7"),
        ("203.0.113.9:4000", "203.0.113.9"),
    ] {
        let form = app.get("/login").await;
        let csrf = santong_testkit::csrf_in(&form.body).unwrap();
        let cookie = form
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body = santong_testkit::form_body(&[
            ("username", "nobody"),
            ("password", "wrong"),
            ("_csrf", &csrf),
        ]);
        let mut req = Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .header("x-forwarded-for", "1.2.3.4, 198.51.100.7")
            .body(Body::from(body))
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<std::net::SocketAddr>().unwrap()));
        assert_eq!(app.request(req).await.status, 401);
        let last = santong_storage::audit::search(&app.t.db, &Default::default(), 1, 0)
            .await
            .unwrap();
        assert_eq!(last.items[0].ip, expected, "peer {peer}");
    }
}
