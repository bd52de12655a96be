//! Request coalescing: concurrent identical misses share one upstream request. The upstream
//! call runs in its own task, so a client that disconnects never cancels it for the others;
//! every participant, early or late, replays the response from its first byte as it arrives.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Response, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::ApiError;

/// What identifies one shared upstream request: who asks (flights never join two tenants,
/// even in a shared category, so each tenant's own key reaches the upstream and no tenant
/// receives another's answer headers or errors), the exact key, and what changes the bytes the
/// client receives (streaming or not, a usage chunk) and whether the answer may be stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub caller: String,
    pub exact_key: String,
    pub stream: bool,
    pub include_usage: bool,
    pub store: bool,
}

/// Why the upstream call of a flight failed before it answered.
#[derive(Debug, Clone)]
pub enum UpstreamFailure {
    Unavailable(Arc<reqwest::Error>),
    Timeout(Arc<reqwest::Error>),
}

/// The status and headers every participant answers with, and where the answer came from
/// when not from the upstream (`hit-exact` when the entry appeared while the flight started).
pub type Head = (StatusCode, HeaderMap, Option<&'static str>);

#[derive(Debug, Default)]
struct Progress {
    head: Option<Result<Head, UpstreamFailure>>,
    chunks: Vec<Bytes>,
    /// `Some(true)` when the body ended cleanly, `Some(false)` when it broke off.
    finished: Option<bool>,
}

/// One upstream request shared by every participant.
#[derive(Debug, Default)]
pub struct Flight {
    progress: Mutex<Progress>,
    changed: Notify,
}

impl Flight {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock());
        self.changed.notify_waiters();
    }

    pub fn set_head(&self, head: Result<Head, UpstreamFailure>) {
        self.update(|p| p.head = Some(head));
    }

    pub fn push(&self, chunk: Bytes) {
        self.update(|p| p.chunks.push(chunk));
    }

    pub fn finish(&self, clean: bool) {
        self.update(|p| p.finished = Some(clean));
    }

    /// Chunk `index` once it has arrived; `None` after a clean end, an error if the body broke off.
    async fn chunk(&self, index: usize) -> std::io::Result<Option<Bytes>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let progress = self.progress.lock();
                if let Some(chunk) = progress.chunks.get(index) {
                    return Ok(Some(chunk.clone()));
                }
                match progress.finished {
                    Some(true) => return Ok(None),
                    Some(false) => {
                        return Err(std::io::Error::other("upstream response broke off"));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }

    /// Waits for the upstream's status and headers, then returns a response whose body replays
    /// the flight's chunks from the start.
    pub async fn response(
        self: Arc<Self>,
    ) -> Result<(Response<Body>, Option<&'static str>), ApiError> {
        let head = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(head) = self.progress.lock().head.clone() {
                break head;
            }
            notified.await;
        };
        let (status, headers, label) = head.map_err(ApiError::from)?;
        let body = futures::stream::unfold((self, 0usize), |(flight, next)| async move {
            if next == usize::MAX {
                return None;
            }
            match flight.chunk(next).await {
                Ok(Some(chunk)) => Some((Ok(chunk), (flight, next + 1))),
                Ok(None) => None,
                Err(e) => Some((Err(e), (flight, usize::MAX))),
            }
        })
        .boxed();
        let mut response = Response::new(Body::from_stream(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok((response, label))
    }
}

/// The flights in progress, by key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<FlightKey, Arc<Flight>>>,
}

impl Flights {
    /// Joins the flight for `key`, or starts one: `true` means the caller must run it.
    pub fn join(&self, key: &FlightKey) -> (Arc<Flight>, bool) {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return (Arc::clone(flight), false);
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.clone(), Arc::clone(&flight));
        (flight, true)
    }

    /// Ends a flight: later requests start a new one (or hit the cache it filled).
    pub fn land(&self, key: &FlightKey) {
        self.map.lock().remove(key);
    }

    pub fn in_flight(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn key(exact: &str) -> FlightKey {
        FlightKey {
            caller: "t".to_owned(),
            exact_key: exact.to_owned(),
            stream: false,
            include_usage: false,
            store: true,
        }
    }

    async fn body(flight: Arc<Flight>) -> Result<Bytes, String> {
        let (response, _) = flight.response().await.map_err(|e| e.to_string())?;
        let collected = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(collected.to_bytes())
    }

    #[tokio::test]
    async fn every_participant_gets_the_whole_body_early_or_late() {
        let flights = Flights::default();
        let (flight, leader) = flights.join(&key("a"));
        assert!(leader);
        let (same, follower_leads) = flights.join(&key("a"));
        assert!(!follower_leads);
        assert!(
            flights.join(&key("b")).1,
            "a different key is its own flight"
        );
        let early = tokio::spawn(body(Arc::clone(&same)));
        flight.set_head(Ok((StatusCode::OK, HeaderMap::new(), None)));
        flight.push(Bytes::from("hel"));
        tokio::task::yield_now().await;
        flight.push(Bytes::from("lo"));
        flight.finish(true);
        let late = body(Arc::clone(&flight)).await;
        assert_eq!(early.await.expect("task").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(late.as_deref(), Ok(&b"hello"[..]));
        flights.land(&key("a"));
        assert!(
            flights.join(&key("a")).1,
            "a landed flight is not joined again"
        );
    }

    #[tokio::test]
    async fn failures_reach_every_participant() {
        let flights = Flights::default();
        let (flight, _) = flights.join(&key("a"));
        let waiting = tokio::spawn(body(Arc::clone(&flight)));
        flight.set_head(Ok((StatusCode::OK, HeaderMap::new(), None)));
        flight.push(Bytes::from("par"));
        flight.finish(false);
        assert!(
            waiting.await.expect("task").is_err(),
            "a broken body is an error, not a hang"
        );
    }
}
