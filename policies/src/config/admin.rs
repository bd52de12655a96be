//! `[admin]`: the admin API's token and listener, and the token `/metrics` may require. A token
//! is written in the file or named by an environment variable (looked up by the caller, so that
//! this crate reads no environment), and a placeholder or a guessable token is refused.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::checker::Checker;
use crate::raw::RawAdmin;
use crate::secret::Secret;

/// Looks an environment variable up by name; the gateway passes `std::env::var`, tests a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The admin API is on only with a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub token: Secret<String>,
    /// Its own listener; `None` serves the admin routes on `[server] listen` with the API.
    pub listen: Option<SocketAddr>,
}

impl AdminSettings {
    /// Shortest token accepted: a short token can be guessed.
    pub const MIN_TOKEN_CHARS: usize = 16;

    /// Whether a presented token is this one (compared in constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        self.token.matches(presented)
    }
}

/// Least estimated entropy of a token, in bits (see [`weak_token`]).
const MIN_TOKEN_BITS: f64 = 80.0;

/// Words that mark a value someone was meant to replace. Random hex or base64 of the length
/// required contains none of them except by a chance far below one in a million.
const PLACEHOLDER_MARKERS: [&str; 17] = [
    "replace",
    "change",
    "placeholder",
    "example",
    "your",
    "insert",
    "dummy",
    "sample",
    "secret",
    "password",
    "passwd",
    "token",
    "todo",
    "fixme",
    "xxxx",
    "default",
    "openssl",
];

/// Why `token` is not fit to guard an API, if it is not: too short, with spaces or control
/// characters, a placeholder, or too predictable. Predictability is estimated two ways and the
/// lower counts: the characters' frequencies (Shannon entropy times length, which catches
/// repetition such as `abababab…`), and a walk that counts a character equal or next to the one
/// before it (`0123…`, `aaaa…`) as one bit and any other as a pick from the character classes
/// the token uses. A random 32-digit hex token scores about 115 bits; 16 random hex digits or
/// `0123456789abcdef` score under 80 and are refused.
pub fn weak_token(token: &str) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < AdminSettings::MIN_TOKEN_CHARS {
        return Some(format!(
            "must be at least {} characters long",
            AdminSettings::MIN_TOKEN_CHARS
        ));
    }
    if chars.iter().any(|ch| ch.is_whitespace() || ch.is_control()) {
        return Some("must not contain spaces or control characters".to_owned());
    }
    let lower = token.to_lowercase();
    if let Some(marker) = PLACEHOLDER_MARKERS.iter().find(|m| lower.contains(*m)) {
        return Some(format!(
            "looks like a placeholder (it contains {marker:?}): generate a token, e.g. with \
             `openssl rand -hex 32`"
        ));
    }
    let bits = estimated_bits(&chars);
    if bits < MIN_TOKEN_BITS {
        return Some(format!(
            "is too predictable (about {bits:.0} bits, at least {MIN_TOKEN_BITS:.0} needed): \
             generate a token, e.g. with `openssl rand -hex 32`"
        ));
    }
    None
}

fn estimated_bits(chars: &[char]) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    for &ch in chars {
        *counts.entry(ch).or_default() += 1;
    }
    let n = chars.len() as f64;
    let shannon: f64 = counts
        .values()
        .map(|&count| {
            let p = count as f64 / n;
            -p * p.log2()
        })
        .sum::<f64>()
        * n;
    let classes: usize = [
        (chars.iter().any(char::is_ascii_lowercase), 26),
        (chars.iter().any(char::is_ascii_uppercase), 26),
        (chars.iter().any(char::is_ascii_digit), 10),
        (chars.iter().any(|c| !c.is_ascii_alphanumeric()), 32),
    ]
    .iter()
    .filter_map(|&(present, size)| present.then_some(size))
    .sum();
    let pick = (classes.max(2) as f64).log2();
    let walk: f64 = chars
        .iter()
        .enumerate()
        .map(|(i, &ch)| match i.checked_sub(1).map(|j| chars[j]) {
            Some(prev) if (ch as i64 - prev as i64).abs() <= 1 => 1.0,
            _ => pick,
        })
        .sum();
    shannon.min(walk)
}

/// A token from `value` or from the environment variable `env_name` (exactly one of them),
/// checked by [`weak_token`]. Problems name `{at}.{field}` or `{at}.{field}_env`; a token's
/// value is never quoted, since problems reach logs.
fn token(
    c: &mut Checker,
    env: EnvLookup<'_>,
    field: &str,
    value: Option<&str>,
    env_name: Option<&str>,
) -> Option<Secret<String>> {
    let at = format!("admin.{field}");
    let env_at = format!("admin.{field}_env");
    let (token, path) = match (value, env_name) {
        (Some(_), Some(_)) => {
            c.report(&at, format!("give either {at} or {env_at}, not both"));
            return None;
        }
        (Some(token), None) => (token.to_owned(), at),
        (None, Some(name)) => match env(name) {
            Some(token) => (token, env_at),
            None => {
                c.report(
                    &env_at,
                    format!("the environment variable {name} is not set (it holds the token)"),
                );
                return None;
            }
        },
        (None, None) => return None,
    };
    if let Some(problem) = weak_token(&token) {
        c.report(path, problem);
    }
    Some(Secret::new(token))
}

