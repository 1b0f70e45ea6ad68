//! [`EtcdLockBuilder`]: how an [`EtcdLock`] connects.

use std::{fmt, sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions, TlsOptions};
use leasehold::LockError;

use crate::{
    error::map,
    lock::{EtcdLock, Inner},
    ops,
};

/// The key prefix every lock lives under, unless [`EtcdLockBuilder::prefix`] says otherwise.
pub const DEFAULT_PREFIX: &str = "leasehold";

/// How long one request may take before it counts as failed (and its outcome as unknown).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting to an endpoint may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// etcd's default election timeout; pass the cluster's own with
/// [`EtcdLockBuilder::election_timeout`].
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The leader checks for expired leases this often (etcd's lessor): part of the expiry slack.
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Configures and connects an [`EtcdLock`]; from [`EtcdLock::builder`].
#[derive(Clone)]
pub struct EtcdLockBuilder {
    endpoints: Vec<String>,
    prefix: String,
    user: Option<(String, String)>,
    tls: Option<TlsOptions>,
    request_timeout: Duration,
    connect_timeout: Duration,
    require_leader: bool,
    election_timeout: Duration,
}

impl fmt::Debug for EtcdLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLockBuilder")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("tls", &self.tls.is_some())
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("require_leader", &self.require_leader)
            .field("election_timeout", &self.election_timeout)
            .finish()
    }
}

impl EtcdLockBuilder {
    pub(crate) fn new(endpoints: &[&str]) -> Self {
        Self {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            user: None,
            tls: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            require_leader: true,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
        }
    }

