//! Redis Cluster seeds: checked alike, so that the credentials and TLS given once apply to
//! every node the client finds.

use std::time::Duration;

use leasehold::LockError;
use redis::{
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value,
};

use crate::error::{bounded, map, unexpected_reply};

/// What a cluster client is built with, kept to build one again from other nodes (see
/// `conn.rs`).
#[derive(Clone)]
pub(crate) struct ClientSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    /// The client's own limit on one node's reply: past every caller's bound (so it never
    /// fires, and resends, while a caller waits), there so that the client's own probes
    /// (`PING`, `CLUSTER SLOTS` while it refreshes its slot map) of a node that stopped
    /// answering end, instead of holding up every command behind them.
    pub(crate) node_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) root_certificate: Option<Vec<u8>>,
    /// The first seed: the credentials, TLS and protocol every node gets.
    pub(crate) template: ConnectionInfo,
}

impl ClientSettings {
    /// A cluster client builder for `infos` (checked alike), with the connect timeout and the
    /// same TCP settings as a single server's connections. Its response timeout is
    /// [`node_timeout`](Self::node_timeout), past the callers' bounds: the client would send a
    /// command that timed out again at once (see `conn.rs`).
    pub(crate) fn builder(
        &self,
        infos: &[ConnectionInfo],
    ) -> Result<ClusterClientBuilder, LockError> {
        let builder = ClusterClientBuilder::new(infos.to_vec())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.node_timeout)
            .overall_response_timeout(None)
            .tcp_settings(crate::builder::tcp_settings(self.response_timeout));
        #[cfg(feature = "tls")]
        let builder = match &self.root_certificate {
            None => builder,
            Some(_) if !is_tls(&self.template) => {
                return Err(LockError::invalid_config(
                    "redis root certificate",
                    "given for seeds without TLS (use rediss://)",
                ))
            }
            Some(pem) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            }),
        };
        Ok(builder)
    }

    /// A cluster client for `infos`, built with [`builder`](Self::builder).
    pub(crate) fn client(&self, infos: &[ConnectionInfo]) -> Result<ClusterClient, LockError> {
        self.builder(infos)?
            .build()
            .map_err(|e| LockError::invalid_config("redis cluster seeds", e.to_string()))
    }

    /// The seed's settings at another node's address.
    pub(crate) fn at(&self, host: String, port: u16) -> ConnectionInfo {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        self.template.clone().set_addr(addr)
    }
}

/// `host`, `port` of every primary, from `CLUSTER SLOTS` (each range names its primary
/// first), each once; the host is empty where the cluster names no endpoint.
pub(crate) async fn primaries(
    conn: &mut ClusterConnection,
    limit: Duration,
) -> Result<Vec<(String, u16)>, LockError> {
    let reply: Value = bounded(limit, redis::cmd("CLUSTER").arg("SLOTS").query_async(conn))
        .await
        .map_err(map)?;
    let ranges: Vec<Vec<Value>> =
        redis::from_redis_value(reply).map_err(|e| unexpected_reply("CLUSTER SLOTS", e))?;
    let mut out = Vec::new();
    for range in ranges {
        let Some(primary) = range.get(2) else {
            return Err(unexpected_reply("CLUSTER SLOTS", &range));
        };
        // host, port, node id and (Redis 7) more: only the first two are needed.
        let node: Vec<Value> = redis::from_redis_value(primary.clone())
            .map_err(|e| unexpected_reply("CLUSTER SLOTS", e))?;
        let (Some(host), Some(port)) = (node.first(), node.get(1)) else {
            return Err(unexpected_reply("CLUSTER SLOTS", &node));
        };
        // NULL with `cluster-preferred-endpoint-type unknown-endpoint`; "" from a node that does
        // not know its address, "?" for an unset hostname: kept as "", named by no one.
        let host: Option<String> = redis::from_redis_value(host.clone())
            .map_err(|e| unexpected_reply("CLUSTER SLOTS", e))?;
        let host = host.filter(|h| h != "?").unwrap_or_default();
        let port: u16 = redis::from_redis_value(port.clone())
            .map_err(|e| unexpected_reply("CLUSTER SLOTS", e))?;
        if !out.contains(&(host.clone(), port)) {
            out.push((host, port));
        }
    }
    Ok(out)
}

