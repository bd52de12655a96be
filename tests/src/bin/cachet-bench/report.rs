//! The benchmark's results: a table for people and a JSON document for tools.

use serde::Serialize;

use crate::load::Summary;

/// One measured scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// `direct`, `miss`, `hit-exact` or `hit-semantic`.
    pub name: &'static str,
    pub stream: bool,
    #[serde(flatten)]
    pub summary: Summary,
    /// Semantic candidates above the threshold that the hit guards refused, warm-up included.
    pub guard_refusals: u64,
    /// This scenario's p50 and p99 minus those of `direct` in the same stream mode (a
    /// difference of quantiles, not a quantile of differences); absent for `direct`.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
}

/// The gateway's memory after the load.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// `VmHWM`: the most resident memory the process ever had.
    pub peak_rss_bytes: u64,
    /// `VmRSS` right after start-up and after the load.
    pub rss_at_start_bytes: u64,
    pub rss_at_end_bytes: u64,
    /// `/healthz` store figures: entries and the bytes the store accounts for them.
    pub store_entries: u64,
    pub store_bytes: u64,
    pub store_bytes_per_entry: f64,
    /// Resident growth over the whole run per stored entry: an upper bound that also counts
    /// the HNSW graphs, allocator slack and connection buffers.
    pub rss_growth_per_entry_bytes: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The gateway's entry store: `memory` or `redis`.
    pub store: &'static str,
    pub rate_per_s: f64,
    pub seconds_per_scenario: f64,
    pub machine: String,
    pub gateway_binary: String,
    /// Paraphrases kept for `hit-semantic` after the probe, out of all.
    pub semantic_probe: String,
    pub scenarios: Vec<ScenarioResult>,
    pub memory: Memory,
}

impl Report {
    /// Fills in the added latencies against `direct` of the same stream mode.
    pub fn compare_with_direct(&mut self) {
        let direct: Vec<(bool, f64, f64)> = self
            .scenarios
            .iter()
            .filter(|s| s.name == "direct")
            .map(|s| (s.stream, s.summary.p50_ms, s.summary.p99_ms))
            .collect();
        for scenario in self.scenarios.iter_mut().filter(|s| s.name != "direct") {
            if let Some((_, p50, p99)) = direct
                .iter()
                .find(|(stream, ..)| *stream == scenario.stream)
            {
                scenario.added_p50_ms = Some(scenario.summary.p50_ms - p50);
                scenario.added_p99_ms = Some(scenario.summary.p99_ms - p99);
            }
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} req/s, {} s per scenario, {} store, {}\n\
             latency from the scheduled send time to the last byte (ms); added = minus direct\n\n",
            self.rate_per_s, self.seconds_per_scenario, self.store, self.machine
        );
        out.push_str(&format!(
            "{:<22} {:>5} {:>4} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7}  {}\n",
            "scenario",
            "n",
            "err",
            "p50",
            "p99",
            "max",
            "+p50",
            "+p99",
            "ttfb50",
            "lag99",
            "refused",
            "x-cachet-cache"
        ));
        for s in &self.scenarios {
            let name = if s.stream {
                format!("{} (stream)", s.name)
            } else {
                s.name.to_owned()
            };
            let added = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.2}"));
            let labels: Vec<String> = s
                .summary
                .cache
                .iter()
                .map(|(label, n)| format!("{label}={n}"))
                .collect();
            out.push_str(&format!(
                "{:<22} {:>5} {:>4} {:>7.2} {:>7.2} {:>7.2} {:>8} {:>8} {:>8.2} {:>8.2} {:>7}  {}\n",
                name,
                s.summary.requests,
                s.summary.errors,
                s.summary.p50_ms,
                s.summary.p99_ms,
                s.summary.max_ms,
                added(s.added_p50_ms),
                added(s.added_p99_ms),
                s.summary.first_byte_p50_ms,
                s.summary.send_lag_p99_ms,
                s.guard_refusals,
                labels.join(" "),
            ));
            if let Some(error) = &s.summary.first_error {
                out.push_str(&format!("{:<22} first error: {error}\n", ""));
            }
        }
        let m = &self.memory;
        out.push_str(&format!(
            "\nsemantic probe: {}\n\
             gateway peak RSS (VmHWM): {:.1} MiB; RSS at start {:.1} MiB, at end {:.1} MiB\n\
             store: {} entries, {} bytes, {:.0} bytes/entry (RSS growth per entry: {:.0} bytes)\n",
            self.semantic_probe,
            mib(m.peak_rss_bytes),
            mib(m.rss_at_start_bytes),
            mib(m.rss_at_end_bytes),
            m.store_entries,
            m.store_bytes,
            m.store_bytes_per_entry,
            m.rss_growth_per_entry_bytes,
        ));
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
