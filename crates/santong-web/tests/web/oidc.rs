//! The OpenID Connect provider: a real relying-party library (`openidconnect`) against the
//! router, and the protocol's failure cases by hand.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::oidc as rules;
use santong_domain::region::RegionCode;
use santong_storage::identity::Actor;
use santong_storage::oidc::{ClientSpec, Oidc};
use santong_testkit::{Session, TestApp, TestResponse, form_body};
use serde_json::Value;
use tower::ServiceExt;

const ISSUER: &str = "http://santong.test";
const CB: &str = "http://rp.test/cb";

fn school_a() -> Node {
    Node::School {
        code: SchoolCode::parse("1144030501").unwrap(),
        county: RegionCode::parse("440305").unwrap(),
    }
}
fn region(c: &str) -> Node {
    Node::Region(RegionCode::parse(c).unwrap())
}

async fn app_for(kind: santong_testkit::BackendKind) -> Option<TestApp> {
    let config = santong_web::WebConfig {
        public_url: Some(ISSUER.into()),
        ..Default::default()
    };
    TestApp::with_config(kind, config).await
}

macro_rules! oidc_conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = super::app_for(santong_testkit::BackendKind::Sqlite).await.unwrap();
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = super::app_for(santong_testkit::BackendKind::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

oidc_conformance!(
    openidconnect_library_runs_the_code_flow,
    a_reused_code_is_refused_and_revokes_its_tokens,
    refresh_tokens_rotate_and_a_replay_revokes_the_family,
    authorization_request_errors,
    third_party_clients_ask_for_consent,
    client_credentials_reach_the_api_within_the_service_accounts_scope,
    access_token_scopes_limit_the_api,
    rp_initiated_logout_returns_only_to_registered_uris,
    backchannel_logout_reaches_the_client,
    rotated_keys_stay_published_for_the_grace_period,
    client_administration_is_for_the_security_admin,
    contact_details_are_released_under_their_scopes,
    concurrent_redemptions_of_one_code_yield_one_grant,
    scopes_shrink_with_refresh_requests_and_client_changes,
    fresh_sign_in_post_requests_and_cors,
    service_accounts_cannot_get_a_password,
);

async fn client(app: &TestApp, spec: ClientSpec, public: bool) -> (String, Option<String>) {
    let (row, secret) = Oidc(&app.t.db)
        .add_client(Actor::Cli, &spec, public, false)
        .await
        .expect("client");
    (row.id, secret)
}

fn spec(name: &str, first_party: bool, scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        name: name.into(),
        redirect_uris: vec![CB.into()],
        post_logout_uris: vec!["http://rp.test/bye".into()],
        first_party,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn location(res: &TestResponse) -> String {
    res.header("location")
        .unwrap_or_else(|| panic!("no redirect ({}): {}", res.status, res.body))
        .to_owned()
}

fn param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn pkce() -> (String, String) {
    use sha2::Digest;
    let verifier = format!(
        "{}{}",
        santong_domain::password::random_token(),
        "-verifier"
    );
    let challenge = rules::b64url(&sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn authorize_url(client_id: &str, scope: &str, challenge: &str, extra: &str) -> String {
    format!(
        "/oidc/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope={}\
         &state=st-1&nonce=n-1&code_challenge={challenge}&code_challenge_method=S256{extra}",
        rules::form_encode(CB),
        rules::form_encode(scope)
    )
}

/// Runs the authorization request as `s` and returns the code.
async fn code_for(
    app: &TestApp,
    s: &Session,
    client_id: &str,
    scope: &str,
    challenge: &str,
) -> String {
    let res = app
        .get_as(s, &authorize_url(client_id, scope, challenge, ""))
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let to = location(&res);
    assert!(to.starts_with(CB), "{to}");
    assert_eq!(param(&to, "state").as_deref(), Some("st-1"));
    assert_eq!(param(&to, "iss").as_deref(), Some(ISSUER));
    param(&to, "code").expect("a code")
}

async fn token_request(app: &TestApp, fields: &[(&str, &str)]) -> TestResponse {
    app.request(
        Request::post("/oidc/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form_body(fields)))
            .unwrap(),
    )
    .await
}

/// The token request of the code flow.
async fn exchange(
    app: &TestApp,
    id: &str,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> TestResponse {
    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CB),
        ("code_verifier", verifier),
        ("client_id", id),
    ];
    if let Some(s) = secret {
        fields.push(("client_secret", s));
    }
    token_request(app, &fields).await
}

async fn bearer(app: &TestApp, uri: &str, token: &str) -> TestResponse {
    app.get_with(uri, &[("authorization", &format!("Bearer {token}"))])
        .await
}

async fn teacher(app: &TestApp) -> Session {
    app.user(
        "teacher.a",
        school_a(),
        Some((Role::Teacher, school_a())),
        None,
    )
    .await;
    app.sign_in("teacher.a").await
}

// ----- the real relying party -------------------------------------------------------------------

async fn openidconnect_library_runs_the_code_flow(app: TestApp) {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    };
    use openidconnect::{
        AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
        OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };
    let s = teacher(&app).await;
    let (id, secret) = client(
        &app,
        spec("教务系统", true, &["openid", "profile", "santong"]),
        false,
    )
    .await;

    // The library's HTTP goes through the router, as a socket would.
    let router = app.router.clone();
    let http = move |req: openidconnect::HttpRequest| {
        let router = router.clone();
        async move {
            let (parts, body) = req.into_parts();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let mut builder = Request::builder().method(parts.method).uri(path);
            for (k, v) in &parts.headers {
                builder = builder.header(k, v);
            }
            let res = router
                .oneshot(builder.body(Body::from(body)).unwrap())
                .await
                .unwrap();
            let (rp, rb) = res.into_parts();
            let bytes = http_body_util::BodyExt::collect(rb)
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            let mut out = openidconnect::http::Response::builder().status(rp.status.as_u16());
            for (k, v) in &rp.headers {
                out = out.header(k.as_str(), v.as_bytes());
            }
            Ok::<_, std::io::Error>(out.body(bytes).unwrap())
        }
    };

    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(ISSUER.into()).unwrap(), &http)
            .await
            .expect("discovery");
    let rp = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.clone()),
        secret.map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(CB.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("santong".into()))
        .set_pkce_challenge(challenge)
        .url();
    let path = format!("{}?{}", url.path(), url.query().unwrap());
    let res = app.get_as(&s, &path).await;
    let to = location(&res);
    assert_eq!(
        param(&to, "state").as_deref(),
        Some(state.secret().as_str())
    );
    let code = param(&to, "code").unwrap();

    let tokens = rp
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("token exchange");
    let verifier = rp
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies");
    assert_eq!(
        claims.preferred_username().map(|u| u.as_str()),
        Some("teacher.a")
    );
    assert_eq!(claims.issuer().as_str(), ISSUER);
    // The access token hash binds the ID token to this access token.
    let at_hash = claims.access_token_hash().expect("at_hash").to_string();
    assert_eq!(at_hash, rules::half_hash(tokens.access_token().secret()));

    let info: openidconnect::core::CoreUserInfoClaims = rp
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(
        info.preferred_username().map(|u| u.as_str()),
        Some("teacher.a")
    );

    // Santong's own claims, released because the client may ask for `santong`.
    let raw = bearer(&app, "/oidc/userinfo", tokens.access_token().secret()).await;
    let body = raw.json();
    assert_eq!(body["santong_school"], "1144030501");
    assert_eq!(body["santong_roles"][0]["role"], "teacher");
    assert_eq!(body["santong_roles"][0]["node"], "1144030501");

    let refreshed = rp
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    assert_ne!(
        refreshed.access_token().secret(),
        tokens.access_token().secret()
    );

    // The code again: the library sees the spec's error.
    let again = rp
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(openidconnect::PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&http)
        .await;
    match again {
        Err(openidconnect::RequestTokenError::ServerResponse(e)) => assert_eq!(
            e.error(),
            &openidconnect::core::CoreErrorResponseType::InvalidGrant
        ),
        other => panic!("a reused code must be refused: {other:?}"),
    }
}

// ----- protocol failures --------------------------------------------------------------------------

async fn a_reused_code_is_refused_and_revokes_its_tokens(app: TestApp) {
    let s = teacher(&app).await;
    let (id, secret) = client(&app, spec("RP", true, &["openid", "profile"]), false).await;
    let secret = secret.unwrap();
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid profile", &challenge).await;
    let first = exchange(&app, &id, Some(&secret), &code, &verifier).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&app, "/oidc/userinfo", &access).await.status, 200);

    let second = exchange(&app, &id, Some(&secret), &code, &verifier).await;
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["error"], "invalid_grant");
    // The tokens issued from the code are dead.
    let after = bearer(&app, "/oidc/userinfo", &access).await;
    assert_eq!(after.status, 401);
    assert!(
        after
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 50, 0)
        .await
        .unwrap();
    assert!(audit.items.iter().any(|e| e.event == "oidc.code_reuse"));

    // Wrong verifier, wrong redirect URI, wrong secret.
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let bad = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &"a".repeat(43)),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(bad.json()["error"], "invalid_grant");
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let bad = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://rp.test/cb2"),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(bad.json()["error"], "invalid_grant");
    let basic = format!(
        "Basic {}",
        base64_standard(format!("{id}:wrong").as_bytes())
    );
    let res = app
        .request(
            Request::post("/oidc/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", basic)
                .body(Body::from(form_body(&[
                    ("grant_type", "authorization_code"),
                    ("code", "whatever"),
                    ("redirect_uri", CB),
                ])))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"], "invalid_client");
    assert!(res.header("www-authenticate").is_some());
    let res = token_request(
        &app,
        &[
            ("grant_type", "password"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(res.json()["error"], "unsupported_grant_type");
}

fn base64_standard(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn refresh_tokens_rotate_and_a_replay_revokes_the_family(app: TestApp) {
    let s = teacher(&app).await;
    // A public client: no secret, PKCE required.
    let (id, _) = client(&app, spec("Mobile", true, &["openid", "profile"]), true).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid profile", &challenge).await;
    let first = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
            ("client_id", &id),
        ],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let r1 = first.json()["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |t: String| {
        let id = id.clone();
        let app = &app;
        async move {
            token_request(
                app,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &t),
                    ("client_id", &id),
                ],
            )
            .await
        }
    };
    let second = refresh(r1.clone()).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let body = second.json();
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let a2 = body["access_token"].as_str().unwrap().to_owned();
    // A new ID token comes along, signed and for this client.
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    let claims = rules::verify(body["id_token"].as_str().unwrap(), &jwks).unwrap();
    assert_eq!(claims["aud"], Value::String(id.clone()));

    // r1 again: stolen and replayed. The whole family dies, r2 and its access token too.
    let replay = refresh(r1).await;
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert_eq!(refresh(r2).await.json()["error"], "invalid_grant");
    assert_eq!(bearer(&app, "/oidc/userinfo", &a2).await.status, 401);

    // Signing out ends the grants of the session (no offline_access was granted).
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let t = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
            ("client_id", &id),
        ],
    )
    .await
    .json();
    let r = t["refresh_token"].as_str().unwrap().to_owned();
    let out = app.post_as(&s, "/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(refresh(r).await.json()["error"], "invalid_grant");
}

