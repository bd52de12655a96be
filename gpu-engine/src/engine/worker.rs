//! The engine's worker loop: admit requests, step the model, sample, stream the results.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Command, EngineStats, FinishReason, GenerateEvent, StepCounters, Usage};
use crate::model::ForwardStep;
use crate::sampling::{RowSampling, Sampler, SamplingParams};
use crate::scheduler::{CacheCounters, Scheduler, SeqId, Sequence, Step};
use crate::text::{OutputText, TextCodec};

struct Active {
    events: mpsc::UnboundedSender<GenerateEvent>,
    params: SamplingParams,
    sampler: Sampler,
    text: OutputText,
    arrived: Instant,
    last_token_at: Option<Instant>,
}

/// One step's events, delivered by the output thread (see [`deliver`]).
pub(super) type Outbox = Vec<(mpsc::UnboundedSender<GenerateEvent>, GenerateEvent)>;

/// The output thread: sends each step's events to their requests' streams, in order.
/// Each send may wake the task that streams the request, and the device waits while
/// the worker does it: at 256 streams, 130-150 µs a step on the 2-core build machine,
/// against 57-65 µs to hand the same events over in one batch. Here the sends overlap
/// the next step.
pub(super) fn deliver(batches: std::sync::mpsc::Receiver<Outbox>) {
    for batch in batches {
        for (events, event) in batch {
            // A request whose client went away is dropped by the worker's next step.
            let _ = events.send(event);
        }
    }
}

pub(super) struct Worker {
    model: Box<dyn ForwardStep>,
    scheduler: Scheduler,
    codec: Arc<TextCodec>,
    eos_token_ids: Vec<u32>,
    max_context: usize,
    active: HashMap<SeqId, Active>,
    next_id: SeqId,
    reported: CacheCounters,
    steps: StepCounters,
    /// Events of the step in progress, and where they go at its end.
    outbox: Outbox,
    output: std::sync::mpsc::Sender<Outbox>,
}

