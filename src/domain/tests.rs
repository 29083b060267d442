//! Engine rule tests: one per SPEC rule and boundary, plus property tests
//! for order independence, determinism and the deadline index.

use super::engine::{Engine, Outcome, Policy, Profiles, StreamClock};
use super::event::{Complaint, Event, EventKind, Minor, Purchase, Service, Severity};
use super::output::{Cause, Direction, Output, OutputBody, TimerKind};
use super::profile::{Profile, Timers};
use super::tier::tests::default_policy;
use super::tier::Tier;
use super::time::{month_start, Millis, DAY_MS};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

/// A plain in-memory `Profiles`, so domain tests need no adapter.
#[derive(Debug, Default, Clone)]
pub struct MapProfiles {
    pub profiles: BTreeMap<String, Profile>,
    timers: BTreeSet<(TimerKind, Millis, String)>,
}

impl MapProfiles {
    fn set(&mut self, kind: TimerKind, id: &str, old: Option<Millis>, new: Option<Millis>) {
        if let Some(at) = old {
            self.timers.remove(&(kind, at, id.to_owned()));
        }
        if let Some(at) = new {
            self.timers.insert((kind, at, id.to_owned()));
        }
    }
}

impl Profiles for MapProfiles {
    type Error = Infallible;
    fn load(&mut self, id: &str) -> Result<Option<Profile>, Infallible> {
        Ok(self.profiles.get(id).cloned())
    }
    fn save(&mut self, p: Profile, prev: Timers) -> Result<(), Infallible> {
        self.set(
            TimerKind::MonthClose,
            &p.customer_id,
            prev.month_close,
            p.timers.month_close,
        );
        self.set(TimerKind::Daily, &p.customer_id, prev.daily, p.timers.daily);
        self.profiles.insert(p.customer_id.clone(), p);
        Ok(())
    }
    fn erase(&mut self, id: &str, prev: Timers) -> Result<(), Infallible> {
        self.set(TimerKind::MonthClose, id, prev.month_close, None);
        self.set(TimerKind::Daily, id, prev.daily, None);
        self.profiles.remove(id);
        Ok(())
    }
    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<String>, Infallible> {
        Ok(self
            .timers
            .iter()
            .filter(|(k, t, _)| *k == kind && *t <= at)
            .map(|(_, _, id)| id.clone())
            .collect())
    }
}

pub fn policy() -> Policy {
    Policy {
        tiers: default_policy(),
        allowed_lateness: 7 * DAY_MS,
        dedup_window: 32,
    }
}

/// 2026-01-01T00:00:00Z
const JAN: Millis = 1_767_225_600_000;
const H: Millis = 3_600_000;

fn month(k: i32) -> Millis {
    month_start(2026 * 12 + k)
}

fn purchase(id: &str, cust: &str, ts: Millis, amount: Minor, margin: Minor) -> Event {
    Event {
        event_id: id.into(),
        customer_id: cust.into(),
        ts,
        kind: EventKind::Purchase(Purchase {
            amount,
            margin,
            refund: false,
        }),
    }
}

fn refund(id: &str, cust: &str, ts: Millis, amount: Minor, margin: Minor) -> Event {
    Event {
        kind: EventKind::Purchase(Purchase {
            amount,
            margin,
            refund: true,
        }),
        ..purchase(id, cust, ts, 0, 0)
    }
}

fn cost(id: &str, cust: &str, ts: Millis, c: Minor) -> Event {
    Event {
        kind: EventKind::Service(Service {
            cost: c,
            ..Service::default()
        }),
        ..purchase(id, cust, ts, 0, 0)
    }
}

fn complaint(id: &str, cust: &str, ts: Millis) -> Event {
    Event {
        kind: EventKind::Complaint(Complaint {
            severity: Severity::High,
            resolved: false,
            reference: None,
        }),
        ..purchase(id, cust, ts, 0, 0)
    }
}

