//! The engine: applies one event, or one stream-time tick, to a task's
//! customers and says what to emit. Pure: state comes and goes through the
//! `Profiles` port, so the same code runs under `replay`, under the Kafka
//! pipeline and inside property tests.

use super::event::{Event, EventKind};
use super::output::{Cause, Direction, Output, OutputBody, TierInputs, TimerKind};
use super::profile::{Profile, Timers, ValueFigures};
use super::tier::{MonthCloseDecision, Tier, TierPolicy};
use super::time::{is_month_start, month_of, month_start, next_midnight, Millis, DAY_MS};
use super::value::{window_start, WindowTotals};

/// How far ahead month-close timers are projected. After 12 month closes
/// without events every bucket has left the window, so one more is enough
/// to see the value settle.
const PROJECTION_MONTHS: i32 = 14;

/// The whole decision policy, built from config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Pyramid thresholds and month-close rules.
    pub tiers: TierPolicy,
    /// How far behind stream time an event may be and still cause output.
    pub allowed_lateness: Millis,
    /// How many recent event ids per customer are remembered.
    pub dedup_window: usize,
}

/// Port through which the engine reads and writes one task's customers and
/// its deadline index. Adapters implement it over RocksDB or memory.
pub trait Profiles {
    /// Storage failure; the engine only passes it up.
    type Error;
    /// Loads a customer's profile.
    fn load(&mut self, customer_id: &str) -> Result<Option<Profile>, Self::Error>;
    /// Writes a profile; `previous` are the timers it had when loaded, so the
    /// index entries that changed can be replaced without a scan.
    fn save(&mut self, profile: Profile, previous: Timers) -> Result<(), Self::Error>;
    /// Deletes a profile and its index entries.
    fn erase(&mut self, customer_id: &str, previous: Timers) -> Result<(), Self::Error>;
    /// Customers whose `kind` deadline is at or before `at`, in deadline then
    /// customer-id order.
    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<String>, Self::Error>;
}

