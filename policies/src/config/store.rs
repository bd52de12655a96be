//! `[store]`: where cached answers live (this process, or a Redis shared by several
//! gateways) and the circuit breaker that stops asking a failing store.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use super::checker::Checker;
use crate::raw::RawStore;
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// Entries live in this process.
    Memory {
        /// File the entries are written to every `snapshot_interval` and restored from at
        /// start; `None` keeps them only in memory.
        snapshot: Option<PathBuf>,
        snapshot_interval: Duration,
    },
    /// Entries live in Redis, shared by every gateway that uses the same `key_prefix`.
    Redis {
        /// `redis://[user:password@]host:port[/db]`; secret because it may hold a password.
        url: Secret<String>,
        /// Prepended to every key and stream name.
        key_prefix: String,
        connect_timeout: Duration,
        /// Longest wait for one command's answer before the call counts as failed.
        response_timeout: Duration,
        /// Approximate length the stream of inserts and deletes is trimmed to.
        stream_max_len: NonZeroUsize,
    },
}

impl StoreSettings {
    /// `"memory"` or `"redis"`, as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Redis { .. } => "redis",
        }
    }
}

/// When the gateway stops asking a failing store, and when it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBreaker {
    /// Consecutive failures that open the breaker.
    pub failures: NonZeroU32,
    /// How long an open breaker waits before letting one probe through.
    pub retry_after: Duration,
}

const KINDS: &str = "\"memory\" or \"redis\"";

pub(super) fn store(c: &mut Checker, raw: &RawStore) -> StoreSettings {
    let kind = raw.kind.as_deref().unwrap_or("memory");
    // Keys of the other kind are refused rather than ignored: a `url` next to
    // `kind = "memory"` means the file does not do what its author thinks.
    let memory_keys = [
        ("snapshot", raw.snapshot.is_some()),
        ("snapshot_interval", raw.snapshot_interval.is_some()),
    ];
    let redis_keys = [
        ("url", raw.url.is_some()),
        ("key_prefix", raw.key_prefix.is_some()),
        ("connect_timeout", raw.connect_timeout.is_some()),
        ("response_timeout", raw.response_timeout.is_some()),
        ("stream_max_len", raw.stream_max_len.is_some()),
    ];
    let refuse = |c: &mut Checker, keys: &[(&str, bool)], owner: &str| {
        for (key, _) in keys.iter().filter(|(_, present)| *present) {
            c.report(
                format!("store.{key}"),
                format!("applies only to kind = \"{owner}\", not to kind = \"{kind}\""),
            );
        }
    };
    match kind {
        "memory" => {
            refuse(c, &redis_keys, "redis");
            memory(c, raw)
        }
        "redis" => {
            refuse(c, &memory_keys, "memory");
            redis(c, raw)
        }
        other => {
            c.report(
                "store.kind",
                format!("{other:?} is not a store kind (expected {KINDS})"),
            );
            memory(c, raw)
        }
    }
}

fn memory(c: &mut Checker, raw: &RawStore) -> StoreSettings {
    let snapshot = raw.snapshot.as_deref().map(|path| {
        if path.trim().is_empty() {
            c.report(
                "store.snapshot",
                "must not be empty (leave it out to keep no snapshot)",
            );
        }
        PathBuf::from(path)
    });
    StoreSettings::Memory {
        snapshot,
        snapshot_interval: c.positive_duration(
            "store.snapshot_interval",
            raw.snapshot_interval.as_deref(),
            "60s",
        ),
    }
}

fn redis(c: &mut Checker, raw: &RawStore) -> StoreSettings {
    let url = match raw.url.as_deref() {
        None => {
            c.report("store.url", "is required with kind = \"redis\"");
            String::new()
        }
        Some(text) => {
            if let Err(message) = check_redis_url(text) {
                c.report("store.url", message);
            }
            text.to_owned()
        }
    };
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| "cachet".to_owned());
    if key_prefix.is_empty()
        || key_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        c.report(
            "store.key_prefix",
            format!("{key_prefix:?} must be non-empty, without spaces or control characters"),
        );
    }
    StoreSettings::Redis {
        url: Secret::new(url),
        key_prefix,
        connect_timeout: c.positive_duration(
            "store.connect_timeout",
            raw.connect_timeout.as_deref(),
            "1s",
        ),
        response_timeout: c.positive_duration(
            "store.response_timeout",
            raw.response_timeout.as_deref(),
            "250ms",
        ),
        stream_max_len: c.positive("store.stream_max_len", raw.stream_max_len, 100_000),
    }
}

