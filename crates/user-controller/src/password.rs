//! Passwords: generated from the operating system's CSPRNG, sent to PostgreSQL only as a
//! SCRAM-SHA-256 verifier, and checked against the verifier a role has without sending
//! anything.
//!
//! Checking a stored verifier costs a PBKDF2 (4,096 HMAC-SHA-256 rounds, about a millisecond).
//! [`PasswordChecks`] remembers which (verifier, password) pairs were found to match, so a
//! steady-state pass compares two strings instead.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

pub use tusk_runtime::scram::{
    GENERATED_PASSWORD_LENGTH, generate_password, scram_verifier, verifier_matches,
};

/// Remembers, per (cluster, role), the stored verifier last found to match the password
/// tusk holds, so an unchanged role is checked by comparing strings. The password itself is
/// not kept: only a keyed hash of it, with a key made for this process.
#[derive(Debug, Default)]
pub struct PasswordChecks {
    hasher: RandomState,
    matched: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl PasswordChecks {
    /// Whether `stored` is a verifier of `password` for `role` in `cluster`; computes it
    /// (PBKDF2) only when this pair was not seen matching before.
    pub fn matches(&self, cluster: &str, role: &str, stored: &str, password: &str) -> bool {
        if self.known_match(cluster, role, stored, password) {
            return true;
        }
        let matches = verifier_matches(stored, password);
        if matches {
            self.remember(cluster, role, stored, password);
        }
        matches
    }

    /// Whether this exact pair was seen matching before (no hashing of the verifier).
    pub fn known_match(&self, cluster: &str, role: &str, stored: &str, password: &str) -> bool {
        let fingerprint = self.hasher.hash_one(password);
        let matched = self.matched.lock().unwrap_or_else(|p| p.into_inner());
        matched
            .get(&(cluster.to_owned(), role.to_owned()))
            .is_some_and(|(verifier, seen)| verifier == stored && *seen == fingerprint)
    }

    /// Records that `verifier` (just set, or just checked) belongs to `password`.
    pub fn remember(&self, cluster: &str, role: &str, verifier: &str, password: &str) {
        let fingerprint = self.hasher.hash_one(password);
        let mut matched = self.matched.lock().unwrap_or_else(|p| p.into_inner());
        matched.insert(
            (cluster.to_owned(), role.to_owned()),
            (verifier.to_owned(), fingerprint),
        );
    }

    /// Forgets a role (dropped).
    pub fn forget(&self, cluster: &str, role: &str) {
        let mut matched = self.matched.lock().unwrap_or_else(|p| p.into_inner());
        matched.remove(&(cluster.to_owned(), role.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_never_contains_the_password_or_a_quote() {
        let password = "correct-horse-battery-staple";
        let verifier = scram_verifier(password);
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(password));
        assert!(!verifier.contains('\'') && !verifier.contains('\\'));
    }

    #[test]
    fn postgres_protocol_verifiers_check_against_their_password_only() {
        for password in ["s3cret", "ünïcode pass", "with'quote", ""] {
            let verifier = scram_verifier(password);
            assert!(verifier_matches(&verifier, password), "{password}");
            assert!(!verifier_matches(&verifier, "other"), "{password}");
        }
    }

    #[test]
    fn md5_plain_and_garbage_never_match() {
        assert!(!verifier_matches("md5abcdef", "x"));
        assert!(!verifier_matches("x", "x"));
        assert!(!verifier_matches("SCRAM-SHA-256$abc:def$ghi:jkl", "x"));
    }

    #[test]
    fn checks_remember_matches_per_role_and_password() {
        let checks = PasswordChecks::default();
        let verifier = scram_verifier("pw");
        assert!(!checks.known_match("c", "r", &verifier, "pw"));
        assert!(checks.matches("c", "r", &verifier, "pw"));
        assert!(checks.known_match("c", "r", &verifier, "pw"));
        assert!(!checks.known_match("c", "r", &verifier, "other"));
        assert!(!checks.known_match("c", "r2", &verifier, "pw"));
        assert!(!checks.matches("c", "r", &verifier, "other"));
        checks.forget("c", "r");
        assert!(!checks.known_match("c", "r", &verifier, "pw"));
    }
}
