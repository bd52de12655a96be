//! Gateway config files for the tests: `configs/default.toml` with the test's changes.

use std::fmt::Write as _;
use std::path::Path;

use toml::{Table, Value};

use crate::{Error, Result, paths};

/// A gateway config as ordered TOML sections.
///
/// The order matters because categories are tried in the order they are written, and a
/// `toml::Table` does not keep it; so the sections are kept in a list and rendered one by
/// one, nested tables inside a section written as dotted keys (`match.keywords = [...]`).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    sections: Vec<(String, Table)>,
}

impl GatewayConfig {
    /// `configs/default.toml`, listening on a free port and forwarding misses to `upstream_url`
    /// (a base URL ending in `/v1`) instead of starting the bundled engine, with an embedded
    /// store that neither reads nor writes a snapshot.
    pub fn default_with_upstream(upstream_url: &str) -> Result<Self> {
        let mut config = Self::from_file(&paths::repo_root().join("configs/default.toml"))?;
        config.sections.retain(|(name, _)| name != "engine");
        config.set("server.listen", "127.0.0.1:0")?;
        config.set("upstream.url", upstream_url)?;
        // The default snapshot path is relative to the repository: gateways under test would
        // share it, and one could start with the entries another left behind.
        config.remove("store.snapshot")?;
        config.remove("store.snapshot_interval")?;
        // Shadow checks re-ask the upstream for a random share of semantic hits: tests that
        // count upstream calls would count them too. The tests of shadow checks turn them on.
        config.without_shadow_checks();
        Ok(config)
    }

    /// Sets `shadow_rate = 0` in every category that is cached.
    pub fn without_shadow_checks(&mut self) -> &mut Self {
        for (name, table) in &mut self.sections {
            let cached = table.get("cacheable").and_then(Value::as_bool) != Some(false);
            if name.starts_with("categories.") && cached {
                table.insert("shadow_rate".into(), Value::Float(0.0));
            }
        }
        self
    }