async fn authorization_request_errors(app: TestApp) {
    let s = teacher(&app).await;
    let (public_id, _) = client(&app, spec("Mobile", true, &["openid"]), true).await;
    let (_, challenge) = pkce();

    // Unknown client or unregistered redirect URI: our own page, never a redirect.
    let res = app
        .get_as(&s, &authorize_url("nope", "openid", &challenge, ""))
        .await;
    assert_eq!(res.status, 400);
    assert!(res.header("location").is_none());
    let res = app
        .get_as(
            &s,
            &authorize_url(&public_id, "openid", &challenge, "")
                .replace("rp.test%2Fcb", "evil.test%2Fcb"),
        )
        .await;
    assert_eq!(res.status, 400);
    assert!(res.header("location").is_none());
    // Prefixes do not match either.
    let res = app
        .get_as(
            &s,
            &authorize_url(&public_id, "openid", &challenge, "")
                .replace("rp.test%2Fcb", "rp.test%2Fcb%2Fx"),
        )
        .await;
    assert_eq!(res.status, 400);

    // Errors after that go back to the client with the spec's codes.
    let err = |res: TestResponse| param(&location(&res), "error").unwrap();
    let no_pkce = format!(
        "/oidc/authorize?response_type=code&client_id={public_id}&redirect_uri={}&scope=openid&state=x",
        rules::form_encode(CB)
    );
    assert_eq!(err(app.get_as(&s, &no_pkce).await), "invalid_request");
    let plain = authorize_url(&public_id, "openid", &challenge, "")
        .replace("code_challenge_method=S256", "code_challenge_method=plain");
    assert_eq!(err(app.get_as(&s, &plain).await), "invalid_request");
    let token = authorize_url(&public_id, "openid", &challenge, "")
        .replace("response_type=code", "response_type=token");
    assert_eq!(
        err(app.get_as(&s, &token).await),
        "unsupported_response_type"
    );
    let scope = authorize_url(&public_id, "email", &challenge, "");
    assert_eq!(err(app.get_as(&s, &scope).await), "invalid_scope");

    // Not signed in: the sign-in page, coming back here; or, with prompt=none, login_required.
    let anon = app
        .get(&authorize_url(&public_id, "openid", &challenge, ""))
        .await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
    assert!(location(&anon).starts_with("/login?next=%2Foidc%2Fauthorize"));
    let anon = app
        .get(&authorize_url(
            &public_id,
            "openid",
            &challenge,
            "&prompt=none",
        ))
        .await;
    assert_eq!(err(anon), "login_required");
    // The sign-in page in the middle of a flow lets its form lead on to the client.
    let login = app
        .get(&location(
            &app.get(&authorize_url(&public_id, "openid", &challenge, ""))
                .await,
        ))
        .await;
    assert!(
        !login
            .header("content-security-policy")
            .unwrap()
            .contains("form-action")
    );
}

