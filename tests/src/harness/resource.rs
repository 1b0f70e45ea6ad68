//! The protected resource, served over a Unix socket by the `lockcheck` process.
//!
//! Per key it keeps the highest fence it has accepted and rejects writes with a lower one:
//! `W key fence` (a plain fenced write), `R key` (read the counter), `S key value fence` (set the
//! counter, fenced). Since every holder's first act is a fenced write, a stale holder's `S`
//! is always rejected, so no increment made under the lock can be lost. In the unfenced mode
//! `S` ignores the fence, so any overlap of holders shows up as a lost update. `C key` answers
//! how many `S` it accepted: a reader that sees it change while its read lease is valid saw a
//! writer beside it.

use std::{collections::HashMap, path::Path, sync::Arc};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

/// What the resource saw for one key.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyState {
    /// The highest fence accepted.
    pub highest_fence: u64,
    /// Fenced writes accepted.
    pub accepted: u64,
    /// Fenced writes rejected for a stale fence.
    pub rejected: u64,
    /// The unfenced counter.
    pub counter: u64,
    /// `S` writes accepted.
    pub sets: u64,
}

/// The resource's state, shared with the server task.
pub type State = Arc<Mutex<HashMap<String, KeyState>>>;

/// Serves the resource at `path` until the task is dropped. With `fenced` false, `S` ignores
/// the fence (a plain read-modify-write: overlapping holders lose updates).
///
/// # Errors
///
/// When the socket cannot be bound.
pub fn serve(path: &Path, fenced: bool) -> std::io::Result<(State, tokio::task::JoinHandle<()>)> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    let state: State = Arc::default();
    let shared = state.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, shared.clone(), fenced));
        }
    });
    Ok((state, task))
}

async fn handle(stream: UnixStream, state: State, fenced: bool) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split(' ').collect();
        let reply = {
            let mut state = state.lock().await;
            match parts.as_slice() {
                ["W", key, fence] => {
                    let fence: u64 = fence.parse().unwrap_or(0);
                    let entry = state.entry((*key).to_owned()).or_default();
                    if fence >= entry.highest_fence {
                        entry.highest_fence = fence;
                        entry.accepted += 1;
                        "OK".to_owned()
                    } else {
                        entry.rejected += 1;
                        "REJECT".to_owned()
                    }
                }
                ["R", key] => format!("V {}", state.get(*key).map_or(0, |e| e.counter)),
                ["C", key] => format!("V {}", state.get(*key).map_or(0, |e| e.sets)),
                ["S", key, value, fence] => {
                    let fence: u64 = fence.parse().unwrap_or(0);
                    let entry = state.entry((*key).to_owned()).or_default();
                    if !fenced {
                        entry.counter = value.parse().unwrap_or(0);
                        entry.sets += 1;
                        "OK".to_owned()
                    } else if fence >= entry.highest_fence {
                        entry.highest_fence = fence;
                        entry.counter = value.parse().unwrap_or(0);
                        entry.sets += 1;
                        "OK".to_owned()
                    } else {
                        entry.rejected += 1;
                        "REJECT".to_owned()
                    }
                }
                _ => "ERR".to_owned(),
            }
        };
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A worker's connection to the resource.
#[derive(Debug)]
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to the resource at `path`.
    ///
    /// # Errors
    ///
    /// When the socket cannot be reached.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let (read, write) = UnixStream::connect(path).await?.into_split();
        Ok(Self {
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    /// Sends one request line, returns the reply line.
    ///
    /// # Errors
    ///
    /// When the resource went away.
    pub async fn call(&mut self, request: &str) -> std::io::Result<String> {
        self.write
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        self.lines.next_line().await?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "resource closed")
        })
    }
}
