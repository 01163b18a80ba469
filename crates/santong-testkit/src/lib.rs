//! Test helpers shared by every crate's integration tests.
//!
//! [`TestDb`] hands each test its own database: a fresh SQLite file in a temporary directory, or
//! a fresh schema in the PostgreSQL database named by `SANTONG_TEST_PG_URL` (dropped afterwards).
//! [`TestApp`] puts the web router on top and sends requests through `tower::ServiceExt::oneshot`,
//! with no socket. [`conformance!`] turns one async test body into a SQLite and a PostgreSQL test.
//!
//! ```ignore
//! santong_testkit::conformance!(regions_load);
//! async fn regions_load(t: TestDb) { /* uses t.db */ }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use santong_storage::{Db, DbOptions};
use tower::ServiceExt;

pub const PG_URL_VAR: &str = "SANTONG_TEST_PG_URL";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// A database of its own for one test.
pub struct TestDb {
    pub db: Db,
    pub kind: BackendKind,
    pub dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// A migrated database on `kind`, or `None` for PostgreSQL when no server is configured
    /// outside CI (in CI a missing `SANTONG_TEST_PG_URL` is an error, never a silent skip).
    pub async fn new(kind: BackendKind) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match kind {
            BackendKind::Sqlite => {
                let db = Db::open(&DbOptions::sqlite_in(dir.path()))
                    .await
                    .expect("sqlite opens");
                Some(Self {
                    db,
                    kind,
                    dir,
                    pg: None,
                })
            }
            BackendKind::Postgres => {
                let url = match std::env::var(PG_URL_VAR) {
                    Ok(u) if !u.is_empty() => u,
                    _ if std::env::var_os("CI").is_some() => {
                        panic!(
                            "{PG_URL_VAR} must be set in CI: the PostgreSQL half of the suite would be skipped"
                        )
                    }
                    _ => {
                        eprintln!("skipping PostgreSQL test: {PG_URL_VAR} is not set");
                        return None;
                    }
                };
                let schema = format!(
                    "t_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .get(..8)
                        .unwrap_or("x")
                );
                admin_exec(&url, &format!("CREATE SCHEMA {schema}")).await;
                let opts = DbOptions {
                    url: Some(url.clone()),
                    data_dir: dir.path().to_owned(),
                    max_connections: 5,
                    pg_schema: Some(schema.clone()),
                };
                let db = Db::open(&opts).await.expect("postgres opens");
                Some(Self {
                    db,
                    kind,
                    dir,
                    pg: Some((url, schema)),
                })
            }
        }
    }

    /// Options that reach this same database (for a second process or a second pool).
    pub fn options(&self) -> DbOptions {
        match &self.pg {
            Some((url, schema)) => DbOptions {
                url: Some(url.clone()),
                data_dir: self.dir.path().to_owned(),
                max_connections: 5,
                pg_schema: Some(schema.clone()),
            },
            None => DbOptions::sqlite_in(self.dir.path()),
        }
    }
}

