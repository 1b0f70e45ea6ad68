//! Where an acquisition's key lives: `<prefix>/<encoded lock key>/<token>`.
//!
//! The lock key is percent-encoded (every byte but ASCII letters, digits, `-`, `_` and `.`), so
//! a `/` in a key never reaches into another key's directory and the encoding is reversible.

use leasehold::{LeaseToken, LockKey};

/// The directory of one lock key: every acquisition of it (the holder and its waiters) puts a
/// key here.
pub(crate) fn dir(prefix: &str, key: &LockKey) -> String {
    let mut out = String::with_capacity(prefix.len() + key.as_str().len() + 2);
    out.push_str(prefix);
    out.push('/');
    encode_into(key.as_str(), &mut out);
    out.push('/');
    out
}

/// The key of one acquisition, under [`dir`].
pub(crate) fn own(dir: &str, token: LeaseToken) -> String {
    format!("{dir}{}", token.to_hex())
}

fn encode_into(name: &str, out: &mut String) {
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The longest encoded form every key starting with `prefix` shares: the encoding of
/// `prefix` (a cut multi-byte character stays cut, its `%XX` bytes still match).
pub(crate) fn encoded_prefix(prefix: &str) -> String {
    let mut out = String::new();
    encode_into(prefix, &mut out);
    out
}

/// The lock key whose fence record is `etcd_key` (`<prefix>/<encoded key>`, nothing after it).
pub(crate) fn record_key_of(prefix: &str, etcd_key: &[u8]) -> Option<LockKey> {
    let rest = etcd_key
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(b"/")?;
    if rest.contains(&b'/') {
        return None;
    }
    decode(rest)
}

/// The lock key an etcd key under `prefix` belongs to, if it is one of ours.
#[cfg(test)]
pub(crate) fn lock_key_of(prefix: &str, etcd_key: &[u8]) -> Option<LockKey> {
    let rest = etcd_key
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(b"/")?;
    let end = rest.iter().position(|&b| b == b'/')?;
    decode(&rest[..end])
}

fn decode(encoded: &[u8]) -> Option<LockKey> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    LockKey::new(String::from_utf8(bytes).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_nest() {
        for name in ["a", "a/b", "a%2Fb", "jobs/nightly", "ü ß \"'\\", "x.y-z_"] {
            let key = LockKey::new(name).unwrap();
            let d = dir("leasehold", &key);
            assert_eq!(d.matches('/').count(), 2, "{d}");
            assert_eq!(lock_key_of("leasehold", d.as_bytes()).unwrap(), key);
        }
        let a = dir("p", &LockKey::new("a").unwrap());
        let ab = dir("p", &LockKey::new("a/b").unwrap());
        assert!(!ab.starts_with(&a), "{ab} lies under {a}");
        assert_eq!(lock_key_of("p", b"q/a/x"), None);
        assert_eq!(lock_key_of("p", b"p/%zz/x"), None);
    }
}