async fn third_party_clients_ask_for_consent(app: TestApp) {
    let s = teacher(&app).await;
    let (id, _) = client(
        &app,
        spec("第三方学习应用", false, &["openid", "profile"]),
        true,
    )
    .await;
    let (_, challenge) = pkce();
    let url = authorize_url(&id, "openid profile", &challenge, "");
    let page = app.get_as(&s, &url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("第三方学习应用"));
    assert!(page.body.contains("您的姓名和用户名"));
    let hidden: Vec<(String, String)> = [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .map(|k| (k.to_string(), param(&url, k).unwrap_or_default()))
    .collect();
    let fields = |decision: &'static str| {
        let mut v: Vec<(&str, &str)> = hidden
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        v.push(("decision", decision));
        v
    };
    // Without the session's CSRF token the decision is refused.
    let forged = app
        .post_raw(&s, "/oidc/authorize", &form_body(&fields("allow")), &[])
        .await;
    assert_eq!(forged.status, 403);
    let denied = app.post_as(&s, "/oidc/authorize", &fields("deny")).await;
    assert_eq!(
        param(&location(&denied), "error").as_deref(),
        Some("access_denied")
    );
    let allowed = app.post_as(&s, "/oidc/authorize", &fields("allow")).await;
    assert!(param(&location(&allowed), "code").is_some());
    // Consent is remembered for these scopes; `prompt=consent` asks again.
    let again = app.get_as(&s, &url).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let asked = app.get_as(&s, &format!("{url}&prompt=consent")).await;
    assert_eq!(asked.status, 200);
    let both = app
        .get_as(&s, &format!("{url}&prompt=none%20consent"))
        .await;
    assert_eq!(
        param(&location(&both), "error").as_deref(),
        Some("invalid_request")
    );
    let none = app.get_as(&s, &format!("{url}&prompt=none")).await;
    assert_eq!(none.status, StatusCode::SEE_OTHER);
    assert!(
        param(&location(&none), "code").is_some(),
        "consent given: no interaction needed"
    );
    // "My account" lists it and can withdraw it.
    let apps = app.get_as(&s, "/account/apps").await;
    assert!(apps.body.contains("第三方学习应用"), "{}", apps.body);
    let out = app
        .post_as(&s, &format!("/account/apps/{id}/revoke"), &[])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get_as(&s, &url).await.status, 200);
}

