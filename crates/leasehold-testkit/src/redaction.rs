//! URLs with secrets in them, for the tests of `leasehold::redact` and of every place that
//! prints a URL (CLI errors, `-v` output, builder `Debug`, error `Display`).

/// Every URL form the backends and the command accept, with secrets written the ways people
/// write them: (URL, the secret that must not appear, what must be shown).
pub const CASES: &[(&str, &str, &str)] = &[
    (
        "redis://u:se/cret@127.0.0.1:6379",
        "se/cret",
        "redis://u:***@127.0.0.1:6379",
    ),
    (
        "redis://u:hunter2@h:6379/0",
        "hunter2",
        "redis://u:***@h:6379/0",
    ),
    ("redis://:hunter2@h", "hunter2", "redis://:***@h"),
    ("redis://hunter2@h", "hunter2", "redis://***@h"),
    ("rediss://u:p?x#y@h:6380/1", "p?x#y", "rediss://***"),
    (
        "postgres://u:pw@h/db?sslpassword=my@secret",
        "secret",
        "postgres://***",
    ),
    ("postgres://h/db?password=p@ss", "ss", "postgres://***"),
    ("redis://u:ab@cd/ef@host:1", "cd/ef", "redis://u:***@host:1"),
    (
        "redis://u:pw@[::1]:6379/0",
        "pw",
        "redis://u:***@[::1]:6379/0",
    ),
    (
        "rediss://hunter2@h/1?x=hunter2",
        "hunter2",
        "rediss://***@h/1",
    ),
    ("redis://u:a@b@c@h", "a@b@c", "redis://u:***@h"),
    ("redis://u:p%40ss%2Fw@h", "p%40ss%2Fw", "redis://u:***@h"),
    (
        "redis+cluster://u:s3cret@h1:7000,h2:7001/?tls=1",
        "s3cret",
        "redis+cluster://u:***@h1:7000,h2:7001/",
    ),
    (
        "rediss+cluster://:s3cret@h1:7000,h2:7001",
        "s3cret",
        "rediss+cluster://:***@h1:7000,h2:7001",
    ),
    (
        "postgres://u:hunter2@h:5432/db?password=hunter2",
        "hunter2",
        "postgres://u:***@h:5432/db",
    ),
    (
        "postgresql://u:p@ss/w0rd@h/db",
        "ss/w0rd",
        "postgresql://u:***@h/db",
    ),
    ("postgres://u:pw#frag@h/db", "pw#frag", "postgres://***"),
    (
        "postgres+advisory://u:hunter2@h/db",
        "hunter2",
        "postgres+advisory://u:***@h/db",
    ),
    (
        "postgres://u@h/db?sslpassword=hunter2",
        "hunter2",
        "postgres://***@h/db",
    ),
    (
        "etcd://u:hunter2@h1:2379,h2:2379",
        "hunter2",
        "etcd://u:***@h1:2379,h2:2379",
    ),
    (
        "sqlite:///var/lib/leasehold/leasehold.db",
        "\u{0}",
        "sqlite:///var/lib/leasehold/leasehold.db",
    ),
    ("sqlite://locks.db", "\u{0}", "sqlite://locks.db"),
    ("memory://", "\u{0}", "memory://"),
    ("hunter2", "hunter2", "(unparsable URL)"),
    ("redis//u:hunter2@h", "hunter2", "(unparsable URL)"),
];