/// Parses `seeds`, refusing what a cluster connection cannot honour: no seed, a URL that does
/// not parse or is not `redis://`/`rediss://`, a database other than 0 (a cluster has only
/// that one), and seeds that differ from the first in user, password, protocol, TLS or its
/// certificate check.
pub(crate) fn check_seeds(seeds: &[String]) -> Result<Vec<ConnectionInfo>, LockError> {
    let Some(first) = seeds.first() else {
        return Err(LockError::invalid_config(
            "redis cluster seeds",
            "give at least one node URL",
        ));
    };
    let mut infos = Vec::with_capacity(seeds.len());
    for seed in seeds {
        let what = || format!("redis cluster seed {}", leasehold::redact::url(seed));
        if !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
            return Err(LockError::invalid_config(
                what(),
                "a cluster seed is redis://host:port or rediss://host:port",
            ));
        }
        let info = seed
            .as_str()
            .into_connection_info()
            .map_err(|e| LockError::invalid_config(what(), e.to_string()))?;
        if info.redis_settings().db() != 0 {
            return Err(LockError::invalid_config(
                what(),
                "a Redis Cluster has only database 0",
            ));
        }
        if let Some(base) = infos.first() {
            if let Some(differs) = difference(base, &info) {
                return Err(LockError::invalid_config(
                    what(),
                    format!(
                        "its {differs} differs from the first seed's ({}): give every seed the \
                         same credentials and scheme",
                        leasehold::redact::url(first)
                    ),
                ));
            }
        }
        infos.push(info);
    }
    Ok(infos)
}

/// The seed URLs of a `redis+cluster://[user:password@]host:port,host:port,...[/?options]`
/// URL (`rediss+cluster://` for TLS): the credentials, the scheme and the options are given
/// once and applied to every seed.
///
/// ```
/// use leasehold_redis::cluster_seeds;
///
/// let seeds = cluster_seeds("redis+cluster://locker:pw@10.0.0.1:7000,10.0.0.2:7000/?protocol=3")?;
/// assert_eq!(
///     seeds,
///     ["redis://locker:pw@10.0.0.1:7000/?protocol=3", "redis://locker:pw@10.0.0.2:7000/?protocol=3"],
/// );
/// # Ok::<(), leasehold::LockError>(())
/// ```
///
/// # Errors
///
/// [`LockError::InvalidConfig`] naming the URL (never its password) for another scheme, no
/// seed, an empty seed, a seed without a port, a path other than `/` (a cluster has only
/// database 0), or a `/`, `?` or `#` left raw in the user or password (percent-encode them, as
/// in any URL; a raw `@` or `,` is fine).
pub fn cluster_seeds(url: &str) -> Result<Vec<String>, LockError> {
    let what = || format!("redis cluster URL {}", leasehold::redact::url(url));
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Err(LockError::invalid_config(
            what(),
            "a cluster URL starts with redis+cluster:// or rediss+cluster://",
        ));
    };
    // The user info ends at the last `@` (a password may hold `@` or `,`). Each seed is then
    // parsed as a URL, in which a raw `/`, `?` or `#` would end the user info early.
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    if userinfo.contains(['/', '?', '#']) {
        return Err(LockError::invalid_config(
            what(),
            "its user or password holds '/', '?' or '#': percent-encode them (%2F, %3F, %23)",
        ));
    }
    let (hosts, tail) = match after.find(['/', '?', '#']) {
        Some(end) => after.split_at(end),
        None => (after, ""),
    };
    // `#insecure` (TLS without certificate checks) goes last, as in a seed URL.
    let (tail, fragment) = match tail.split_once('#') {
        Some((tail, fragment)) => (tail, format!("#{fragment}")),
        None => (tail, String::new()),
    };
    let options = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if !matches!(options.0, "" | "/" | "/0") {
        return Err(LockError::invalid_config(
            what(),
            "a Redis Cluster has only database 0: give no path (or /0)",
        ));
    }
    let query = match (options.1, fragment.is_empty()) {
        (Some(q), _) => format!("/?{q}{fragment}"),
        (None, true) => String::new(),
        (None, false) => format!("/{fragment}"),
    };
    let mut seeds = Vec::new();
    for host in hosts.split(',') {
        let has_port = host
            .rsplit_once(':')
            .is_some_and(|(name, port)| !name.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(LockError::invalid_config(
                what(),
                format!("seed {host:?} is not host:port"),
            ));
        }
        seeds.push(format!("{scheme}://{userinfo}{host}{query}"));
    }
    Ok(seeds)
}