/// What happened to an input event, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let stream_time = match clock.stream_time {
            Some(st) if event.ts > st => {
                self.advance(st, event.ts, store, out)?;
                event.ts
            }
            Some(st) => st,
            None => event.ts,
        };
        clock.stream_time = Some(stream_time);

        let loaded = store.load(&event.customer_id)?;
        if let EventKind::Forget = event.kind {
            if let Some(p) = loaded {
                store.erase(&p.customer_id, p.timers)?;
            }
            return Ok(Outcome::Forgotten);
        }
        let mut profile = loaded.unwrap_or_else(|| Profile::new(&event.customer_id));
        let previous = profile.timers;
        let id_hash = xxhash_rust::xxh3::xxh3_64(event.event_id.as_bytes());
        if !profile.remember_event(id_hash, self.policy.dedup_window) {
            return Ok(Outcome::Duplicate);
        }

        let late = event.ts < stream_time - self.policy.allowed_lateness;
        self.record_facts(&mut profile, event, stream_time);
        if !late {
            let cause = Cause::Event(event.event_id.clone());
            self.reassess_tier(&mut profile, event.ts, &cause, out);
        }
        profile.timers = self.schedule(&profile, stream_time);
        store.save(profile, previous)?;
        Ok(if late {
            Outcome::Late
        } else {
            Outcome::Applied
        })
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
    pub fn tick<P: Profiles>(
        &self,
        midnight: Millis,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        if is_month_start(midnight) {
            for id in store.due(TimerKind::MonthClose, midnight)? {
                self.visit(&id, midnight, TimerKind::MonthClose, store, out)?;
            }
        }
        for id in store.due(TimerKind::Daily, midnight)? {
            self.visit(&id, midnight, TimerKind::Daily, store, out)?;
        }
        Ok(())
    }

    /// Runs one timer for one customer and reschedules it.
    pub fn visit<P: Profiles>(
        &self,
        customer_id: &str,
        midnight: Millis,
        kind: TimerKind,
        store: &mut P,
        out: &mut Vec<Output>,
    ) -> Result<(), P::Error> {
        let Some(mut profile) = store.load(customer_id)? else {
            return Ok(());
        };
        let previous = profile.timers;
        let cause = Cause::Timer(kind);
        match kind {
            TimerKind::MonthClose => self.month_close(&mut profile, midnight, out),
            TimerKind::Daily => {
                self.reassess_tier_if_unassigned(&mut profile, midnight, &cause, out)
            }
        }
        profile.timers = self.schedule(&profile, midnight);
        store.save(profile, previous)
    }

    /// Adds the event's facts to the profile. Value buckets only take events
    /// whose month is still in the window at stream time (SPEC §2).
    fn record_facts(&self, profile: &mut Profile, event: &Event, stream_time: Millis) {
        let first_month = window_start(stream_time);
        let in_window = month_of(event.ts) >= first_month;
        match &event.kind {
            EventKind::Purchase(p) if in_window => profile.buckets.add_purchase(event.ts, p),
            EventKind::Service(s) if in_window => profile.buckets.add_cost(event.ts, s.cost),
            _ => {}
        }
        // No evaluation ever looks before the window of the oldest instant
        // that can still be evaluated (stream time minus the lateness).
        profile
            .buckets
            .prune_before(window_start(stream_time - self.policy.allowed_lateness));
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

    fn inputs(&self, totals: &WindowTotals, tier: Tier, tier_since: Option<Millis>) -> TierInputs {
        let bounds = self.policy.tiers.bounds(tier);
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
        to: Tier,
        direction: Direction,
        reason: &'static str,
        totals: &WindowTotals,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let from = profile.tier;
        let inputs = self.inputs(totals, to, from.map(|_| profile.tier_since));
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
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let totals = Self::totals(profile, at);
        let target = self.policy.tiers.tier_for(totals.value);
        match profile.tier {
            None => self.change_tier(
                profile,
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

    /// A customer whose first events were all late gets its tier at the
    /// next tick (their effect shows at the next event or tick, SPEC §7).
    fn reassess_tier_if_unassigned(
        &self,
        profile: &mut Profile,
        at: Millis,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        if profile.tier.is_none() {
            self.reassess_tier(profile, at, cause, out);
        }
    }

    /// Month close for one customer at the month-start instant `at`.
    fn month_close(&self, profile: &mut Profile, at: Millis, out: &mut Vec<Output>) {
        let Some(tier) = profile.tier else { return };
        let totals = Self::totals(profile, at);
        let cause = Cause::Timer(TimerKind::MonthClose);
        match self.month_close_decision(profile, tier, at) {
            Some(MonthCloseDecision::Upgrade(to)) => self.change_tier(
                profile,
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
                    downgrade_at: self.projected_downgrade(profile, tier, at),
                    inputs: self.inputs(&totals, tier, Some(profile.tier_since)),
                };
                Self::emit(profile, at, &cause, body, out);
            }
            None => {}
        }
    }

    /// The month-close decision for `profile` at month start `at`, honouring
    /// "at most one tier_at_risk per customer per month".
    fn month_close_decision(
        &self,
        profile: &Profile,
        tier: Tier,
        at: Millis,
    ) -> Option<MonthCloseDecision> {
        let value = Self::totals(profile, at).value;
        match self
            .policy
            .tiers
            .month_close(tier, profile.tier_since, value, at)
        {
            Some(MonthCloseDecision::AtRisk { .. })
                if profile.at_risk_month == Some(month_of(at)) =>
            {
                None
            }
            decision => decision,
        }
    }

    /// The month closes after `now`, in order, as far as projections look.
    fn coming_month_closes(now: Millis) -> impl Iterator<Item = Millis> {
        let month = month_of(now);
        (1..=PROJECTION_MONTHS).map(move |k| month_start(month + k))
    }

    /// The first coming month close that would downgrade the customer if no
    /// further event arrived; `None` if the value never falls that far.
    fn projected_downgrade(&self, profile: &Profile, tier: Tier, now: Millis) -> Option<Millis> {
        let tiers = &self.policy.tiers;
        Self::coming_month_closes(now).find(|&m| {
            tiers.below_downgrade_line(tier, Self::totals(profile, m).value)
                && m - profile.tier_since >= tiers.min_residence
        })
    }

    /// Computes the customer's deadlines after `now`: the first month close
    /// that decides something (values only change by months leaving the
    /// window, so it can be found without waiting), and the next midnight
    /// for a customer still waiting for its initial tier.
    fn schedule(&self, profile: &Profile, now: Millis) -> Timers {
        match profile.tier {
            None => Timers {
                month_close: None,
                daily: Some(next_midnight(now)),
            },
            Some(tier) => Timers {
                month_close: Self::coming_month_closes(now)
                    .find(|&m| self.month_close_decision(profile, tier, m).is_some()),
                daily: None,
            },
        }
    }
}
