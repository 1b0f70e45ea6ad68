//! URLs with their secrets hidden, for messages, `Debug` and logs: the one redaction every
//! backend and the `leasehold` command use.

/// `url` with any password replaced by `***`, and the query and fragment dropped (they may
/// carry passwords, e.g. `?password=`).
///
/// The user info ends at the **last** `@` of the URL, because a password written by hand may
/// contain `/`, `:` and `@` unescaped. When a `?` or `#` comes before that `@`, the password
/// may hold them or the query may hold an `@`: then only the scheme is shown. User info without
/// `:` is hidden whole (some clients take a lone word there as a password). Text without `://`
/// is not shown at all.
///
/// ```
/// use leasehold::redact;
///
/// assert_eq!(redact::url("redis://u:se/cret@127.0.0.1:6379/0"), "redis://u:***@127.0.0.1:6379/0");
/// assert_eq!(redact::url("postgres://u:p@ss@db/app?sslmode=require"), "postgres://u:***@db/app");
/// ```
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparsable URL)".to_owned();
    };
    let (userinfo, after) = match rest.rfind('@') {
        // A `?` or `#` before the last `@`: either the password holds them or the query or
        // fragment holds an `@` (`?sslpassword=a@b`). Which one cannot be told, so nothing
        // after the scheme is shown.
        Some(at) if rest[..at].contains(['?', '#']) => return format!("{scheme}://***"),
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let end = after.find(['?', '#']).unwrap_or(after.len());
    let user = match userinfo {
        None => String::new(),
        Some(info) => match info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@"),
            None if info.is_empty() => "@".to_owned(),
            None => "***@".to_owned(),
        },
    };
    format!("{scheme}://{user}{}", &after[..end])
}

#[cfg(test)]
mod tests {
    use super::url;

    use leasehold_testkit::redaction::CASES;

    #[test]
    fn no_secret_survives_and_the_rest_is_shown() {
        for (input, secret, shown) in CASES {
            let redacted = url(input);
            assert!(!redacted.contains(secret), "{input} -> {redacted}");
            assert_eq!(&redacted, shown, "{input}");
        }
    }
}
