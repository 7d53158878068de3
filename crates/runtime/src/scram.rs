//! Generated passwords and SCRAM-SHA-256 verifiers: the only form in which tusk sends a password to PostgreSQL, and the
//! check of a role's stored verifier against the password tusk holds (shared by the Cluster
//! controller's monitoring role, the PostgresUser controller and the Pooler's auth role).

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Length of generated passwords: 43 characters of 64 possible, 258 bits.
pub const GENERATED_PASSWORD_LENGTH: usize = 43;

const URL_SAFE_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new password from the OS CSPRNG: [`GENERATED_PASSWORD_LENGTH`] URL-safe characters (no
/// character needs escaping in a URI, a shell or a connection string).
pub fn generate_password() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; GENERATED_PASSWORD_LENGTH];
    getrandom::fill(&mut bytes)?;
    // 256 is a multiple of 64, so taking the low six bits keeps every character equally likely.
    Ok(bytes
        .iter()
        .map(|b| char::from(URL_SAFE_ALPHABET[usize::from(b & 63)]))
        .collect())
}

/// The SCRAM-SHA-256 verifier of `password` with a fresh random salt, computed by
/// `postgres-protocol` exactly as libpq's `PQencryptPasswordConn` does. Only this string is
/// ever sent to PostgreSQL.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Whether `stored` (a role's `pg_authid.rolpassword`) is a SCRAM-SHA-256 verifier of
/// `password`. MD5 hashes, plain text and malformed values never match, so they get replaced.
pub fn verifier_matches(stored: &str, password: &str) -> bool {
    let Some(parsed) = ParsedVerifier::parse(stored) else {
        return false;
    };
    // SASLprep as libpq and postgres-protocol apply it; passwords it rejects are used as bytes.
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_owned());
    let mut salted = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        parsed.iterations,
        &parsed.salt,
        prepared.as_bytes(),
        &mut salted,
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
    let client_key = ring::hmac::sign(&key, b"Client Key");
    let stored_key = ring::digest::digest(&ring::digest::SHA256, client_key.as_ref());
    let server_key = ring::hmac::sign(&key, b"Server Key");
    stored_key.as_ref() == parsed.stored_key.as_slice()
        && server_key.as_ref() == parsed.server_key.as_slice()
}

struct ParsedVerifier {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ParsedVerifier {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts.
    fn parse(stored: &str) -> Option<Self> {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok()?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored_key).ok()?,
            server_key: STANDARD.decode(server_key).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_url_safe_and_distinct() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), GENERATED_PASSWORD_LENGTH);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }
}
