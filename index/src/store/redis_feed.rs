//! The Redis change feed: tails the change stream on a dedicated connection and turns its
//! messages into [`Change`]s, with `Resync` wherever continuity is lost.
//!
//! The feed uses its own connection because `XREAD BLOCK` holds the connection until data
//! arrives: on the shared multiplexed connection every other command would queue behind it.

use std::time::Duration;

use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;

use super::Change;
use super::codec::id_from_hex;
use super::redis_codec::{decode_meta, meta_values};
use crate::{Error, Result};

/// How long one `XREAD` waits for new messages before asking again.
const BLOCK: Duration = Duration::from_secs(2);
/// Messages read per round trip.
const BATCH: usize = 512;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A session at least this long counts as healthy, so the next reconnect starts quickly.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Which writers' changes the feed delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginFilter {
    /// Every change but this store's own (a gateway already applied those to its index).
    Others,
    /// Every change, this store's own included.
    All,
}

/// A stream message id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    fn arg(self) -> String {
        format!("{}-{}", self.0, self.1)
    }
}

/// Where reading resumes: the last message read, and whether it was a real message (rather
/// than the `0-0` of an empty stream, which any first message is legitimately past).
#[derive(Debug, Clone, Copy)]
struct Position {
    last: StreamId,
    seen: bool,
}

type Message = (StreamId, Vec<(String, Vec<u8>)>);

pub(super) struct Feed {
    pub(super) client: redis::Client,
    pub(super) log_key: String,
    pub(super) origin: String,
    pub(super) filter: OriginFilter,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
}

/// Why a session on one connection ended.
enum End {
    ReceiverGone,
    Failed { error: Error, connected: bool },
}

impl Feed {
    /// Runs sessions, one per connection, with back-off between failures, until the receiver
    /// is dropped.
    pub(super) async fn run(self, sender: mpsc::Sender<Change>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let end = tokio::select! {
                _ = sender.closed() => return,
                end = self.session(&sender) => end,
            };
            match end {
                End::ReceiverGone => return,
                End::Failed { error, connected } => {
                    // Only a session that lasted resets the back-off: one that fails right
                    // after connecting (a stream key of the wrong type, say) must not make
                    // the consumer rebuild ten times a second.
                    if started.elapsed() >= HEALTHY_SESSION {
                        backoff = MIN_BACKOFF;
                    }
                    if connected {
                        tracing::warn!(error = %error, "redis change feed lost its connection");
                    } else {
                        tracing::debug!(error = %error, "redis change feed cannot connect");
                    }
                }
            }
            tokio::select! {
                _ = sender.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: connect, note the stream's tip, announce `Resync`, then relay
    /// messages until an error.
    async fn session(&self, sender: &mpsc::Sender<Change>) -> End {
        let failed = |error, connected| End::Failed { error, connected };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(BLOCK + self.response_timeout));
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let mut conn = match bounded("connect", self.connect_timeout * 2, connecting).await {
            Ok(conn) => conn,
            Err(error) => return failed(error, false),
        };
        let mut position = match self.tip(&mut conn).await {
            Ok(position) => position,
            Err(error) => return failed(error, true),
        };
        // Whatever happened before this connection (a first start, Redis restarted empty, a
        // gap while disconnected) is covered by a rebuild from a scan taken after the tip.
        if sender.send(Change::Resync).await.is_err() {
            return End::ReceiverGone;
        }
        loop {
            let (first, messages) = match self.read(&mut conn, position).await {
                Ok(read) => read,
                Err(error) => return failed(error, true),
            };
            if position.seen && first.is_some_and(|first| first > position.last) {
                tracing::warn!("redis change stream was trimmed past the last message read");
                position = match self.tip(&mut conn).await {
                    Ok(position) => position,
                    Err(error) => return failed(error, true),
                };
                if sender.send(Change::Resync).await.is_err() {
                    return End::ReceiverGone;
                }
                continue;
            }
            let mut undecodable = false;
            for (id, fields) in messages {
                position = Position {
                    last: id,
                    seen: true,
                };
                match self.change_of(&fields) {
                    Ok(Some(change)) => {
                        if sender.send(change).await.is_err() {
                            return End::ReceiverGone;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, stream_id = id.arg(), "undecodable change message");
                        undecodable = true;
                    }
                }
            }
            // A change that cannot be read is recovered by a rebuild rather than guessed.
            if undecodable && sender.send(Change::Resync).await.is_err() {
                return End::ReceiverGone;
            }
        }
    }

    /// The stream's newest message id, where reading starts (`0-0` for an empty stream).
    async fn tip(&self, conn: &mut redis::aio::MultiplexedConnection) -> Result<Position> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.log_key).arg("+").arg("-").arg("COUNT").arg(1);
        let reply: Value =
            bounded("xrevrange", self.response_timeout, cmd.query_async(conn)).await?;
        let newest = parse_messages(reply).map_err(|reason| protocol("xrevrange", reason))?;
        Ok(match newest.first() {
            Some((last, _)) => Position {
                last: *last,
                seen: true,
            },
            None => Position {
                last: StreamId(0, 0),
                seen: false,
            },
        })
    }

    /// The messages after `position`, waiting up to [`BLOCK`] for some, and the stream's
    /// oldest message id just after they were read.
    ///
    /// The `XRANGE` rides in the same pipeline behind the `XREAD`; Redis runs a client's
    /// commands in order, so it sees the stream as it was when the read returned: if trimming
    /// dropped messages between `position` and what the read returned, the oldest id is then
    /// past `position`.
    async fn read(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        position: Position,
    ) -> Result<(Option<StreamId>, Vec<Message>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.log_key)
            .arg(position.last.arg());
        pipe.cmd("XRANGE")
            .arg(&self.log_key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        let bound = BLOCK + self.response_timeout * 2;
        let (reply, oldest): (Value, Value) =
            bounded("xread", bound, pipe.query_async(conn)).await?;
        let messages = parse_xread(reply).map_err(|reason| protocol("xread", reason))?;
        let oldest = parse_messages(oldest).map_err(|reason| protocol("xrange", reason))?;
        Ok((oldest.first().map(|(id, _)| *id), messages))
    }

    /// The change a message carries; None when the filter skips it.
    fn change_of(&self, fields: &[(String, Vec<u8>)]) -> Result<Option<Change>, String> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let text = |name: &str| field(name).and_then(|v| String::from_utf8(v).ok());
        let origin = text("origin").ok_or("no origin")?;
        if self.filter == OriginFilter::Others && origin == self.origin {
            return Ok(None);
        }
        let id = text("id")
            .as_deref()
            .and_then(id_from_hex)
            .ok_or("no valid id")?;
        match text("op").as_deref() {
            Some("put") => decode_meta(id, &meta_values(field))
                .map(|meta| Some(Change::Put(meta)))
                .map_err(|error| error.to_string()),
            Some("del") => Ok(Some(Change::Delete(id))),
            other => Err(format!("unknown op {other:?}")),
        }
    }
}