async fn admin_exec(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect("admin statement");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((url, schema)) = self.pg.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a fresh thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(admin_exec(
                    &url,
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ));
            }
        })
        .join();
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(TestDb)`.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::TestDb::new($crate::BackendKind::Sqlite).await.unwrap();
                    super::$name(t).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(t) = $crate::TestDb::new($crate::BackendKind::Postgres).await {
                        super::$name(t).await;
                    }
                }
            )*
        }
    };
}

/// The web application over a [`TestDb`], driven without a socket.
pub struct TestApp {
    pub t: TestDb,
    pub router: axum::Router,
}

/// A response read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    /// The body as sent (downloads that are not text).
    pub bytes: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    /// A migrated database with the region lists loaded, and the router with default settings.
    pub async fn new(kind: BackendKind) -> Option<Self> {
        Self::with_config(kind, santong_web::WebConfig::default()).await
    }

    pub async fn with_config(kind: BackendKind, config: santong_web::WebConfig) -> Option<Self> {
        let t = TestDb::new(kind).await?;
        santong_storage::reference::ensure_regions(&t.db)
            .await
            .expect("regions load");
        let router = santong_web::router(santong_web::AppState::new(t.db.clone(), config));
        Some(Self { t, router })
    }

    pub async fn request(&self, req: Request<Body>) -> TestResponse {
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router is infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        TestResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes: bytes.to_vec(),
        }
    }

    pub async fn get(&self, uri: &str) -> TestResponse {
        self.request(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    /// GET with extra headers, e.g. `("accept-language", "en")`.
    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req.body(Body::empty()).expect("request"))
            .await
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(TestApp)`.
#[macro_export]
macro_rules! web_conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::TestApp::new($crate::BackendKind::Sqlite).await.unwrap();
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::TestApp::new($crate::BackendKind::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

/// The password every account made by [`TestApp::user`] ends up with.
pub const READY_PASSWORD: &str = "Ready!pass-2026";
const FIRST_PASSWORD: &str = "First!pass-2026";

/// A signed-in browser: its session cookie and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub username: String,
    pub cookie: String,
    pub csrf: String,
}

/// Reads `name="_csrf" value="…"` from a page.
pub fn csrf_in(body: &str) -> Option<String> {
    let i = body.find(r#"name="_csrf" value=""#)? + r#"name="_csrf" value=""#.len();
    body[i..].split('"').next().map(str::to_owned)
}

fn set_cookie_value(res: &TestResponse, name: &str) -> Option<String> {
    res.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|v| v.split(';').next().unwrap_or("").to_owned())
        })
}

pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                santong_web::views::percent_encode(k),
                santong_web::views::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl TestApp {
    /// Creates an account ready to use: made by the CLI actor, first password already changed.
    pub async fn user(
        &self,
        username: &str,
        home: santong_domain::identity::Node,
        grant: Option<(
            santong_domain::identity::Role,
            santong_domain::identity::Node,
        )>,
        duty: Option<santong_domain::identity::Role>,
    ) -> uuid::Uuid {
        use santong_storage::identity::{Actor, Identity, Login, NewUser};
        let id = Identity(&self.t.db);
        let (uid, _) = id
            .create_user(
                Actor::Cli,
                NewUser {
                    username: username.into(),
                    display_name: format!("{username} 名"),
                    password: Some(FIRST_PASSWORD.into()),
                    home,
                    system_role: duty,
                    grant,
                },
            )
            .await
            .expect("test user");
        let Login::Ok { principal, .. } = id
            .authenticate(username, FIRST_PASSWORD, "127.0.0.1", "testkit")
            .await
            .expect("login")
        else {
            panic!("{username} cannot sign in")
        };
        id.change_password(&principal, "127.0.0.1", FIRST_PASSWORD, READY_PASSWORD)
            .await
            .expect("password change");
        // Officials and admins must have a second factor: enrol one, as the page would.
        if principal.privileged() {
            id.mfa_begin(&principal).await.expect("mfa begin");
            let code = self.totp_code(uid).await;
            id.mfa_enable(&principal, "127.0.0.1", &code)
                .await
                .expect("mfa enable");
        }
        uid
    }

    /// Posts the sign-in form as a browser would (login CSRF cookie and field included).
    pub async fn post_login(
        &self,
        username: &str,
        password: &str,
        extra: &[(&str, &str)],
    ) -> TestResponse {
        let form = self.get("/login").await;
        let token = csrf_in(&form.body).expect("login form has a CSRF field");
        let cookie = set_cookie_value(&form, "santong_login_csrf").expect("login CSRF cookie");
        let body = form_body(&[
            ("username", username),
            ("password", password),
            ("_csrf", &token),
            ("next", "/"),
        ]);
        let mut req = Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("santong_login_csrf={cookie}"));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        self.request(req.body(Body::from(body)).expect("request"))
            .await
    }

    /// Signs in with [`READY_PASSWORD`] and returns the session.
    pub async fn sign_in(&self, username: &str) -> Session {
        self.sign_in_with(username, READY_PASSWORD).await
    }

    pub async fn sign_in_with(&self, username: &str, password: &str) -> Session {
        let res = self.post_login(username, password, &[]).await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "sign-in of {username} failed: {}",
            res.body
        );
        let cookie = set_cookie_value(&res, "santong_session").expect("session cookie");
        let mut s = Session {
            username: username.into(),
            cookie,
            csrf: String::new(),
        };
        if res
            .header("location")
            .is_some_and(|l| l.starts_with("/login/mfa"))
        {
            let prompt = self.get_as(&s, "/login/mfa").await;
            s.csrf = csrf_in(&prompt.body).expect("CSRF on the code form");
            let user = santong_storage::identity::Identity(&self.t.db)
                .user_by_username(username)
                .await
                .expect("db")
                .expect("user");
            let code = self.totp_code(user.id).await;
            let done = self.post_as(&s, "/login/mfa", &[("code", &code)]).await;
            assert_eq!(
                done.status,
                StatusCode::SEE_OTHER,
                "second factor of {username} failed: {}",
                done.body
            );
        }
        let page = self.get_as(&s, "/account/password").await;
        s.csrf = csrf_in(&page.body).expect("a CSRF token in the page");
        s
    }

    pub async fn get_as(&self, s: &Session, uri: &str) -> TestResponse {
        self.get_with(uri, &[("cookie", &format!("santong_session={}", s.cookie))])
            .await
    }

    /// Posts a form as `s`, adding the session's CSRF token.
    pub async fn post_as(&self, s: &Session, uri: &str, fields: &[(&str, &str)]) -> TestResponse {
        let mut all = fields.to_vec();
        all.push(("_csrf", &s.csrf));
        self.post_raw(s, uri, &form_body(&all), &[]).await
    }

    /// Posts a body as `s` with extra headers (no CSRF token added).
    pub async fn post_raw(
        &self,
        s: &Session,
        uri: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = Request::post(uri).header("cookie", format!("santong_session={}", s.cookie));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req.body(Body::from(body.to_owned())).expect("request"))
            .await
    }

    /// The scope matrix: every route must answer 403 or 404 to each of `outsiders` (users of
    /// another school and of another region). Later issues add their routes to the lists.
    pub async fn assert_out_of_scope(
        &self,
        outsiders: &[&Session],
        gets: &[String],
        posts: &[(String, Vec<(&str, &str)>)],
    ) {
        for s in outsiders {
            for uri in gets {
                let res = self.get_as(s, uri).await;
                assert!(
                    res.status == StatusCode::NOT_FOUND || res.status == StatusCode::FORBIDDEN,
                    "GET {uri} as {} answered {}",
                    s.username,
                    res.status
                );
            }
            for (uri, fields) in posts {
                let res = self.post_as(s, uri, fields).await;
                assert!(
                    res.status == StatusCode::NOT_FOUND || res.status == StatusCode::FORBIDDEN,
                    "POST {uri} as {} answered {}",
                    s.username,
                    res.status
                );
            }
        }
    }
}

impl TestApp {
    /// A TOTP code the server will accept next for this account: the current step, or the one
    /// after the last used (a code works once).
    pub async fn totp_code(&self, user_id: uuid::Uuid) -> String {
        use santong_domain::totp;
        let (secret, last) = santong_storage::identity::Identity(&self.t.db)
            .mfa_state(user_id)
            .await
            .expect("db")
            .expect("a TOTP secret");
        let now = totp::step_of(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        let step = match last {
            Some(l) if l >= now => l + 1,
            _ => now,
        };
        assert!(
            step <= now + 1,
            "more sign-ins of one account within 30 s than TOTP allows"
        );
        format!(
            "{:06}",
            totp::code_at(&totp::base32_decode(&secret).expect("base32"), step)
        )
    }
}
