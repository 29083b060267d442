//! The engine: applies one event, or one stream-time tick, to a task's
//! customers and says what to emit. Pure: state comes and goes through the
//! `Profiles` port, so the same code runs under `replay`, under the Kafka
//! pipeline and inside property tests.

use super::event::{Event, EventKind, Id, Minor};
use super::lifetime::{projected_value, Stake};
use super::loyalty::{
    next_sides, scores, AttitudePolicy, BehaviourPolicy, Quadrant, QuadrantPolicy, Scores, Sides,
};
use super::output::{
    output_id, Cause, ChurnWarning, Direction, Output, OutputBody, ProfileView, TierInputs,
    TimerKind,
};
use super::profile::{Profile, Timers, ValueFigures};
use super::ranking::{CutPoints, MonthClose, Ranking, ValueHistogram};
use super::risk::{features, risk, OpenOn, Risk, RiskInputs, RiskPolicy, FEATURES};
use super::tier::{MonthCloseDecision, Pyramid, Tier, TierPolicy};
use super::time::{
    is_month_start, month_of, month_start, next_midnight, Millis, MonthIndex, DAY_MS,
};
use super::value::{first_month_of_window, window_start, WindowTotals, WINDOW_MONTHS};
use super::warning::{
    action_for, reasons, recommended_action, severity, transition, Codes, OpenWarning, Reason,
    Reasons, Transition, WarningAction,
};

/// How far ahead month-close timers are projected. After 12 month closes
/// without events every bucket has left the window, so one more is enough
/// to see the value settle.
const PROJECTION_MONTHS: i32 = 14;

/// The whole decision policy, built from config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Pyramid thresholds and month-close rules.
    pub tiers: TierPolicy,
    /// How far behind stream time an event may be and still cause output
    /// (ms).
    pub allowed_lateness: i64,
    /// How many recent event ids per customer are remembered.
    pub dedup_window: usize,
    /// Loyalty scores, quadrants and warnings.
    pub loyalty: LoyaltyPolicy,
    /// Emit a profile snapshot whenever tier, quadrant or warning changes
    /// (for the compacted profiles topic).
    pub emit_profiles: bool,
}

/// Loyalty and churn-warning settings (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct LoyaltyPolicy {
    /// Behaviour score.
    pub behaviour: BehaviourPolicy,
    /// Attitude score.
    pub attitude: AttitudePolicy,
    /// Quadrant thresholds and hysteresis.
    pub quadrant: QuadrantPolicy,
    /// Minimum time between non-escalating warning outputs (ms).
    pub warning_cooldown: i64,
    /// Churn risk, and whether it decides when a warning opens.
    pub risk: RiskPolicy,
}

/// How far ahead of a daily re-evaluation its next deadline is searched.
/// A month later every part of the window has moved once more; 13 months
/// on, all the evidence of the evaluation has left the window, so the
/// search has seen every instant at which something could still change.
const LOOK_AHEAD_MONTHS: i32 = 13;

/// How far a profile's loyalty evaluation is settled, for rescheduling.
/// The signature the evaluation left (`None`: no attitude) is what the
/// deadline search compares against; handing it over saves computing the
/// scores and the risk at that instant a second time.
#[derive(Debug, Clone, PartialEq)]
enum Settled {
    /// Evaluated at this instant (an event); nothing changes until a
    /// computed deadline, searched for up to the next month start.
    At(Millis, Option<Signature>),
    /// Evaluated at this midnight (a daily re-evaluation); the deadline is
    /// searched for across month starts, up to [`LOOK_AHEAD_MONTHS`].
    Ticked(Millis, Option<Signature>),
    /// Re-evaluate at this midnight, in the tick that is running: a month
    /// close changed the tier, which the warning's severity and the risk
    /// depend on.
    Due(Millis),
    /// New evidence was not evaluated (a late event): look at the next tick.
    Unsettled,
    /// Loyalty was not touched: keep the daily deadline as it is.
    Unchanged,
}

/// Everything that decides a loyalty transition from where the profile
/// stands, except what cannot change between events inside one calendar
/// month. Each part changes at most once between two month starts (scores
/// are monotone there), so "differs from now" is monotone in time and the
/// first midnight it holds can be found by bisection.
///
/// Only what can decide something is watched. Without an open warning a
/// customer outside `spurious` can get none, whatever its risk, reasons or
/// severity, and a warning opens the moment its rule holds, whatever its
/// cooldown; a deadline on anything else would be a visit that decides
/// nothing (most customers have no warning, and their reason codes change
/// whenever evidence ages). The evaluate-everyone-daily property test
/// checks that skipping those visits changes no output.
#[derive(Debug, Clone, PartialEq)]
struct Signature {
    sides: Sides,
    watch: Watch,
}

/// The part of a [`Signature`] beyond the quadrant's sides.
#[derive(Debug, Clone, PartialEq)]
enum Watch {
    /// No warning is open and the customer is not `spurious`: only its
    /// sides can lead to a warning.
    Quiet,
    /// No warning is open and the customer is `spurious`: under the risk
    /// rule, whether the risk reaches `open_risk` (`None` under the
    /// quadrant rule, where the warning opened already).
    Opening(Option<bool>),
    /// A warning is open: what its update, escalation or clearing depends on.
    Open {
        past_gap: bool,
        open_complaint: bool,
        codes: Codes,
        cooldown_passed: bool,
        /// With `open_on = "risk"`: the risk is on the warning side of
        /// `clear_risk`, and at or above `escalate_risk`. The risk only
        /// rises between the instants `RiskEvidence::next_change_after`
        /// names, so both flip at most once.
        risk: Option<(bool, bool)>,
    },
}

