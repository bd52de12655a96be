//! The Redis entry store: entries shared by every gateway of a deployment.
//!
//! # Key layout (Redis Cluster-safe)
//!
//! With `P` the key prefix (default `cachet`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:e:{<16-hex id>}` | hash | one entry: `id`, `cat`, `ten`, `part`, `vec` (little-endian f32 bytes), `q` (absent without question), `ca`, `ea`, `cost` (decimal text), `bl` (body length), `body`; `PEXPIREAT` at its expiry |
//! | `P:ids` | sorted set | member = 16-hex id, score = `expires_at_ms`: lists live ids for `scan` |
//! | `P:log` | stream | one message per put (`op=put`, `id`, `origin`, the metadata fields) and per delete (`op=del`, `id`, `origin`), trimmed with `MAXLEN ~` |
//!
//! No command touches two keys, so keys may live in different cluster slots; the braces make
//! each entry's hash tag its id, which spreads entries over the slots (a prefix may therefore
//! not contain braces). A put is one round trip: `MULTI DEL HSET PEXPIREAT EXEC` on the entry
//! key (the `DEL` drops a replaced entry's stale fields), then `ZADD` and `XADD`. A reader that
//! sees the stream message therefore finds the hash already written. The client here talks to
//! one endpoint (a standalone Redis, or a cluster proxy); see `docs/redis.md`.
//!
//! # Failure behaviour
//!
//! [`RedisStore::connect`] never touches the network, so a gateway starts while Redis is
//! down; every call then fails with [`Error::Redis`] (or [`Error::RedisTimeout`]) until Redis
//! answers, and the connection manager reconnects in the background after each failure. Every
//! call is bounded by `connect_timeout + response_timeout`: a paused or unreachable Redis makes
//! calls fail after that long, never hang.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use tokio::sync::mpsc;

use super::codec::{id_from_hex, id_to_hex};
use super::redis_codec::{BODY_FIELD, META_FIELDS, decode_meta, encode_meta};
use super::redis_feed::{Feed, OriginFilter};
use super::{Change, EntryMeta, EntryStore, StoredEntry};
use crate::{EntryId, Error, Result};

/// How many entries one `scan` round trip reads.
const SCAN_CHUNK: usize = 512;

/// How to reach Redis and name the keys.
#[derive(Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis; no braces.
    pub key_prefix: String,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one command's answer once connected.
    pub response_timeout: Duration,
    /// Approximate length the change stream is trimmed to (`XADD MAXLEN ~`).
    pub stream_max_len: usize,
}

impl RedisOptions {
    /// Options for `url` with the defaults: prefix `cachet`, 1 s to connect, 500 ms to answer,
    /// a stream of about 100,000 changes.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "cachet".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(500),
            stream_max_len: 100_000,
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("stream_max_len", &self.stream_max_len)
            .finish()
    }
}

/// The URL without its credentials, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The names of the store's keys.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    pub(super) ids: String,
    pub(super) log: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ids: format!("{prefix}:ids"),
            log: format!("{prefix}:log"),
        }
    }

    fn entry(&self, id: EntryId) -> String {
        format!("{}:e:{{{}}}", self.prefix, id_to_hex(id))
    }
}

