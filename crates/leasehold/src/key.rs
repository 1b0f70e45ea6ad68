//! Validated lock names.

use std::fmt;

use crate::error::{InvalidKeyReason, LockError};

/// The longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 512;

/// A validated lock name.
///
/// The rules are the same for every backend, so a key that works in unit tests against
/// [`MemoryLock`](crate::memory::MemoryLock) works against Redis or PostgreSQL too:
///
/// - 1 to [`MAX_KEY_LEN`] (512) bytes of UTF-8;
/// - no control characters (NUL, newline, tab, DEL, the C1 range, ...: [`char::is_control`]).
///
/// Every other character is allowed and must work on every backend: `{`, `}`, `*`, quotes, spaces,
/// `'; DROP TABLE x;--`, emoji. Backends encode keys as they need; two different keys never share
/// a lock.
///
/// ```
/// use leasehold::LockKey;
///
/// let key = LockKey::new("reports/nightly {eu}")?;
/// assert_eq!(key.as_str(), "reports/nightly {eu}");
/// assert!(LockKey::new("").is_err());
/// assert!(LockKey::new("two\nlines").is_err());
/// # Ok::<(), leasehold::LockError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey(String);

impl LockKey {
    /// Validates `name` as a lock key.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] if the name is empty, longer than [`MAX_KEY_LEN`] bytes, or
    /// contains a control character. The error shows the offending name escaped and shortened.
    pub fn new(name: impl Into<String>) -> Result<Self, LockError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some(InvalidKeyReason::Empty)
        } else if name.len() > MAX_KEY_LEN {
            Some(InvalidKeyReason::TooLong {
                len: name.len(),
                max: MAX_KEY_LEN,
            })
        } else {
            name.char_indices()
                .find(|(_, c)| c.is_control())
                .map(|(at, _)| InvalidKeyReason::ControlCharacter { at })
        };
        match reason {
            Some(reason) => Err(LockError::InvalidKey {
                key: escaped_preview(&name),
                reason,
            }),
            None => Ok(Self(name)),
        }
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key with control characters and quotes escaped, for logs and messages.
    pub fn escaped(&self) -> String {
        self.0.escape_debug().to_string()
    }
}

/// Escapes a possibly hostile name and cuts it to a readable length, for error messages.
pub(crate) fn escaped_preview(name: &str) -> String {
    const PREVIEW_CHARS: usize = 64;
    let mut out: String = name
        .chars()
        .take(PREVIEW_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

impl fmt::Display for LockKey {
    /// Writes the key escaped (see [`LockKey::escaped`]) so a key cannot forge log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().flat_map(char::escape_debug) {
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Debug for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockKey(\"{self}\")")
    }
}

impl TryFrom<&str> for LockKey {
    type Error = LockError;

    fn try_from(name: &str) -> Result<Self, LockError> {
        Self::new(name)
    }
}

impl TryFrom<String> for LockKey {
    type Error = LockError;

    fn try_from(name: String) -> Result<Self, LockError> {
        Self::new(name)
    }
}

impl AsRef<str> for LockKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Anything the guard layer accepts as a key: `&str`, `String`, `LockKey` or `&LockKey`.
///
/// Strings are validated with [`LockKey::new`].
pub trait IntoLockKey {
    /// Converts into a validated key.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidKey`] as for [`LockKey::new`].
    fn into_lock_key(self) -> Result<LockKey, LockError>;
}

impl IntoLockKey for LockKey {
    fn into_lock_key(self) -> Result<LockKey, LockError> {
        Ok(self)
    }
}

impl IntoLockKey for &LockKey {
    fn into_lock_key(self) -> Result<LockKey, LockError> {
        Ok(self.clone())
    }
}

impl IntoLockKey for &str {
    fn into_lock_key(self) -> Result<LockKey, LockError> {
        LockKey::new(self)
    }
}

impl IntoLockKey for String {
    fn into_lock_key(self) -> Result<LockKey, LockError> {
        LockKey::new(self)
    }
}

impl IntoLockKey for &String {
    fn into_lock_key(self) -> Result<LockKey, LockError> {
        LockKey::new(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostile_but_printable_names() {
        for name in [
            "{a}",
            "*",
            "'; DROP TABLE x;--",
            "with space",
            "🔒",
            "a:b:{c}",
        ] {
            assert_eq!(LockKey::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_empty_long_and_control_names() {
        let reason = |name: &str| match LockKey::new(name) {
            Err(LockError::InvalidKey { reason, .. }) => reason,
            other => panic!("expected InvalidKey for {name:?}, got {other:?}"),
        };
        assert_eq!(reason(""), InvalidKeyReason::Empty);
        assert_eq!(
            reason(&"x".repeat(513)),
            InvalidKeyReason::TooLong { len: 513, max: 512 }
        );
        assert!(LockKey::new("x".repeat(512)).is_ok());
        assert_eq!(reason("a\0b"), InvalidKeyReason::ControlCharacter { at: 1 });
        assert_eq!(reason("a\nb"), InvalidKeyReason::ControlCharacter { at: 1 });
        assert_eq!(
            reason("\u{7f}"),
            InvalidKeyReason::ControlCharacter { at: 0 }
        );
    }

    #[test]
    fn display_escapes_control_like_content() {
        let key = LockKey::new("quote\"back\\slash").unwrap();
        assert_eq!(key.to_string(), "quote\\\"back\\\\slash");
        let err = LockKey::new("evil\nINFO forged").unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