fn forget(id: &str, cust: &str, ts: Millis) -> Event {
    Event {
        kind: EventKind::Forget,
        ..purchase(id, cust, ts, 0, 0)
    }
}

struct Harness {
    engine: Engine,
    clock: StreamClock,
    store: MapProfiles,
}

impl Harness {
    fn new() -> Self {
        Self::with(policy())
    }
    fn with(p: Policy) -> Self {
        Harness {
            engine: Engine::new(p),
            clock: StreamClock::default(),
            store: MapProfiles::default(),
        }
    }
    fn apply(&mut self, e: Event) -> (Outcome, Vec<Output>) {
        let mut out = Vec::new();
        let o = self
            .engine
            .apply(&mut self.clock, &mut self.store, &e, &mut out)
            .unwrap();
        (o, out)
    }
    fn outs(&mut self, e: Event) -> Vec<Output> {
        self.apply(e).1
    }
    fn profile(&self, c: &str) -> &Profile {
        &self.store.profiles[c]
    }
}

fn tier_change(o: &Output) -> (Option<Tier>, Tier, Direction) {
    match &o.body {
        OutputBody::TierChanged {
            from,
            to,
            direction,
            ..
        } => (*from, *to, *direction),
        other => panic!("expected tier_changed, got {other:?}"),
    }
}

#[test]
fn first_event_assigns_initial_tier_whatever_its_type() {
    let mut h = Harness::new();
    let o = h.outs(complaint("e1", "a", JAN + H));
    assert_eq!(o.len(), 1);
    assert_eq!(tier_change(&o[0]), (None, Tier::Iron, Direction::Initial));
    assert_eq!(o[0].seq, 1);
    assert_eq!(o[0].at, JAN + H);
    assert_eq!(o[0].cause, Cause::Event("e1".into()));

    let o = h.outs(cost("e2", "b", JAN + H, 500));
    assert_eq!(tier_change(&o[0]), (None, Tier::Lead, Direction::Initial));
    let o = h.outs(purchase("e3", "c", JAN + H, 5_000_000, 1_200_000));
    assert_eq!(
        tier_change(&o[0]),
        (None, Tier::Platinum, Direction::Initial)
    );
}

#[test]
fn upgrades_are_immediate_inclusive_and_may_skip_tiers() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN + H, 1000, 100));
    assert!(h
        .outs(purchase("e2", "a", JAN + 2 * H, 1000, 199_899))
        .is_empty());
    let o = h.outs(purchase("e3", "a", JAN + 3 * H, 10, 1)); // exactly 2000.00
    assert_eq!(
        tier_change(&o[0]),
        (Some(Tier::Iron), Tier::Gold, Direction::Upgrade)
    );
    assert_eq!(o[0].seq, 2);
    let o = h.outs(purchase("e4", "b", JAN + H, 1, 1));
    assert_eq!(o.len(), 1);
    let o = h.outs(purchase("e5", "b", JAN + 4 * H, 1, 1_000_000));
    assert_eq!(
        tier_change(&o[0]),
        (Some(Tier::Iron), Tier::Platinum, Direction::Upgrade)
    );
}

#[test]
fn no_downgrade_on_events_only_at_month_close() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN + H, 1000, 250_000)); // gold
    assert!(h
        .outs(refund("e2", "a", JAN + 2 * H, 1000, 250_000))
        .is_empty());
    assert_eq!(h.profile("a").tier, Some(Tier::Gold));
}