async fn client_credentials_reach_the_api_within_the_service_accounts_scope(app: TestApp) {
    let mut sp = spec("数据同步服务", true, &["users_view"]);
    sp.redirect_uris.clear();
    let (row, secret) = Oidc(&app.t.db)
        .add_client(Actor::Cli, &sp, false, true)
        .await
        .unwrap();
    let secret = secret.unwrap();
    let id = santong_storage::identity::Identity(&app.t.db);
    let svc = format!("svc-{}", row.id);
    // Nobody can sign in as a service account.
    let login = app.post_login(&svc, "!", &[]).await;
    assert_eq!(login.status, 401);
    // Its grants decide what it reads: users of district 440305 only.
    id.grant(
        Actor::Cli,
        row.service_user_id.unwrap(),
        Role::Official,
        region("440305"),
    )
    .await
    .unwrap();
    app.user(
        "teacher.a",
        school_a(),
        Some((Role::Teacher, school_a())),
        None,
    )
    .await;
    app.user(
        "teacher.far",
        region("110101"),
        Some((Role::Teacher, region("110101"))),
        None,
    )
    .await;
    let res = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "users_view"),
            ("client_id", &row.id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let body = res.json();
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap().to_owned();
    let users = bearer(&app, "/api/v1/users", &token).await;
    assert_eq!(users.status, 200, "{}", users.body);
    assert!(users.body.contains("teacher.a"));
    assert!(!users.body.contains("teacher.far"));
    // A scope it was not registered for, and a public client, are refused.
    let res = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "users_manage"),
            ("client_id", &row.id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(res.json()["error"], "invalid_scope");
    let (public_id, _) = client(&app, spec("Mobile", true, &["openid"]), true).await;
    let res = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &public_id),
        ],
    )
    .await;
    assert_eq!(res.json()["error"], "unauthorized_client");
    // Disabling the client kills its tokens.
    Oidc(&app.t.db)
        .set_client_disabled(Actor::Cli, &row.id, true)
        .await
        .unwrap();
    assert_eq!(bearer(&app, "/api/v1/users", &token).await.status, 401);
}

