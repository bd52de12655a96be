//! Unix signals to the processes a test started: SIGTERM for a graceful shutdown, SIGSTOP and
//! SIGCONT to freeze a server without closing its connections.

use crate::{Error, Result};

/// The signals the tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Stop,
    Continue,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Self::Terminate => libc::SIGTERM,
            Self::Stop => libc::SIGSTOP,
            Self::Continue => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to the process `pid`.
pub fn send(pid: u32, signal: Signal) -> Result<()> {
    let target = libc::pid_t::try_from(pid).map_err(|_| Error::Signal {
        pid,
        signal: format!("{signal:?}"),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a pid that no longer
    // exists is reported through its return value.
    let status = unsafe { libc::kill(target, signal.number()) };
    if status == 0 {
        Ok(())
    } else {
        Err(Error::Signal {
            pid,
            signal: format!("{signal:?}"),
            source: std::io::Error::last_os_error(),
        })
    }
}
