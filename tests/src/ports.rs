//! Free local ports, for the few places that need a port number before a server binds it.

use std::net::{SocketAddr, TcpListener};

use crate::{Error, Result};

/// A port on 127.0.0.1 that was free a moment ago. Prefer binding `127.0.0.1:0` directly
/// (the gateway's `--listen 127.0.0.1:0`); this is for services that cannot report their port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Bind)?;
    let addr = listener.local_addr().map_err(Error::Bind)?;
    Ok(addr.port())
}

/// An address on 127.0.0.1 where nothing listens: the port is bound and released, so
/// connecting to it is refused (used to play an unreachable upstream).
pub fn closed_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Bind)?;
    listener.local_addr().map_err(Error::Bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_again() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn closed_addr_refuses_connections() {
        let addr = closed_addr().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
