//! What a gateway says about itself: `/healthz` and the Prometheus text of `/metrics`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Error, Result};

/// `/healthz`'s answer: the HTTP status and the JSON body.
#[derive(Debug, Clone)]
pub struct Health {
    pub status_code: u16,
    pub body: Value,
}

impl Health {
    /// `"ok"` or `"degraded"`.
    pub fn status(&self) -> Option<&str> {
        self.body.get("status").and_then(Value::as_str)
    }

    /// The store's kind (`"memory"`, `"redis"`).
    pub fn store_kind(&self) -> Option<&str> {
        self.body.pointer("/store/kind").and_then(Value::as_str)
    }

    /// The store's state (`"up"`, `"down"`).
    pub fn store_state(&self) -> Option<&str> {
        self.body.pointer("/store/state").and_then(Value::as_str)
    }
}

/// The samples of a Prometheus text exposition, `name{labels}` → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text exposition format (comments and blank lines skipped).
    pub fn parse(text: &str) -> Result<Self> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').ok_or_else(|| Error::Metrics {
                    line: line.to_owned(),
                })?;
                let value: f64 = value.parse().map_err(|_| Error::Metrics {
                    line: line.to_owned(),
                })?;
                Ok((series.to_owned(), value))
            })
            .collect::<Result<_>>()
            .map(Self)
    }

    /// The sum over every series of metric `name`, whatever its labels; `None` when the
    /// metric is absent.
    pub fn get(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for (series, value) in &self.0 {
            let metric = series.split('{').next().unwrap_or(series);
            if metric == name {
                *found.get_or_insert(0.0) += value;
            }
        }
        found
    }

    /// Like [`Metrics::get`], with 0 for an absent metric (a counter nothing incremented yet).
    pub fn sum(&self, name: &str) -> f64 {
        self.get(name).unwrap_or(0.0)
    }
}

/// `GET {base_url}/healthz`.
pub async fn healthz(client: &reqwest::Client, base_url: &str) -> Result<Health> {
    let url = format!("{base_url}/healthz");
    let (status_code, text) = get_text(client, &url).await?;
    let body = serde_json::from_str(&text).map_err(|_| Error::HttpStatus {
        url,
        status: status_code,
        body: text,
    })?;
    Ok(Health { status_code, body })
}

/// `GET {base_url}/metrics`, parsed.
pub async fn metrics(client: &reqwest::Client, base_url: &str) -> Result<Metrics> {
    let url = format!("{base_url}/metrics");
    let (status, text) = get_text(client, &url).await?;
    if status != 200 {
        return Err(Error::HttpStatus {
            url,
            status,
            body: text,
        });
    }
    Metrics::parse(&text)
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String)> {
    let http = |source| Error::Http {
        url: url.to_owned(),
        source,
    };
    let response = client.get(url).send().await.map_err(http)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(http)?;
    Ok((status, text))
}

/// Runs `future` to completion on a fresh single-threaded runtime, for synchronous callers
/// (never call it from inside a runtime).
pub fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_series_of_one_name() {
        let text = "# HELP cachet_fills_total fills\n\
                    cachet_fills_total{category=\"code\"} 2\n\
                    cachet_fills_total{category=\"general\"} 3\n\
                    cachet_fills_total_other 7\n\
                    cachet_store_up 1\n";
        let metrics = Metrics::parse(text).unwrap();
        assert_eq!(metrics.get("cachet_fills_total"), Some(5.0));
        assert_eq!(metrics.get("cachet_store_up"), Some(1.0));
        assert_eq!(metrics.get("cachet_store_errors_total"), None);
        assert_eq!(metrics.sum("cachet_store_errors_total"), 0.0);
        assert!(Metrics::parse("no_value_here").is_err());
    }
}
