//! A private `redis-server` for one test: a free port, no persistence, and the faults the
//! tests play on it (SIGKILL then restart on the same port, SIGSTOP then SIGCONT).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{ChildService, Stream};
use crate::{Error, Result, ports, signal};

/// The installed server binary; `REDIS_SERVER` overrides it.
const DEFAULT_BINARY: &str = "redis-server";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a `PING` may take before the server counts as not answering.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts at a fresh port when another process took the free one first.
const PORT_ATTEMPTS: usize = 5;

/// A running `redis-server --port P --save '' --appendonly no`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// `None` between [`RedisServer::kill9`] and [`RedisServer::restart`].
    service: Option<ChildService>,
    /// The server's working directory, so that nothing it might write lands in the repository.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = ports::free_port()?;
            match spawn(port, &dir) {
                Ok(service) => {
                    return Ok(Self {
                        port,
                        service: Some(service),
                        dir,
                    });
                }
                // The port was free a moment ago; another test may have taken it since.
                Err(err @ Error::ExitedEarly { .. }) => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or(Error::NotReady {
            program: DEFAULT_BINARY.into(),
            timeout: START_TIMEOUT,
        }))
    }

    /// Starts a server on `port` (one a gateway was told about before Redis was there).
    pub fn start_on(port: u16) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let service = spawn(port, &dir)?;
        Ok(Self {
            port,
            service: Some(service),
            dir,
        })
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, the gateway's `[store] url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.service.as_ref().map(ChildService::pid)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone. Its data
    /// is lost: a restarted server is empty.
    pub fn kill9(&mut self) {
        // Dropping the service sends SIGKILL and reaps the process.
        self.service = None;
    }

    /// Starts the server again on the same port (after [`RedisServer::kill9`]; a running
    /// server is killed first), and waits until it answers `PING`.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        // The old socket may linger a moment in the kernel; redis-server binds with
        // SO_REUSEADDR, so a short retry covers what is left.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match spawn(self.port, &self.dir) {
                Ok(service) => {
                    self.service = Some(service);
                    return Ok(());
                }
                Err(err @ Error::ExitedEarly { .. }) if Instant::now() < deadline => {
                    eprintln!(
                        "redis restart on port {} failed, retrying: {err}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open but nothing is answered, the
    /// fault a response timeout exists for.
    pub fn pause(&self) -> Result<()> {
        self.signal(signal::Signal::Stop)
    }

    /// Lets a paused server run again with SIGCONT.
    pub fn resume(&self) -> Result<()> {
        self.signal(signal::Signal::Continue)
    }

    /// Whether the server answers `PING` with `PONG` within half a second.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).is_ok_and(|reply| reply == "PONG")
    }

    /// Sends one command and returns its reply as text: a status or bulk string, or an
    /// integer in decimal (enough for `PING`, `DBSIZE`, `FLUSHALL`, `GET`). An error reply,
    /// an array or no reply within half a second is an error.
    pub fn command(&self, args: &[&str]) -> Result<String> {
        command(self.port, args)
    }

    fn signal(&self, signal: signal::Signal) -> Result<()> {
        let pid = self.pid().ok_or_else(|| Error::Redis {
            port: self.port,
            reason: "the server is not running".into(),
        })?;
        signal::send(pid, signal)
    }
}

/// Spawns a server on `port` and waits for its ready line, then for `PING`.
fn spawn(port: u16, dir: &TempDir) -> Result<ChildService> {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| DEFAULT_BINARY.into());
    let mut server = Command::new(&binary);
    server
        .current_dir(dir.path())
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        // The log goes to stdout, where the ready line is looked for.
        .args(["--logfile", ""]);
    let name = format!("redis:{port}");
    let (mut service, ()) = ChildService::spawn(&name, server, START_TIMEOUT, |stream, line| {
        (stream == Stream::Stdout && line.contains("Ready to accept connections")).then_some(())
    })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if command(port, &["PING"]).is_ok_and(|reply| reply == "PONG") {
            return Ok(service);
        }
        if !service.is_running() {
            return Err(Error::ExitedEarly {
                program: name,
                status: "exited".into(),
                stderr_tail: service.stderr_text(),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                program: name,
                timeout: START_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One RESP request on a fresh connection.
fn command(port: u16, args: &[&str]) -> Result<String> {
    let fail = |reason: String| Error::Redis { port, reason };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PING_TIMEOUT)
        .map_err(|err| fail(format!("connect: {err}")))?;
    stream
        .set_read_timeout(Some(PING_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PING_TIMEOUT)))
        .map_err(|err| fail(format!("socket: {err}")))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|err| fail(format!("write: {err}")))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|err| fail(format!("read: {err}")))?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(fail(format!("error reply: {rest}"))),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| fail(format!("bad bulk length: {line}")))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut body = vec![0; usize::try_from(len).unwrap_or(0) + 2];
            std::io::Read::read_exact(&mut reader, &mut body)
                .map_err(|err| fail(format!("read: {err}")))?;
            body.truncate(body.len() - 2);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        "" => Err(fail("no reply".into())),
        _ => Err(fail(format!("unsupported reply: {line}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_survives_kill_and_pause() {
        let mut redis = RedisServer::start().unwrap();
        assert!(redis.url().ends_with(&format!(":{}", redis.port())));
        assert!(redis.ping());
        assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), "OK");
        assert_eq!(redis.command(&["GET", "k"]).unwrap(), "v");
        assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "1");

        redis.kill9();
        assert!(!redis.ping());
        redis.restart().unwrap();
        assert!(redis.ping());
        // Nothing is persisted: the restarted server is empty.
        assert_eq!(redis.command(&["DBSIZE"]).unwrap(), "0");

        redis.pause().unwrap();
        let started = Instant::now();
        assert!(!redis.ping(), "a paused server must not answer");
        assert!(started.elapsed() < Duration::from_secs(2));
        redis.resume().unwrap();
        assert!(redis.ping());
    }

    #[test]
    fn drop_kills_the_server() {
        let redis = RedisServer::start().unwrap();
        let pid = redis.pid().unwrap();
        let port = redis.port();
        drop(redis);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(command(port, &["PING"]).is_err());
    }
}