/// Entries in Redis, shared by every gateway that uses the same server and prefix.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    /// Random per store, written on every change message, so a gateway can skip its own.
    origin: String,
    options: RedisOptions,
    /// The bound on any one call: connecting plus answering.
    call_bound: Duration,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.inner.options)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Builds the store without touching the network, so a gateway starts while Redis is down:
    /// calls fail until Redis is reachable, then succeed (the connection manager reconnects by
    /// itself). Fails only on unusable options or outside a Tokio runtime.
    pub fn connect(options: RedisOptions) -> Result<Self> {
        let prefix = &options.key_prefix;
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(Error::InvalidRedisOptions {
                name: "key_prefix",
                reason: format!("{prefix:?} must be non-empty and hold no braces"),
                source: None,
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(Error::NoRuntime)?;
        let client = redis::Client::open(options.url.as_str()).map_err(|source| {
            Error::InvalidRedisOptions {
                name: "url",
                reason: format!("{} is not a redis url", redact_url(&options.url)),
                source: Some(source),
            }
        })?;
        // One retry with a short delay: a call while Redis is down should fail promptly and
        // leave reconnecting to the next call, not wait out a long back-off.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|source| {
                Error::InvalidRedisOptions {
                    name: "url",
                    reason: "cannot build a connection manager".to_owned(),
                    source: Some(source),
                }
            })?;
        let origin = format!("{:016x}", rand::random::<u64>());
        let call_bound = options.connect_timeout + options.response_timeout;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                conn,
                keys: Keys::new(prefix),
                origin,
                options,
                call_bound,
                runtime,
            }),
        })
    }

    /// [`Self::connect`], then checks that Redis answers (`PING`) within the timeouts; for
    /// tools that need Redis now rather than a degraded start.
    pub async fn connect_and_ping(options: RedisOptions) -> Result<Self> {
        let store = Self::connect(options)?;
        EntryStore::ping(&store).await?;
        Ok(store)
    }

    /// This store's origin id, written on its change messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// The change feed: a task on its own connection tails the stream and sends what other
    /// gateways (or, with [`OriginFilter::All`], every writer) put and delete.
    ///
    /// The first message, once Redis is reachable, is always [`Change::Resync`], and so is the
    /// first after every reconnect and after the stream was trimmed past the last message
    /// read: on `Resync` rebuild from [`EntryStore::scan`], then apply what follows. So a
    /// consumer needs no separate start-up scan. The task stops when the receiver is dropped.
    pub fn changes(&self, filter: OriginFilter) -> mpsc::Receiver<Change> {
        let (sender, receiver) = mpsc::channel(1024);
        let inner = &self.inner;
        let feed = Feed {
            client: inner.client.clone(),
            log_key: inner.keys.log.clone(),
            origin: inner.origin.clone(),
            filter,
            connect_timeout: inner.options.connect_timeout,
            response_timeout: inner.options.response_timeout,
        };
        inner.runtime.spawn(feed.run(sender));
        receiver
    }

    /// Runs one Redis call within the store's time bound.
    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.inner.call_bound, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::Redis { op, source }),
            Err(_) => Err(Error::RedisTimeout {
                op,
                after: self.inner.call_bound,
            }),
        }
    }

    /// `XADD` of one change message onto `pipe`, trimming the stream as it goes.
    fn announce(&self, pipe: &mut redis::Pipeline, op: &str, id: EntryId) {
        let options = &self.inner.options;
        pipe.cmd("XADD")
            .arg(&self.inner.keys.log)
            .arg("MAXLEN")
            .arg("~")
            .arg(options.stream_max_len)
            .arg("*")
            .arg("op")
            .arg(op)
            .arg("id")
            .arg(id_to_hex(id))
            .arg("origin")
            .arg(&self.inner.origin);
    }

    async fn get_entry(&self, id: EntryId, now_ms: u64) -> Result<Option<Arc<StoredEntry>>> {
        let mut conn = self.inner.conn.clone();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.inner.keys.entry(id))
            .arg(&META_FIELDS[..])
            .arg(BODY_FIELD);
        let mut values: Vec<Option<Vec<u8>>> =
            self.bounded("get", cmd.query_async(&mut conn)).await?;
        if values.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        let body = values.pop().flatten().ok_or_else(|| Error::CorruptEntry {
            id,
            reason: "field body is missing".to_owned(),
        })?;
        let meta = decode_meta(id, &values)?;
        if meta.is_expired(now_ms) {
            return Ok(None);
        }
        Ok(Some(Arc::new(StoredEntry {
            meta,
            body: body.into(),
        })))
    }

    async fn put_entry(&self, mut entry: StoredEntry) -> Result<()> {
        entry.meta.body_bytes = entry.body.len();
        let meta = &entry.meta;
        let key = self.inner.keys.entry(meta.id);
        let fields = encode_meta(meta);
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI").ignore().cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET").arg(&key);
        for (name, value) in &fields {
            pipe.arg(*name).arg(value.as_slice());
        }
        pipe.arg(BODY_FIELD).arg(entry.body.as_ref()).ignore();
        // Redis takes expiry instants up to i64::MAX; a later one (u64::MAX for "never") is
        // clamped there, while the hash keeps the true value.
        let expire_at = meta.expires_at_ms.min(i64::MAX as u64);
        pipe.cmd("PEXPIREAT").arg(&key).arg(expire_at).ignore();
        // EXEC's reply is kept: an error of a queued command is inside it, not at top level.
        pipe.cmd("EXEC");
        pipe.cmd("ZADD")
            .arg(&self.inner.keys.ids)
            .arg(meta.expires_at_ms)
            .arg(id_to_hex(meta.id))
            .ignore();
        self.announce(&mut pipe, "put", meta.id);
        for (name, value) in &fields {
            pipe.arg(*name).arg(value.as_slice());
        }
        pipe.ignore();
        let mut conn = self.inner.conn.clone();
        let (exec,): (Value,) = self.bounded("put", pipe.query_async(&mut conn)).await?;
        exec.extract_error()
            .map(drop)
            .map_err(|source| Error::Redis { op: "put", source })
    }

    async fn remove_entries(&self, ids: Vec<EntryId>) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for &id in &ids {
            pipe.cmd("DEL").arg(self.inner.keys.entry(id));
            pipe.cmd("ZREM")
                .arg(&self.inner.keys.ids)
                .arg(id_to_hex(id))
                .ignore();
            // Announced even when the hash is gone already: a peer's index may still hold the
            // vector of an entry that expired in Redis.
            self.announce(&mut pipe, "del", id);
            pipe.ignore();
        }
        let mut conn = self.inner.conn.clone();
        let deleted: Vec<u64> = self.bounded("remove", pipe.query_async(&mut conn)).await?;
        Ok(deleted.into_iter().filter(|&n| n > 0).count())
    }

    async fn scan_entries(&self, now_ms: u64) -> Result<Vec<EntryMeta>> {
        let ids_key = &self.inner.keys.ids;
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(ids_key)
            .arg("-inf")
            .arg(now_ms)
            .ignore();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(ids_key)
            .arg(format!("({now_ms}"))
            .arg("+inf");
        let mut conn = self.inner.conn.clone();
        let (members,): (Vec<String>,) = self.bounded("scan", pipe.query_async(&mut conn)).await?;
        let ids: Vec<EntryId> = members
            .iter()
            .filter_map(|member| {
                let id = id_from_hex(member);
                if id.is_none() {
                    tracing::warn!(
                        member,
                        key = ids_key,
                        "ignoring a member that is not an entry id"
                    );
                }
                id
            })
            .collect();
        let mut metas = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCAN_CHUNK) {
            let mut pipe = redis::pipe();
            for &id in chunk {
                pipe.cmd("HMGET")
                    .arg(self.inner.keys.entry(id))
                    .arg(&META_FIELDS[..]);
            }
            let rows: Vec<Vec<Option<Vec<u8>>>> =
                self.bounded("scan", pipe.query_async(&mut conn)).await?;
            for (&id, values) in chunk.iter().zip(rows) {
                // A hash that expired or was deleted since the id list was read is skipped.
                if values.first().is_none_or(Option::is_none) {
                    continue;
                }
                // One damaged entry must not keep every gateway from rebuilding its index: it
                // is left out (a `get` of it still reports the damage) and the rest is returned.
                let meta = match decode_meta(id, &values) {
                    Ok(meta) => meta,
                    Err(error) => {
                        tracing::warn!(%error, "scan leaves out an undecodable entry");
                        continue;
                    }
                };
                if !meta.is_expired(now_ms) {
                    metas.push(meta);
                }
            }
        }
        Ok(metas)
    }
}

