//! A scripted OpenAI-compatible upstream for the tests: real HTTP on 127.0.0.1, answers
//! that a test chooses, and a record of every request it received.
//!
//! It runs on its own thread with its own Tokio runtime, so it serves whatever the test's
//! thread is doing (blocking on a child process included), and it stops when dropped.

mod answers;
mod routes;
mod script;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::serve::ListenerExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;

pub use answers::{base64_f32, fake_embedding};
pub use routes::MODELS;
pub use script::{Gate, RecordedRequest, Reply};

use crate::{Error, Result};
use script::Script;

/// The completion routes, as the upstream counts them.
pub const CHAT_PATH: &str = "/v1/chat/completions";
pub const COMPLETIONS_PATH: &str = "/v1/completions";

/// A running scripted upstream.
#[derive(Debug)]
pub struct ScriptedUpstream {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedUpstream {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::Bind)?;
        listener.set_nonblocking(true).map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Bind)?;
        let script = Arc::new(Mutex::new(Script::default()));
        let app = routes::router(Arc::clone(&script));
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-upstream-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    // Without TCP_NODELAY, Nagle's algorithm holds a stream's small chunks
                    // until the client's delayed ACK, some 40 ms, which "instant" answers
                    // (and the benchmark's direct baseline) must not have.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    // Dropping the runtime after `stop` fires cancels open connections too,
                    // so a test never waits for a client's keep-alive to end.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop => {}
                    }
                });
            })
            .map_err(Error::Bind)?;
        Ok(Self {
            addr,
            script,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a client or the gateway's `[upstream] url` uses: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies for the next completion calls (chat and completions alike), in order.
    pub fn push(&self, reply: Reply) {
        self.script.lock().queue.push_back(reply);
    }

    /// The reply used once the queue is empty (initially [`Reply::Echo`]).
    pub fn set_fallback(&self, reply: Reply) {
        self.script.lock().fallback = Some(reply);
    }

    /// Requests received on `path` (e.g. [`CHAT_PATH`]).
    pub fn calls(&self, path: &str) -> usize {
        self.script.lock().calls(path)
    }

    /// Requests received on both completion routes.
    pub fn completion_calls(&self) -> usize {
        let script = self.script.lock();
        script.calls(CHAT_PATH) + script.calls(COMPLETIONS_PATH)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.script.lock().requests.clone()
    }

    /// The `Authorization` headers of the requests received, in order (`None` where absent).
    pub fn authorizations(&self) -> Vec<Option<String>> {
        let script = self.script.lock();
        script
            .requests
            .iter()
            .map(|r| r.authorization.clone())
            .collect()
    }

    /// Waits up to `timeout` until `path` has received `count` requests; returns the count
    /// reached. For requests that reach the upstream after the client got its answer.
    pub fn wait_for_calls(&self, path: &str, count: usize, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let seen = self.calls(path);
            if seen >= count || std::time::Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
