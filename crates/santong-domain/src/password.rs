//! Password hashing (argon2id, PHC strings) and generation of initial passwords.

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

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
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random password of `len` characters without look-alikes (0/O, 1/l/I), so it can be read
/// off a terminal and typed by hand.
pub fn generate(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let n = ALPHABET.len() as u32;
    // Rejection sampling keeps every character equally likely.
    let limit = u32::MAX - u32::MAX % n;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let r = OsRng.next_u32();
        if r < limit {
            out.push(char::from(ALPHABET[(r % n) as usize]));
        }
    }
    out
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
}