async fn access_token_scopes_limit_the_api(app: TestApp) {
    app.user(
        "official",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    let s = app.sign_in("official").await;
    let (id, secret) = client(&app, spec("RP", true, &["openid", "users_view"]), false).await;
    let secret = secret.unwrap();
    let (verifier, challenge) = pkce();
    for (scope, expected) in [("openid", 403), ("openid users_view", 200)] {
        let code = code_for(&app, &s, &id, scope, &challenge).await;
        let t = token_request(
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("code_verifier", &verifier),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
        )
        .await
        .json();
        let res = bearer(&app, "/api/v1/users", t["access_token"].as_str().unwrap()).await;
        assert_eq!(res.status.as_u16(), expected, "{scope}: {}", res.body);
    }
    assert_eq!(
        bearer(&app, "/api/v1/users", "sta_forged").await.status,
        401
    );
}

async fn rp_initiated_logout_returns_only_to_registered_uris(app: TestApp) {
    let s = teacher(&app).await;
    let (id, secret) = client(&app, spec("RP", true, &["openid"]), false).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let t = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", secret.as_deref().unwrap()),
        ],
    )
    .await
    .json();
    let hint = t["id_token"].as_str().unwrap();
    let bye = rules::form_encode("http://rp.test/bye");
    let evil = app
        .get_as(
            &s,
            &format!(
                "/oidc/logout?id_token_hint={hint}&post_logout_redirect_uri={}",
                rules::form_encode("http://evil.test/")
            ),
        )
        .await;
    assert_eq!(evil.status, 400);
    let forged = app
        .get_as(
            &s,
            &format!("/oidc/logout?id_token_hint=a.b.c&post_logout_redirect_uri={bye}"),
        )
        .await;
    assert_eq!(forged.status, 400);
    // A GET only asks; the POST (with the session's token) signs out.
    let ask = app
        .get_as(
            &s,
            &format!("/oidc/logout?id_token_hint={hint}&post_logout_redirect_uri={bye}&state=s9"),
        )
        .await;
    assert_eq!(ask.status, 200, "{}", ask.body);
    assert!(app.get_as(&s, "/account").await.status == 200);
    let done = app
        .post_as(
            &s,
            "/oidc/logout",
            &[
                ("client_id", &id),
                ("post_logout_redirect_uri", "http://rp.test/bye"),
                ("state", "s9"),
            ],
        )
        .await;
    assert_eq!(location(&done), "http://rp.test/bye?state=s9");
    assert_eq!(
        app.get_as(&s, "/account").await.status,
        StatusCode::SEE_OTHER
    );
}

async fn backchannel_logout_reaches_the_client(app: TestApp) {
    use std::sync::{Arc, Mutex};
    // A relying party's logout endpoint on a real socket.
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let rp = axum::Router::new().route(
        "/backchannel",
        axum::routing::post(
            move |axum::Form(f): axum::Form<std::collections::HashMap<String, String>>| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .unwrap()
                        .push(f.get("logout_token").cloned().unwrap_or_default());
                    StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, rp).await });

    let s = teacher(&app).await;
    let mut sp = spec("RP", true, &["openid"]);
    sp.backchannel_logout_uri = Some(format!("http://{addr}/backchannel"));
    let (id, secret) = client(&app, sp, false).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let t = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CB),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", secret.as_deref().unwrap()),
        ],
    )
    .await
    .json();
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    let id_claims = rules::verify(t["id_token"].as_str().unwrap(), &jwks).unwrap();

    assert_eq!(
        app.post_as(&s, "/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let worker = santong_storage::jobs::Worker::new(app.t.db.clone(), Default::default()).register(
        santong_web::oidc::BACKCHANNEL,
        santong_web::oidc::backchannel_logout,
    );
    assert!(worker.run_once().await.unwrap(), "a logout job was queued");
    let tokens = received.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1);
    let claims = rules::verify(&tokens[0], &jwks).expect("signed by the provider");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], Value::String(id));
    assert_eq!(claims["sid"], id_claims["sid"]);
    assert_eq!(claims["sub"], id_claims["sub"]);
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims.get("nonce").is_none());
}

