//! The pure parts of the OpenID Connect provider: compact JWS with ES256, PKCE, scopes and the
//! rules for registered URIs. Storage and HTTP live in the outer crates.

use argon2::password_hash::rand_core::OsRng;
use base64ct::{Base64UrlUnpadded, Encoding};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The only signing algorithm: ECDSA P-256 with SHA-256 (RustCrypto, constant-time arithmetic).
pub const ALG: &str = "ES256";

pub fn b64url(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(s).ok()
}

/// Standard base64 with padding, as in HTTP Basic credentials.
pub fn b64_standard_decode(s: &str) -> Option<Vec<u8>> {
    base64ct::Base64::decode_vec(s).ok()
}

/// A signing key with its key id.
#[derive(Clone)]
pub struct JwsKey {
    pub kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for JwsKey {
    // The private scalar never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwsKey").field("kid", &self.kid).finish()
    }
}

impl JwsKey {
    pub fn generate() -> Self {
        let key = SigningKey::random(&mut OsRng);
        Self {
            kid: thumbprint(key.verifying_key()),
            key,
        }
    }

    /// Restores a key from `secret()`.
    pub fn from_secret(kid: &str, secret: &str) -> Option<Self> {
        let bytes = b64url_decode(secret)?;
        let key = SigningKey::from_slice(&bytes).ok()?;
        Some(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// The private scalar, base64url: what storage keeps.
    pub fn secret(&self) -> String {
        b64url(&self.key.to_bytes())
    }

    /// The public half as a JWK for the JWKS document.
    pub fn public_jwk(&self) -> Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": point.x().map(|x| b64url(x)).unwrap_or_default(),
            "y": point.y().map(|y| b64url(y)).unwrap_or_default(),
            "use": "sig",
            "alg": ALG,
            "kid": self.kid,
        })
    }

    /// Signs `claims` as a compact JWS of type `typ` (`JWT`, `logout+jwt`).
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        let header = json!({ "alg": ALG, "typ": typ, "kid": self.kid });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64url(&sig.to_bytes()))
    }
}

/// RFC 7638 thumbprint of an EC public key: a stable key id derived from the key itself.
fn thumbprint(key: &VerifyingKey) -> String {
    let p = key.to_encoded_point(false);
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        p.x().map(|x| b64url(x)).unwrap_or_default(),
        p.y().map(|y| b64url(y)).unwrap_or_default()
    );
    b64url(&Sha256::digest(canonical.as_bytes()))
}

/// Why a compact JWS was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm")]
    Algorithm,
    #[error("unknown key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
}

/// Verifies a compact JWS against public JWKs and returns its claims. Only ES256 is accepted, so
/// `alg: none` and algorithm confusion cannot pass.
pub fn verify(token: &str, jwks: &[Value]) -> Result<Value, JwsError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header: Value = b64url_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwsError::Malformed)?;
    if header["alg"] != ALG {
        return Err(JwsError::Algorithm);
    }
    let jwk = jwks
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .ok_or(JwsError::UnknownKey)?;
    let coord = |name: &str| {
        jwk[name]
            .as_str()
            .and_then(b64url_decode)
            .filter(|b| b.len() == 32)
            .ok_or(JwsError::UnknownKey)
    };
    let (x, y) = (coord("x")?, coord("y")?);
    let point = p256::EncodedPoint::from_affine_coordinates(
        x.as_slice().into(),
        y.as_slice().into(),
        false,
    );
    let key = VerifyingKey::from_encoded_point(&point).map_err(|_| JwsError::UnknownKey)?;
    let sig = b64url_decode(s)
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or(JwsError::Signature)?;
    key.verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| JwsError::Signature)?;
    b64url_decode(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwsError::Malformed)
}

/// `at_hash` / `c_hash`: the left half of the SHA-256 of the token, base64url.
pub fn half_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    b64url(&d[..16])
}

/// RFC 7636: a verifier is 43–128 unreserved characters and its S256 hash must equal the
/// challenge. The comparison is constant-time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = b64url(&Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A challenge as sent to the authorization endpoint: S256 output is 43 base64url characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Scopes the provider knows. Unknown scopes in a request are ignored (OpenID Connect Core §3.1.2.1).
pub const SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "phone",
    "offline_access",
    // Santong's own claims: roles with their node codes, and the home school.
    "santong",
];

/// Scopes a client may be allowed: the OpenID ones plus API permissions (`users_view` …).
pub fn known_scope(s: &str) -> bool {
    SCOPES.contains(&s) || crate::identity::Permission::parse(s).is_some()
}