#[test]
fn downgrade_needs_residence_and_goes_one_step_per_month_close() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN, 1, 1_000_000)); // platinum since Jan 1 00:00
    h.outs(refund("e2", "a", JAN + 2 * H, 1, 1_000_000)); // value 0
                                                          // Feb 1: residence (90 days) not met -> at risk
    let o = h.outs(purchase("t1", "z", month(1) + H, 1, 1));
    let risk: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert_eq!(risk.len(), 1);
    assert!(matches!(
        risk[0].body,
        OutputBody::TierAtRisk {
            tier: Tier::Platinum,
            shortfall: 1_100_000,
            ..
        }
    ));
    assert_eq!(risk[0].cause, Cause::Timer(TimerKind::MonthClose));
    assert_eq!(risk[0].at, month(1));
    if let OutputBody::TierAtRisk { downgrade_at, .. } = risk[0].body {
        assert_eq!(downgrade_at, Some(month(3))); // Apr 1 = Jan 1 + 90 days
    }
    // Mar 1: still at risk
    let o = h.outs(purchase("t2", "z", month(2) + H, 1, 1));
    assert!(o
        .iter()
        .any(|o| o.customer_id == "a" && matches!(o.body, OutputBody::TierAtRisk { .. })));
    // Apr 1: residence met exactly -> one step down, not two
    let o = h.outs(purchase("t3", "z", month(3) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert_eq!(a.len(), 1);
    assert_eq!(
        tier_change(a[0]),
        (Some(Tier::Platinum), Tier::Gold, Direction::Downgrade)
    );
    assert_eq!(a[0].at, month(3));
    // May 1: the next step needs another 90 days in gold -> at risk only
    let o = h.outs(purchase("t4", "z", month(4) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert!(matches!(
        a[0].body,
        OutputBody::TierAtRisk {
            tier: Tier::Gold,
            ..
        }
    ));
}

#[test]
fn residence_one_millisecond_short_blocks_the_downgrade() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN + 1, 1, 1_000_000));
    h.outs(refund("e2", "a", JAN + 2 * H, 1, 1_000_000));
    for (k, id) in [(1, "t1"), (2, "t2"), (3, "t3")] {
        h.outs(purchase(id, "z", month(k) + H, 1, 1));
    }
    assert_eq!(h.profile("a").tier, Some(Tier::Platinum));
    h.outs(purchase("t4", "z", month(4) + H, 1, 1));
    assert_eq!(h.profile("a").tier, Some(Tier::Gold));
}