pub(super) fn breaker(c: &mut Checker, raw: &RawStore) -> StoreBreaker {
    StoreBreaker {
        failures: c.positive_u32("store.breaker_failures", raw.breaker_failures, 3),
        retry_after: c.positive_duration(
            "store.breaker_retry_after",
            raw.breaker_retry_after.as_deref(),
            "2s",
        ),
    }
}

/// Checks a Redis URL without echoing it: it may hold a password.
fn check_redis_url(text: &str) -> std::result::Result<(), String> {
    const SHAPE: &str = "redis://[user:password@]host:port[/db]";
    let url = url::Url::parse(text).map_err(|e| format!("is not a url ({e}); expected {SHAPE}"))?;
    match url.scheme() {
        "redis" | "rediss" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "redis" | "rediss" => Err(format!("has no host; expected {SHAPE}")),
        "redis+unix" | "unix" if !url.path().is_empty() => Ok(()),
        scheme => Err(format!(
            "has scheme {scheme:?}; expected {SHAPE} (or rediss://, redis+unix://, unix://)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(StoreSettings, StoreBreaker), Vec<String>> {
        let raw: RawStore = toml::from_str(text).expect("well-typed store table");
        let mut c = Checker::default();
        let settings = store(&mut c, &raw);
        let breaker = breaker(&mut c, &raw);
        if c.problems.is_empty() {
            Ok((settings, breaker))
        } else {
            Err(c.problems.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn memory_is_the_default_without_snapshot() {
        let (settings, breaker) = check("").expect("valid");
        assert_eq!(
            settings,
            StoreSettings::Memory {
                snapshot: None,
                snapshot_interval: Duration::from_secs(60)
            }
        );
        assert_eq!(breaker.failures.get(), 3);
        assert_eq!(breaker.retry_after, Duration::from_secs(2));
    }

    #[test]
    fn redis_takes_its_defaults() {
        let (settings, _) =
            check("kind = \"redis\"\nurl = \"redis://:pw@10.0.0.1:6380/2\"\n").expect("valid");
        let StoreSettings::Redis {
            url,
            key_prefix,
            connect_timeout,
            response_timeout,
            stream_max_len,
        } = &settings
        else {
            panic!("expected redis, got {settings:?}");
        };
        assert_eq!(url.expose(), "redis://:pw@10.0.0.1:6380/2");
        assert_eq!(key_prefix, "cachet");
        assert_eq!(*connect_timeout, Duration::from_secs(1));
        assert_eq!(*response_timeout, Duration::from_millis(250));
        assert_eq!(stream_max_len.get(), 100_000);
        assert!(!format!("{settings:?}").contains("pw"), "{settings:?}");
        assert_eq!(settings.kind(), "redis");
    }

    #[test]
    fn keys_of_the_other_kind_are_refused() {
        assert_eq!(
            check("kind = \"memory\"\nurl = \"redis://h:1\"\nstream_max_len = 5\n")
                .expect_err("should be refused"),
            [
                "store.url: applies only to kind = \"redis\", not to kind = \"memory\"",
                "store.stream_max_len: applies only to kind = \"redis\", not to kind = \"memory\"",
            ]
        );
        assert_eq!(
            check("kind = \"redis\"\nurl = \"redis://h:1\"\nsnapshot = \"s.bin\"\n")
                .expect_err("should be refused"),
            ["store.snapshot: applies only to kind = \"memory\", not to kind = \"redis\""]
        );
    }

    #[test]
    fn bad_values_are_reported_without_the_password() {
        let problems = check(
            "kind = \"redis\"\nurl = \"http://:secretpw@h:1\"\nkey_prefix = \"a b\"\n\
             response_timeout = \"0s\"\nbreaker_failures = 0\nbreaker_retry_after = \"soon\"\n",
        )
        .expect_err("should be refused");
        let paths: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            [
                "store.url",
                "store.key_prefix",
                "store.response_timeout",
                "store.breaker_failures",
                "store.breaker_retry_after"
            ],
            "{problems:#?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("secretpw")),
            "{problems:#?}"
        );
        assert_eq!(
            check("kind = \"redis\"\n").expect_err("should be refused"),
            ["store.url: is required with kind = \"redis\""]
        );
        assert_eq!(
            check("kind = \"disk\"\n").expect_err("should be refused"),
            ["store.kind: \"disk\" is not a store kind (expected \"memory\" or \"redis\")"]
        );
        assert_eq!(
            check("snapshot = \"\"\nsnapshot_interval = \"0s\"\n")
                .expect_err("should be refused")
                .len(),
            2
        );
    }

    #[test]
    fn unix_socket_urls_are_accepted() {
        check("kind = \"redis\"\nurl = \"unix:///run/redis.sock\"\n").expect("valid");
        check("kind = \"redis\"\nurl = \"rediss://h:6380\"\n").expect("valid");
    }
}
