//! Password hashing (argon2id, PHC strings) and generation of initial passwords.

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

/// Hashes with argon2id and a fresh random salt; the result embeds its parameters.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Default parameters with a generated salt cannot fail; a failure here is a broken build.
        .unwrap_or_else(|e| panic!("argon2 with default parameters failed: {e}"))
}

/// True when `password` matches the stored PHC string; a malformed hash never matches.
///
/// Recomputes with a per-thread block buffer instead of allocating ~19 MiB per call: under a
/// sign-in rush the allocator would otherwise keep growing the heap (measured: 500 MB+ for 2,000
/// sign-ins; 40 MB with the buffer).
pub fn verify(password: &str, phc: &str) -> bool {
    use argon2::{Algorithm, Block, Params, Version};
    use std::cell::RefCell;
    thread_local! {
        static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let ok = BLOCKS.with(|b| {
        let mut blocks = b.borrow_mut();
        if blocks.len() < params.block_count() {
            blocks.resize(params.block_count(), Block::default());
        }
        let n = params.block_count();
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..n])
            .is_ok()
    });
    // `Output` compares in constant time.
    ok && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// A random password of `len` characters without look-alikes (0/O, 1/l/I), so it can be read
/// off a terminal and typed by hand.
pub fn generate(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let n = ALPHABET.len() as u32;
    // Rejection sampling keeps every character equally likely.
    let limit = u32::MAX - u32::MAX % n;
    loop {
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let r = OsRng.next_u32();
            if r < limit {
                out.push(char::from(ALPHABET[(r % n) as usize]));
            }
        }
        // Every generated password satisfies the default character-class policy.
        let classes = [
            out.bytes().any(|b| b.is_ascii_lowercase()),
            out.bytes().any(|b| b.is_ascii_uppercase()),
            out.bytes().any(|b| b.is_ascii_digit()),
        ];
        if len < 3 || classes.iter().all(|c| *c) {
            return out;
        }
    }
}

/// A random secret for cookies and tokens: 32 bytes as 64 hex characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a token as hex: what is stored instead of the token.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A hash to verify against when the account does not exist, so the response takes as long as
/// for a real account and reveals nothing.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash(&random_token()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn generated_passwords_differ_and_avoid_lookalikes() {
        let a = generate(16);
        let b = generate(16);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(!a.contains(['0', 'O', '1', 'l', 'I']));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
        assert_eq!(token_hash(&t), token_hash(&t));
        assert_ne!(token_hash(&t), t);
        assert!(!verify("anything", dummy_hash()));
    }
}
