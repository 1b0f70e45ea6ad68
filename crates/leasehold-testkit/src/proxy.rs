//! A TCP proxy between the workers and a server, that the nemesis can make slow, silent or
//! rude: it delays every chunk, stops forwarding (a black hole: connections stay open, nothing
//! arrives), or resets every connection open through it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::watch,
};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Forward nothing (bytes wait until the mode changes); new connections wait too.
    BlackHole,
    /// Forward requests to the server at once, hold back its replies until the mode changes:
    /// a request that lands while its reply is lost.
    HoldReplies,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
#[derive(Debug)]
pub struct Proxy {
    /// Where workers connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<u64>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let (resets, _) = watch::channel(0u64);
        let connections = Arc::new(Mutex::new(0));
        let (modes, reset_tx, count) = (mode.clone(), resets.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, mut reset) = (modes.subscribe(), reset_tx.subscribe());
                *count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pipe(client_read, server_write, mode.clone(), false);
                    let down = pipe(server_read, client_write, mode, true);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        // Dropping both halves of both sockets closes them; with SO_LINGER 0
                        // it would be an RST, a close is what a crashed peer's kernel sends too.
                        _ = reset.changed() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            mode,
            resets,
            accept,
            connections,
        })
    }

    /// Sets the mode for all connections, open and new.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every connection open through the proxy now.
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

/// Copies `from` to `to`, honouring the mode for each chunk (`replies`: the server's side).
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    replies: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::HoldReplies if !replies => break,
                Mode::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::BlackHole | Mode::HoldReplies => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