async fn rotated_keys_stay_published_for_the_grace_period(app: TestApp) {
    let oidc = Oidc(&app.t.db);
    let old = oidc.signing_key().await.unwrap();
    let token = old.sign("JWT", &serde_json::json!({"sub": "x"}));
    let new = oidc.rotate_key(Actor::Cli).await.unwrap();
    assert_ne!(old.kid, new.kid);
    assert_eq!(oidc.signing_key().await.unwrap().kid, new.kid);
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(jwks.len(), 2);
    assert!(
        rules::verify(&token, &jwks).is_ok(),
        "tokens of the old key still verify"
    );
    // Once the grace period has passed the old key is no longer published.
    app.t
        .db
        .execute_unchecked(&format!(
            "UPDATE oidc_key SET retired_at = '{}' WHERE kid = '{}'",
            (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
            old.kid
        ))
        .await
        .unwrap();
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(jwks.len(), 1);
    assert_eq!(jwks[0]["kid"], Value::String(new.kid));

    // Scheduled rotation: a day before the key's 90 days are up, the next one is published…
    let current = oidc.signing_key().await.unwrap();
    let at = |d: chrono::Duration| (chrono::Utc::now() - d).to_rfc3339();
    app.t
        .db
        .execute_unchecked(&format!(
            "UPDATE oidc_key SET activates_at = '{}' WHERE kid = '{}'",
            at(chrono::Duration::days(89) + chrono::Duration::hours(12)),
            current.kid
        ))
        .await
        .unwrap();
    assert_eq!(
        oidc.signing_key().await.unwrap().kid,
        current.kid,
        "still signing"
    );
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(jwks.len(), 2, "the successor is published ahead");
    let next = jwks
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .find(|k| *k != current.kid)
        .unwrap();
    // …and signs once its time has come; the old one stays published for the grace period.
    app.t
        .db
        .execute_unchecked(&format!(
            "UPDATE oidc_key SET activates_at = '{}' WHERE kid = '{}'",
            at(chrono::Duration::minutes(1)),
            next
        ))
        .await
        .unwrap();
    assert_eq!(oidc.signing_key().await.unwrap().kid, next);
    let jwks = app.get("/oidc/jwks").await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(jwks.len(), 2);
    assert!(oidc.signing_key().await.is_ok());

    let disco = app.get("/.well-known/openid-configuration").await.json();
    assert_eq!(disco["issuer"], ISSUER);
    assert_eq!(disco["jwks_uri"], format!("{ISSUER}/oidc/jwks"));
    assert_eq!(disco["code_challenge_methods_supported"][0], "S256");
}

async fn client_administration_is_for_the_security_admin(app: TestApp) {
    app.user("security", Node::Nation, None, Some(Role::SecurityAdmin))
        .await;
    app.user("sysadmin", Node::Nation, None, Some(Role::SystemAdmin))
        .await;
    let teacher = teacher(&app).await;
    let sec = app.sign_in("security").await;
    let sys = app.sign_in("sysadmin").await;
    let res = app
        .post_as(
            &sec,
            "/admin/clients",
            &[
                ("name", "教务系统"),
                ("kind", "confidential"),
                ("first_party", "on"),
                (
                    "redirect_uris",
                    "https://jw.example.cn/cb\nhttps://jw.example.cn/cb2",
                ),
                ("scope", "openid"),
                ("scope", "profile"),
            ],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body.contains("id=\"client-secret\""));
    let rows = Oidc(&app.t.db).clients().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].redirect_uris().count(), 2);
    let id = rows[0].id.clone();
    // A bad URI is a field error, and nothing is written.
    let bad = app
        .post_as(
            &sec,
            "/admin/clients",
            &[
                ("name", "x"),
                ("kind", "public"),
                ("redirect_uris", "https://a.cn/cb#frag"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(Oidc(&app.t.db).clients().await.unwrap().len(), 1);
    let detail = app.get_as(&sec, &format!("/admin/clients/{id}")).await;
    assert_eq!(detail.status, 200);
    let secret = app
        .post_as(&sec, &format!("/admin/clients/{id}/secret"), &[])
        .await;
    assert!(secret.body.contains("id=\"client-secret\""));
    let off = app
        .post_as(&sec, &format!("/admin/clients/{id}/disable"), &[])
        .await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    assert!(
        Oidc(&app.t.db)
            .client(&id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at
            .is_some()
    );
    assert_eq!(
        app.post_as(&sec, "/admin/keys/rotate", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    // Everyone else: refused, pages and actions alike (the system admin too: 三权分立).
    app.assert_out_of_scope(
        &[&teacher, &sys],
        &["/admin/clients".into(), format!("/admin/clients/{id}")],
        &[
            (
                "/admin/clients".into(),
                vec![("name", "x"), ("redirect_uris", CB)],
            ),
            (format!("/admin/clients/{id}"), vec![("name", "x")]),
            (format!("/admin/clients/{id}/secret"), vec![]),
            (format!("/admin/clients/{id}/enable"), vec![]),
            ("/admin/keys/rotate".into(), vec![]),
        ],
    )
    .await;
    let audit = santong_storage::audit::search(&app.t.db, &Default::default(), 100, 0)
        .await
        .unwrap();
    for event in [
        "client.create",
        "client.secret",
        "client.disable",
        "key.rotate",
    ] {
        assert!(
            audit.items.iter().any(|e| e.event == event),
            "{event} audited"
        );
    }
}

async fn contact_details_are_released_under_their_scopes(app: TestApp) {
    let s = teacher(&app).await;
    let bad = app
        .post_as(
            &s,
            "/account/contact",
            &[("email", "li@school.cn"), ("phone", "12345")],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("11 位"), "{}", bad.body);
    let ok = app
        .post_as(
            &s,
            "/account/contact",
            &[("email", "li@school.cn"), ("phone", "138 1234 5678")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let (verifier, challenge) = pkce();
    for (scopes, email, phone) in [
        ("openid email phone", true, true),
        ("openid email", true, false),
        ("openid", false, false),
    ] {
        let allowed: Vec<&str> = scopes.split(' ').collect();
        let (id, _) = client(&app, spec("RP", true, &allowed), true).await;
        let code = code_for(&app, &s, &id, "openid email phone", &challenge).await;
        let t = exchange(&app, &id, None, &code, &verifier).await.json();
        let info = bearer(&app, "/oidc/userinfo", t["access_token"].as_str().unwrap())
            .await
            .json();
        assert_eq!(info.get("email").is_some(), email, "{scopes}: {info}");
        assert_eq!(
            info.get("phone_number").is_some(),
            phone,
            "{scopes}: {info}"
        );
        if phone {
            assert_eq!(info["phone_number"], "+8613812345678");
        }
    }
}

async fn concurrent_redemptions_of_one_code_yield_one_grant(app: TestApp) {
    let s = teacher(&app).await;
    let (id, _) = client(&app, spec("RP", true, &["openid"]), true).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    let (a, b) = tokio::join!(
        exchange(&app, &id, None, &code, &verifier),
        exchange(&app, &id, None, &code, &verifier)
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{} / {}", a.body, b.body);
    // The loser saw a reuse: what the winner got is revoked too.
    let winner = if a.status == 200 { a } else { b };
    let token = winner.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&app, "/oidc/userinfo", &token).await.status, 401);
}

async fn scopes_shrink_with_refresh_requests_and_client_changes(app: TestApp) {
    app.user(
        "official",
        region("440305"),
        Some((Role::Official, region("440305"))),
        None,
    )
    .await;
    let s = app.sign_in("official").await;
    let (id, _) = client(&app, spec("RP", true, &["openid", "users_view"]), true).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&app, &s, &id, "openid users_view", &challenge).await;
    let t = exchange(&app, &id, None, &code, &verifier).await.json();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    // A refresh asking for less gets an access token that can do less.
    let narrow = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("scope", "openid"),
            ("client_id", &id),
        ],
    )
    .await
    .json();
    assert_eq!(narrow["scope"], "openid");
    let narrow_access = narrow["access_token"].as_str().unwrap();
    assert_eq!(
        bearer(&app, "/api/v1/users", narrow_access).await.status,
        403
    );
    // Asking for more than was granted is refused.
    let more = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", narrow["refresh_token"].as_str().unwrap()),
            ("scope", "openid users_manage"),
            ("client_id", &id),
        ],
    )
    .await;
    assert_eq!(more.json()["error"], "invalid_scope");
    // A scope taken from the client stops working in tokens already out there.
    let code = code_for(&app, &s, &id, "openid users_view", &challenge).await;
    let t = exchange(&app, &id, None, &code, &verifier).await.json();
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&app, "/api/v1/users", &access).await.status, 200);
    Oidc(&app.t.db)
        .update_client(Actor::Cli, &id, &spec("RP", true, &["openid"]))
        .await
        .unwrap();
    assert_eq!(bearer(&app, "/api/v1/users", &access).await.status, 403);
    // Case does not matter in the scheme (RFC 9110).
    let lower = app
        .get_with(
            "/oidc/userinfo",
            &[("authorization", &format!("bearer {access}"))],
        )
        .await;
    assert_eq!(lower.status, 200);
}