impl EntryStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn get(&self, id: EntryId, now_ms: u64) -> BoxFuture<'_, Result<Option<Arc<StoredEntry>>>> {
        self.get_entry(id, now_ms).boxed()
    }

    fn put(&self, entry: StoredEntry) -> BoxFuture<'_, Result<()>> {
        self.put_entry(entry).boxed()
    }

    fn remove(&self, ids: Vec<EntryId>) -> BoxFuture<'_, Result<usize>> {
        self.remove_entries(ids).boxed()
    }

    fn scan(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<EntryMeta>>> {
        self.scan_entries(now_ms).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            let mut conn = self.inner.conn.clone();
            let answer: Value = self
                .bounded("ping", redis::cmd("PING").query_async(&mut conn))
                .await?;
            tracing::trace!(?answer, "redis ping");
            Ok(())
        }
        .boxed()
    }

    fn purge_expired(&self, now_ms: u64) -> BoxFuture<'_, Result<usize>> {
        async move {
            let mut conn = self.inner.conn.clone();
            let mut cmd = redis::cmd("ZREMRANGEBYSCORE");
            cmd.arg(&self.inner.keys.ids).arg("-inf").arg(now_ms);
            self.bounded("purge_expired", cmd.query_async(&mut conn))
                .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_the_id_in_the_hash_tag() {
        let keys = Keys::new("cachet");
        assert_eq!(keys.entry(255), "cachet:e:{00000000000000ff}");
        assert_eq!(keys.ids, "cachet:ids");
        assert_eq!(keys.log, "cachet:log");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        let debug = format!("{:?}", RedisOptions::new("redis://:pw@h:1"));
        assert!(!debug.contains("pw"), "{debug}");
    }

    #[tokio::test]
    async fn bad_options_are_refused_without_network() {
        for prefix in ["", "a{b", "x}"] {
            let mut options = RedisOptions::new("redis://127.0.0.1:1");
            options.key_prefix = prefix.to_owned();
            let error = RedisStore::connect(options).unwrap_err();
            assert!(matches!(
                error,
                Error::InvalidRedisOptions {
                    name: "key_prefix",
                    ..
                }
            ));
        }
        let error = RedisStore::connect(RedisOptions::new("http://nope")).unwrap_err();
        assert!(
            matches!(error, Error::InvalidRedisOptions { name: "url", .. }),
            "{error:?}"
        );
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        let error = RedisStore::connect(RedisOptions::new("redis://127.0.0.1:1")).unwrap_err();
        assert!(matches!(error, Error::NoRuntime(_)));
    }
}
