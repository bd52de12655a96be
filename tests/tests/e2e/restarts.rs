//! Gateways that stop and start again: the embedded store comes back from its snapshot (and
//! refuses a damaged one without failing to start), a Redis-backed gateway finds its entries
//! in Redis.

use std::time::Duration;

use cachet_tests::{Gateway, ScriptedUpstream};

use crate::fleet::*;
use crate::support::*;

/// How long a graceful shutdown (which writes the snapshot) may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether a log line says the snapshot was refused.
fn refuses_snapshot(log: &str) -> bool {
    log.lines().any(|line| {
        let line = line.to_lowercase();
        line.contains("snapshot")
            && ["refus", "corrupt", "truncat", "invalid", "damaged"]
                .iter()
                .any(|word| line.contains(word))
    })
}

#[test]
fn the_embedded_store_comes_back_from_its_snapshot_and_refuses_a_damaged_one() {
    let upstream = ScriptedUpstream::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cachet.snapshot");
    // An interval far beyond the test: only the graceful shutdown writes the snapshot.
    let config = |path: &std::path::Path| {
        let mut config = base_config(&upstream);
        config.memory_store_with_snapshot(path, "1h");
        config
    };

    let mut first = Gateway::start(&config(&snapshot)).unwrap();
    let everest = ask_stored(&first, KEY_A, EVEREST);
    let france = ask_stored(&first, KEY_B, FRANCE);
    assert!(!snapshot.exists(), "no snapshot before the shutdown");
    let status = first.terminate(SHUTDOWN_TIMEOUT).unwrap();
    assert!(
        status.success(),
        "SIGTERM must end the gateway cleanly: {status}"
    );
    let written = std::fs::read(&snapshot).expect("the shutdown writes the snapshot");

    let mut second = Gateway::start(&config(&snapshot)).unwrap();
    for (key, question, expected, answer) in [
        (KEY_A, EVEREST, "hit-exact", &everest),
        (KEY_A, EVEREST_PARAPHRASE, "hit-semantic", &everest),
        (KEY_B, FRANCE, "hit-exact", &france),
        (KEY_A, FRANCE, "miss", &france),
    ] {
        let response = peek(&second, key, question);
        assert_eq!(
            response.cache(),
            Some(expected),
            "{question}: {response:#?}"
        );
        if expected != "miss" {
            assert_eq!(response.content(), answer.content());
        }
    }
    assert_eq!(upstream.completion_calls(), 3);
    assert!(second.is_running(), "{}", second.log_tail());
    drop(second);

    // A snapshot cut mid-file is refused whole: the gateway starts, says so, and serves.
    let damaged = dir.path().join("damaged.snapshot");
    std::fs::write(&damaged, &written[..written.len() / 2]).unwrap();
    let mut third = Gateway::start(&config(&damaged)).unwrap();
    // The log is read on its own thread: give the line written before `listening` a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !refuses_snapshot(&third.log_tail()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        refuses_snapshot(&third.log_tail()),
        "no log line refuses the damaged snapshot:\n{}",
        third.log_tail()
    );
    let refused = ask_stored(&third, KEY_A, EVEREST);
    assert_ne!(
        refused.content(),
        everest.content(),
        "nothing may be loaded"
    );
    let again = peek(&third, KEY_A, EVEREST);
    assert_eq!(again.cache(), Some("hit-exact"), "{again:#?}");
    assert_eq!(again.content(), refused.content());
    assert!(third.is_running(), "{}", third.log_tail());
}

#[test]
fn a_redis_backed_gateway_finds_its_entries_after_a_restart() {
    let fleet = Fleet::start();
    let mut first = fleet.gateways(1).remove(0);
    let everest = ask_stored(&first, KEY_A, EVEREST);
    let status = first.terminate(SHUTDOWN_TIMEOUT).unwrap();
    assert!(
        status.success(),
        "SIGTERM must end the gateway cleanly: {status}"
    );

    let mut second = fleet.gateways(1).remove(0);
    let exact = peek(&second, KEY_A, EVEREST);
    assert_eq!(exact.cache(), Some("hit-exact"), "{exact:#?}");
    assert_eq!(exact.content(), everest.content());
    let semantic = peek(&second, KEY_A, EVEREST_PARAPHRASE);
    assert_eq!(semantic.cache(), Some("hit-semantic"), "{semantic:#?}");
    assert_eq!(fleet.upstream.completion_calls(), 1);
    assert!(second.is_running(), "{}", second.log_tail());
}

#[test]
fn the_periodic_snapshot_survives_a_crash() {
    let upstream = ScriptedUpstream::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cachet.snapshot");
    let mut config = base_config(&upstream);
    config.memory_store_with_snapshot(&snapshot, "1s");

    let first = Gateway::start(&config).unwrap();
    let everest = ask_stored(&first, KEY_A, EVEREST);
    // Wait for a snapshot written after the answer was stored, then crash (SIGKILL: no
    // shutdown snapshot).
    let stored_at = std::time::SystemTime::now();
    let started = std::time::Instant::now();
    while std::fs::metadata(&snapshot)
        .and_then(|meta| meta.modified())
        .map_or(true, |modified| modified <= stored_at)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no snapshot was written within 10 s with snapshot_interval = 1s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(first);

    let second = Gateway::start(&config).unwrap();
    let hit = peek(&second, KEY_A, EVEREST);
    assert_eq!(hit.cache(), Some("hit-exact"), "{hit:#?}");
    assert_eq!(hit.content(), everest.content());
}
