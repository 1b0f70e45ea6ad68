//! Where a lock lives in Redis.
//!
//! For namespace `ns` and user key `k`:
//!
//! | what | Redis name |
//! |---|---|
//! | lock (value: token, with PX ttl) | `{ns:E(k)}` |
//! | fence counter (no ttl) | `{ns:E(k)}:fence` |
//! | release notifications (pub/sub channel) | `{ns:E(k)}:released` |
//! | read/write lock: readers, writer, waiting writers, fence, channel | `{ns:E(k)}:rw:readers`, `:rw:writer`, `:rw:writers-waiting`, `:rw:fence`, `:rw:released` |
//! | semaphore: holders, limit, fence, channel | `{ns:E(k)}:sem:holders`, `:sem:limit`, `:sem:fence`, `:sem:released` |
//!
//! `E` percent-encodes `%`, `{` and `}` (as `%25`, `%7B`, `%7D`) and leaves everything else.
//! So the braces of the name are always the library's: the whole `ns:E(k)` is the Redis Cluster
//! hash tag, all three names of one lock share a slot, and a user key cannot pick another slot
//! or another lock's name. `E` is injective, so distinct keys never collide.

use leasehold::{LockError, LockKey};

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "leasehold";

/// Checks a namespace: 1 to 64 bytes of ASCII letters, digits, `-`, `_` and `.`.
///
/// `:` separates the namespace from the key, so a namespace containing it would let `ns "app"`
/// with key `locks:x` and `ns "app:locks"` with key `x` name the same lock; braces would move
/// the hash tag; glob characters would widen the documented ACL pattern `~{ns:*` to other
/// namespaces. Every namespace this accepts keeps the key layout it always had.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), LockError> {
    let bad = namespace.is_empty()
        || namespace.len() > 64
        || !namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if bad {
        return Err(LockError::invalid_config(
            format!("redis namespace {namespace:?}"),
            "must be 1 to 64 bytes of ASCII letters, digits, '-', '_' and '.' (no ':', braces, \
             glob characters, spaces or control characters)",
        ));
    }
    Ok(())
}

/// The end of a mutex's fence counter's name.
pub(crate) const FENCE: &str = "}:fence";
/// The end of a read/write lock's fence counter's name.
pub(crate) const RW_FENCE: &str = "}:rw:fence";
/// The end of a semaphore's fence counter's name.
pub(crate) const SEMAPHORE_FENCE: &str = "}:sem:fence";

/// The Redis names of one lock. Only the lock's name is built up front; the others are
/// derived when a call needs them (each script needs two of the three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockNames {
    pub(crate) lock: String,
}

impl LockNames {
    pub(crate) fn new(namespace: &str, key: &LockKey) -> Self {
        let mut lock = Self::prefix_text(namespace, key.as_str());
        lock.push('}');
        Self { lock }
    }

    /// The `SCAN MATCH` pattern of the fence counters of every key starting with `prefix`.
    #[cfg(test)]
    pub(crate) fn fence_pattern(namespace: &str, prefix: &str) -> String {
        Self::counter_pattern(namespace, prefix, FENCE)
    }

    /// The `SCAN MATCH` pattern of the counters named `...}<suffix>` ([`FENCE`], [`RW_FENCE`],
    /// [`SEMAPHORE_FENCE`]) of every key starting with `prefix`.
    pub(crate) fn counter_pattern(namespace: &str, prefix: &str, suffix: &str) -> String {
        let mut pattern = String::new();
        for c in Self::prefix_text(namespace, prefix).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern.push_str(suffix);
        pattern
    }

    /// `{ns:E(prefix)`: the start of the names of every key starting with `prefix` (for a
    /// whole key, its lock's name without the closing brace).
    fn prefix_text(namespace: &str, prefix: &str) -> String {
        let mut text = String::with_capacity(namespace.len() + prefix.len() + 4);
        text.push('{');
        text.push_str(namespace);
        text.push(':');
        encode_into(&mut text, prefix);
        text
    }