#[test]
fn hysteresis_line_is_strict() {
    let mut p = policy();
    p.tiers.min_residence = 0;
    let mut h = Harness::with(p);
    h.outs(purchase("e1", "a", JAN + H, 1, 200_000)); // gold
    h.outs(refund("e2", "a", JAN + 2 * H, 1, 20_000)); // 1800.00 = 0.9 x 2000
    h.outs(purchase("e3", "b", JAN + H, 1, 200_000));
    h.outs(refund("e4", "b", JAN + 2 * H, 1, 20_001)); // 1799.99
    let o = h.outs(purchase("t", "z", month(1) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    let b: Vec<_> = o.iter().filter(|o| o.customer_id == "b").collect();
    assert!(matches!(
        a[0].body,
        OutputBody::TierAtRisk {
            shortfall: 40_000,
            ..
        }
    ));
    assert_eq!(
        tier_change(b[0]),
        (Some(Tier::Gold), Tier::Iron, Direction::Downgrade)
    );
}

#[test]
fn at_risk_at_most_once_per_month_and_not_when_safe() {
    let mut p = policy();
    p.tiers.min_residence = 1_000 * DAY_MS;
    let mut h = Harness::with(p);
    h.outs(purchase("e1", "a", JAN + H, 1, 219_999)); // gold, 0.01 short of safe
    h.outs(purchase("e2", "s", JAN + H, 1, 220_000)); // gold, safe exactly
    let o = h.outs(purchase("t1", "z", month(1) + H, 1, 1));
    let risks: Vec<_> = o
        .iter()
        .filter(|o| matches!(o.body, OutputBody::TierAtRisk { .. }))
        .collect();
    assert_eq!(risks.len(), 1);
    assert_eq!(risks[0].customer_id, "a");
    assert!(matches!(
        risks[0].body,
        OutputBody::TierAtRisk { shortfall: 1, .. }
    ));
    // more events the same month: no second at-risk
    assert!(h
        .outs(purchase("t2", "z", month(1) + 5 * DAY_MS, 1, 1))
        .iter()
        .all(|o| o.customer_id != "a"));
}

#[test]
fn value_leaving_the_window_drives_month_close() {
    let mut p = policy();
    p.tiers.min_residence = 0;
    let mut h = Harness::with(p);
    h.outs(purchase("e1", "a", JAN + H, 1, 300_000)); // gold from Jan 2026
                                                      // Jan 2027: the Jan 2026 bucket is still in (current month and 11 before)...
                                                      // Dec 1 2026 window is Jan..Dec 2026; Jan 1 2027 window is Feb 2026..Jan 2027.
    let o = h.outs(purchase("t1", "z", month(11) + H, 1, 1));
    assert!(o.iter().all(|o| o.customer_id != "a"));
    let o = h.outs(purchase("t2", "z", month(12) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert_eq!(
        tier_change(a[0]),
        (Some(Tier::Gold), Tier::Iron, Direction::Downgrade)
    );
}

#[test]
fn lead_customer_upgrades_at_month_close_when_costs_expire() {
    let mut h = Harness::new();
    h.outs(cost("e1", "a", JAN + H, 500)); // lead
    let o = h.outs(purchase("t", "z", month(12) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert_eq!(
        tier_change(a[0]),
        (Some(Tier::Lead), Tier::Iron, Direction::Upgrade)
    );
    assert_eq!(a[0].cause, Cause::Timer(TimerKind::MonthClose));
}

#[test]
fn fake_big_customer_flag() {
    let mut h = Harness::new();
    let o = h.outs(purchase("e1", "a", JAN + H, 2_500_000, 10_000)); // 25000 at 0.4%
    match &o[0].body {
        OutputBody::TierChanged {
            fake_big_customer,
            to,
            ..
        } => {
            assert!(*fake_big_customer);
            assert_eq!(*to, Tier::Iron); // value 100: big volume, no profit
        }
        _ => panic!(),
    }
    let o = h.outs(purchase("e2", "b", JAN + H, 2_500_000, 50_000)); // 2%
    assert!(matches!(
        o[0].body,
        OutputBody::TierChanged {
            fake_big_customer: false,
            ..
        }
    ));
}

#[test]
fn duplicates_are_skipped_within_the_window_only() {
    let mut p = policy();
    p.dedup_window = 2;
    let mut h = Harness::with(p);
    h.apply(purchase("e1", "a", JAN + H, 1, 1));
    assert_eq!(
        h.apply(purchase("e1", "a", JAN + H, 1, 1)).0,
        Outcome::Duplicate
    );
    h.apply(purchase("e2", "a", JAN + H, 1, 1));
    h.apply(purchase("e3", "a", JAN + H, 1, 1));
    // e1 fell out of the last 2 remembered ids: applied again
    assert_eq!(
        h.apply(purchase("e1", "a", JAN + H, 1, 1)).0,
        Outcome::Applied
    );
    assert_eq!(h.profile("a").buckets.window_at(JAN).purchases, 4);
    // the same id for another customer is not a duplicate
    assert_eq!(
        h.apply(purchase("e1", "b", JAN + H, 1, 1)).0,
        Outcome::Applied
    );
}

#[test]
fn late_events_change_state_silently_and_show_at_month_close() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN + H, 1, 100)); // iron
    h.outs(purchase("e2", "z", JAN + 20 * DAY_MS, 1, 1)); // stream time Jan 21
    let (outcome, o) = h.apply(purchase("e3", "a", JAN + 2 * H, 1, 250_000)); // 20 days late
    assert_eq!(outcome, Outcome::Late);
    assert!(o.is_empty());
    assert_eq!(h.profile("a").tier, Some(Tier::Iron));
    let o = h.outs(purchase("e4", "z", month(1) + H, 1, 1));
    let a: Vec<_> = o.iter().filter(|o| o.customer_id == "a").collect();
    assert_eq!(
        tier_change(a[0]),
        (Some(Tier::Iron), Tier::Gold, Direction::Upgrade)
    );
    assert_eq!(a[0].cause, Cause::Timer(TimerKind::MonthClose));
}

#[test]
fn a_late_first_event_gets_its_tier_at_the_next_tick() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "z", JAN + 20 * DAY_MS, 1, 1));
    let (outcome, o) = h.apply(purchase("e2", "a", JAN + H, 1, 300_000));
    assert_eq!(outcome, Outcome::Late);
    assert!(o.is_empty());
    let o = h.outs(purchase("e3", "z", JAN + 21 * DAY_MS + H, 1, 1));
    assert_eq!(o.len(), 1);
    assert_eq!(tier_change(&o[0]), (None, Tier::Gold, Direction::Initial));
    assert_eq!(o[0].cause, Cause::Timer(TimerKind::Daily));
    assert_eq!(o[0].at, JAN + 21 * DAY_MS);
}