impl Signature {
    /// The signature of a customer whose evaluation can decide nothing
    /// beyond its sides.
    fn quiet(sides: Sides) -> Self {
        Signature {
            sides,
            watch: Watch::Quiet,
        }
    }
}

/// Port through which the engine reads and writes one task's customers and
/// its deadline index. Adapters implement it over RocksDB or memory.
pub trait Profiles {
    /// Storage failure; the engine only passes it up.
    type Error;
    /// Loads a customer's profile. It is lent, not copied (a copy of a busy
    /// customer's history per event was a tenth of the engine's time):
    /// every profile loaded goes back through `save`, `erase` or `release`.
    fn load(&mut self, customer_id: &str) -> Result<Option<Box<Profile>>, Self::Error>;
    /// Hands back a loaded profile unchanged.
    fn release(&mut self, profile: Box<Profile>);
    /// Writes a profile; `previous` are the timers it had when loaded, so the
    /// index entries that changed can be replaced without a scan.
    fn save(&mut self, profile: Box<Profile>, previous: Timers) -> Result<(), Self::Error>;
    /// Deletes a profile and its index entries.
    fn erase(&mut self, customer_id: &str, previous: Timers) -> Result<(), Self::Error>;
    /// The `kind` entries of the index at or before `at` (deadline and
    /// customer), in deadline then customer-id order.
    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<(Millis, String)>, Self::Error>;
    /// Deletes an index entry that its customer's profile does not name
    /// (see [`Engine::tick`]).
    fn drop_timer(
        &mut self,
        kind: TimerKind,
        at: Millis,
        customer_id: &str,
    ) -> Result<(), Self::Error>;
    /// The task's part in percentile tiers (its value summary and the cut
    /// points in force), kept with its customers.
    fn ranking(&mut self) -> &mut Ranking;
}

/// What happened to an input event, for metrics (the label is the
/// snake_case name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Applied in time; may have produced outputs.
    Applied,
    /// Applied to state beyond the allowed lateness; no output (SPEC §7).
    Late,
    /// Its `event_id` was already applied for this customer: skipped.
    Duplicate,
    /// A `forget` erased the customer (or there was nothing to erase).
    Forgotten,
}

/// A task's clock: the largest event time it has seen (SPEC §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamClock {
    /// `None` until the first event.
    pub stream_time: Option<Millis>,
}

/// The engine: a policy plus the rules. Holds no state of its own.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: Policy,
}

