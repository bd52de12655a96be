//! RedisStore against a real `redis-server` started per test on a free port: storage, expiry,
//! the change feed between two stores, and behaviour while Redis is killed, restarted, paused.

// Tests may unwrap: a panic there is a test failure with a backtrace.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cachet_index::{Change, EntryStore, Error, OriginFilter, RedisStore};

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::{
    CONNECT_TIMEOUT, RESPONSE_TIMEOUT, RedisServer, entry, eventually, hour, next, now_ms, options,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_remove_scan() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    assert_eq!(store.kind(), "redis");
    let expires = hour();
    let mut bare = entry(3, "", expires);
    bare.meta.question = None;
    bare.meta.vector.clear();
    for e in [
        entry(1, "one", expires),
        entry(2, "two", expires),
        bare.clone(),
    ] {
        store.put(e).await.unwrap();
    }
    let now = now_ms();
    assert_eq!(
        *store.get(1, now).await.unwrap().unwrap(),
        entry(1, "one", expires)
    );
    assert_eq!(*store.get(3, now).await.unwrap().unwrap(), bare);
    assert!(store.get(4, now).await.unwrap().is_none());

    let mut metas = store.scan(now).await.unwrap();
    metas.sort_by_key(|meta| meta.id);
    assert_eq!(
        metas,
        vec![
            entry(1, "one", expires).meta,
            entry(2, "two", expires).meta,
            bare.meta
        ]
    );

    assert_eq!(store.remove(vec![1, 99]).await.unwrap(), 1);
    assert_eq!(store.remove(vec![]).await.unwrap(), 0);
    assert!(store.get(1, now).await.unwrap().is_none());
    assert_eq!(store.scan(now).await.unwrap().len(), 2);

    // A replacement leaves no stale field behind (the question is gone, not kept).
    let mut replaced = entry(2, "new", expires);
    replaced.meta.question = None;
    store.put(replaced.clone()).await.unwrap();
    assert_eq!(*store.get(2, now).await.unwrap().unwrap(), replaced);

    // An entry that never expires (u64::MAX) is accepted; Redis gets the largest instant it takes.
    let forever = entry(4, "forever", u64::MAX);
    store.put(forever.clone()).await.unwrap();
    assert_eq!(*store.get(4, now).await.unwrap().unwrap(), forever);
    assert!(store.scan(now).await.unwrap().contains(&forever.meta));
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_in_redis_and_purge_prunes_the_id_set() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    let short = now_ms() + 800;
    store.put(entry(1, "brief", short)).await.unwrap();
    store.put(entry(2, "lasting", hour())).await.unwrap();
    let mut raw = server.raw().unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("t:e:{0000000000000001}")
        .query(&mut raw)
        .unwrap();
    assert!((1..=800).contains(&ttl), "PEXPIREAT set, ttl {ttl}");
    // Read at an instant past its expiry, the entry is gone even while the key still lives.
    assert!(store.get(1, short).await.unwrap().is_none());
    assert!(store.get(1, short - 1).await.unwrap().is_some());

    tokio::time::sleep(Duration::from_millis(950)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("t:e:{0000000000000001}")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0, "redis expired the hash by itself");
    let now = now_ms();
    let ids: Vec<u64> = store
        .scan(now)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![2]);
    // scan pruned the expired member already; put one back to see purge_expired do it.
    store.put(entry(3, "brief", now + 50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.purge_expired(now_ms()).await.unwrap(), 1);
    assert_eq!(store.purge_expired(now_ms()).await.unwrap(), 0);
    let members: i64 = redis::cmd("ZCARD").arg("t:ids").query(&mut raw).unwrap();
    assert_eq!(members, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_errors() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    store.put(entry(5, "body", hour())).await.unwrap();
    store.put(entry(6, "fine", hour())).await.unwrap();
    let mut raw = server.raw().unwrap();
    let () = redis::cmd("HSET")
        .arg("t:e:{0000000000000005}")
        .arg("vec")
        .arg(&[1u8, 2, 3][..])
        .query(&mut raw)
        .unwrap();
    let now = now_ms();
    assert!(matches!(
        store.get(5, now).await,
        Err(Error::CorruptEntry { id: 5, .. })
    ));
    // A scan leaves the damaged entry out and returns the rest, so that one bad hash cannot
    // stop every gateway from rebuilding its index.
    let ids: Vec<u64> = store
        .scan(now)
        .await
        .unwrap()
        .iter()
        .map(|meta| meta.id)
        .collect();
    assert_eq!(ids, vec![6]);
    let () = redis::cmd("HDEL")
        .arg("t:e:{0000000000000005}")
        .arg("body")
        .query(&mut raw)
        .unwrap();
    assert!(matches!(
        store.get(5, now).await,
        Err(Error::CorruptEntry { id: 5, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_inside_a_put_or_remove_surface() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    let mut raw = server.raw().unwrap();
    // The id set is of the wrong type, so the ZADD after the entry's transaction fails.
    let () = redis::cmd("SET")
        .arg("t:ids")
        .arg("x")
        .query(&mut raw)
        .unwrap();
    let put = store.put(entry(1, "x", hour())).await;
    assert!(
        matches!(put, Err(Error::Redis { op: "put", .. })),
        "{put:?}"
    );
    let removed = store.remove(vec![1]).await;
    assert!(
        matches!(removed, Err(Error::Redis { op: "remove", .. })),
        "{removed:?}"
    );
    assert!(matches!(
        store.scan(now_ms()).await,
        Err(Error::Redis { op: "scan", .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_store_and_not_the_writer() {
    let server = RedisServer::start();
    let a = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    let b = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    assert_ne!(a.origin(), b.origin());
    let mut a_feed = a.changes(OriginFilter::Others);
    let mut a_all = a.changes(OriginFilter::All);
    let mut b_feed = b.changes(OriginFilter::Others);
    for feed in [&mut a_feed, &mut a_all, &mut b_feed] {
        assert_eq!(
            next(feed, Duration::from_secs(2)).await,
            Change::Resync,
            "first message"
        );
    }

    let put = entry(7, "seven", hour());
    let started = Instant::now();
    a.put(put.clone()).await.unwrap();
    assert_eq!(
        next(&mut b_feed, Duration::from_secs(1)).await,
        Change::Put(put.meta.clone())
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        next(&mut a_all, Duration::from_secs(1)).await,
        Change::Put(put.meta)
    );

    a.remove(vec![7]).await.unwrap();
    assert_eq!(
        next(&mut b_feed, Duration::from_secs(1)).await,
        Change::Delete(7)
    );
    assert_eq!(
        next(&mut a_all, Duration::from_secs(1)).await,
        Change::Delete(7)
    );
    b.remove(vec![8]).await.unwrap();
    assert_eq!(
        next(&mut a_feed, Duration::from_secs(1)).await,
        Change::Delete(8)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a_feed.recv())
            .await
            .is_err(),
        "the writer's own changes are filtered out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_trimmed_past_the_last_read_message_sends_resync() {
    let server = RedisServer::start();
    let mut opts = options(&server);
    opts.stream_max_len = 10;
    let a = RedisStore::connect_and_ping(opts).await.unwrap();
    let mut b_feed = RedisStore::connect(options(&server))
        .unwrap()
        .changes(OriginFilter::Others);
    assert_eq!(
        next(&mut b_feed, Duration::from_secs(2)).await,
        Change::Resync
    );
    a.put(entry(1, "x", hour())).await.unwrap();
    assert!(matches!(
        next(&mut b_feed, Duration::from_secs(1)).await,
        Change::Put(_)
    ));

    let mut raw = server.raw().unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg("t:log")
        .arg("MAXLEN")
        .arg(0)
        .query(&mut raw)
        .unwrap();
    a.put(entry(2, "y", hour())).await.unwrap();
    assert_eq!(
        next(&mut b_feed, Duration::from_secs(1)).await,
        Change::Resync
    );

    // MAXLEN ~ keeps the stream near its bound, in whole internal nodes.
    for id in 10..400 {
        a.put(entry(id, "z", hour())).await.unwrap();
    }
    let len: usize = redis::cmd("XLEN").arg("t:log").query(&mut raw).unwrap();
    assert!(len < 250, "stream trimmed, {len} messages left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_change_message_sends_resync_instead_of_a_guess() {
    let server = RedisServer::start();
    let mut feed = RedisStore::connect(options(&server))
        .unwrap()
        .changes(OriginFilter::Others);
    assert_eq!(
        next(&mut feed, Duration::from_secs(2)).await,
        Change::Resync
    );
    let mut raw = server.raw().unwrap();
    let bad_messages: [&[&str]; 3] = [
        &[
            "op",
            "put",
            "id",
            "0000000000000001",
            "origin",
            "x",
            "vec",
            "abc",
        ],
        &["op", "move", "id", "0000000000000001", "origin", "x"],
        &["op", "del", "id", "1", "origin", "x"],
    ];
    for fields in bad_messages {
        let _: String = redis::cmd("XADD")
            .arg("t:log")
            .arg("*")
            .arg(fields)
            .query(&mut raw)
            .unwrap();
        assert_eq!(
            next(&mut feed, Duration::from_secs(1)).await,
            Change::Resync,
            "{fields:?}"
        );
    }
    let _: String = redis::cmd("XADD")
        .arg("t:log")
        .arg("*")
        .arg(&["op", "del", "id", "0000000000000009", "origin", "x"])
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        next(&mut feed, Duration::from_secs(1)).await,
        Change::Delete(9)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_fails_right_after_connecting_backs_off() {
    let server = RedisServer::start();
    let mut feed = RedisStore::connect(options(&server))
        .unwrap()
        .changes(OriginFilter::Others);
    assert_eq!(
        next(&mut feed, Duration::from_secs(2)).await,
        Change::Resync
    );
    let mut raw = server.raw().unwrap();
    let connections = |raw: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(raw).unwrap();
        let line = info
            .lines()
            .find(|l| l.starts_with("total_connections_received:"));
        line.unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // A stream key of the wrong type: every session now fails as soon as it reads.
    let () = redis::cmd("SET")
        .arg("t:log")
        .arg("x")
        .query(&mut raw)
        .unwrap();
    let first = connections(&mut raw);
    let deadline = Instant::now() + Duration::from_secs(4);
    while connections(&mut raw) == first {
        assert!(Instant::now() < deadline, "the feed never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = connections(&mut raw);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = connections(&mut raw) - start;
    // Back-off doubling from 100 ms allows about 4 attempts in 2 s; without it, about 20.
    assert!(attempts <= 6, "{attempts} reconnects in 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_stops_the_feed_and_closes_its_connection() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    let mut raw = server.raw().unwrap();
    let clients = |raw: &mut redis::Connection| {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(raw).unwrap();
        list.lines().count()
    };
    let before = clients(&mut raw);
    let mut feed = store.changes(OriginFilter::Others);
    assert_eq!(
        next(&mut feed, Duration::from_secs(2)).await,
        Change::Resync
    );
    assert_eq!(
        clients(&mut raw),
        before + 1,
        "the feed has its own connection"
    );
    drop(feed);
    let deadline = Instant::now() + Duration::from_secs(1);
    while clients(&mut raw) > before {
        assert!(
            Instant::now() < deadline,
            "the feed's connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_redis_fails_fast_then_recovers_and_feed_resyncs() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    let mut feed = RedisStore::connect(options(&server))
        .unwrap()
        .changes(OriginFilter::Others);
    assert_eq!(
        next(&mut feed, Duration::from_secs(2)).await,
        Change::Resync
    );
    store.put(entry(1, "before", hour())).await.unwrap();
    assert!(matches!(
        next(&mut feed, Duration::from_secs(1)).await,
        Change::Put(_)
    ));

    server.kill();
    let bound = CONNECT_TIMEOUT + RESPONSE_TIMEOUT + Duration::from_millis(300);
    for _ in 0..5 {
        let started = Instant::now();
        assert!(store.get(1, now_ms()).await.is_err(), "redis is down");
        assert!(
            started.elapsed() < bound,
            "failed in {:?}",
            started.elapsed()
        );
        assert!(store.ping().await.is_err());
    }

    server.restart();
    eventually(Duration::from_secs(3), || store.ping()).await;
    assert!(
        store.get(1, now_ms()).await.unwrap().is_none(),
        "restarted empty"
    );
    store.put(entry(2, "after", hour())).await.unwrap();
    // The feed reconnects and asks for a rebuild, then relays new changes again.
    assert_eq!(
        next(&mut feed, Duration::from_secs(5)).await,
        Change::Resync,
        "resync comes before any change after the restart"
    );
    store.put(entry(3, "later", hour())).await.unwrap();
    loop {
        if let Change::Put(meta) = next(&mut feed, Duration::from_secs(2)).await
            && meta.id == 3
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_built_while_redis_is_down_works_once_it_is_up() {
    let mut server = RedisServer::start();
    server.kill();
    assert!(
        RedisStore::connect_and_ping(options(&server))
            .await
            .is_err(),
        "the eager constructor checks"
    );
    let store = RedisStore::connect(options(&server)).unwrap();
    let mut feed = store.changes(OriginFilter::All);
    let started = Instant::now();
    assert!(store.put(entry(1, "x", hour())).await.is_err());
    assert!(started.elapsed() < CONNECT_TIMEOUT + RESPONSE_TIMEOUT + Duration::from_millis(300));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.recv())
            .await
            .is_err(),
        "no resync before redis is reachable"
    );

    server.restart();
    eventually(Duration::from_secs(3), || store.put(entry(1, "x", hour()))).await;
    assert_eq!(
        next(&mut feed, Duration::from_secs(5)).await,
        Change::Resync
    );
    assert!(store.get(1, now_ms()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_makes_calls_time_out_instead_of_hanging() {
    let server = RedisServer::start();
    let store = RedisStore::connect_and_ping(options(&server))
        .await
        .unwrap();
    store.put(entry(1, "x", hour())).await.unwrap();

    server.signal("-STOP");
    let started = Instant::now();
    let result = store.get(1, now_ms()).await;
    let elapsed = started.elapsed();
    server.signal("-CONT");
    assert!(result.is_err(), "a paused redis cannot answer");
    assert!(
        elapsed < RESPONSE_TIMEOUT + Duration::from_millis(400),
        "failed after {elapsed:?}"
    );

    let got = eventually(Duration::from_secs(3), || store.get(1, now_ms())).await;
    assert_eq!(got.unwrap().body, "x");
}