#[test]
fn events_within_lateness_are_applied_normally() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "z", JAN + 7 * DAY_MS, 1, 1));
    let (outcome, o) = h.apply(purchase("e2", "a", JAN, 1, 1)); // exactly 7 days behind
    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].at, JAN);
}

#[test]
fn forget_erases_everything_and_the_customer_starts_over() {
    let mut h = Harness::new();
    h.outs(purchase("e1", "a", JAN + H, 1, 300_000));
    let (outcome, o) = h.apply(forget("f", "a", JAN + 2 * H));
    assert_eq!(outcome, Outcome::Forgotten);
    assert!(o.is_empty());
    assert!(!h.store.profiles.contains_key("a"));
    assert!(h.store.timers.iter().all(|(_, _, id)| id != "a"));
    let o = h.outs(purchase("e2", "a", JAN + 3 * H, 1, 1));
    assert_eq!(tier_change(&o[0]), (None, Tier::Iron, Direction::Initial));
}

#[test]
fn seq_is_per_customer_and_ids_are_deterministic() {
    let run = || {
        let mut h = Harness::new();
        let mut all = h.outs(purchase("e1", "a", JAN + H, 1, 1));
        all.extend(h.outs(purchase("e2", "b", JAN + H, 1, 1)));
        all.extend(h.outs(purchase("e3", "a", JAN + 2 * H, 1, 300_000)));
        all
    };
    let a = run();
    assert_eq!(a.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![1, 1, 2]);
    let ids: Vec<_> = a.iter().map(Output::event_id).collect();
    assert_eq!(ids, run().iter().map(Output::event_id).collect::<Vec<_>>());
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
}

// ---------- property tests ----------

fn arb_event(customers: u8, span_days: i64) -> impl Strategy<Value = (u8, i64, u8, i64, i64)> {
    (
        0..customers,
        0..span_days * 24,
        0u8..5,
        0i64..400_000,
        -50_000i64..300_000,
    )
}

fn build(n: usize, (c, hour, kind, amount, margin): (u8, i64, u8, i64, i64)) -> Event {
    let id = format!("e{n}");
    let cust = format!("c{c}");
    let ts = JAN + hour * H;
    match kind {
        0 | 1 => purchase(&id, &cust, ts, amount, margin),
        2 => refund(&id, &cust, ts, amount / 4, margin / 4),
        3 => cost(&id, &cust, ts, amount / 10),
        _ => complaint(&id, &cust, ts),
    }
}

/// The facts of a customer as seen at `at`: what out-of-order input must
/// reproduce exactly (decisions may legitimately differ, see SPEC §7).
fn facts(store: &MapProfiles, at: Millis) -> BTreeMap<String, (i64, i64, u32)> {
    store
        .profiles
        .iter()
        .map(|(id, p)| {
            let t = p.buckets.window_at(at);
            (id.clone(), (t.value, t.revenue, t.purchases))
        })
        .collect()
}

