//! The nemesis's TCP proxy does what each mode says, in front of a local echo server.

use std::time::{Duration, Instant};

use leasehold_tests::harness::proxy::{Mode, Proxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    stream.write_all(b"ping").await?;
    let mut reply = [0u8; 4];
    let n = stream.read(&mut reply).await?;
    Ok(reply[..n].to_vec())
}

#[tokio::test]
async fn the_proxy_passes_delays_black_holes_and_resets() {
    let proxy = Proxy::start(echo_server().await).await.unwrap();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");

    proxy.set(Mode::Delay(Duration::from_millis(100)));
    let started = Instant::now();
    assert_eq!(round_trip(&mut stream).await.unwrap(), b"ping");
    // Delayed both ways.
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );

    proxy.set(Mode::BlackHole);
    let stalled = timeout(Duration::from_millis(300), round_trip(&mut stream)).await;
    assert!(stalled.is_err(), "a black hole answered");
    proxy.set(Mode::Pass);
    // What was held back arrives once traffic flows again.
    let mut reply = [0u8; 4];
    timeout(Duration::from_secs(2), stream.read_exact(&mut reply))
        .await
        .expect("held-back bytes never arrived")
        .unwrap();
    assert_eq!(&reply, b"ping");

    proxy.reset_all();
    let mut buffer = [0u8; 4];
    let after = timeout(Duration::from_secs(2), stream.read(&mut buffer))
        .await
        .expect("a reset connection stayed open");
    assert!(matches!(after, Ok(0) | Err(_)), "{after:?}");
    // New connections work after a reset.
    let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(round_trip(&mut fresh).await.unwrap(), b"ping");
    assert_eq!(proxy.connections(), 2);
}
