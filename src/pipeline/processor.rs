//! Decode, apply and count one input record: the step `replay` and the
//! Kafka pipeline share, so both treat every record identically.

use crate::codec::input::{decode, DecodeRules, Rejection};
use crate::domain::engine::{Engine, Outcome};
use crate::domain::event::EventKind;
use crate::domain::output::Output;
use crate::domain::time::Millis;
use crate::ops::metrics::{EventCounters, Metrics, OutputCounters};
use crate::store::session::TaskState;
use crate::store::{KvStore, StoreError};

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
}

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
    pub fn process(
        &self,
        task: &mut TaskState,
        store: &dyn KvStore,
        bytes: &[u8],
        now: Millis,
        out: &mut Vec<Output>,
    ) -> Result<Processed, StoreError> {
        let event = match decode(bytes, &self.rules, now) {
            Ok(e) => e,
            Err(r) => {
                self.metrics
                    .rejected
                    .with_label_values(&[r.code.as_str()])
                    .inc();
                return Ok(Processed::Rejected(r));
            }
        };
        if let EventKind::Service(s) = &event.kind {
            self.metrics
                .unknown_signals
                .inc_by(u64::from(s.unknown_signals));
        }
        let first = out.len();
        let mut clock = task.clock;
        let outcome = self
            .engine
            .apply(&mut clock, &mut task.session(store), &event, out)?;
        task.clock = clock;
        self.events.inc(event.event_type(), outcome);
        for o in &out[first..] {
            self.outputs.inc(o);
        }
        tracing::debug!(customer_id = %event.customer_id, outcome = ?outcome, "event applied");
        Ok(Processed::Event(outcome))
    }
}