    /// Parses a config file into its sections, in the order of their headers.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses TOML text whose top level holds only tables (`[server]`, `[categories.x]`, ...).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let root: Table = toml::from_str(text)?;
        let headers = section_headers(text);
        let mut sections = Vec::new();
        for header in &headers {
            let Some(table) = lookup(&root, header) else {
                continue;
            };
            let mut table = table.clone();
            // A table that has its own header (`[a.b]` under `[a]`) is written as its own
            // section, not a second time as dotted keys of its parent.
            for other in &headers {
                if let Some(rest) = other
                    .strip_prefix(header.as_str())
                    .and_then(|rest| rest.strip_prefix('.'))
                {
                    remove_dotted(&mut table, rest);
                }
            }
            sections.push((header.clone(), table));
        }
        Ok(Self { sections })
    }

    /// Sets `key` (a dotted path such as `categories.code.ttl`) in the section that holds it,
    /// the one with the longest matching name.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> Result<&mut Self> {
        let (table, rest) = self.section_for(key)?;
        insert_dotted(table, rest, value.into());
        Ok(self)
    }

    /// Removes `key`; removing a whole section (`categories.live`) drops it from the file.
    pub fn remove(&mut self, key: &str) -> Result<&mut Self> {
        if let Some(position) = self.sections.iter().position(|(name, _)| name == key) {
            self.sections.remove(position);
            return Ok(self);
        }
        let (table, rest) = self.section_for(key)?;
        remove_dotted(table, rest);
        Ok(self)
    }

    /// Adds a section (`categories.faq`) before the section named `before`, or at the end.
    pub fn add_section(&mut self, name: &str, table: Table, before: Option<&str>) -> &mut Self {
        let position = before
            .and_then(|before| self.sections.iter().position(|(n, _)| n == before))
            .unwrap_or(self.sections.len());
        self.sections.insert(position, (name.to_owned(), table));
        self
    }

    /// Replaces the section `name` with `table`, or adds it at the end.
    pub fn replace_section(&mut self, name: &str, table: Table) -> &mut Self {
        match self.sections.iter_mut().find(|(n, _)| n == name) {
            Some((_, section)) => *section = table,
            None => self.sections.push((name.to_owned(), table)),
        }
        self
    }

    /// Stores entries in the Redis at `url` (`redis://127.0.0.1:PORT`) under `key_prefix`,
    /// with the short timeouts the tests use: connect 1 s, response 250 ms, the breaker
    /// opening after 3 failures and probing again after 1 s.
    pub fn redis_store(&mut self, url: &str, key_prefix: &str) -> &mut Self {
        let mut store = Table::new();
        store.insert("kind".into(), "redis".into());
        store.insert("url".into(), url.into());
        store.insert("key_prefix".into(), key_prefix.into());
        store.insert("connect_timeout".into(), "1s".into());
        store.insert("response_timeout".into(), "250ms".into());
        store.insert("breaker_failures".into(), 3.into());
        store.insert("breaker_retry_after".into(), "1s".into());
        self.replace_section("store", store)
    }

    /// Keeps entries in the embedded store, snapshotted to `snapshot` every `interval` (and
    /// at a graceful shutdown).
    pub fn memory_store_with_snapshot(&mut self, snapshot: &Path, interval: &str) -> &mut Self {
        let mut store = Table::new();
        store.insert("kind".into(), "memory".into());
        store.insert(
            "snapshot".into(),
            snapshot.to_string_lossy().into_owned().into(),
        );
        store.insert("snapshot_interval".into(), interval.into());
        self.replace_section("store", store)
    }

    /// Enables the admin API with this bearer token.
    pub fn admin_token(&mut self, token: &str) -> &mut Self {
        let mut admin = Table::new();
        admin.insert("token".into(), token.into());
        self.replace_section("admin", admin)
    }

    /// The names of the sections, in order.
    pub fn section_names(&self) -> Vec<&str> {
        self.sections
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut text = String::new();
        for (name, table) in &self.sections {
            let _ = writeln!(text, "[{name}]");
            write_dotted(&mut text, "", table);
            text.push('\n');
        }
        text
    }

    fn section_for<'a>(&mut self, key: &'a str) -> Result<(&mut Table, &'a str)> {
        let best = self
            .sections
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| {
                key.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|(_, (name, _))| name.len())
            .map(|(index, (name, _))| (index, name.len()));
        match best {
            Some((index, name_len)) => Ok((&mut self.sections[index].1, &key[name_len + 1..])),
            None => Err(Error::ConfigKey {
                key: key.to_owned(),
            }),
        }
    }
}

/// The `[a.b]` headers of a TOML text, in order.
fn section_headers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let inner = line.strip_prefix('[')?.split(']').next()?;
            (!line.starts_with("[[")).then(|| inner.trim().to_owned())
        })
        .collect()
}

fn lookup<'a>(root: &'a Table, dotted: &str) -> Option<&'a Table> {
    let mut table = root;
    for part in dotted.split('.') {
        table = table.get(part)?.as_table()?;
    }
    Some(table)
}

fn insert_dotted(table: &mut Table, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            table.insert(dotted.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| Value::Table(Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(Table::new());
            }
            if let Value::Table(inner) = entry {
                insert_dotted(inner, rest, value);
            }
        }
    }
}

fn remove_dotted(table: &mut Table, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            table.remove(dotted);
        }
        Some((head, rest)) => {
            if let Some(Value::Table(inner)) = table.get_mut(head) {
                remove_dotted(inner, rest);
            }
        }
    }
}

fn write_dotted(text: &mut String, prefix: &str, table: &Table) {
    for (key, value) in table {
        let path = format!("{prefix}{}", quote_key(key));
        match value {
            Value::Table(inner) => write_dotted(text, &format!("{path}."), inner),
            other => {
                let _ = writeln!(text, "{path} = {other}");
            }
        }
    }
}

fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[categories.zeta]
threshold = 0.9
match.keywords = ["a", "b c"]

[categories.alpha]
ttl = "1d"