impl Worker {
    pub(super) fn new(
        model: Box<dyn ForwardStep>,
        scheduler: Scheduler,
        codec: Arc<TextCodec>,
        eos_token_ids: Vec<u32>,
        max_context: usize,
        output: std::sync::mpsc::Sender<Outbox>,
    ) -> Self {
        Self {
            model,
            scheduler,
            codec,
            eos_token_ids,
            max_context,
            active: HashMap::new(),
            next_id: 0,
            reported: CacheCounters::default(),
            steps: StepCounters::default(),
            outbox: Vec::new(),
            output,
        }
    }

    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            if self.scheduler.is_idle() {
                // Nothing to compute: sleep until a command comes (or every handle is gone).
                match commands.blocking_recv() {
                    Some(command) => self.handle(command),
                    None => return,
                }
            }
            while let Ok(command) = commands.try_recv() {
                self.handle(command);
            }
            self.step();
            self.flush_outbox();
            self.publish_metrics();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Generate { request, events } => {
                let id = self.next_id;
                self.next_id += 1;
                self.active.insert(
                    id,
                    Active {
                        events,
                        sampler: Sampler::new(request.params.seed),
                        text: OutputText::new(request.params.stop.clone()),
                        params: request.params,
                        arrived: Instant::now(),
                        last_token_at: None,
                    },
                );
                self.scheduler
                    .add(Sequence::new(id, request.salt, request.prompt_ids));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
        }
    }

    fn stats(&self) -> EngineStats {
        let pool = self.scheduler.pool();
        EngineStats {
            kv_blocks_total: pool.n_blocks(),
            kv_blocks_free: pool.n_free(),
            kv_blocks_cached: pool.n_cached(),
            n_waiting: self.scheduler.n_waiting(),
            n_running: self.scheduler.n_running(),
            cache: self.scheduler.counters(),
            steps: self.steps,
        }
    }

    fn step(&mut self) {
        let started = Instant::now();
        self.drop_abandoned();
        let step = self.scheduler.schedule();
        if step.seqs.is_empty() {
            return;
        }
        // One sampling row per sequence that samples; each request's seeded stream
        // gives its row a key (see `sampling`). A step whose every row is greedy takes
        // the argmax path; otherwise the backend samples (on a GPU, in place), and in
        // both cases only token ids come back.
        let sampling: Vec<SeqId> = step
            .seqs
            .iter()
            .filter(|s| s.samples)
            .map(|s| s.id)
            .collect();
        let rows: Vec<RowSampling> = sampling
            .iter()
            .map(|id| {
                self.active
                    .get_mut(id)
                    .map_or(RowSampling::GREEDY, |a| a.sampler.next_row(&a.params))
            })
            .collect();
        let forward_started = Instant::now();
        let result = if rows.iter().all(RowSampling::is_greedy) {
            self.model.forward_greedy(&step.batch)
        } else {
            self.model.forward_sample(&step.batch, &rows)
        };
        let forward = forward_started.elapsed();
        let ids = match result {
            Ok(ids) => ids,
            Err(err) => {
                tracing::error!(error = %err, "forward step failed");
                self.fail_step(&step, &err.to_string());
                return;
            }
        };
        let sampled: Vec<(SeqId, u32)> = sampling
            .into_iter()
            .zip(ids)
            .filter(|(id, _)| self.active.contains_key(id))
            .collect();
        self.scheduler.complete(&step, &sampled);
        for (id, token) in sampled {
            self.after_token(id, token);
        }
        self.count_step(&step, forward, started.elapsed().saturating_sub(forward));
    }

    fn count_step(&mut self, step: &Step, forward: Duration, host: Duration) {
        let tokens = step.batch.n_tokens() as u64;
        let mixed = step.seqs.len() as u64 != tokens;
        let kind = if mixed {
            self.steps.mixed_steps += 1;
            self.steps.mixed_tokens += tokens;
            self.steps.mixed_forward += forward;
            "mixed"
        } else {
            self.steps.decode_steps += 1;
            self.steps.decode_tokens += tokens;
            self.steps.decode_forward += forward;
            "decode"
        };
        self.steps.host += host;
        metrics::histogram!("cachet_engine_step_forward_seconds", "kind" => kind)
            .record(forward.as_secs_f64());
        metrics::histogram!("cachet_engine_step_host_seconds").record(host.as_secs_f64());
    }

    /// Streams a new token's text and finishes the request if it is done.
    fn after_token(&mut self, id: SeqId, token: u32) {
        let (Some(active), Some(seq)) = (self.active.get_mut(&id), self.scheduler.get(id)) else {
            return;
        };
        let now = Instant::now();
        match active.last_token_at {
            None => metrics::histogram!("cachet_engine_ttft_seconds")
                .record(now.duration_since(active.arrived).as_secs_f64()),
            Some(last) => metrics::histogram!("cachet_engine_inter_token_seconds")
                .record(now.duration_since(last).as_secs_f64()),
        }
        active.last_token_at = Some(now);
        let n_output = seq.output().len();
        let n_total = seq.tokens.len();
        let is_eos = !active.params.ignore_eos && self.eos_token_ids.contains(&token);
        let mut finish = None;
        let mut delta = String::new();
        if is_eos {
            finish = Some(FinishReason::Stop);
        } else {
            match active.text.push(&self.codec, token) {
                Ok(step) => {
                    delta = step.delta;
                    if step.stopped {
                        finish = Some(FinishReason::Stop);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "detokenization failed"),
            }
        }
        if finish.is_none() && (n_output >= active.params.max_tokens || n_total >= self.max_context)
        {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() {
            delta.push_str(&active.text.finish());
        }
        // Only text goes out per token: the token ids go once, at the end (a copy of
        // every id so far on each event would cost a long generation quadratic time).
        if !delta.is_empty() {
            self.outbox
                .push((active.events.clone(), GenerateEvent::Text { delta }));
        }
        if let Some(reason) = finish {
            let mut token_ids = seq.output().to_vec();
            if is_eos {
                token_ids.pop();
            }
            let usage = Usage {
                prompt_tokens: seq.n_prompt,
                completion_tokens: n_output,
                cached_tokens: seq.n_cached_prompt,
            };
            let finished = GenerateEvent::Finished {
                reason,
                usage,
                token_ids,
            };
            self.outbox.push((active.events.clone(), finished));
            self.abort(id);
        }
    }

    /// Hands the step's events to the output thread.
    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let capacity = self.outbox.len();
        let batch = std::mem::replace(&mut self.outbox, Vec::with_capacity(capacity));
        // The output thread ends only after the worker: a failed send loses nothing.
        let _ = self.output.send(batch);
    }

    fn abort(&mut self, id: SeqId) {
        self.active.remove(&id);
        self.scheduler.remove(id);
    }

    /// Requests whose client went away stop taking KV blocks and compute.
    fn drop_abandoned(&mut self) {
        let gone: Vec<SeqId> = self
            .active
            .iter()
            .filter(|(_, a)| a.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.abort(id);
        }
    }

    fn fail_step(&mut self, step: &Step, message: &str) {
        for scheduled in &step.seqs {
            if let Some(active) = self.active.get(&scheduled.id) {
                let failed = GenerateEvent::Failed(message.to_owned());
                self.outbox.push((active.events.clone(), failed));
            }
            self.abort(scheduled.id);
        }
    }

    fn publish_metrics(&mut self) {
        let stats = self.stats();
        metrics::gauge!("cachet_engine_kv_blocks_free").set(stats.kv_blocks_free as f64);
        metrics::gauge!("cachet_engine_kv_blocks_used")
            .set((stats.kv_blocks_total - stats.kv_blocks_free) as f64);
        metrics::gauge!("cachet_engine_kv_blocks_cached").set(stats.kv_blocks_cached as f64);
        metrics::gauge!("cachet_engine_queue_length").set(stats.n_waiting as f64);
        metrics::gauge!("cachet_engine_running_sequences").set(stats.n_running as f64);
        let now = stats.cache;
        metrics::counter!("cachet_engine_prefix_cache_query_tokens_total")
            .increment(now.query_tokens - self.reported.query_tokens);
        metrics::counter!("cachet_engine_prefix_cache_hit_tokens_total")
            .increment(now.hit_tokens - self.reported.hit_tokens);
        metrics::counter!("cachet_engine_preemptions_total")
            .increment(now.preemptions - self.reported.preemptions);
        self.reported = now;
    }
}