/// Re-evaluates every customer at every midnight: the reference the
/// deadline index must match.
fn run_naive(engine: &Engine, events: &[Event]) -> (Vec<Output>, MapProfiles) {
    let mut store = MapProfiles::default();
    let mut clock = StreamClock::default();
    let mut out = Vec::new();
    for e in events {
        if let Some(st) = clock.stream_time {
            let mut m = super::time::next_midnight(st);
            while m <= e.ts {
                let ids: Vec<String> = store.profiles.keys().cloned().collect();
                if super::time::is_month_start(m) {
                    for id in &ids {
                        engine
                            .visit(id, m, TimerKind::MonthClose, &mut store, &mut out)
                            .unwrap();
                    }
                }
                for id in &ids {
                    engine
                        .visit(id, m, TimerKind::Daily, &mut store, &mut out)
                        .unwrap();
                }
                m += DAY_MS;
            }
        }
        // ticks done; the engine sees no midnight left to cross
        let mut c = StreamClock {
            stream_time: Some(clock.stream_time.map_or(e.ts, |st| st.max(e.ts))),
        };
        engine.apply(&mut c, &mut store, e, &mut out).unwrap();
        clock = c;
    }
    (out, store)
}

fn run_indexed(engine: &Engine, events: &[Event]) -> (Vec<Output>, MapProfiles) {
    let mut store = MapProfiles::default();
    let mut clock = StreamClock::default();
    let mut out = Vec::new();
    for e in events {
        engine.apply(&mut clock, &mut store, e, &mut out).unwrap();
    }
    (out, store)
}

fn without_timers(store: &MapProfiles) -> Vec<Profile> {
    store
        .profiles
        .values()
        .map(|p| Profile {
            timers: Timers::default(),
            ..p.clone()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shuffling_within_lateness_gives_the_same_facts(
        raw in prop::collection::vec(arb_event(6, 200), 1..120),
        jitter in prop::collection::vec(0i64..(7 * 24), 120),
    ) {
        let mut events: Vec<Event> = raw.into_iter().enumerate().map(|(n, r)| build(n, r)).collect();
        events.sort_by_key(|e| e.ts);
        // Delay each event's arrival by up to 7 days: it then arrives at most
        // 7 days behind stream time, i.e. within the allowed lateness.
        let mut arrival: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.ts + jitter[i % jitter.len()] * H, i))
            .collect();
        arrival.sort();
        let shuffled: Vec<Event> = arrival.iter().map(|(_, i)| events[*i].clone()).collect();
        let engine = Engine::new(policy());
        let (_, sorted_store) = run_indexed(&engine, &events);
        let (_, shuffled_store) = run_indexed(&engine, &shuffled);
        let end = events.iter().map(|e| e.ts).max().unwrap();
        prop_assert_eq!(facts(&sorted_store, end), facts(&shuffled_store, end));
    }

    #[test]
    fn replay_is_deterministic(raw in prop::collection::vec(arb_event(5, 400), 1..80)) {
        let mut events: Vec<Event> = raw.into_iter().enumerate().map(|(n, r)| build(n, r)).collect();
        events.sort_by_key(|e| e.ts);
        let engine = Engine::new(policy());
        let (a, sa) = run_indexed(&engine, &events);
        let (b, sb) = run_indexed(&engine, &events);
        prop_assert_eq!(a, b);
        prop_assert_eq!(sa.profiles, sb.profiles);
    }

    #[test]
    fn deadline_index_matches_evaluating_everyone_every_midnight(
        raw in prop::collection::vec(arb_event(6, 500), 1..80),
        residence in 0u32..120,
    ) {
        let mut events: Vec<Event> = raw.into_iter().enumerate().map(|(n, r)| build(n, r)).collect();
        events.sort_by_key(|e| e.ts);
        let mut p = policy();
        p.tiers.min_residence = i64::from(residence) * DAY_MS;
        let engine = Engine::new(p);
        let (naive, naive_store) = run_naive(&engine, &events);
        let (indexed, indexed_store) = run_indexed(&engine, &events);
        prop_assert_eq!(naive, indexed);
        prop_assert_eq!(without_timers(&naive_store), without_timers(&indexed_store));
    }
}