    /// The user key of a fence counter's name, if it is one of this namespace's.
    #[cfg(test)]
    pub(crate) fn key_of_fence(namespace: &str, name: &str) -> Option<String> {
        Self::key_of_counter(namespace, name, FENCE)
    }

    /// The user key of a counter named `...}<suffix>`, if it is one of this namespace's.
    pub(crate) fn key_of_counter(namespace: &str, name: &str, suffix: &str) -> Option<String> {
        let encoded = name
            .strip_prefix('{')?
            .strip_prefix(namespace)?
            .strip_prefix(':')?
            .strip_suffix(suffix)?;
        decode(encoded)
    }

    /// The fence counter's name.
    pub(crate) fn fence(&self) -> String {
        format!("{}:fence", self.lock)
    }

    /// The release channel's name.
    pub(crate) fn channel(&self) -> String {
        format!("{}:released", self.lock)
    }

    /// A read/write lock's names: readers, writer, waiting writers' marks, fence counter.
    pub(crate) fn rw(&self) -> [String; 4] {
        ["readers", "writer", "writers-waiting", "fence"]
            .map(|part| format!("{}:rw:{part}", self.lock))
    }

    /// A read/write lock's release channel.
    pub(crate) fn rw_channel(&self) -> String {
        format!("{}:rw:released", self.lock)
    }

    /// A semaphore's names: holders, limit, fence counter.
    pub(crate) fn semaphore(&self) -> [String; 3] {
        ["holders", "limit", "fence"].map(|part| format!("{}:sem:{part}", self.lock))
    }

    /// A semaphore's release channel.
    pub(crate) fn semaphore_channel(&self) -> String {
        format!("{}:sem:released", self.lock)
    }

    /// The "wanted" mark's name: set by waiters, so that a release publishes only when someone
    /// may be waiting.
    pub(crate) fn wanted(&self) -> String {
        format!("{}:wanted", self.lock)
    }
}

