//! A gateway on Redis under steady load while Redis crashes (SIGKILL, then a restart on the
//! same port, empty) or freezes (SIGSTOP for longer than the response timeout, then SIGCONT):
//! no request fails or hangs, the upstream answers while the store is gone, `/healthz` and the
//! metrics say so, and caching resumes once Redis is back. Also a gateway that starts before
//! its Redis does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cachet_tests::{Gateway, RedisServer, ScriptedUpstream, ports, probe};
use tokio::task::JoinHandle;

use crate::fleet::*;
use crate::support::*;

/// Requests per second of the load.
const RATE_PER_S: u64 = 20;
/// Load before the fault, during it, and after it.
const BEFORE: Duration = Duration::from_secs(2);
const FAULT: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(3);
/// A request that takes longer has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `/healthz` and `/metrics` are read during the load.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for the gateway to report the store up again after Redis came back (the
/// breaker probes again 1 s after it opened).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Questions cached before the load and asked again and again during it.
const REPEATED: [&str; 4] = [EVEREST, FRANCE, BOILING, PHOTOSYNTHESIS];

/// One request of the load; times are offsets from the start of the load.
#[derive(Debug)]
struct Sample {
    sent: Duration,
    done: Duration,
    status: Option<u16>,
    cache: Option<String>,
    error: Option<String>,
}

/// One reading of `/healthz` and `/metrics` during the load.
#[derive(Debug)]
struct Reading {
    at: Duration,
    healthz_code: Option<u16>,
    status: Option<String>,
    store_state: Option<String>,
    store_up: Option<f64>,
}

/// When the fault began and ended, as offsets from the start of the load.
#[derive(Debug)]
struct Window {
    start: Duration,
    end: Duration,
}

#[test]
fn redis_killed_and_restarted_under_load() {
    under_load(
        |redis| redis.kill9(),
        |redis| redis.restart().expect("restart redis"),
    );
}

#[test]
fn redis_frozen_beyond_the_response_timeout_under_load() {
    under_load(
        |redis| redis.pause().expect("SIGSTOP redis"),
        |redis| redis.resume().expect("SIGCONT redis"),
    );
}

#[test]
fn a_gateway_started_while_redis_is_down_serves_and_catches_up() {
    let upstream = ScriptedUpstream::start().unwrap();
    let port = ports::free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let config = || {
        let mut config = base_config(&upstream);
        config.redis_store(&url, "cachet");
        config
    };
    let mut first = Gateway::start(&config()).expect("a gateway must start without its redis");
    // The upstream answers meanwhile, and the gateway says it is degraded.
    let started = Instant::now();
    loop {
        let response = ask(&first, KEY_A, EVEREST);
        assert!(
            matches!(response.cache(), Some("miss" | "bypass")),
            "{response:#?}"
        );
        let health = first.healthz().unwrap();
        if health.status() == Some("degraded") && health.store_state() == Some("down") {
            break;
        }
        assert!(
            started.elapsed() < RECOVERY_TIMEOUT,
            "/healthz does not say degraded without redis: {health:?}"
        );
    }

    let redis = RedisServer::start_on(port).unwrap();
    wait_until_up(&first);
    // It follows what another gateway stores, and caches again itself.
    let second = Gateway::start(&config()).unwrap();
    let stored = ask_stored(&second, KEY_A, FRANCE);
    let (hit, _) = peek_until(
        &first,
        KEY_A,
        FRANCE_PARAPHRASE,
        "hit-semantic",
        RECOVERY_TIMEOUT,
    );
    assert_eq!(hit.content(), stored.content());
    let own = ask_stored(&first, KEY_A, BOILING);
    let again = peek(&second, KEY_A, BOILING);
    assert_eq!(again.cache(), Some("hit-exact"), "{again:#?}");
    assert_eq!(again.content(), own.content());
    assert!(first.is_running(), "{}", first.log_tail());
    drop(redis);
}

fn under_load(fault: impl FnOnce(&mut RedisServer), recover: impl FnOnce(&mut RedisServer)) {
    let mut fleet = Fleet::start();
    let mut gateway = fleet.gateways(1).remove(0);
    for question in REPEATED {
        ask_stored(&gateway, KEY_A, question);
    }
    let health = gateway.healthz().unwrap();
    assert_eq!(health.status(), Some("ok"), "{health:?}");
    assert_eq!(health.store_kind(), Some("redis"), "{health:?}");
    assert_eq!(health.store_state(), Some("up"), "{health:?}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let load = runtime.spawn(run_load(gateway.base_url().to_owned(), origin));
    let probes = runtime.spawn(run_probes(
        gateway.base_url().to_owned(),
        origin,
        Arc::clone(&stop),
    ));

    std::thread::sleep(BEFORE.saturating_sub(origin.elapsed()));
    fault(&mut fleet.redis);
    let start = origin.elapsed();
    std::thread::sleep((BEFORE + FAULT).saturating_sub(origin.elapsed()));
    let end = origin.elapsed();
    recover(&mut fleet.redis);
    let window = Window { start, end };

    let samples = runtime.block_on(load).unwrap();
    stop.store(true, Ordering::Relaxed);
    let readings = runtime.block_on(probes).unwrap();
    check_requests(&samples, &window);
    check_readings(&readings, &window);
    check_recovery(&gateway);
    assert!(gateway.is_running(), "{}", gateway.log_tail());
}

/// Sends the load open-loop (each request at its scheduled time, whatever the earlier ones
/// do): every third question new, the others the cached ones in turn.
async fn run_load(base_url: String, origin: Instant) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let url = format!("{base_url}/v1/chat/completions");
    let total = (BEFORE + FAULT + AFTER).as_millis() as u64 * RATE_PER_S / 1000;
    let every = Duration::from_millis(1000 / RATE_PER_S);
    let mut requests: Vec<JoinHandle<Sample>> = Vec::new();
    for n in 0..total {
        tokio::time::sleep_until((origin + every * n as u32).into()).await;
        let question = if n % 3 == 0 {
            format!("Under load, question {n}: what is the square root of {n}?")
        } else {
            REPEATED[n as usize % REPEATED.len()].to_owned()
        };
        let (client, url) = (client.clone(), url.clone());
        requests.push(tokio::spawn(async move {
            let sent = origin.elapsed();
            let result = async {
                let response = client
                    .post(&url)
                    .bearer_auth(KEY_A)
                    .header("content-type", "application/json")
                    .body(chat_body(&question, false))
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let cache = response
                    .headers()
                    .get("x-cachet-cache")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                response.bytes().await?;
                Ok::<_, reqwest::Error>((status, cache))
            }
            .await;
            let (status, cache, error) = match result {
                Ok((status, cache)) => (Some(status), cache, None),
                Err(err) => (None, None, Some(format!("{question}: {err:?}"))),
            };
            Sample {
                sent,
                done: origin.elapsed(),
                status,
                cache,
                error,
            }
        }));
    }
    let mut samples = Vec::new();
    for request in requests {
        samples.push(request.await.unwrap());
    }
    samples
}