/// What of `other` differs from `base` among what the client applies to every node.
fn difference(base: &ConnectionInfo, other: &ConnectionInfo) -> Option<&'static str> {
    let (a, b) = (base.redis_settings(), other.redis_settings());
    if is_tls(base) != is_tls(other) {
        Some("TLS (rediss://)")
    } else if a.username() != b.username() {
        Some("user")
    } else if a.password() != b.password() {
        Some("password")
    } else if a.protocol() != b.protocol() {
        Some("protocol (RESP version)")
    } else if insecure(base) != insecure(other) {
        Some("TLS certificate check (#insecure)")
    } else {
        None
    }
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

fn insecure(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. })
}

/// `host:port,host:port` of the seeds (never credentials), for `Debug`.
pub(crate) fn servers(infos: &[ConnectionInfo]) -> String {
    infos
        .iter()
        .map(|info| info.addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(seeds: &[&str]) -> Result<Vec<ConnectionInfo>, LockError> {
        check_seeds(&seeds.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    fn refusal(seeds: &[&str]) -> String {
        check(seeds).expect_err("refused").to_string()
    }

    #[test]
    fn same_credentials_on_every_seed_pass() {
        let infos = check(&["redis://u:pw@127.0.0.1:7000", "redis://u:pw@127.0.0.1:7001"]).unwrap();
        assert_eq!(servers(&infos), "127.0.0.1:7000,127.0.0.1:7001");
    }

    #[test]
    fn differing_seeds_are_refused_by_name_without_the_password() {
        let message = refusal(&["redis://u:secret1@h:1", "redis://u:secret2@h:2"]);
        assert!(message.contains("password differs"), "{message}");
        assert!(message.contains("h:2"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        let message = refusal(&["redis://a:pw@h:1", "redis://b:pw@h:2"]);
        assert!(message.contains("user differs"), "{message}");
        let message = refusal(&["redis://h:1", "redis://h:2/3"]);
        assert!(message.contains("only database 0"), "{message}");
        let message = refusal(&["redis://h:1", "redis+unix:///tmp/s"]);
        assert!(message.contains("redis://host:port"), "{message}");
        let message = refusal(&[]);
        assert!(message.contains("at least one"), "{message}");
        let message = refusal(&["redis://h:1/?protocol=3", "redis://h:2"]);
        assert!(message.contains("protocol"), "{message}");
    }

    #[test]
    fn cluster_urls_give_every_seed_the_same_credentials_and_options() {
        let seeds = cluster_seeds("rediss+cluster://u:p@ss,w%2Fd@h1:1,h2:2").unwrap();
        assert_eq!(
            seeds,
            ["rediss://u:p@ss,w%2Fd@h1:1", "rediss://u:p@ss,w%2Fd@h2:2"]
        );
        assert_eq!(
            cluster_seeds("redis+cluster://h1:1/").unwrap(),
            ["redis://h1:1"]
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://h1:1,h2:2/#insecure").unwrap(),
            ["rediss://h1:1/#insecure", "rediss://h2:2/#insecure"]
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://h1:1/?protocol=3#insecure").unwrap(),
            ["rediss://h1:1/?protocol=3#insecure"]
        );
        for (bad, says) in [
            ("redis://h:1", "redis+cluster://"),
            ("redis+cluster://u:secret@h1:1,,h2:2", "is not host:port"),
            ("redis+cluster://u:secret@h1", "is not host:port"),
            ("redis+cluster://u:secret@h1:1/2", "only database 0"),
            ("redis+cluster://u:sec/ret@h1:1", "percent-encode"),
        ] {
            let message = cluster_seeds(bad).expect_err(bad).to_string();
            assert!(message.contains(says), "{bad}: {message}");
            assert!(!message.contains("secret"), "{bad}: {message}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn mixed_tls_is_refused() {
        let message = refusal(&["rediss://h:1", "redis://h:2"]);
        assert!(message.contains("TLS"), "{message}");
        let message = refusal(&["rediss://h:1/#insecure", "rediss://h:2"]);
        assert!(message.contains("certificate check"), "{message}");
    }
}