/// The admin API's settings (`None`: off) and the token `/metrics` requires (`None`: open).
pub(super) fn admin(
    c: &mut Checker,
    raw: &RawAdmin,
    env: EnvLookup<'_>,
) -> (Option<AdminSettings>, Option<Secret<String>>) {
    let token = token(
        c,
        env,
        "token",
        raw.token.as_deref(),
        raw.token_env.as_deref(),
    );
    let metrics_token = token_of_metrics(c, raw, env);
    let listen = raw.listen.as_deref().and_then(|text| {
        text.parse::<SocketAddr>()
            .map_err(|_| {
                c.report(
                    "admin.listen",
                    format!("{text:?} is not an address like \"127.0.0.1:9090\""),
                );
            })
            .ok()
    });
    if raw.listen.is_some() && raw.token.is_none() && raw.token_env.is_none() {
        c.report(
            "admin.listen",
            "the admin API is off without admin.token or admin.token_env",
        );
    }
    let admin = token.map(|token| AdminSettings { token, listen });
    (admin, metrics_token)
}

fn token_of_metrics(c: &mut Checker, raw: &RawAdmin, env: EnvLookup<'_>) -> Option<Secret<String>> {
    token(
        c,
        env,
        "metrics_token",
        raw.metrics_token.as_deref(),
        raw.metrics_token_env.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "9f1c4be07a3d52e86c0b7f49a1d3e65b";

    fn check(text: &str, vars: &[(&str, &str)]) -> (Option<AdminSettings>, Vec<String>) {
        let raw: RawAdmin = toml::from_str(text).expect("well-typed admin table");
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = |name: &str| vars.get(name).cloned();
        let mut c = Checker::default();
        let (admin, _) = admin(&mut c, &raw, &lookup);
        (admin, c.problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_random_token_is_accepted_and_hidden() {
        let (admin, problems) = check(&format!("token = \"{STRONG}\"\n"), &[]);
        assert!(problems.is_empty(), "{problems:#?}");
        let admin = admin.expect("admin on");
        assert!(admin.accepts(STRONG));
        assert!(!admin.accepts("9f1c4be07a3d52e86c0b7f49a1d3e65c"));
        assert_eq!(
            format!("{admin:?}"),
            "AdminSettings { token: ***, listen: None }"
        );
        assert!(check("", &[]).0.is_none());
    }

    #[test]
    fn weak_tokens_are_refused_with_the_field_path() {
        let refused = |token: &str| {
            let (_, problems) = check(&format!("token = {token:?}\n"), &[]);
            assert_eq!(problems.len(), 1, "{token}: {problems:#?}");
            assert!(problems[0].starts_with("admin.token: "), "{problems:#?}");
            assert!(
                !problems[0].contains(token),
                "the token is quoted: {problems:#?}"
            );
            problems[0].clone()
        };
        assert!(refused("short").contains("at least 16 characters"));
        assert!(refused("has spaces in it, sadly").contains("spaces"));
        assert!(refused("replace-with-output-of-openssl-rand-hex-32").contains("placeholder"));
        assert!(refused("ChangeMe-4f8a1c9e2b7d").contains("placeholder"));
        for predictable in [
            "0123456789abcdef",
            "abcdefghijklmnopqrstuvwxyz",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "acacacacacacacacacacacacacacacac",
            // 64 random bits are not enough either.
            "4f8a1c9e2b7d6035",
        ] {
            assert!(
                refused(predictable).contains("too predictable"),
                "{predictable}"
            );
        }
        // What `openssl rand -hex 16`, `-base64 18` and a UUID look like.
        for good in [
            "c2b4e8f01a9d6e3b7f5c0a2d4e6b8f1a",
            "q8Zp3LwV+e7Rk1Tn0yB4xH2f",
            "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
            STRONG,
        ] {
            assert_eq!(weak_token(good), None, "{good}");
        }
    }

    #[test]
    fn a_token_can_come_from_the_environment() {
        let (admin, problems) = check(
            "token_env = \"CACHET_ADMIN_TOKEN\"\n",
            &[("CACHET_ADMIN_TOKEN", STRONG)],
        );
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(admin.expect("admin on").accepts(STRONG));

        let (_, problems) = check("token_env = \"CACHET_ADMIN_TOKEN\"\n", &[]);
        assert_eq!(
            problems,
            [
                "admin.token_env: the environment variable CACHET_ADMIN_TOKEN is not set (it \
                 holds the token)"
            ]
        );
        let (_, problems) = check(
            "token_env = \"T\"\n",
            &[("T", "replace-with-output-of-openssl-rand-hex-32")],
        );
        assert!(
            problems[0].starts_with("admin.token_env: looks like a placeholder"),
            "{problems:#?}"
        );
        let (_, problems) = check(&format!("token = \"{STRONG}\"\ntoken_env = \"T\"\n"), &[]);
        assert!(problems[0].contains("not both"), "{problems:#?}");
    }

    #[test]
    fn listen_and_metrics_token() {
        let raw: RawAdmin = toml::from_str(&format!(
            "listen = \"127.0.0.1:9090\"\ntoken = \"{STRONG}\"\nmetrics_token_env = \"M\"\n"
        ))
        .expect("admin table");
        let mut c = Checker::default();
        let lookup =
            |name: &str| (name == "M").then(|| "d41d8cd98f00b204e9800998ecf8427e".to_owned());
        let (admin, metrics) = admin(&mut c, &raw, &lookup);
        assert!(c.problems.is_empty(), "{:#?}", c.problems);
        assert_eq!(
            admin.and_then(|a| a.listen),
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert!(metrics.is_some_and(|m| m.matches("d41d8cd98f00b204e9800998ecf8427e")));

        let (_, problems) = check("listen = \"nowhere\"\n", &[]);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("admin.listen: \"nowhere\" is not an address"));
        assert!(problems[1].starts_with("admin.listen: the admin API is off"));
        let (_, problems) = check("metrics_token = \"0123456789abcdef\"\n", &[]);
        assert!(
            problems[0].starts_with("admin.metrics_token: is too predictable"),
            "{problems:#?}"
        );
    }
}