[categories.alpha.match]
routes = ["/v1/completions"]
"#;

    #[test]
    fn keeps_section_order_and_dotted_keys() {
        let config = GatewayConfig::parse(SAMPLE).unwrap();
        assert_eq!(
            config.section_names(),
            [
                "server",
                "categories.zeta",
                "categories.alpha",
                "categories.alpha.match"
            ]
        );
        let text = config.to_toml();
        assert!(text.contains("match.keywords = [\"a\", \"b c\"]"), "{text}");
        let reparsed = GatewayConfig::parse(&text).unwrap();
        assert_eq!(reparsed.section_names(), config.section_names());
        assert_eq!(reparsed.to_toml(), text);
    }

    #[test]
    fn set_and_remove_reach_the_longest_section() {
        let mut config = GatewayConfig::parse(SAMPLE).unwrap();
        config.set("categories.zeta.ttl", "5x").unwrap();
        config.set("categories.zeta.match.models", "gpt-*").unwrap();
        config.remove("categories.zeta.threshold").unwrap();
        config.remove("categories.alpha.match").unwrap();
        config.remove("categories.alpha").unwrap();
        let root: Table = toml::from_str(&config.to_toml()).unwrap();
        let zeta = &root["categories"]["zeta"];
        assert_eq!(zeta["ttl"].as_str(), Some("5x"));
        assert_eq!(zeta["match"]["models"].as_str(), Some("gpt-*"));
        assert!(zeta.get("threshold").is_none());
        assert!(root["categories"].get("alpha").is_none());
        assert!(matches!(
            config.set("nowhere.key", 1),
            Err(Error::ConfigKey { .. })
        ));
    }

    #[test]
    fn the_default_config_round_trips_with_categories_in_order() {
        let config = GatewayConfig::default_with_upstream("http://127.0.0.1:9/v1").unwrap();
        let categories: Vec<_> = config
            .section_names()
            .into_iter()
            .filter(|name| name.starts_with("categories."))
            .collect();
        assert!(!categories.is_empty());
        let text = config.to_toml();
        let root: Table = toml::from_str(&text).unwrap();
        assert_eq!(
            root["upstream"]["url"].as_str(),
            Some("http://127.0.0.1:9/v1")
        );
        assert_eq!(root["server"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert!(root["store"].get("snapshot").is_none(), "{text}");
        let reparsed = GatewayConfig::parse(&text).unwrap();
        assert_eq!(reparsed.section_names(), config.section_names());
    }

    #[test]
    fn store_and_admin_sections_replace_or_append() {
        let mut config = GatewayConfig::default_with_upstream("http://127.0.0.1:9/v1").unwrap();
        config
            .redis_store("redis://127.0.0.1:7000", "t1")
            .admin_token("secret");
        let root: Table = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(root["store"]["kind"].as_str(), Some("redis"));
        assert_eq!(
            root["store"]["url"].as_str(),
            Some("redis://127.0.0.1:7000")
        );
        assert_eq!(root["store"]["response_timeout"].as_str(), Some("250ms"));
        assert_eq!(root["admin"]["token"].as_str(), Some("secret"));
        config.memory_store_with_snapshot(Path::new("/tmp/x.snap"), "60s");
        let root: Table = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(root["store"]["kind"].as_str(), Some("memory"));
        assert!(root["store"].get("url").is_none());
        assert_eq!(root["store"]["snapshot"].as_str(), Some("/tmp/x.snap"));
        let stores = config
            .section_names()
            .iter()
            .filter(|n| **n == "store")
            .count();
        assert_eq!(stores, 1);
    }

    #[test]
    fn add_section_inserts_before_a_named_one() {
        let mut config = GatewayConfig::parse(SAMPLE).unwrap();
        config.add_section("categories.first", Table::new(), Some("categories.zeta"));
        assert_eq!(
            config.section_names(),
            [
                "server",
                "categories.first",
                "categories.zeta",
                "categories.alpha",
                "categories.alpha.match"
            ]
        );
    }
}
