//! Validated input events. The codec turns raw JSON into these; the engine
//! never sees anything that has not passed SPEC §1's rules, so it needs no
//! error paths for bad input.

use super::time::Millis;
use strum::EnumCount;

/// Money in integer minor units (cents): sums are exact and independent of
/// the order events arrive in (SPEC §7).
pub type Minor = i64;

/// An event or customer id, inline up to 24 bytes: ids are mostly that
/// short, so decoding an event and naming it as the cause of what it
/// decides allocate nothing (two clones of the event id per event were a
/// fifth of a replay's allocations: 600k of 2.94M for 300k events).
pub type Id = compact_str::CompactString;

/// One customer event that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Producer-assigned id, used to skip duplicates.
    pub event_id: Id,
    /// The customer the event is about (also the Kafka key).
    pub customer_id: Id,
    /// Event time.
    pub ts: Millis,
    /// What happened.
    pub kind: EventKind,
}

/// The four event types of SPEC §1.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A purchase or a refund.
    Purchase(Purchase),
    /// A complaint being opened or resolved.
    Complaint(Complaint),
    /// A service interaction, survey answer or contact.
    Service(Service),
    /// A privacy request: erase everything about the customer.
    Forget,
}

/// A purchase (or refund) with its profit contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purchase {
    /// Amount paid, >= 0.
    pub amount: Minor,
    /// Profit contribution; may be negative.
    pub margin: Minor,
    /// A refund subtracts amount and margin and is not a purchase.
    pub refund: bool,
}

wire_enum! {
    /// Complaint severity, ordered from mildest to worst.
    pub enum Severity {
        /// Minor annoyance.
        Low,
        /// Noticeable problem.
        Medium,
        /// Serious problem; escalates a churn warning while open.
        High,
        /// Worst case; escalates a churn warning while open.
        Critical,
    }
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A complaint event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// How bad it is.
    pub severity: Severity,
    /// `status: resolved`.
    pub resolved: bool,
    /// The `event_id` of the complaint this event resolves, if any.
    pub reference: Option<String>,
}

wire_enum! {
    /// Known competitor/price signals (SPEC §1); unknown ones are only counted.
    pub enum Signal {
        /// The customer mentioned a competitor's offer.
        CompetitorOffer,
        /// The customer asked us to match a price.
        PriceMatchRequest,
        /// The customer asked how to cancel.
        CancellationInquiry,
        /// The customer asked when the contract ends.
        ContractEndInquiry,
    }
}

/// Distinct known signals in order of first appearance. There is at most
/// one of each kind, so the list is inline: penalties gather one per month
/// and per look at a customer, and as `Vec`s they allocated about once per
/// event.
pub type Signals = arrayvec::ArrayVec<Signal, { Signal::COUNT }>;

impl Signal {
    /// Parses a known signal name; `None` for unknown ones.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A service interaction or survey answer. Scales are already normalised:
/// `recommend` holds the 1..5 value (an `nps` answer is mapped on decode).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    /// What serving the customer cost the company.
    pub cost: Minor,
    /// 1..5
    pub satisfaction: Option<f64>,
    /// 1..5 (from `recommend`, or `1 + nps * 0.4`).
    pub recommend: Option<f64>,
    /// 1..5
    pub repurchase_intent: Option<f64>,
    /// 0..1
    pub share_of_wallet: Option<f64>,
    /// Known signals, in input order.
    pub signals: Vec<Signal>,
    /// How many unknown signal names were ignored (for metrics).
    pub unknown_signals: u32,
}

impl Event {
    /// Whether the event is attitudinal evidence (SPEC §7): a complaint, or a
    /// service event with a satisfaction, recommend/nps, repurchase intent or
    /// a known signal. A cost-only service event is not.
    pub fn is_attitudinal_evidence(&self) -> bool {
        match &self.kind {
            EventKind::Complaint(_) => true,
            EventKind::Service(s) => {
                s.satisfaction.is_some()
                    || s.recommend.is_some()
                    || s.repurchase_intent.is_some()
                    || !s.signals.is_empty()
            }
            EventKind::Purchase(_) | EventKind::Forget => false,
        }
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self.kind {
            EventKind::Purchase(_) => EventType::Purchase,
            EventKind::Complaint(_) => EventType::Complaint,
            EventKind::Service(_) => EventType::Service,
            EventKind::Forget => EventType::Forget,
        }
    }
}

wire_enum! {
    /// The `type` of an input event: its names on the wire, in metrics and
    /// logs.
    pub enum EventType {
        /// A purchase or refund.
        Purchase,
        /// A complaint, or the resolution of one.
        Complaint,
        /// A service interaction: survey answers, signals, cost.
        Service,
        /// Erase the customer.
        Forget,
    }
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