async fn fresh_sign_in_post_requests_and_cors(app: TestApp) {
    let s = teacher(&app).await;
    let (id, _) = client(&app, spec("RP", true, &["openid"]), true).await;
    let (verifier, challenge) = pkce();
    // prompt=login: sign in again, then back to the request without the prompt.
    let url = authorize_url(&id, "openid", &challenge, "&prompt=login");
    let res = app.get_as(&s, &url).await;
    let to = location(&res);
    assert!(to.starts_with("/login?reauth=1&next="), "{to}");
    let form = app.get_as(&s, &to).await;
    assert_eq!(form.status, 200, "the form shows although signed in");
    let next = param(&to, "next").unwrap();
    assert!(!next.contains("prompt"), "{next}");
    // max_age=0: any earlier sign-in is too old. With prompt=none that is login_required.
    let res = app
        .get_as(&s, &authorize_url(&id, "openid", &challenge, "&max_age=0"))
        .await;
    assert!(location(&res).starts_with("/login?reauth=1"));
    let res = app
        .get_as(
            &s,
            &authorize_url(&id, "openid", &challenge, "&max_age=0&prompt=none"),
        )
        .await;
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("login_required")
    );
    let res = app
        .get_as(&s, &authorize_url(&id, "openid", &challenge, "&max_age=x"))
        .await;
    assert_eq!(
        param(&location(&res), "error").as_deref(),
        Some("invalid_request")
    );

    // The authorization request by POST, even from another site (no token of ours in it).
    let q = authorize_url(&id, "openid", &challenge, "");
    let body = q.split_once('?').unwrap().1;
    let res = app
        .post_raw(
            &s,
            "/oidc/authorize",
            body,
            &[
                ("origin", "http://rp.test"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    let code = param(&location(&res), "code").expect("a code for a POSTed request");
    // A consent answer from another site is refused, though.
    let forged = app
        .post_raw(
            &s,
            "/oidc/authorize",
            &format!("{body}&decision=allow&_csrf={}", s.csrf),
            &[
                ("origin", "http://rp.test"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);

    // Token endpoint: CORS for browser apps, JSON errors for anything malformed.
    let res = exchange(&app, &id, None, &code, &verifier).await;
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let pre = app
        .request(Request::options("/oidc/token").body(Body::empty()).unwrap())
        .await;
    assert_eq!(pre.status, 204);
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let junk = app
        .request(
            Request::post("/oidc/token")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(junk.status, 400);
    assert_eq!(junk.json()["error"], "invalid_request");

    // An application's logout request by POST gets the confirmation page, not a sign-out.
    let res = app
        .post_raw(
            &s,
            "/oidc/logout",
            &format!("client_id={id}"),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(app.get_as(&s, "/account").await.status, 200);

    // A code redeemed after its session ended gives nothing.
    let code = code_for(&app, &s, &id, "openid", &challenge).await;
    app.post_as(&s, "/logout", &[]).await;
    assert_eq!(
        exchange(&app, &id, None, &code, &verifier).await.json()["error"],
        "invalid_grant"
    );
}

async fn service_accounts_cannot_get_a_password(app: TestApp) {
    let mut sp = spec("同步", true, &["users_view"]);
    sp.redirect_uris.clear();
    let (row, _) = Oidc(&app.t.db)
        .add_client(Actor::Cli, &sp, false, true)
        .await
        .unwrap();
    let id = santong_storage::identity::Identity(&app.t.db);
    let svc = format!("svc-{}", row.id);
    assert!(matches!(
        id.reset_password_by_name(&svc, None).await,
        Err(santong_storage::identity::IdentityError::Forbidden)
    ));
    assert!(matches!(
        id.reset_password(Actor::Cli, row.service_user_id.unwrap())
            .await,
        Err(santong_storage::identity::IdentityError::Forbidden)
    ));
}
