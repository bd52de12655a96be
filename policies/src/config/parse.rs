//! Config text to the raw config, section by section: every unknown key and every value of
//! the wrong type is reported with its field path, instead of stopping at the first.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::{Error, Problem, Result};
use crate::raw::{RawCategory, RawConfig};

/// The top-level tables a config file may have.
const SECTIONS: [&str; 13] = [
    "server",
    "upstream",
    "engine",
    "embedder",
    "index",
    "store",
    "cache",
    "admin",
    "classifier",
    "adaptive",
    "calibration",
    "shadow",
    "categories",
];

/// Fields that hold secrets: problems with them never quote the value.
const SECRETS: [&str; 3] = ["store.url", "admin.token", "admin.metrics_token"];

/// Parses the text and deserialises each section and each category on its own. Returns the
/// raw config, with defaults in place of what could not be read, and the problems found.
pub(super) fn parse(text: &str) -> Result<(RawConfig, Vec<Problem>)> {
    let table: toml::Table = text.parse().map_err(Error::Syntax)?;
    let mut raw = RawConfig::default();
    let mut problems = Vec::new();
    let p = &mut problems;
    for (key, value) in table {
        match key.as_str() {
            "server" => raw.server = section(&key, value, p),
            "upstream" => raw.upstream = section(&key, value, p),
            "engine" => raw.engine = Some(section(&key, value, p)),
            "embedder" => raw.embedder = section(&key, value, p),
            "index" => raw.index = section(&key, value, p),
            "store" => raw.store = section(&key, value, p),
            "cache" => raw.cache = section(&key, value, p),
            "admin" => raw.admin = Some(section(&key, value, p)),
            "classifier" => raw.classifier = section(&key, value, p),
            "adaptive" => raw.adaptive = section(&key, value, p),
            "calibration" => raw.calibration = section(&key, value, p),
            "shadow" => raw.shadow = section(&key, value, p),
            "categories" => {
                let Some(table) = as_table(&key, value, p) else {
                    continue;
                };
                for (name, value) in table {
                    let path = format!("categories.{name}");
                    let category: RawCategory = section(&path, value, p);
                    raw.categories.insert(name, category);
                }
            }
            other => p.push(Problem {
                path: other.to_owned(),
                message: format!(
                    "unknown field `{other}`, expected one of {}",
                    SECTIONS.map(|s| format!("`{s}`")).join(", ")
                ),
            }),
        }
    }
    Ok((raw, problems))
}

fn as_table(path: &str, value: toml::Value, problems: &mut Vec<Problem>) -> Option<toml::Table> {
    match value {
        toml::Value::Table(table) => Some(table),
        other => {
            problems.push(Problem {
                path: path.to_owned(),
                message: format!("must be a table, found {}", other.type_str()),
            });
            None
        }
    }
}

/// Deserialises one table. A key that fails is reported, taken out and the rest tried again,
/// so that every bad key of the table is reported; it ends because each round removes a key.
/// What could not be read takes its default, which is never used: the problems refuse the
/// file.
fn section<T: DeserializeOwned + Default>(
    path: &str,
    value: toml::Value,
    problems: &mut Vec<Problem>,
) -> T {
    let Some(mut table) = as_table(path, value, problems) else {
        return T::default();
    };
    loop {
        let error = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(parsed) => return parsed,
            Err(error) => error,
        };
        let keys: Vec<&str> = error
            .path()
            .iter()
            .map_while(|segment| match segment {
                Segment::Map { key } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        let at = if error.path().iter().next().is_none() {
            path.to_owned()
        } else {
            format!("{path}.{}", error.path())
        };
        // Serde quotes the value it refused; a secret's value must not reach a log.
        let message = if SECRETS.contains(&at.as_str()) {
            "must be a string (the value is not shown: it is a secret)".to_owned()
        } else {
            error.inner().message().to_owned()
        };
        problems.push(Problem { path: at, message });
        if !remove(&mut table, &keys) {
            return T::default();
        }
    }
}

/// Removes the innermost key of `keys` from nested tables; false when it is not there.
fn remove(table: &mut toml::Table, keys: &[&str]) -> bool {
    match keys {
        [] => false,
        [key] => table.remove(*key).is_some(),
        // Where the inner key cannot be found, the whole value goes, so that the same error
        // cannot come back.
        [key, rest @ ..] => match table.get_mut(*key) {
            Some(toml::Value::Table(inner)) => remove(inner, rest) || table.remove(*key).is_some(),
            _ => table.remove(*key).is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        let (_, problems) = parse(text).expect("valid toml");
        problems.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn every_bad_key_of_one_table_is_reported() {
        let got = paths(
            "[server]\nlisten = 1\nmax_body_bytes = \"big\"\nlistne = \"x\"\nrequest_timeout = \"1s\"\n",
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with("server.listen: invalid type"),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with("server.max_body_bytes: invalid type"),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with("server.listne: unknown field `listne`"),
            "{got:#?}"
        );
    }

    #[test]
    fn nested_tables_and_arrays_name_the_field() {
        let got = paths(
            "[categories.code]\nmatch.models = [1]\nmatch.keywords = \"python\"\n[categories.live]\nttl = 5\n",
        );
        assert_eq!(
            got.iter()
                .map(|p| p.split(':').next().unwrap_or_default())
                .collect::<Vec<_>>(),
            [
                "categories.code.match.models[0]",
                "categories.code.match.keywords",
                "categories.live.ttl"
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn sections_must_be_tables() {
        assert_eq!(
            paths("server = 5\n"),
            ["server: must be a table, found integer"]
        );
        assert_eq!(
            paths("[categories]\ncode = \"x\"\n"),
            ["categories.code: must be a table, found string"]
        );
    }

    #[test]
    fn secrets_of_the_wrong_type_are_not_quoted() {
        let got = paths("[admin]\ntoken = 918273645546372819\n[store]\nurl = 918273645546372819\n");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got.iter().all(|p| !p.contains("918273645546372819")),
            "{got:#?}"
        );
        assert!(
            got[0].starts_with("admin.token: must be a string"),
            "{got:#?}"
        );
    }

    #[test]
    fn unknown_sections_are_named() {
        let got = paths("[sever]\n[store]\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("sever: unknown field `sever`, expected one of `server`"));
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let (raw, problems) =
            parse("[store]\nkind = \"redis\"\n[categories.b]\nthreshold = 0.5\n[categories.a]\n")
                .expect("valid toml");
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(raw.store.kind.as_deref(), Some("redis"));
        assert_eq!(raw.categories.keys().collect::<Vec<_>>(), ["b", "a"]);
    }
}
