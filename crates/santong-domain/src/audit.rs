//! The audit chain: each event's hash covers its own fields and the previous hash, so changing,
//! inserting or removing a row breaks every hash after it.

use sha2::{Digest, Sha256};

/// The hash the first event chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields an audit hash covers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFields<'a> {
    pub seq: i64,
    /// RFC 3339 UTC with microseconds, as stored.
    pub at: &'a str,
    pub actor: &'a str,
    pub ip: &'a str,
    pub event: &'a str,
    pub target: &'a str,
    pub result: &'a str,
    pub scope: &'a str,
    pub detail: &'a str,
}

/// SHA-256 over the previous hash and the length-prefixed fields (so no two field lists collide by
/// moving a separator), as lowercase hex.
pub fn chain_hash(prev: &str, f: &AuditFields<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    let seq = f.seq.to_string();
    for part in [
        &seq[..],
        f.at,
        f.actor,
        f.ip,
        f.event,
        f.target,
        f.result,
        f.scope,
        f.detail,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(detail: &str) -> AuditFields<'_> {
        AuditFields {
            seq: 1,
            at: "2026-11-28T10:00:00.000000Z",
            actor: "admin",
            ip: "127.0.0.1",
            event: "login",
            target: "admin",
            result: "success",
            scope: "000000",
            detail,
        }
    }

    #[test]
    fn any_change_changes_the_hash() {
        let a = chain_hash(GENESIS, &f("x"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, chain_hash(GENESIS, &f("y")));
        assert_ne!(a, chain_hash(&a, &f("x")));
        // Moving text between fields does not collide.
        let g = AuditFields {
            actor: "admi",
            ip: "n127.0.0.1",
            ..f("x")
        };
        assert_ne!(a, chain_hash(GENESIS, &g));
    }
}