async fn bounded<T>(
    op: &'static str,
    bound: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Redis { op, source }),
        Err(_) => Err(Error::RedisTimeout { op, after: bound }),
    }
}

fn protocol(op: &'static str, reason: String) -> Error {
    let source = redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", reason));
    Error::Redis { op, source }
}

/// `XREAD`'s reply: nil on timeout, else one `[key, messages]` per stream (a map in RESP3).
fn parse_xread(reply: Value) -> Result<Vec<Message>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("stream entry {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, messages)| messages).collect(),
        other => return Err(format!("xread reply {other:?}")),
    };
    let mut messages = Vec::new();
    for stream in streams {
        messages.extend(parse_messages(stream)?);
    }
    Ok(messages)
}

/// A list of `[id, [field, value, ...]]`, as `XRANGE` and `XREAD` give them.
fn parse_messages(reply: Value) -> Result<Vec<Message>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("message list {reply:?}"));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut pair) = item else {
                return Err("message is not an array".to_owned());
            };
            if pair.len() != 2 {
                return Err(format!("message of {} parts", pair.len()));
            }
            let fields = pair.pop().unwrap_or(Value::Nil);
            let id = match pair.pop() {
                Some(Value::BulkString(id)) => String::from_utf8(id)
                    .ok()
                    .and_then(|id| StreamId::parse(&id)),
                _ => None,
            }
            .ok_or("bad message id")?;
            let Value::Array(flat) = fields else {
                return Err("message fields are not an array".to_owned());
            };
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                match (name, value) {
                    (Value::BulkString(name), Value::BulkString(value)) => {
                        fields.push((String::from_utf8_lossy(&name).into_owned(), value));
                    }
                    _ => return Err("message field is not a string".to_owned()),
                }
            }
            Ok((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn stream_ids_order_numerically() {
        assert!(StreamId::parse("10-0").unwrap() > StreamId::parse("9-5").unwrap());
        assert!(StreamId::parse("9-10").unwrap() > StreamId::parse("9-9").unwrap());
        assert_eq!(StreamId::parse("12-3").unwrap().arg(), "12-3");
        assert_eq!(StreamId::parse("12"), None);
        assert_eq!(StreamId::parse("a-1"), None);
    }

    #[test]
    fn xread_replies_parse_in_both_protocols() {
        let message = Value::Array(vec![
            bulk("5-1"),
            Value::Array(vec![bulk("op"), bulk("del")]),
        ]);
        let expected = vec![(StreamId(5, 1), vec![("op".to_owned(), b"del".to_vec())])];
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![message.clone()]),
        ])]);
        assert_eq!(parse_xread(resp2).unwrap(), expected);
        let resp3 = Value::Map(vec![(bulk("k"), Value::Array(vec![message]))]);
        assert_eq!(parse_xread(resp3).unwrap(), expected);
        assert_eq!(parse_xread(Value::Nil).unwrap(), vec![]);
        assert!(parse_xread(Value::Int(3)).is_err());
        assert!(
            parse_messages(Value::Array(vec![Value::Array(vec![
                bulk("x"),
                Value::Array(vec![])
            ])]))
            .is_err()
        );
    }
}
