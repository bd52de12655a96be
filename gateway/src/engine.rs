//! Starts the bundled `cachet-engine` as the gateway's upstream and keeps it running: its log
//! lines are passed on with an `[engine]` prefix, and a crashed engine is restarted with
//! back-off, the upstream address following it to its new port.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cachet_policies::EngineSettings;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to start the engine {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the engine exited before it was ready ({status})")]
    ExitedEarly { status: String },
    #[error("the engine did not start listening within {0:?}")]
    StartupTimeout(Duration),
}

/// The engine executable: the configured one, or `cachet-engine` beside this executable.
fn engine_binary(settings: &EngineSettings) -> PathBuf {
    if let Some(binary) = &settings.binary {
        return binary.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("cachet-engine")))
        .unwrap_or_else(|| PathBuf::from("cachet-engine"))
}

/// Starts the engine, waits until it listens, and returns its base URL (`http://ADDR/v1`)
/// with the running child.
async fn launch(settings: &EngineSettings) -> Result<(String, Child), EngineError> {
    let binary = engine_binary(settings);
    let mut command = Command::new(&binary);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe. It makes the kernel stop the engine when the gateway dies, however it
    // dies (kill_on_drop only covers an orderly drop), so a crashed gateway leaves no orphan
    // engine holding its memory.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .arg("serve")
        .arg("--model")
        .arg(&settings.model)
        .args(["--listen", "127.0.0.1:0", "--device", &settings.device])
        .args(&settings.args)
        // The gateway sends the tenant it derived in x-cachet-tenant (and strips any a client
        // sent), so the engine salts its prefix cache exactly as the cache is partitioned.
        // The engine refuses this flag on an address other than loopback, so an `args` entry
        // that moves it elsewhere fails at start instead of trusting the world.
        .arg("--trust-gateway-header")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| EngineError::Spawn {
            binary: binary.clone(),
            source,
        })?;

    let (ready_tx, ready_rx) = oneshot::channel::<String>();
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix("listening on ") {
                    Some(url) if ready.is_some() => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(url.trim().trim_end_matches('/').to_owned());
                        }
                    }
                    _ => eprintln!("[engine] {line}"),
                }
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[engine] {line}");
            }
        });
    }

    let started = tokio::time::timeout(settings.startup_timeout, async {
        tokio::select! {
            url = ready_rx => url.ok(),
            status = child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(EngineError::ExitedEarly { status });
            }
        }
        .ok_or_else(|| EngineError::ExitedEarly {
            status: "closed its output".to_owned(),
        })
    })
    .await
    .map_err(|_| EngineError::StartupTimeout(settings.startup_timeout))??;
    Ok((format!("{started}/v1"), child))
}

/// Starts the engine and points `upstream` at it; a task restarts it whenever it exits.
/// The engine is killed when the returned guard is dropped.
pub async fn supervise(
    settings: EngineSettings,
    upstream: Upstream,
) -> Result<EngineGuard, EngineError> {
    let (url, mut child) = launch(&settings).await?;
    tracing::info!(%url, model = %settings.model.display(), "engine ready");
    upstream.set_base_url(url);
    upstream.send_tenant_header();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = &mut stop_rx => {
                    let _ = child.kill().await;
                    return;
                }
                status = child.wait() => {
                    tracing::error!(status = ?status, "engine exited; restarting in {backoff:?}");
                }
            }
            tokio::time::sleep(backoff).await;
            match launch(&settings).await {
                Ok((url, next)) => {
                    tracing::info!(%url, "engine restarted");
                    upstream.set_base_url(url);
                    child = next;
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::error!(error = %e, "engine restart failed");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
    Ok(EngineGuard {
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// Stops the supervised engine when dropped or shut down.
#[derive(Debug)]
pub struct EngineGuard {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EngineGuard {
    /// Stops the engine and waits for it to exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