/// Reads `/healthz` and `/metrics` every [`PROBE_EVERY`] until `stop`.
async fn run_probes(base_url: String, origin: Instant, stop: Arc<AtomicBool>) -> Vec<Reading> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut readings = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let at = origin.elapsed();
        let health = probe::healthz(&client, &base_url).await.ok();
        let metrics = probe::metrics(&client, &base_url).await.ok();
        readings.push(Reading {
            at,
            healthz_code: health.as_ref().map(|h| h.status_code),
            status: health.as_ref().and_then(|h| h.status().map(str::to_owned)),
            store_state: health.and_then(|h| h.store_state().map(str::to_owned)),
            store_up: metrics.and_then(|m| m.get("cachet_store_up")),
        });
        tokio::time::sleep(PROBE_EVERY).await;
    }
    readings
}

fn check_requests(samples: &[Sample], window: &Window) {
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| s.error.is_some() || s.status != Some(200))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, hung or were not 200 (fault {window:?}): {failed:#?}",
        failed.len(),
        samples.len()
    );
    // Before the fault the cached questions are hits, so that "no hit during the fault" below
    // says something.
    let hits_before = samples
        .iter()
        .filter(|s| s.done < window.start && s.cache.as_deref() == Some("hit-exact"))
        .count();
    assert!(hits_before > 0, "no hit before the fault: {samples:#?}");
    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.sent >= window.start && s.done <= window.end)
        .collect();
    let expected = FAULT.as_millis() as u64 * RATE_PER_S / 1000;
    assert!(
        during.len() as u64 >= expected / 2,
        "only {} of about {expected} requests fell inside the fault {window:?}",
        during.len()
    );
    let served: Vec<_> = during
        .iter()
        .filter(|s| !matches!(s.cache.as_deref(), Some("miss" | "bypass")))
        .collect();
    assert!(
        served.is_empty(),
        "with the store down every request must go to the upstream: {served:#?}"
    );
    let slowest = samples.iter().map(|s| s.done - s.sent).max().unwrap();
    eprintln!(
        "{} requests, {} inside the fault {window:?}, slowest {slowest:?}",
        samples.len(),
        during.len()
    );
}

fn check_readings(readings: &[Reading], window: &Window) {
    let unanswered: Vec<_> = readings
        .iter()
        .filter(|r| r.healthz_code != Some(200))
        .collect();
    assert!(
        unanswered.is_empty(),
        "/healthz must answer 200 throughout: {unanswered:#?}"
    );
    let during: Vec<_> = readings
        .iter()
        .filter(|r| r.at >= window.start && r.at <= window.end)
        .collect();
    assert!(
        during
            .iter()
            .any(|r| r.status.as_deref() == Some("degraded")
                && r.store_state.as_deref() == Some("down")),
        "/healthz never said degraded during the fault {window:?}: {during:#?}"
    );
    assert!(
        during.iter().any(|r| r.store_up == Some(0.0)),
        "cachet_store_up never went to 0 during the fault {window:?}: {during:#?}"
    );
}

/// Waits until `/healthz` reports the store up again.
fn wait_until_up(gateway: &Gateway) {
    let started = Instant::now();
    loop {
        let health = gateway.healthz().unwrap();
        if health.status() == Some("ok") && health.store_state() == Some("up") {
            return;
        }
        assert!(
            started.elapsed() < RECOVERY_TIMEOUT,
            "the store was not reported up within {RECOVERY_TIMEOUT:?}: {health:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the fault: the store is reported up again, errors were counted, and a new answer
/// is cached and served.
fn check_recovery(gateway: &Gateway) {
    wait_until_up(gateway);
    let metrics = gateway.metrics().unwrap();
    assert_eq!(metrics.get("cachet_store_up"), Some(1.0));
    assert!(
        metrics.sum("cachet_store_errors_total") > 0.0,
        "the fault's errors were not counted"
    );
    let question = "After the fault, what is the tallest mountain in Africa?";
    let stored = ask_stored(gateway, KEY_A, question);
    let hit = peek(gateway, KEY_A, question);
    assert_eq!(hit.cache(), Some("hit-exact"), "{hit:#?}");
    assert_eq!(hit.content(), stored.content());
}