impl Engine {
    /// An engine for a policy.
    pub fn new(policy: Policy) -> Self {
        Engine { policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Applies one validated event: first the ticks for every midnight its
    /// time moves the task's stream time past, then the event itself.
    /// Outputs are appended to `out` in emission order.
    pub fn apply<P: Profiles>(
        &self,
        clock: &mut StreamClock,
        store: &mut P,
        event: &Event,
        out: &mut Vec<Output>,
    ) -> Result<Outcome, P::Error> {
        let stream_time = self.advance_clock(clock, event.ts, store, out)?;
        let pyramid = self.pyramid(store);
        let ranked_at = self.ranked_month(store, stream_time);

        let loaded = store.load(&event.customer_id)?;
        // What the customer counts for in the task's value summary before
        // the event (every stored customer is counted once).
        let counted = ranked_at
            .zip(loaded.as_deref())
            .map(|(m, p)| Self::totals(p, m).value);
        if let EventKind::Forget = event.kind {
            if let Some(mut p) = loaded {
                if let Some(v) = counted {
                    store.ranking().pending.remove(v);
                }
                self.clear_on_forget(&mut p, event, out);
                store.erase(&p.customer_id, p.timers)?;
                if self.policy.emit_profiles {
                    out.push(Output {
                        customer_id: p.customer_id.clone(),
                        seq: p.seq,
                        at: event.ts,
                        cause: Cause::Event(event.event_id.clone()),
                        body: OutputBody::ProfileErased,
                    });
                }
            }
            return Ok(Outcome::Forgotten);
        }
        let mut profile = loaded.unwrap_or_else(|| Box::new(Profile::new(&event.customer_id)));
        let previous = profile.timers;
        let before = self.snapshot(&profile);
        let id_hash = xxhash_rust::xxh3::xxh3_64(event.event_id.as_bytes());
        if !profile.remember_event(id_hash, self.policy.dedup_window) {
            store.release(profile);
            return Ok(Outcome::Duplicate);
        }

        let late = event.ts < stream_time - self.policy.allowed_lateness;
        self.record_facts(&mut profile, event, id_hash, stream_time);
        let cause = Cause::Event(event.event_id.clone());
        let settled = if late {
            Settled::Unsettled
        } else {
            self.reassess_tier(&mut profile, &pyramid, event.ts, &cause, out);
            let signature = self.reassess_loyalty(&mut profile, event.ts, &cause, out);
            Settled::At(event.ts, signature)
        };
        profile.timers = self.schedule(&profile, &pyramid, stream_time, settled);
        self.snapshot_if_changed(&profile, before, event.ts, &cause, out);
        if let Some(m) = ranked_at {
            let value = Self::totals(&profile, m).value;
            let pending = &mut store.ranking().pending;
            match counted {
                Some(old) => pending.replace(old, value),
                None => pending.add(value),
            }
        }
        store.save(profile, previous)?;
        Ok(if late {
            Outcome::Late
        } else {
            Outcome::Applied
        })
    }

    /// Moves a task's stream time to `to` when that is later, first running
    /// the ticks of every midnight it passes; the first event only sets it.
    /// Returns the stream time. `apply` starts with this; a driver that
    /// looks at every customer at a midnight (the risk sampler) calls it
    /// with that midnight so the midnight's ticks have run.
    pub fn advance_clock<P: Profiles>(
        &self,
        clock: &mut StreamClock,
        to: Millis,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<Millis, P::Error> {
        let stream_time = match clock.stream_time {
            Some(st) if to > st => {
                self.advance(st, to, store, out)?;
                to
            }
            Some(st) => st,
            None => to,
        };
        clock.stream_time = Some(stream_time);
        Ok(stream_time)
    }

    /// Runs the ticks for every UTC midnight in `(from, to]`, in order.
    fn advance<P: Profiles>(
        &self,
        from: Millis,
        to: Millis,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        let mut midnight = next_midnight(from);
        while midnight <= to {
            self.tick(midnight, store, out)?;
            midnight += DAY_MS;
        }
        Ok(())
    }

    /// One midnight: month close first when it is the first of a month, then
    /// the daily re-evaluation (SPEC §7, Ticks). Only customers whose
    /// deadline is due are visited; everyone else provably has nothing to do.
    ///
    /// The profile, not the index, says when a customer is due: an entry
    /// whose profile names another deadline (or which has no profile) is
    /// dropped unvisited. The pipeline keeps the index out of its changelog
    /// and a restore rebuilds it from the restored profiles, adding their
    /// entries without looking for the ones older versions put.
    pub fn tick<P: Profiles>(
        &self,
        midnight: Millis,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        if is_month_start(midnight) {
            self.roll_ranking(store, midnight, out);
            for (at, id) in store.due(TimerKind::MonthClose, midnight)? {
                self.fire(TimerKind::MonthClose, at, &id, midnight, store, out)?;
            }
        }
        for (at, id) in store.due(TimerKind::Daily, midnight)? {
            self.fire(TimerKind::Daily, at, &id, midnight, store, out)?;
        }
        Ok(())
    }

    /// Runs the index entry (`kind`, `at`, `customer_id`) at `midnight`, or
    /// drops it when the customer's profile does not name it.
    fn fire<P: Profiles>(
        &self,
        kind: TimerKind,
        at: Millis,
        customer_id: &str,
        midnight: Millis,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        match store.load(customer_id)? {
            Some(profile) if profile.timers.of(kind) == Some(at) => {
                self.run_timer(profile, midnight, kind, store, out)
            }
            stale => {
                if let Some(profile) = stale {
                    store.release(profile);
                }
                store.drop_timer(kind, at, customer_id)
            }
        }
    }

    /// Runs one timer for one customer, due or not, and reschedules it.
    pub fn visit<P: Profiles>(
        &self,
        customer_id: &str,
        midnight: Millis,
        kind: TimerKind,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        match store.load(customer_id)? {
            Some(profile) => self.run_timer(profile, midnight, kind, store, out),
            None => Ok(()),
        }
    }

    fn run_timer<P: Profiles>(
        &self,
        mut profile: Box<Profile>,
        midnight: Millis,
        kind: TimerKind,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        let previous = profile.timers;
        let before = self.snapshot(&profile);
        let cause = Cause::Timer(kind);
        let pyramid = self.pyramid(store);
        let settled = match kind {
            TimerKind::MonthClose => {
                let tier = profile.tier;
                self.month_close(&mut profile, &pyramid, midnight, out);
                // The month's summary was consumed by this month close
                // (`roll_ranking`); every customer visited here starts the
                // next one.
                if let Some(m) = self.ranked_month(store, midnight) {
                    store.ranking().pending.add(Self::totals(&profile, m).value);
                }
                // Month closes run before the midnight's daily
                // re-evaluations, so a deadline put here is still met.
                if profile.tier == tier {
                    Settled::Unchanged
                } else {
                    Settled::Due(midnight)
                }
            }
            TimerKind::Daily => {
                // A customer whose first events were all late gets its tier
                // at the next tick (their effect shows then, SPEC §7).
                if profile.tier.is_none() {
                    self.reassess_tier(&mut profile, &pyramid, midnight, &cause, out);
                }
                let signature = self.reassess_loyalty(&mut profile, midnight, &cause, out);
                Settled::Ticked(midnight, signature)
            }
        };
        profile.timers = self.schedule(&profile, &pyramid, midnight, settled);
        self.snapshot_if_changed(&profile, before, midnight, &cause, out);
        store.save(profile, previous)
    }

    /// The pyramid in force for the task: the configured thresholds, or
    /// under `percentile` the cut points of the last month close (the
    /// configured thresholds until the first).
    fn pyramid<P: Profiles>(&self, store: &mut P) -> Pyramid {
        let tiers = &self.policy.tiers;
        if tiers.percentile.is_none() {
            return tiers.absolute;
        }
        let r = store.ranking();
        match r.in_force {
            Some(cut) => *r.bounds.get_or_insert_with(|| tiers.pyramid_of(&cut)),
            None => tiers.absolute,
        }
    }

    /// Under `percentile`, the month close the task's value summary is
    /// being kept for: the first after `stream_time`.
    fn ranked_month<P: Profiles>(&self, store: &mut P, stream_time: Millis) -> Option<Millis> {
        self.policy.tiers.percentile?;
        let r = store.ranking();
        Some(
            *r.pending_month
                .get_or_insert_with(|| month_start(month_of(stream_time) + 1)),
        )
    }

    /// Under `percentile`, at the month start `midnight`: the cut points
    /// merged from every task's summary come in force (the driver installs
    /// them; a driver that runs a single task leaves it to this task's own
    /// summary, which is then all of them), and the next month's summary
    /// starts empty — the month close visits every customer and counts it.
    fn roll_ranking<P: Profiles>(&self, store: &mut P, midnight: Millis, out: &mut Vec<Output>) {
        let Some(shares) = &self.policy.tiers.percentile else {
            return;
        };
        let r = store.ranking();
        let MonthClose { cut, population } = match r.installed.take() {
            Some(c) if c.cut.month == midnight => c,
            _ => MonthClose {
                cut: CutPoints::of(&r.pending, shares, midnight),
                population: std::mem::take(&mut r.pending),
            },
        };
        let thresholds = |c: &CutPoints| (c.platinum, c.gold, c.iron);
        if cut.customers > 0 {
            if r.in_force.as_ref().map(thresholds) != Some(thresholds(&cut)) {
                out.push(Output {
                    customer_id: Id::default(),
                    seq: 0,
                    at: midnight,
                    cause: Cause::Timer(TimerKind::MonthClose),
                    body: OutputBody::TierCutpoints(cut),
                });
            }
            r.in_force = Some(cut);
            r.population = population;
            r.bounds = None;
        }
        r.pending = ValueHistogram::default();
        r.pending_month = Some(month_start(month_of(midnight) + 1));
    }

    /// Adds the event's facts to the profile. Only events whose month is
    /// still in the window at stream time count (SPEC §2): anything older
    /// could never be part of a decision again.
    fn record_facts(
        &self,
        profile: &mut Profile,
        event: &Event,
        id_hash: u64,
        stream_time: Millis,
    ) {
        let month = month_of(event.ts);
        let in_window = month >= window_start(stream_time);
        if in_window {
            profile.first_month = Some(profile.first_month.map_or(month, |f| f.min(month)));
        }
        match &event.kind {
            EventKind::Purchase(p) if in_window => {
                profile.buckets.add_purchase(event.ts, p);
                profile.evidence.risk.record_purchase(event.ts, p);
            }
            EventKind::Service(s) if in_window => {
                profile.buckets.add_cost(event.ts, s.cost);
                profile.evidence.record_service(event.ts, id_hash, s);
            }
            EventKind::Complaint(c) if in_window => {
                profile
                    .evidence
                    .record_complaint(event.ts, id_hash, c, |r| {
                        xxhash_rust::xxh3::xxh3_64(r.as_bytes())
                    });
            }
            _ => {}
        }
        // No evaluation ever looks before the window of the oldest instant
        // that can still be evaluated (stream time minus the lateness).
        let first_kept = window_start(stream_time - self.policy.allowed_lateness);
        profile.buckets.prune_before(first_kept);
        profile.evidence.prune_before(first_kept);
        profile
            .evidence
            .risk
            .prune_before(stream_time - self.policy.allowed_lateness);
    }

    /// Window totals as seen at instant `at`.
    fn totals(profile: &Profile, at: Millis) -> WindowTotals {
        profile.buckets.totals_from(window_start(at))
    }

    fn figures(t: &WindowTotals) -> ValueFigures {
        ValueFigures {
            value_12m: t.value,
            revenue_12m: t.revenue,
            purchases_12m: t.purchases,
        }
    }

    fn inputs(
        pyramid: &Pyramid,
        totals: &WindowTotals,
        tier: Tier,
        tier_since: Option<Millis>,
    ) -> TierInputs {
        let bounds = pyramid.bounds(tier);
        TierInputs {
            figures: Self::figures(totals),
            threshold: bounds.map(|b| b.threshold),
            downgrade_below: bounds.map(|b| b.downgrade_below),
            at_risk_below: bounds.map(|b| b.at_risk_below),
            tier_since,
        }
    }

    /// Emits an output for the profile, taking the next `seq`.
    fn emit(
        profile: &mut Profile,
        at: Millis,
        cause: &Cause,
        body: OutputBody,
        out: &mut Vec<Output>,
    ) {
        out.push(Output {
            customer_id: profile.customer_id.clone(),
            seq: profile.next_seq(),
            at,
            cause: cause.clone(),
            body,
        });
    }

    /// Changes the tier and emits `tier_changed`.
    #[allow(clippy::too_many_arguments)]
    fn change_tier(
        &self,
        profile: &mut Profile,
        pyramid: &Pyramid,
        to: Tier,
        direction: Direction,
        reason: &'static str,
        totals: &WindowTotals,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let from = profile.tier;
        let inputs = Self::inputs(pyramid, totals, to, from.map(|_| profile.tier_since));
        let body = OutputBody::TierChanged {
            from,
            to,
            direction,
            reason,
            fake_big_customer: self.policy.tiers.is_fake_big(totals.revenue, totals.margin),
            inputs,
        };
        profile.tier = Some(to);
        profile.tier_since = at;
        Self::emit(profile, at, cause, body, out);
    }

    /// Event-time tier rules: the initial tier, and immediate upgrades.
    fn reassess_tier(
        &self,
        profile: &mut Profile,
        pyramid: &Pyramid,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let totals = Self::totals(profile, at);
        let target = pyramid.tier_for(totals.value);
        match profile.tier {
            None => self.change_tier(
                profile,
                pyramid,
                target,
                Direction::Initial,
                "first_event",
                &totals,
                at,
                cause,
                out,
            ),
            Some(current) if target > current => self.change_tier(
                profile,
                pyramid,
                target,
                Direction::Upgrade,
                "value_reached_threshold",
                &totals,
                at,
                cause,
                out,
            ),
            Some(_) => {}
        }
    }

    /// Month close for one customer at the month-start instant `at`.
    fn month_close(
        &self,
        profile: &mut Profile,
        pyramid: &Pyramid,
        at: Millis,
        out: &mut Vec<Output>,
    ) {
        let Some(tier) = profile.tier else { return };
        let totals = Self::totals(profile, at);
        let cause = Cause::Timer(TimerKind::MonthClose);
        match self.month_close_decision_at_value(profile, pyramid, tier, totals.value, at) {
            Some(MonthCloseDecision::Upgrade(to)) => self.change_tier(
                profile,
                pyramid,
                to,
                Direction::Upgrade,
                "month_close_reassessment",
                &totals,
                at,
                &cause,
                out,
            ),
            Some(MonthCloseDecision::Downgrade(to)) => self.change_tier(
                profile,
                pyramid,
                to,
                Direction::Downgrade,
                "below_downgrade_line",
                &totals,
                at,
                &cause,
                out,
            ),
            Some(MonthCloseDecision::AtRisk { shortfall }) => {
                profile.at_risk_month = Some(month_of(at));
                let body = OutputBody::TierAtRisk {
                    tier,
                    shortfall,
                    downgrade_at: self.projected_downgrade(profile, pyramid, tier, at),
                    inputs: Self::inputs(pyramid, &totals, tier, Some(profile.tier_since)),
                };
                Self::emit(profile, at, &cause, body, out);
            }
            None => {}
        }
    }

    /// The month-close decision for `profile` at month start `at`, with
    /// the window's value there, honouring "at most one tier_at_risk per
    /// customer per month".
    fn month_close_decision_at_value(
        &self,
        profile: &Profile,
        pyramid: &Pyramid,
        tier: Tier,
        value: Minor,
        at: Millis,
    ) -> Option<MonthCloseDecision> {
        match self
            .policy
            .tiers
            .month_close(pyramid, tier, profile.tier_since, value, at)
        {
            Some(MonthCloseDecision::AtRisk { .. })
                if profile.at_risk_month == Some(month_of(at)) =>
            {
                None
            }
            decision => decision,
        }
    }

    /// The month closes after `now`, in order, as far as projections look,
    /// each with the value the window will have there if nothing else
    /// happens: one pass over the buckets for all of them (values change
    /// only by months leaving the window), not a sum per month close.
    fn coming_month_closes(
        profile: &Profile,
        now: Millis,
    ) -> impl Iterator<Item = (Minor, Millis)> + '_ {
        let month = month_of(now);
        let first_window = first_month_of_window(month + 1);
        profile
            .buckets
            .values_from(first_window)
            .zip(1..=PROJECTION_MONTHS)
            .map(move |(value, k)| (value, month_start(month + k)))
    }

    /// The first coming month close that would downgrade the customer if no
    /// further event arrived; `None` if the value never falls that far.
    fn projected_downgrade(
        &self,
        profile: &Profile,
        pyramid: &Pyramid,
        tier: Tier,
        now: Millis,
    ) -> Option<Millis> {
        let tiers = &self.policy.tiers;
        Self::coming_month_closes(profile, now)
            .find(|&(value, m)| {
                pyramid.below_downgrade_line(tier, value)
                    && m - profile.tier_since >= tiers.min_residence
            })
            .map(|(_, m)| m)
    }

    /// Computes the customer's deadlines after `now`: the first month close
    /// that decides something (values only change by months leaving the
    /// window, so it can be found without waiting), and the first midnight
    /// at which the daily re-evaluation can change anything — the next one
    /// for a customer still waiting for its initial tier or with evidence
    /// not yet evaluated.
    ///
    /// Under `percentile` every customer's month close is the next one: the
    /// cut points move there, and the customer counts in the next summary.
    fn schedule(
        &self,
        profile: &Profile,
        pyramid: &Pyramid,
        now: Millis,
        settled: Settled,
    ) -> Timers {
        let month_close = if self.policy.tiers.percentile.is_some() {
            Some(month_start(month_of(now) + 1))
        } else {
            profile.tier.and_then(|tier| {
                Self::coming_month_closes(profile, now)
                    .find(|&(value, m)| {
                        self.month_close_decision_at_value(profile, pyramid, tier, value, m)
                            .is_some()
                    })
                    .map(|(_, m)| m)
            })
        };
        let daily = if profile.tier.is_none() {
            Some(next_midnight(now))
        } else if !profile.evidence.any {
            None
        } else {
            match settled {
                Settled::At(t0, reference) => {
                    Some(self.next_loyalty_change(profile, t0, reference, now, 1))
                }
                Settled::Ticked(t0, reference) => {
                    Some(self.next_loyalty_change(profile, t0, reference, now, LOOK_AHEAD_MONTHS))
                }
                Settled::Due(at) => Some(at),
                Settled::Unsettled => Some(next_midnight(now)),
                Settled::Unchanged => profile.timers.daily,
            }
        };
        Timers { month_close, daily }
    }

    /// The first coming midnight at which re-evaluating a profile settled at
    /// `t0` (with signature `reference` there, when the caller has it)
    /// could change its quadrant or warning, searched for up to
    /// `months` month starts ahead (the last of them when nothing changes
    /// before).
    ///
    /// Time splits into segments at month starts (the 12-month window
    /// moves there, and scores may jump) and, under the risk rule, at the
    /// midnights `RiskEvidence::next_change_after` names. For a quiet
    /// customer, past its current month, only the month starts at which
    /// the window drops evidence split it ([`Self::next_departure`]): a
    /// visit of a light customer looked at two midnights per month for
    /// 13 months (a 1M replay computed 5.8M signatures, 21% of its
    /// instructions; 4.1M with this). Within a segment
    /// every part of the signature changes at most once and never back
    /// (scores move one way, the cooldown passes, complaints age out),
    /// which is what makes a bisection exact; it also means that a
    /// signature unchanged at a segment's first and last midnights was
    /// unchanged all along. Most evaluations change nothing, so two looks
    /// per segment replace the whole bisection. Looking across month
    /// starts from a daily re-evaluation (a quiet customer) costs a few
    /// signatures per month instead of a visit per month: a load, a save
    /// and a rewrite of the profile.
    fn next_loyalty_change(
        &self,
        profile: &Profile,
        t0: Millis,
        reference: Option<Signature>,
        now: Millis,
        months: i32,
    ) -> Millis {
        let first = next_midnight(now);
        if month_of(first) != month_of(t0) {
            return first;
        }
        let reference = reference.unwrap_or_else(|| self.signature(profile, t0));
        let differs = |at: Millis| self.signature(profile, at) != reference;
        let limit = month_start(month_of(first) + months);
        // The first segment starts at t0 (its signature is the reference
        // there), a later one where the one before ended.
        let (mut start, mut from) = (first, t0);
        loop {
            let mut end = month_start(month_of(start) + 1);
            if reference.watch == Watch::Quiet {
                // A quiet customer's signature is its sides, which move one
                // way until the window drops some evidence: past the month
                // of `now` (which may hold evidence, summed differently
                // from a whole month) a segment runs to that month start.
                if start != first {
                    end = Self::next_departure(profile, month_of(start))
                        .map_or(limit, |d| d.min(limit));
                }
            } else if self.policy.loyalty.risk.open_on == OpenOn::Risk {
                // A watched risk splits a month.
                end = end.min(profile.evidence.risk.next_change_after(from));
            }
            // A segment that ended by the first midnight (an edge between
            // t0 and it), or a later one that starts changed.
            if end <= start || (start != first && differs(start)) {
                return start;
            }
            let days = (end - start) / DAY_MS;
            // (A later segment's first midnight was looked at just now.)
            let last_seen = start != first && days == 1;
            if days > 0 && !last_seen && differs(start + (days - 1) * DAY_MS) {
                // Changed by the last midnight: the first change is no later.
                let (mut lo, mut hi) = (0, days - 1);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if differs(start + mid * DAY_MS) {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                return start + lo * DAY_MS;
            }
            if end >= limit {
                return end;
            }
            (start, from) = (end, end);
        }
    }

    /// The first month start after `month` at which the 12-month window
    /// drops evidence the scores read (a value bucket, an answer, a
    /// complaint or a signal); `None` when it never drops any again.
    /// Between two such month starts the window moves over empty months
    /// only, so the scores change with time alone: behaviour decays,
    /// attitude recovers, each in one direction.
    fn next_departure(profile: &Profile, month: MonthIndex) -> Option<Millis> {
        let oldest = first_month_of_window(month);
        let bucket = profile.buckets.first_month_from(oldest);
        let record = profile
            .evidence
            .first_scored_from(month_start(oldest))
            .map(month_of);
        bucket
            .into_iter()
            .chain(record)
            .min()
            .map(|m| month_start(m + WINDOW_MONTHS))
    }

    fn scores_at(&self, profile: &Profile, at: Millis) -> Scores {
        let lp = &self.policy.loyalty;
        scores(
            &lp.behaviour,
            &lp.attitude,
            &profile.evidence,
            &Self::totals(profile, at),
            at,
        )
    }

    fn signature(&self, profile: &Profile, at: Millis) -> Signature {
        let s = self.scores_at(profile, at);
        let sides = next_sides(&self.policy.loyalty.quadrant, profile.sides, &s);
        // Asked before the risk is computed: a quiet customer's is not.
        if Self::quiet(profile, sides) {
            return Signature::quiet(sides);
        }
        let risk = (self.policy.loyalty.risk.open_on == OpenOn::Risk)
            .then(|| self.risk_value_at(profile, &s, at));
        self.signature_of(profile, sides, &s, risk, at)
    }

    /// Whether a profile with `sides` can decide nothing beyond them: no
    /// warning is open and none can open outside `spurious`.
    fn quiet(profile: &Profile, sides: Sides) -> bool {
        profile.warning.is_none() && sides.quadrant() != Quadrant::Spurious
    }

    /// The signature at `at` of a profile whose sides there are `sides`,
    /// scores `s` and risk (under the risk rule, when it is watched) `risk`.
    fn signature_of(
        &self,
        profile: &Profile,
        sides: Sides,
        s: &Scores,
        risk: Option<f64>,
        at: Millis,
    ) -> Signature {
        if Self::quiet(profile, sides) {
            return Signature::quiet(sides);
        }
        let rp = &self.policy.loyalty.risk;
        let watch = if profile.warning.is_none() {
            Watch::Opening(risk.map(|r| self.risk_on_warning_side(profile, r)))
        } else {
            Watch::Open {
                past_gap: s.past_gap,
                open_complaint: s.open_complaint,
                codes: codes(&reasons(s)),
                cooldown_passed: self.cooldown_passed(profile, at),
                risk: risk.map(|r| (self.risk_on_warning_side(profile, r), r >= rp.escalate_risk)),
            }
        };
        Signature { sides, watch }
    }

    /// What the churn risk of a profile whose scores at `at` are `s` is
    /// computed from, and the first instant of its window.
    fn risk_inputs<'a>(
        profile: &'a Profile,
        s: &'a Scores,
        at: Millis,
    ) -> (RiskInputs<'a>, Millis) {
        let month = month_of(at);
        let window = first_month_of_window(month);
        let inputs = RiskInputs {
            scores: s,
            evidence: &profile.evidence.risk,
            buckets: &profile.buckets,
            tier: profile.tier,
            first_month: profile.first_month,
            month,
            at,
        };
        (inputs, month_start(window))
    }

    /// The churn risk with its factors, for an output.
    fn risk_at(&self, profile: &Profile, s: &Scores, at: Millis) -> Risk {
        let lp = &self.policy.loyalty;
        let (inputs, window_from) = Self::risk_inputs(profile, s, at);
        risk(&lp.risk.model, &lp.attitude, &inputs, window_from)
    }

    /// The churn risk and the money at stake of a customer at `at`, as a
    /// warning would carry them (`None` without an attitude: no risk).
    pub fn stake(&self, profile: &Profile, at: Millis) -> Option<(f64, Stake)> {
        if !profile.evidence.any {
            return None;
        }
        let s = self.scores_at(profile, at);
        let r = self.risk_value_at(profile, &s, at);
        Some((r, self.stake_of(profile, r, at)))
    }

    /// The money at stake on a warning at `at` with churn risk `risk`.
    fn stake_of(&self, profile: &Profile, risk: f64, at: Millis) -> Stake {
        let sp = &self.policy.loyalty.risk.stake;
        let projected = projected_value(
            &profile.buckets,
            profile.first_month,
            month_of(at),
            sp.horizon_days,
        );
        sp.stake(projected, risk)
    }

    /// The churn-risk features of a profile at `at` — what the model is
    /// fitted and calibrated on — or `None` for a customer without an
    /// attitude (no risk is given for it).
    pub fn risk_features(&self, profile: &Profile, at: Millis) -> Option<[f64; FEATURES]> {
        if !profile.evidence.any {
            return None;
        }
        let s = self.scores_at(profile, at);
        let lp = &self.policy.loyalty;
        let (inputs, window_from) = Self::risk_inputs(profile, &s, at);
        Some(features(&lp.attitude, &inputs, window_from))
    }

    /// The churn risk alone, for a decision.
    fn risk_value_at(&self, profile: &Profile, s: &Scores, at: Millis) -> f64 {
        let lp = &self.policy.loyalty;
        let (inputs, window_from) = Self::risk_inputs(profile, s, at);
        lp.risk
            .model
            .probability(&features(&lp.attitude, &inputs, window_from))
    }

    /// Whether risk `r` keeps (or would open) a warning: hysteresis
    /// between `open_risk` and `clear_risk`.
    fn risk_on_warning_side(&self, profile: &Profile, r: f64) -> bool {
        let rp = &self.policy.loyalty.risk;
        if profile.warning.is_some() {
            r >= rp.clear_risk
        } else {
            r >= rp.open_risk
        }
    }

    fn cooldown_passed(&self, profile: &Profile, at: Millis) -> bool {
        profile
            .last_warning_at
            .is_none_or(|last| at - last >= self.policy.loyalty.warning_cooldown)
    }

    /// Re-evaluates loyalty at `at`: scores, quadrant, and the warning
    /// lifecycle. Customers without attitudinal evidence have no attitude,
    /// no quadrant and no warning. Returns the profile's signature at `at`
    /// after the evaluation (`None` without an attitude).
    fn reassess_loyalty(
        &self,
        profile: &mut Profile,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Option<Signature> {
        if !profile.evidence.any {
            return None;
        }
        let s = self.scores_at(profile, at);
        let sides = next_sides(&self.policy.loyalty.quadrant, profile.sides, &s);
        profile.sides = Some(sides);
        if Self::quiet(profile, sides) {
            return Some(Signature::quiet(sides));
        }
        let quadrant = sides.quadrant();
        let rp = &self.policy.loyalty.risk;
        let by_risk = rp.open_on == OpenOn::Risk;
        // The decision needs the risk only under the risk rule; its
        // factors only when a warning output is emitted.
        let value = by_risk.then(|| self.risk_value_at(profile, &s, at));
        let escalated = match value {
            Some(v) => v >= rp.escalate_risk,
            None => s.past_gap || s.open_complaint,
        };
        let sev = severity(profile.tier, escalated);
        let reasons = reasons(&s);
        let codes = codes(&reasons);
        let warn = quadrant == Quadrant::Spurious
            && value.is_none_or(|v| self.risk_on_warning_side(profile, v));
        let step = transition(
            warn,
            profile.warning.as_deref(),
            sev,
            &codes,
            at,
            profile.last_warning_at,
            self.policy.loyalty.warning_cooldown,
        );
        let action = match step {
            Transition::None => return Some(self.signature_of(profile, sides, &s, value, at)),
            Transition::Open => {
                profile.warning = Some(Box::new(OpenWarning {
                    warning_id: output_id(&profile.customer_id, profile.seq + 1),
                    severity: sev,
                    reasons: codes.to_vec(),
                }));
                WarningAction::Opened
            }
            Transition::Update => {
                let w = profile
                    .warning
                    .as_mut()
                    .expect("an update needs an open warning");
                w.severity = sev;
                w.reasons = codes.to_vec();
                WarningAction::Updated
            }
            Transition::Clear => WarningAction::Cleared,
        };
        let r = self.risk_at(profile, &s, at);
        let stake = self.stake_of(profile, r.value, at);
        let open = match action {
            WarningAction::Cleared => profile.warning.take().map(|w| *w),
            _ => profile.warning.as_deref().cloned(),
        }
        .expect("a warning output has a warning");
        profile.last_warning_at = Some(at);
        let signature = self.signature_of(profile, sides, &s, value, at);
        let body = ChurnWarning {
            action,
            warning_id: open.warning_id,
            severity: open.severity,
            tier: profile.tier,
            quadrant: Some(quadrant),
            recommended_action: Some(if by_risk {
                action_for(r.dominant(), &s)
            } else {
                recommended_action(&s)
            }),
            reasons,
            value_12m: Self::totals(profile, at).value,
            scores: Some(s),
            risk: Some(r),
            stake: Some(stake),
        };
        Self::emit(
            profile,
            at,
            cause,
            OutputBody::ChurnWarning(Box::new(body)),
            out,
        );
        Some(signature)
    }

    /// A forgotten customer's open warning is cleared before its state goes.
    fn clear_on_forget(&self, profile: &mut Profile, event: &Event, out: &mut Vec<Output>) {
        let Some(open) = profile.warning.take() else {
            return;
        };
        let body = ChurnWarning {
            action: WarningAction::Cleared,
            warning_id: open.warning_id,
            severity: open.severity,
            tier: profile.tier,
            quadrant: None,
            reasons: Reasons::new(),
            recommended_action: None,
            scores: None,
            risk: None,
            stake: None,
            value_12m: Self::totals(profile, event.ts).value,
        };
        let cause = Cause::Event(event.event_id.clone());
        Self::emit(
            profile,
            event.ts,
            &cause,
            OutputBody::ChurnWarning(Box::new(body)),
            out,
        );
    }
}

/// What the profiles topic reports changes of.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    tier: Option<Tier>,
    quadrant: Option<Quadrant>,
    warning: Option<OpenWarning>,
}

impl Snapshot {
    fn of(p: &Profile) -> Self {
        Snapshot {
            tier: p.tier,
            quadrant: p.sides.map(Sides::quadrant),
            warning: p.warning.as_deref().cloned(),
        }
    }
}

impl Engine {
    /// What the profiles topic compares against, when profile snapshots
    /// are wanted: without them nothing is taken (a snapshot clones the
    /// open warning, on every event and visit of a warned customer).
    fn snapshot(&self, p: &Profile) -> Option<Snapshot> {
        self.policy.emit_profiles.then(|| Snapshot::of(p))
    }

    /// Pushes the profile as it is now when tier, quadrant or warning
    /// changed since `before` (taken by [`Engine::snapshot`]).
    fn snapshot_if_changed(
        &self,
        p: &Profile,
        before: Option<Snapshot>,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        if before.is_none_or(|b| Snapshot::of(p) == b) {
            return;
        }
        out.push(Output {
            customer_id: p.customer_id.clone(),
            seq: p.seq,
            at,
            cause: cause.clone(),
            body: OutputBody::Profile(Box::new(self.view(p, at))),
        });
    }

    /// The profile as the outside world sees it at `at`: tier, quadrant,
    /// scores, value figures and the open warning.
    pub fn view(&self, p: &Profile, at: Millis) -> ProfileView {
        let totals = Self::totals(p, at);
        ProfileView {
            tier: p.tier,
            tier_since: p.tier.map(|_| p.tier_since),
            quadrant: p.sides.map(Sides::quadrant),
            scores: p.evidence.any.then(|| self.scores_at(p, at)),
            figures: Self::figures(&totals),
            fake_big_customer: self.policy.tiers.is_fake_big(totals.revenue, totals.margin),
            warning: p.warning.as_deref().cloned(),
        }
    }
}

/// The sorted reason codes of a set of reasons.
fn codes(reasons: &[Reason]) -> Codes {
    let mut c: Codes = reasons.iter().map(Reason::code).collect();
    c.sort();
    c
}
