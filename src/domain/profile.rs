//! The per-customer state the engine keeps between events: everything a
//! decision needs, nothing more, so it stays small in RocksDB.

use super::event::{Id, Minor};
use super::loyalty::{Evidence, Sides};
use super::output::TimerKind;
use super::tier::Tier;
use super::time::{Millis, MonthIndex};
use super::value::Buckets;
use super::warning::OpenWarning;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One customer's rolling profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The customer this profile belongs to: inline up to 24 bytes, which
    /// spares every profile an allocation. Stored as a string, as a
    /// `String` was (the bytes are pinned in `store::keys`).
    pub customer_id: Id,
    /// The `seq` of the last output emitted for the customer (0: none yet).
    pub seq: u64,
    /// Current pyramid tier; `None` until the first in-time event assigns it.
    pub tier: Option<Tier>,
    /// `at` of the last tier change (SPEC §7, residence).
    pub tier_since: Millis,
    /// Month of the last `tier_at_risk`, so it fires at most once a month.
    pub at_risk_month: Option<MonthIndex>,
    /// Value buckets, one per calendar month.
    pub buckets: Buckets,
    /// Hashes of the last event ids applied, newest last (duplicate check).
    pub recent_events: VecDeque<u64>,
    /// When this customer next needs a timer, as written in the deadline index.
    pub timers: Timers,
    /// Attitudinal and behavioural evidence for the loyalty scores.
    pub evidence: Evidence,
    /// Sides of the quadrant thresholds (`None`: no attitude yet).
    pub sides: Option<Sides>,
    /// The open churn warning, as last emitted (boxed: most customers have
    /// none, and inline it took 56 bytes of every profile).
    pub warning: Option<Box<OpenWarning>>,
    /// `at` of the last churn-warning output (for the cooldown).
    pub last_warning_at: Option<Millis>,
    /// The month of its earliest event seen in a window (tenure).
    pub first_month: Option<MonthIndex>,
}

/// A customer's entries in the deadline index. Kept in the profile so that a
/// reschedule can delete the old index entry without a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// Next month close at which a tier decision is due.
    pub month_close: Option<Millis>,
    /// Next midnight at which a daily re-evaluation can change something.
    pub daily: Option<Millis>,
}

impl Timers {
    /// The deadline of `kind`.
    pub fn of(self, kind: TimerKind) -> Option<Millis> {
        match kind {
            TimerKind::MonthClose => self.month_close,
            TimerKind::Daily => self.daily,
        }
    }
}

impl Profile {
    /// A customer seen for the first time.
    pub fn new(customer_id: &str) -> Self {
        Profile {
            customer_id: Id::from(customer_id),
            seq: 0,
            tier: None,
            tier_since: Millis::from_ms(0),
            at_risk_month: None,
            buckets: Buckets::default(),
            recent_events: VecDeque::new(),
            timers: Timers::default(),
            evidence: Evidence::default(),
            sides: None,
            warning: None,
            last_warning_at: None,
            first_month: None,
        }
    }

    /// Records an event id; returns false when it was already applied.
    pub fn remember_event(&mut self, id_hash: u64, window: usize) -> bool {
        if self.recent_events.contains(&id_hash) {
            return false;
        }
        if window == 0 {
            return true;
        }
        while self.recent_events.len() >= window {
            self.recent_events.pop_front();
        }
        self.recent_events.push_back(id_hash);
        true
    }

    /// Takes the next output sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Bytes the profile holds on the heap beyond its own struct (what a
    /// cache of profiles is charged for them besides `size_of`): counted,
    /// not estimated from the encoding, whose size says little about the
    /// decoded form (a month bucket is 48 bytes decoded, a dozen encoded;
    /// an event-id hash 8 decoded, 10 encoded).
    pub fn heap_bytes(&self) -> usize {
        let id = &self.customer_id;
        let id_bytes = if id.is_heap_allocated() {
            id.capacity()
        } else {
            0
        };
        id_bytes
            + vec_bytes(&self.buckets.0)
            + self.recent_events.capacity() * size_of::<u64>()
            + self.evidence.heap_bytes()
            + self
                .warning
                .as_deref()
                .map_or(0, |w| size_of::<OpenWarning>() + w.heap_bytes())
    }
}

/// The heap bytes of a vector's buffer (its capacity, not its length).
pub fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// A snapshot of the money figures over a window, as outputs report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueFigures {
    /// Profit contribution over the window.
    pub value_12m: Minor,
    /// Revenue over the window.
    pub revenue_12m: Minor,
    /// Non-refund purchases over the window.
    pub purchases_12m: u32,
}
