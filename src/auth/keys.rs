//! The API key format: `agk_` followed by 44 random alphanumerics. The first 12 of those, with the
//! `agk_`, form the public prefix that finds the row; the SHA-256 of the whole key is what is stored.

use rand::{Rng, distr::Alphanumeric};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "agk_";
const RANDOM_LEN: usize = 44;
const PUBLIC_LEN: usize = KEY_PREFIX.len() + 12;

/// A new random key.
pub fn generate() -> String {
    let mut key = String::with_capacity(KEY_PREFIX.len() + RANDOM_LEN);
    key.push_str(KEY_PREFIX);
    key.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from),
    );
    key
}

/// Whether `key` has the shape of a key (cheap check before any lookup).
pub fn well_formed(key: &str) -> bool {
    key.len() == KEY_PREFIX.len() + RANDOM_LEN
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// The public part of a well-formed key, stored in clear to find its row.
pub fn public_prefix(key: &str) -> &str {
    &key[..PUBLIC_LEN]
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn hash_hex(key: &str) -> String {
    hex::encode(hash(key))
}

/// Constant-time comparison of a presented key's hash with the stored hex hash.
pub fn hash_matches(presented: &[u8; 32], stored_hex: &str) -> bool {
    let mut stored = [0u8; 32];
    if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
        return false;
    }
    presented.ct_eq(&stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_verify() {
        let key = generate();
        assert!(well_formed(&key));
        assert_eq!(public_prefix(&key).len(), 16);
        assert!(hash_matches(&hash(&key), &hash_hex(&key)));
        assert!(!hash_matches(&hash(&generate()), &hash_hex(&key)));
        assert!(!well_formed("agk_short") && !well_formed(&key.replace("agk_", "xxx_")));
    }
}
