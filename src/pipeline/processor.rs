//! Decode, apply and count one input record: the step `replay` and the
//! Kafka pipeline share, so both treat every record identically.

use crate::codec::input::{check_key, decode, DecodeRules, Rejection};
use crate::domain::engine::{Engine, Outcome};
use crate::domain::event::{Event, EventKind};
use crate::domain::output::{Output, OutputBody};
use crate::domain::ranking::MonthClose;
use crate::domain::time::Millis;
use crate::ops::metrics::{EventCounters, Metrics, OutputCounters};
use crate::store::session::TaskState;
use crate::store::{KvStore, StoreError, TaskId};

/// The engine with its validation rules and metrics.
pub struct Processor {
    /// The pure engine.
    pub engine: Engine,
    rules: DecodeRules,
    /// Where counts go.
    pub metrics: Metrics,
    events: EventCounters,
    outputs: OutputCounters,
}

/// What happened to one record.
#[derive(Debug)]
pub enum Processed {
    /// A valid event; its outputs were appended.
    Event(Outcome),
    /// Bad input, for the dead-letter queue.
    Rejected(Rejection),
    /// Not applied yet: the event needs the month close at this instant,
    /// which needs every task's summary of the month (percentile tiers).
    /// The task's month closes before that one have run.
    Waiting(Millis),
}

/// One input record as the processor takes it: its bytes and, when it
/// came from Kafka, its message key (which must then be its customer id).
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record's value.
    pub bytes: &'a [u8],
    /// The Kafka message key; `None` without one (and in `replay`).
    pub key: Option<&'a [u8]>,
}

/// The cut points of a month close, once every task's summary of it is in;
/// `None` asks the record to wait.
pub type CutPointsOf<'a> = &'a (dyn Fn(Millis) -> Option<MonthClose> + Sync);

impl Processor {
    /// A processor for an engine and validation rules.
    pub fn new(engine: Engine, rules: DecodeRules, metrics: Metrics) -> Self {
        Processor {
            engine,
            rules,
            events: EventCounters::new(&metrics),
            outputs: OutputCounters::new(&metrics),
            metrics,
        }
    }

    /// Decodes `bytes` and applies the event to `task`; outputs are appended
    /// to `out`. `now` is the wall clock for the timestamp range check.
    /// A single task (nothing to exchange) ranks its customers alone.
    pub fn process(
        &self,
        task: &mut TaskState,
        store: &dyn KvStore,
        bytes: &[u8],
        now: Millis,
        out: &mut Vec<Output>,
    ) -> Result<Processed, StoreError> {
        let record = RawRecord { bytes, key: None };
        self.process_ranked(task, store, record, now, out, None)
    }

    /// [`Self::process`] for one of several tasks under percentile tiers:
    /// before an event passes a month close, that month's cut points —
    /// merged from every task's summary, `cuts` says when they are all in —
    /// are installed, or the event waits.
    pub fn process_ranked(
        &self,
        task: &mut TaskState,
        store: &dyn KvStore,
        record: RawRecord<'_>,
        now: Millis,
        out: &mut Vec<Output>,
        cuts: Option<CutPointsOf<'_>>,
    ) -> Result<Processed, StoreError> {
        match self.decode(record, now) {
            Ok(event) => self.apply_ranked(task, store, &event, out, cuts),
            Err(r) => Ok(Processed::Rejected(r)),
        }
    }

    /// Decodes and checks one record, counting a rejection. A driver that
    /// routes records by their customer (`replay`) decodes first, so a
    /// record is parsed once and goes where its decoded `customer_id` says.
    pub fn decode(&self, record: RawRecord<'_>, now: Millis) -> Result<Event, Rejection> {
        decode(record.bytes, &self.rules, now)
            .and_then(|e| {
                check_key(record.key, &e)?;
                Ok(e)
            })
            .inspect_err(|r| {
                self.metrics
                    .rejected
                    .with_label_values(&[r.code.as_str()])
                    .inc();
            })
    }

    /// Applies a decoded event to `task` (see [`Self::process_ranked`]).
    pub fn apply_ranked(
        &self,
        task: &mut TaskState,
        store: &dyn KvStore,
        event: &Event,
        out: &mut Vec<Output>,
        cuts: Option<CutPointsOf<'_>>,
    ) -> Result<Processed, StoreError> {
        if let EventKind::Service(s) = &event.kind {
            self.metrics
                .unknown_signals
                .inc_by(u64::from(s.unknown_signals));
        }
        if let Some(cuts) = cuts.filter(|_| self.engine.policy().tiers.percentile.is_some()) {
            while let Some(month) = task.ranking.due_before(event.ts) {
                if !self.close_month(task, store, month, cuts, out)? {
                    return Ok(Processed::Waiting(month));
                }
            }
        }
        let first = out.len();
        let mut clock = task.clock;
        let outcome = self
            .engine
            .apply(&mut clock, &mut task.session(store), event, out)?;
        task.clock = clock;
        cutpoints_from_task_zero(task, out, first);
        self.events.inc(event.event_type(), outcome);
        self.count_outputs(&out[first..]);
        tracing::debug!(customer_id = %event.customer_id, outcome = ?outcome, "event applied");
        Ok(Processed::Event(outcome))
    }

    /// Runs `task`'s ticks up to and including the month close at `month`
    /// with that month's cut points installed; `false` (nothing run) while
    /// `cuts` does not know them yet.
    pub fn close_month(
        &self,
        task: &mut TaskState,
        store: &dyn KvStore,
        month: Millis,
        cuts: CutPointsOf<'_>,
        out: &mut Vec<Output>,
    ) -> Result<bool, StoreError> {
        let Some(close) = cuts(month) else {
            return Ok(false);
        };
        task.ranking.install(close);
        let first = out.len();
        let mut clock = task.clock;
        self.engine
            .advance_clock(&mut clock, month, &mut task.session(store), out)?;
        task.clock = clock;
        cutpoints_from_task_zero(task, out, first);
        self.count_outputs(&out[first..]);
        Ok(true)
    }

    fn count_outputs(&self, outputs: &[Output]) {
        for o in outputs {
            self.outputs.inc(o);
        }
    }
}

/// Every task computes the same cut points; of several, only task 0 says
/// so (`out[first..]` are the outputs of this record).
fn cutpoints_from_task_zero(task: &TaskState, out: &mut Vec<Output>, first: usize) {
    if task.task != TaskId::new(0) {
        let mut i = first;
        while i < out.len() {
            if matches!(out[i].body, OutputBody::TierCutpoints(_)) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }
}