    /// A builder from a URL: `etcd://[user:password@]host:port[,host:port...]`, or `etcds://`
    /// for TLS (optionally `?ca=PATH` for a PEM file of the CA to trust). The user and
    /// password may be percent-encoded.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] naming the URL (its password masked) when it is not of
    /// that form, or the CA file cannot be read.
    pub fn from_url(url: &str) -> Result<Self, LockError> {
        let shown = leasehold::redact::url(url);
        let bad = |reason: &str| {
            LockError::invalid_config(
                format!("etcd URL \"{}\"", shown.escape_debug()),
                format!("{reason}; expected etcd://[user:password@]host:port[,host:port...] or etcds://..."),
            )
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            (true, rest)
        } else {
            return Err(bad("not an etcd:// or etcds:// URL"));
        };
        // The user part ends at the last `@`; a `?` or `#` before it could be the password's
        // or the query's, which cannot be told apart.
        let (user, rest) = match rest.rfind('@') {
            Some(at) if rest[..at].contains(['?', '#']) => return Err(bad(
                "a `?` or `#` before the last `@` (percent-encode it in the password: %3F, %23)",
            )),
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if rest.contains('#') {
            return Err(bad("a #fragment"));
        }
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.is_empty() {
            return Err(bad("no host:port"));
        }
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|host| format!("{scheme}://{host}"))
            .collect();
        let mut builder = Self {
            endpoints,
            ..Self::new(&[])
        };
        if let Some(user) = user {
            let (name, password) = user.split_once(':').unwrap_or((user, ""));
            let name =
                percent_decode(name).ok_or_else(|| bad("a bad percent escape in the user"))?;
            let password = percent_decode(password)
                .ok_or_else(|| bad("a bad percent escape in the password"))?;
            if name.is_empty() {
                return Err(bad("an empty user name"));
            }
            builder = builder.credentials(name, password);
        }
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", path)) if tls => ca = Some(path.to_owned()),
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {pair:?} (etcds:// takes ca=PATH)"
                    )))
                }
            }
        }
        if tls {
            let mut options = TlsOptions::new();
            if let Some(path) = ca {
                let pem = std::fs::read(&path).map_err(|e| {
                    LockError::invalid_config(format!("etcd CA file {path:?}"), e.to_string())
                })?;
                options = options.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            builder = builder.tls(options);
        }
        builder.check()?;
        Ok(builder)
    }

    #[cfg(test)]
    pub(crate) fn endpoints_from_url(mut self, url: &str) -> Self {
        self.endpoints = Self::from_url(url).map(|b| b.endpoints).unwrap_or_default();
        self
    }

    /// The key prefix locks live under (default [`DEFAULT_PREFIX`]): a lock key `k` keeps its
    /// acquisitions under `<prefix>/<k, percent-encoded>/`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Authenticates as `user` (etcd's own user/role authentication). The password is never
    /// printed, by `Debug` or by an error.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// TLS settings for `https://` endpoints (a CA, a client identity).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long one request may take (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting may take (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether a member without a leader refuses requests at once (default `true`), instead
    /// of letting them wait for an election: a partitioned member then fails fast.
    pub fn require_leader(mut self, yes: bool) -> Self {
        self.require_leader = yes;
        self
    }

    /// The cluster's election timeout (etcd's `--election-timeout`, default
    /// [`DEFAULT_ELECTION_TIMEOUT`]). Documentation for the expiry slack after a leader change;
    /// see the crate docs.
    pub fn election_timeout(mut self, timeout: Duration) -> Self {
        self.election_timeout = timeout;
        self
    }

    fn check(&self) -> Result<(), LockError> {
        if self.endpoints.is_empty() {
            return Err(LockError::invalid_config(
                "etcd endpoints",
                "at least one endpoint (host:port) is needed",
            ));
        }
        for endpoint in &self.endpoints {
            if endpoint.contains('@') {
                // Never echoed: it may carry a password.
                return Err(LockError::invalid_config(
                    "etcd endpoint (not shown: it has an `@`)",
                    "credentials in an endpoint are not read; pass them with .credentials()",
                ));
            }
            let bare = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .unwrap_or(endpoint);
            let port_ok = bare
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok || bare.contains(['/', ' ']) {
                return Err(LockError::invalid_config(
                    format!("etcd endpoint \"{}\"", endpoint.escape_debug()),
                    "expected host:port (optionally with http:// or https://)",
                ));
            }
        }
        // No `/`: a prefix `a/b` would put its records in the lock directory of key `b`
        // under prefix `a`.
        let prefix_ok = !self.prefix.is_empty()
            && !self.prefix.contains('/')
            && self.prefix.chars().all(|c| !c.is_control());
        if !prefix_ok {
            return Err(LockError::invalid_config(
                format!("etcd key prefix \"{}\"", self.prefix.escape_debug()),
                "must be non-empty, without `/` or control characters",
            ));
        }
        for (what, timeout) in [
            ("etcd request timeout", self.request_timeout),
            ("etcd connect timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(LockError::invalid_config(what, "must be above zero"));
            }
        }
        Ok(())
    }

    /// Connects, and learns the cluster's minimum lease from one grant (revoked at once).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidConfig`] naming a bad endpoint, prefix or timeout (nothing is sent);
    /// a [`LockError::Backend`] naming the endpoints when the cluster cannot be reached, has no
    /// leader, or refuses the credentials.
    pub async fn connect(self) -> Result<EtcdLock, LockError> {
        self.connect_as(crate::lock::Broken::No).await
    }

    pub(crate) async fn connect_as(
        self,
        broken: crate::lock::Broken,
    ) -> Result<EtcdLock, LockError> {
        self.check()?;
        let mut options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout)
            .with_require_leader(self.require_leader)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        let endpoints = self.endpoints.join(",");
        let context = |error: LockError| match error {
            LockError::Backend {
                backend,
                kind,
                source,
            } => LockError::Backend {
                backend,
                kind,
                source: format!("connecting to etcd at {endpoints}: {source}").into(),
            },
            other => other,
        };
        let client = Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| context(map(e)))?;
        let (probe, min_secs) = ops::grant(&client, 1).await.map_err(context)?;
        ops::revoke(&client, probe).await.map_err(context)?;
        let min_lease = Duration::from_secs(u64::try_from(min_secs).unwrap_or(1).max(1));
        Ok(EtcdLock::from_inner(Arc::new(Inner {
            client,
            prefix: self.prefix,
            endpoints: self.endpoints,
            user: self.user.map(|(name, _)| name),
            min_lease,
            expiry_slack: min_lease + EXPIRY_TICK,
            election_timeout: self.election_timeout,
            broken,
            held: std::sync::Mutex::default(),
        })))
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EtcdLock;

    #[test]
    fn urls_parse_and_bad_ones_are_named_without_their_password() {
        let b = EtcdLockBuilder::from_url("etcd://127.0.0.1:2379,h2:2380").unwrap();
        assert_eq!(b.endpoints, ["http://127.0.0.1:2379", "http://h2:2380"]);
        assert!(b.user.is_none() && b.tls.is_none());
        let b = EtcdLockBuilder::from_url("etcds://ann:p%40ss@h:2379").unwrap();
        assert_eq!(b.endpoints, ["https://h:2379"]);
        assert_eq!(b.user, Some(("ann".to_owned(), "p@ss".to_owned())));
        assert!(b.tls.is_some());
        assert!(!format!("{b:?}").contains("p@ss"));
        for (url, says) in [
            ("etcd://", "no host:port"),
            ("etcd://ann:secret@h", "etcd endpoint"),
            ("etcd://ann:secret@h:x", "etcd endpoint"),
            ("redis://h:1", "not an etcd"),
            ("etcd://ann:secret@h:1?ca=/x", "unknown parameter"),
            ("etcds://ann:secret@h:1?ca=/nonexistent/ca.pem", "CA file"),
            ("etcd://:secret@h:1", "empty user"),
            ("etcd://ann:se?cret@h:1", "percent-encode"),
            ("etcd://ann:se#cret@h:1", "percent-encode"),
            ("etcd://h:1#secret", "fragment"),
        ] {
            let error = EtcdLockBuilder::from_url(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("secret"), "{url}: {error}");
            assert!(!error.contains("cret"), "{url}: {error}");
        }
        let error = EtcdLock::builder(&["http://u:secret@h:1"])
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("credentials") && !error.contains("secret"),
            "{error}"
        );
        for bad in ["", "a/b", "a\nb"] {
            let error = EtcdLock::builder(&["h:1"]).prefix(bad).check().unwrap_err();
            assert!(error.to_string().contains("etcd key prefix"), "{error}");
        }
    }
}
