//! A `redis-server` started for one test on a free port, killed when the test ends, and the
//! store options, entries and waiting helpers the Redis tests share.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cachet_index::{Change, EntryMeta, RedisOptions, StoredEntry};
use tokio::sync::mpsc;

/// A `redis-server` child on its own port, killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    /// Starts the server on this port (again) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.raw().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn raw(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query::<String>(&mut conn)?;
        Ok(conn)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be resumed to die; errors are moot while tearing down.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);

pub fn options(server: &RedisServer) -> RedisOptions {
    RedisOptions {
        url: server.url(),
        key_prefix: "t".to_owned(),
        connect_timeout: CONNECT_TIMEOUT,
        response_timeout: RESPONSE_TIMEOUT,
        stream_max_len: 1_000,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn entry(id: u64, body: &str, expires_at_ms: u64) -> StoredEntry {
    StoredEntry {
        meta: EntryMeta {
            id,
            category: "code".to_owned(),
            tenant: "ab12".to_owned(),
            partition: 9,
            vector: vec![0.25, -1.0, 3.5],
            question: Some(format!("what is {id}?")),
            created_at_ms: 1,
            expires_at_ms,
            cost: 42.5,
            body_bytes: body.len(),
        },
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

pub fn hour() -> u64 {
    now_ms() + 3_600_000
}

/// The next change, or a failure after `within`.
pub async fn next(feed: &mut mpsc::Receiver<Change>, within: Duration) -> Change {
    tokio::time::timeout(within, feed.recv())
        .await
        .expect("a change in time")
        .expect("the feed is open")
}

/// Retries `op` until it succeeds; panics after `within`.
pub async fn eventually<T, F: std::future::Future<Output = cachet_index::Result<T>>>(
    within: Duration,
    mut op: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("still failing: {error}"),
        }
    }
}