/// The requested scopes this client may have, in a stable order without duplicates.
pub fn grantable_scopes(requested: &str, allowed: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in requested.split_ascii_whitespace() {
        if known_scope(s) && allowed.iter().any(|a| a == s) && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// Why a URI cannot be registered as a redirect or post-logout target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriProblem {
    NotAbsolute,
    Fragment,
    Credentials,
    Wildcard,
}

/// Checks a URI to be registered. Matching later is exact string equality, so only the shape is
/// checked here: absolute, `http(s)` or a private-use scheme (`cn.example.app:/cb`, RFC 8252), no
/// fragment, no user information, no wildcard.
pub fn check_registered_uri(uri: &str) -> Result<(), UriProblem> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(UriProblem::NotAbsolute);
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UriProblem::NotAbsolute);
    }
    if uri.contains('#') {
        return Err(UriProblem::Fragment);
    }
    if uri.contains('*') {
        return Err(UriProblem::Wildcard);
    }
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if web {
        let Some(authority) = rest.strip_prefix("//").map(|r| r.split(['/', '?']).next()) else {
            return Err(UriProblem::NotAbsolute);
        };
        let authority = authority.unwrap_or("");
        if authority.is_empty() {
            return Err(UriProblem::NotAbsolute);
        }
        if authority.contains('@') {
            return Err(UriProblem::Credentials);
        }
    } else if !scheme.contains('.') {
        // RFC 8252 §7.1: private-use schemes are reverse domain names; this also refuses
        // `javascript:` and `data:`.
        return Err(UriProblem::NotAbsolute);
    }
    Ok(())
}

/// Appends query parameters to a registered URI (which may already carry a query).
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&form_encode(v));
        sep = '&';
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signs_and_verifies() {
        let k = JwsKey::generate();
        let t = k.sign("JWT", &json!({"sub": "x", "n": 1}));
        let claims = verify(&t, &[k.public_jwk()]).unwrap();
        assert_eq!(claims["sub"], "x");
        let restored = JwsKey::from_secret(&k.kid, &k.secret()).unwrap();
        assert_eq!(restored.public_jwk(), k.public_jwk());
        assert!(verify(&restored.sign("JWT", &json!({})), &[k.public_jwk()]).is_ok());
    }

    #[test]
    fn refuses_tampering_other_keys_and_alg_none() {
        let k = JwsKey::generate();
        let other = JwsKey::generate();
        let t = k.sign("JWT", &json!({"sub": "alice"}));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64url(br#"{"sub":"mallory"}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &[k.public_jwk()]),
            Err(JwsError::Signature)
        );
        assert_eq!(verify(&t, &[other.public_jwk()]), Err(JwsError::UnknownKey));
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none"}"#),
            b64url(br#"{"sub":"x"}"#)
        );
        assert_eq!(verify(&none, &[k.public_jwk()]), Err(JwsError::Algorithm));
        assert_eq!(verify("a.b", &[k.public_jwk()]), Err(JwsError::Malformed));
    }

    #[test]
    fn pkce_rfc7636_example() {
        // Appendix B of RFC 7636.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }

    #[test]
    fn scopes_are_limited_to_the_clients() {
        let allowed: Vec<String> = ["openid", "profile", "users_view"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            grantable_scopes("openid email profile openid bogus users_view", &allowed),
            ["openid", "profile", "users_view"]
        );
    }

    #[test]
    fn registered_uris() {
        assert!(check_registered_uri("https://app.example.cn/cb").is_ok());
        assert!(check_registered_uri("http://127.0.0.1:8080/cb?x=1").is_ok());
        assert!(check_registered_uri("cn.example.app:/oauth").is_ok());
        assert_eq!(
            check_registered_uri("https://a.cn/cb#x"),
            Err(UriProblem::Fragment)
        );
        assert_eq!(
            check_registered_uri("https://*.a.cn/cb"),
            Err(UriProblem::Wildcard)
        );
        assert_eq!(
            check_registered_uri("https://u:p@a.cn/"),
            Err(UriProblem::Credentials)
        );
        assert_eq!(
            check_registered_uri("javascript:alert(1)"),
            Err(UriProblem::NotAbsolute)
        );
        assert_eq!(check_registered_uri("/cb"), Err(UriProblem::NotAbsolute));
        assert_eq!(
            with_query("https://a.cn/cb?x=1", &[("code", "a b"), ("state", "s/")]),
            "https://a.cn/cb?x=1&code=a%20b&state=s%2F"
        );
    }

    proptest! {
        #[test]
        fn pkce_roundtrip(v in "[A-Za-z0-9._~-]{43,128}") {
            let challenge = b64url(&Sha256::digest(v.as_bytes()));
            prop_assert!(valid_challenge(&challenge));
            prop_assert!(pkce_matches(&v, &challenge));
        }

        #[test]
        fn verify_never_panics(s in ".{0,200}") {
            let _ = verify(&s, &[JwsKey::generate().public_jwk()]);
        }
    }
}
