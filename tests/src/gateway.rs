//! The real `cachet` binary, started on a free port with a config written by the test.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::probe::{self, Health, Metrics};
use crate::process::{ChildService, Stream};
use crate::{Error, GatewayConfig, Result, paths, signal};

/// How long the gateway may take to load its model and bind; generous because several
/// tests start gateways at once on two cores.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `cachet serve`, killed on drop.
#[derive(Debug)]
pub struct Gateway {
    service: ChildService,
    base_url: String,
    config_path: PathBuf,
    // Keeps the config file alive as long as the process that reads it.
    _dir: TempDir,
}

impl Gateway {
    /// Starts `cachet serve --config <file> --listen 127.0.0.1:0` on this config, with the
    /// repository root as working directory, and waits for `listening on http://IP:PORT`.
    pub fn start(config: &GatewayConfig) -> Result<Self> {
        Self::start_toml(&config.to_toml(), &[])
    }

    /// Like [`Gateway::start`], with raw TOML and extra arguments after `serve`.
    pub fn start_toml(config_toml: &str, extra_args: &[&str]) -> Result<Self> {
        Self::start_command(cachet_command()?, config_toml, extra_args)
    }

    /// Like [`Gateway::start`], with this `cachet` executable rather than the one
    /// [`paths::cachet_bin`] finds (the benchmark runs the release build).
    pub fn start_binary(binary: &Path, config: &GatewayConfig) -> Result<Self> {
        let mut command = Command::new(binary);
        command.current_dir(paths::repo_root());
        Self::start_command(command, &config.to_toml(), &[])
    }

    fn start_command(mut command: Command, config_toml: &str, extra_args: &[&str]) -> Result<Self> {
        paths::require_model_assets()?;
        let dir = tempfile::tempdir().map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
        let config_path = write_config(dir.path(), config_toml)?;
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args);
        let (service, base_url) =
            ChildService::spawn("cachet", command, START_TIMEOUT, |stream, line| {
                let url = line.trim().strip_prefix("listening on ")?;
                (stream == Stream::Stdout).then(|| url.trim_end_matches('/').to_owned())
            })?;
        Ok(Self {
            service,
            base_url,
            config_path,
            _dir: dir,
        })
    }

    /// `http://IP:PORT`, for `/healthz` and `/metrics`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `http://IP:PORT/v1`, the OpenAI SDK's `base_url`.
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The gateway's OS process id (the benchmark reads its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// Whether the process is still running (a test can check that a request did not crash it).
    pub fn is_running(&mut self) -> bool {
        self.service.is_running()
    }

    /// Sends SIGTERM (a graceful shutdown: the gateway finishes what it does and writes its
    /// snapshot) and waits up to `timeout` for the process to exit; returns its status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        signal::send(self.pid(), signal::Signal::Terminate)?;
        self.service.wait_exit(timeout).ok_or(Error::NotExited {
            program: "cachet".into(),
            timeout,
        })
    }

    /// `GET /healthz`, from synchronous code (not from inside a Tokio runtime).
    pub fn healthz(&self) -> Result<Health> {
        let client = reqwest::Client::new();
        probe::block_on(probe::healthz(&client, &self.base_url))
    }

    /// `GET /metrics`, parsed, from synchronous code (not from inside a Tokio runtime).
    pub fn metrics(&self) -> Result<Metrics> {
        let client = reqwest::Client::new();
        probe::block_on(probe::metrics(&client, &self.base_url))
    }

    /// The last lines of the gateway's stderr (its log).
    pub fn log_tail(&self) -> String {
        self.service.stderr_text()
    }
}

/// Runs `cachet` with `args` to completion (for `--help` and config errors), killing it if
/// it is still running after `timeout` (then the output holds what it printed until then and
/// the status is the kill's).
pub fn run_cachet(args: &[&str], timeout: Duration) -> Result<Output> {
    run_cachet_with_env(args, &[], timeout)
}

/// [`run_cachet`] with these environment variables set (and `CACHET_*` ones of the test's own
/// environment removed, so that only the test decides what the config can look up).
pub fn run_cachet_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output> {
    let mut command = cachet_command()?;
    for (name, _) in std::env::vars() {
        if name.starts_with("CACHET_") && name != "CACHET_BIN" {
            command.env_remove(name);
        }
    }
    command
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: "cachet".into(),
        source,
    })?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().map_err(|source| Error::Spawn {
        program: "cachet".into(),
        source,
    })
}

/// Writes `config_toml` as `cachet.toml` in `dir` and returns its path.
pub fn write_config(dir: &Path, config_toml: &str) -> Result<PathBuf> {
    let path = dir.join("cachet.toml");
    std::fs::write(&path, config_toml).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn cachet_command() -> Result<Command> {
    let mut command = Command::new(paths::cachet_bin()?);
    command.current_dir(paths::repo_root());
    Ok(command)
}
