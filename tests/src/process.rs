//! A child process that serves something: started, awaited until it says it is ready, its
//! output forwarded into the test's output with a prefix, and killed when dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Error, Result};

/// Lines of stderr kept to explain a failure (and for tests that look for a log line, such as
/// a refused snapshot at start).
const STDERR_TAIL_LINES: usize = 200;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running child process, killed on drop.
#[derive(Debug)]
pub struct ChildService {
    name: String,
    child: Child,
    stderr_log: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildService {
    /// Spawns `command` with piped stdout and stderr and waits until `ready` returns `Some`
    /// for one of its output lines, or the process exits, or `timeout` passes.
    ///
    /// Every line is also printed to the test's stderr as `[name] line`; the threads that do
    /// this are spawned from the caller's thread, so libtest's output capture applies to them.
    pub fn spawn<T>(
        name: &str,
        mut command: Command,
        timeout: Duration,
        mut ready: impl FnMut(Stream, &str) -> Option<T>,
    ) -> Result<(Self, T)> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: name.to_owned(),
            source,
        })?;
        let (lines_tx, lines_rx) = mpsc::channel();
        let stderr_log = Arc::new(Mutex::new(VecDeque::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(forward_lines(
                name,
                Stream::Stdout,
                stdout,
                lines_tx.clone(),
                None,
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            let log = Some(Arc::clone(&stderr_log));
            readers.push(forward_lines(name, Stream::Stderr, stderr, lines_tx, log));
        }
        let mut service = Self {
            name: name.to_owned(),
            child,
            stderr_log,
            readers,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok((stream, line)) => {
                    if let Some(found) = ready(stream, &line) {
                        return Ok((service, found));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::NotReady {
                        program: service.name.clone(),
                        timeout,
                    });
                }
                // Both pipes closed: the process is gone (or closed its output, which a
                // server never does).
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = service
                        .child
                        .wait()
                        .map_or_else(|err| err.to_string(), |status| status.to_string());
                    return Err(Error::ExitedEarly {
                        program: service.name.clone(),
                        status,
                        stderr_tail: service.stderr_text(),
                    });
                }
            }
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit on its own; returns its status, or `None`
    /// if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr_text(&self) -> String {
        let log = self.stderr_log.lock();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        // Killing an already exited child fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader threads end when the pipes close. They are not joined: a grandchild
        // that inherited the pipes could keep them open and hang the test.
        self.readers.clear();
    }
}

fn forward_lines(
    name: &str,
    stream: Stream,
    pipe: impl Read + Send + 'static,
    lines_tx: mpsc::Sender<(Stream, String)>,
    log: Option<Arc<Mutex<VecDeque<String>>>>,
) -> JoinHandle<()> {
    let prefix = match stream {
        Stream::Stdout => format!("[{name}] "),
        Stream::Stderr => format!("[{name} stderr] "),
    };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{prefix}{line}");
            if let Some(log) = &log {
                let mut log = log.lock();
                if log.len() == STDERR_TAIL_LINES {
                    log.pop_front();
                }
                log.push_back(line.clone());
            }
            // Nobody listens any more once the service is ready; the line was printed.
            let _ = lines_tx.send((stream, line));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn waits_for_the_ready_line_and_returns_what_it_found() {
        let command = sh("echo starting; echo 'listening on http://127.0.0.1:1234'; exec sleep 30");
        let (mut service, url) =
            ChildService::spawn("sh", command, Duration::from_secs(10), |stream, line| {
                assert_eq!(stream, Stream::Stdout);
                line.strip_prefix("listening on ").map(str::to_owned)
            })
            .unwrap();
        assert_eq!(url, "http://127.0.0.1:1234");
        assert!(service.is_running());
    }

    #[test]
    fn an_early_exit_reports_status_and_stderr() {
        let command = sh("echo 'categories.code.ttl: bad' >&2; exit 3");
        let err = ChildService::spawn("sh", command, Duration::from_secs(10), |_, _| None::<()>)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("categories.code.ttl: bad"), "{text}");
    }

    #[test]
    fn a_silent_process_times_out() {
        let command = sh("exec sleep 30");
        let err = ChildService::spawn("sh", command, Duration::from_millis(200), |_, _| None::<()>)
            .unwrap_err();
        assert!(matches!(err, Error::NotReady { .. }), "{err}");
    }

    #[test]
    fn wait_exit_reports_the_status_or_none() {
        let (mut service, ()) = ChildService::spawn(
            "sh",
            sh("echo ready; exec sleep 30"),
            Duration::from_secs(10),
            |_, line| (line == "ready").then_some(()),
        )
        .unwrap();
        assert!(service.wait_exit(Duration::from_millis(50)).is_none());
        crate::signal::send(service.pid(), crate::signal::Signal::Terminate).unwrap();
        let status = service.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn drop_kills_the_process() {
        let command = sh("echo ready; exec sleep 30");
        let (service, ()) =
            ChildService::spawn("sh", command, Duration::from_secs(10), |_, line| {
                (line == "ready").then_some(())
            })
            .unwrap();
        let pid = service.pid();
        drop(service);
        let proc_path = format!("/proc/{pid}");
        assert!(!std::path::Path::new(&proc_path).exists());
    }
}
