//! Free loopback ports (racy in theory: another process may take one before the server binds
//! it; fine for tests).

use std::net::TcpListener;

/// A port that is free on 127.0.0.1 right now.
///
/// # Errors
///
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

/// A port `P` with `P + 10000` free too, as a Redis Cluster node needs (its cluster bus
/// listens on the client port plus 10000).
///
/// # Errors
///
/// When no such pair turns up in 100 tries.
pub fn free_cluster_port() -> std::io::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    Err(crate::failed(
        "no free port P with P + 10000 free in 100 tries",
    ))
}