/// `E`: percent-encodes `%`, `{` and `}`. Runs of other bytes are copied whole (the three are
/// ASCII, so a UTF-8 sequence is never split): on every acquire and release, so no per-char
/// pushes.
fn encode_into(out: &mut String, key: &str) {
    let mut rest = key;
    while let Some(at) = rest.find(['%', '{', '}']) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'%' => "%25",
            b'{' => "%7B",
            _ => "%7D",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// The inverse of `E`; `None` for text `E` never produces.
fn decode(encoded: &str) -> Option<String> {
    let mut key = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find(['%', '{', '}']) {
        key.push_str(&rest[..at]);
        let (c, after) = match rest.get(at..at + 3)? {
            "%25" => ('%', 3),
            "%7B" => ('{', 3),
            "%7D" => ('}', 3),
            _ => return None,
        };
        key.push(c);
        rest = &rest[at + after..];
    }
    key.push_str(rest);
    Some(key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn names(key: &str) -> LockNames {
        LockNames::new(DEFAULT_NAMESPACE, &LockKey::new(key).unwrap())
    }

    /// The hash tag as Redis Cluster computes it: between the first `{` and the next `}`.
    fn hash_tag(name: &str) -> &str {
        let open = name.find('{').unwrap();
        let close = open + name[open..].find('}').unwrap();
        &name[open + 1..close]
    }

    #[test]
    fn all_names_of_a_lock_share_one_hash_tag() {
        for key in ["plain", "{x}", "}{", "a}:fence", "%7B", "{leasehold:other}"] {
            let n = names(key);
            assert_eq!(hash_tag(&n.lock), hash_tag(&n.fence()), "{key}");
            assert_eq!(hash_tag(&n.lock), hash_tag(&n.channel()), "{key}");
            assert_eq!(hash_tag(&n.lock), hash_tag(&n.wanted()), "{key}");
            assert!(hash_tag(&n.lock).starts_with("leasehold:"), "{key}");
        }
    }

    #[test]
    fn keys_that_look_alike_never_collide() {
        let keys = [
            "a",
            "{a}",
            "%7Ba%7D",
            "%7Ba}",
            "a}:fence",
            "a:fence",
            "a}:released",
            "%",
            "%25",
            "{",
            "}",
            "%7B",
            "%7D",
            "leasehold:a",
            "{leasehold:a}",
        ];
        let mut seen = HashSet::new();
        for key in keys {
            let n = names(key);
            for name in [n.fence(), n.channel(), n.wanted(), n.lock] {
                assert!(seen.insert(name.clone()), "{name} produced twice");
            }
        }
    }

    #[test]
    fn fence_names_decode_back_to_their_keys() {
        for key in [
            "plain",
            "{x}",
            "}{",
            "a}:fence",
            "%7B",
            "%",
            "100%",
            "a*b?[c]\\",
        ] {
            let n = names(key);
            assert_eq!(
                LockNames::key_of_fence(DEFAULT_NAMESPACE, &n.fence()).as_deref(),
                Some(key)
            );
        }
        assert_eq!(
            LockNames::key_of_fence(DEFAULT_NAMESPACE, "{leasehold:a%7}:fence"),
            None
        );
        assert_eq!(
            LockNames::key_of_fence(DEFAULT_NAMESPACE, "{other:a}:fence"),
            None
        );
        assert_eq!(
            LockNames::key_of_fence(DEFAULT_NAMESPACE, "{leasehold:a}"),
            None
        );
    }

    #[test]
    fn fence_patterns_escape_glob_characters() {
        assert_eq!(
            LockNames::fence_pattern("ns", "a*b?[c]\\{"),
            "{ns:a\\*b\\?\\[c\\]\\\\%7B*}:fence"
        );
        assert_eq!(LockNames::fence_pattern("ns", ""), "{ns:*}:fence");
    }

    #[test]
    fn each_primitive_lists_by_its_own_counter() {
        let n = names("a}:fence");
        let [.., rw_fence] = n.rw();
        let [.., semaphore_fence] = n.semaphore();
        for (name, suffix) in [(&rw_fence, RW_FENCE), (&semaphore_fence, SEMAPHORE_FENCE)] {
            assert_eq!(
                LockNames::key_of_counter(DEFAULT_NAMESPACE, name, suffix).as_deref(),
                Some("a}:fence")
            );
            // A mutex's listing never finds another primitive's counter, nor the other way.
            assert_eq!(LockNames::key_of_fence(DEFAULT_NAMESPACE, name), None);
            assert_eq!(
                LockNames::key_of_counter(DEFAULT_NAMESPACE, &n.fence(), suffix),
                None
            );
        }
        assert_eq!(
            LockNames::counter_pattern("ns", "a", SEMAPHORE_FENCE),
            "{ns:a*}:sem:fence"
        );
    }

    #[test]
    fn namespaces_with_separators_braces_globs_or_spaces_are_rejected() {
        for bad in [
            "",
            "{x",
            "x}",
            "a b",
            "a\nb",
            "app:locks",
            "a*",
            "a?",
            "a[b]",
            "a\\b",
            "a/b",
            "é",
            &"n".repeat(65),
        ] {
            let error = check_namespace(bad).expect_err(bad).to_string();
            assert!(error.contains("redis namespace"), "{error}");
        }
        for good in ["leasehold", "myapp-locks", "my_app.v2", &"n".repeat(64)] {
            assert!(check_namespace(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn valid_namespaces_never_share_a_lock_with_another_namespace() {
        // The collision a ':' would allow: ns "app" + key "locks:x" vs ns "app:locks" + key "x".
        assert!(check_namespace("app:locks").is_err());
        let a = LockNames::new("app", &LockKey::new("locks:x").unwrap());
        let b = LockNames::new("app-locks", &LockKey::new("x").unwrap());
        assert_ne!(a, b);
        // And the ACL pattern of one namespace matches no name of another.
        assert!(!b.lock.starts_with("{app:"));
    }
}
