//! The attitude penalties (SPEC §4): decayed complaint and signal points
//! over the window, with the facts the reasons name.
//!
//! Scoring is asked several times per event (the event's instant, then the
//! bisection for the next daily deadline), and a busy customer has hundreds
//! of complaints and signals in twelve months. Summing every record each
//! time made the per-event cost grow with the customer's history, so each
//! calendar month that lies wholly before the scored instant is summed once
//! and kept: `Σ points × 2^(-(at - ts)/h)` over a month with start `s` is
//! `2^(-(at - s)/h) × Σ points × 2^((ts - s)/h)`, one power per month
//! instead of one per record. Only the month that contains the instant is
//! summed record by record (it may hold evidence after the instant).
//!
//! A month's sums are derived data: computed from its records in their
//! sorted order (so they do not depend on arrival order), dropped when one
//! of its records changes or a resolution names a complaint, never
//! written to the state (they depend on the policy, which may change
//! between runs), and rebuilt on first use after a profile is loaded.

use super::event::{Severity, Signal, Signals};
use super::loyalty::{AttitudePolicy, ComplaintRecord, Evidence, SignalRecord};
use super::profile::vec_bytes;
use super::time::{month_of, month_start, Millis, DAY_MS};
use std::cell::RefCell;

/// The penalty facts at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    /// Decayed complaint penalty.
    pub complaint: f64,
    /// Complaints in the window up to the instant.
    pub complaints: u32,
    /// A high/critical complaint within the open period, unresolved.
    pub open_complaint: bool,
    /// Decayed signal penalty.
    pub signal: f64,
    /// Known signals in the window up to the instant, in order of first
    /// appearance.
    pub signals: Signals,
}

/// `points` decayed over `age` with the penalty half-life.
fn decay(points: f64, age: i64, half_life_days: f64) -> f64 {
    points * 0.5f64.powf(age as f64 / DAY_MS as f64 / half_life_days)
}

fn severity_index(s: Severity) -> usize {
    match s {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

/// Which complaints a resolution named: a linear look-up for the usual
/// handful of resolutions, a hash set for a customer with many.
enum ResolvedRefs<'a> {
    Few(&'a [(Millis, u64)]),
    Many(std::collections::HashSet<u64>),
}

impl<'a> ResolvedRefs<'a> {
    fn new(refs: &'a [(Millis, u64)]) -> Self {
        if refs.len() <= 16 {
            ResolvedRefs::Few(refs)
        } else {
            ResolvedRefs::Many(refs.iter().map(|(_, h)| *h).collect())
        }
    }

    fn resolves(&self, c: &ComplaintRecord) -> bool {
        c.resolved
            || match self {
                ResolvedRefs::Few(refs) => refs.iter().any(|(_, h)| *h == c.id),
                ResolvedRefs::Many(set) => set.contains(&c.id),
            }
    }
}

/// The records of `from .. to` (instants), found by bisection in the
/// sorted lists.
fn records(ev: &Evidence, from: Millis, to: Millis) -> (&[ComplaintRecord], &[SignalRecord]) {
    let c_lo = ev.complaints.partition_point(|c| c.ts < from);
    let c_hi = ev.complaints.partition_point(|c| c.ts < to).max(c_lo);
    let s_lo = ev.signals.partition_point(|s| s.ts < from);
    let s_hi = ev.signals.partition_point(|s| s.ts < to).max(s_lo);
    (&ev.complaints[c_lo..c_hi], &ev.signals[s_lo..s_hi])
}

/// What a complaint weighs before decay, and whether it can count as open.
fn weigh(a: &AttitudePolicy, refs: &ResolvedRefs, c: &ComplaintRecord) -> (f64, bool) {
    let resolved = refs.resolves(c);
    let base = a.complaint_penalty[severity_index(c.severity)];
    if resolved {
        (base * a.resolved_factor, false)
    } else {
        (base, c.severity >= Severity::High)
    }
}

fn add_distinct(into: &mut Signals, signals: &[Signal]) {
    for sig in signals {
        if !into.contains(sig) {
            into.push(*sig);
        }
    }
}

/// The sums of the records of an interval, each decayed to one reference
/// instant: a whole month's rebased to its first instant (and kept), the
/// scored month's up to the instant decayed to it.
#[derive(Debug, Clone)]
struct MonthSums {
    /// `Σ points × 2^((reference - ts)/h)` over its complaints.
    complaint: f64,
    complaints: u32,
    /// The latest complaint that can count as open (high/critical,
    /// unresolved).
    last_open: Option<Millis>,
    /// The same sum over its signals.
    signal: f64,
    /// Its known signals in order of first appearance.
    signals: Signals,
}

impl MonthSums {
    /// The records of `from .. to`, decayed to `reference`.
    fn of(
        ev: &Evidence,
        a: &AttitudePolicy,
        refs: &ResolvedRefs,
        (from, to): (Millis, Millis),
        reference: Millis,
    ) -> Self {
        let (complaints, signals) = records(ev, from, to);
        let h = a.penalty_half_life_days;
        let mut sums = MonthSums {
            complaint: 0.0,
            complaints: 0,
            last_open: None,
            signal: 0.0,
            signals: Signals::new(),
        };
        for c in complaints {
            let (points, can_be_open) = weigh(a, refs, c);
            sums.complaint += decay(points, reference - c.ts, h);
            sums.complaints += 1;
            if can_be_open {
                sums.last_open = Some(c.ts);
            }
        }
        for s in signals {
            sums.signal += decay(
                a.signal_penalty * s.signals.len() as f64,
                reference - s.ts,
                h,
            );
            add_distinct(&mut sums.signals, &s.signals);
        }
        sums
    }
}

impl Penalties {
    /// Adds sums decayed to `reference` as seen from `at`.
    fn add(&mut self, sums: &MonthSums, reference: Millis, at: Millis, a: &AttitudePolicy) {
        let (h, age) = (a.penalty_half_life_days, at - reference);
        self.complaint += decay(sums.complaint, age, h);
        self.complaints += sums.complaints;
        // The latest open-able complaint is the one most likely in the
        // open period: if it is not, none is.
        self.open_complaint |= sums
            .last_open
            .is_some_and(|ts| (at - ts) as f64 <= a.open_complaint_days * DAY_MS as f64);
        self.signal += decay(sums.signal, age, h);
        add_distinct(&mut self.signals, &sums.signals);
    }
}

/// A calendar month that holds evidence; `sums` is `None` until first
/// needed and again after its records change.
#[derive(Debug, Clone)]
struct Month {
    start: Millis,
    end: Millis,
    sums: Option<MonthSums>,
}

/// A fingerprint of the policy figures the sums were made with: a
/// different policy (another engine, a test) rebuilds them. A hash, not
/// the figures: every cached profile holds one, and the seven figures took
/// 56 bytes of each (the cache is charged about 1 KB a light customer). Two
/// policies that differ collide with odds of 2^-64. Hashed at every call:
/// xxh3 of 56 bytes left `penalties`' own share of a 1M replay where it
/// was (4.0% before, 4.0% after).
fn fingerprint(a: &AttitudePolicy) -> u64 {
    let figures = [
        a.penalty_half_life_days,
        a.complaint_penalty[0],
        a.complaint_penalty[1],
        a.complaint_penalty[2],
        a.complaint_penalty[3],
        a.resolved_factor,
        a.signal_penalty,
    ];
    let mut bytes = [0u8; 56];
    for (chunk, f) in bytes.chunks_exact_mut(8).zip(figures) {
        chunk.copy_from_slice(&f.to_bits().to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[derive(Debug, Clone)]
struct Built {
    /// The [`fingerprint`] of the policy the sums were made with.
    policy: u64,
    /// Every month with evidence, in order.
    months: Vec<Month>,
}

/// The per-month sums of a profile's evidence. Not part of the state; two
/// caches always compare equal, so profiles compare by their records.
#[derive(Debug, Clone, Default)]
pub struct PenaltyCache(RefCell<Option<Built>>);

impl PartialEq for PenaltyCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl PenaltyCache {
    /// Bytes held on the heap (see `Profile::heap_bytes`).
    pub fn heap_bytes(&self) -> usize {
        self.0.borrow().as_ref().map_or(0, |b| vec_bytes(&b.months))
    }

    /// A record at `ts` was added: its month's sums are stale.
    pub fn record_added(&mut self, ts: Millis) {
        if let Some(built) = self.0.get_mut() {
            month_holding(&mut built.months, ts).sums = None;
        }
    }

    /// A resolution changed which complaints count as resolved.
    pub fn resolutions_changed(&mut self) {
        if let Some(built) = self.0.get_mut() {
            for m in &mut built.months {
                m.sums = None;
            }
        }
    }

    /// Evidence before `from` (a month start) was dropped.
    pub fn pruned_before(&mut self, from: Millis) {
        if let Some(built) = self.0.get_mut() {
            built.months.retain(|m| m.start >= from);
        }
    }
}

/// The month of `months` (sorted, disjoint) that holds `ts`, added when
/// there is none: the only calendar arithmetic here, once per month.
fn month_holding(months: &mut Vec<Month>, ts: Millis) -> &mut Month {
    let at = months.partition_point(|m| m.end <= ts);
    if months.get(at).is_none_or(|m| m.start > ts) {
        let month = month_of(ts);
        months.insert(
            at,
            Month {
                start: month_start(month),
                end: month_start(month + 1),
                sums: None,
            },
        );
    }
    &mut months[at]
}

/// The months of the evidence, in order.
fn months_of(ev: &Evidence) -> Vec<Month> {
    let mut months = Vec::new();
    for ts in ev
        .complaints
        .iter()
        .map(|c| c.ts)
        .chain(ev.signals.iter().map(|s| s.ts))
    {
        month_holding(&mut months, ts);
    }
    months
}

/// The penalties at instant `at`, over the window that starts at
/// `window_from` (a month start).
pub fn penalties(ev: &Evidence, a: &AttitudePolicy, window_from: Millis, at: Millis) -> Penalties {
    let mut cache = ev.penalty_cache.0.borrow_mut();
    let policy = fingerprint(a);
    if cache.as_ref().is_none_or(|b| b.policy != policy) {
        *cache = Some(Built {
            policy,
            months: months_of(ev),
        });
    }
    let built = cache.as_mut().expect("just built");
    let refs = ResolvedRefs::new(&ev.resolved_refs);
    let mut p = Penalties {
        complaint: 0.0,
        complaints: 0,
        open_complaint: false,
        signal: 0.0,
        signals: Signals::new(),
    };
    let first = built.months.partition_point(|m| m.start < window_from);
    for m in &mut built.months[first..] {
        if m.start > at {
            break;
        }
        if m.end <= at {
            let sums = m
                .sums
                .get_or_insert_with(|| MonthSums::of(ev, a, &refs, (m.start, m.end), m.start));
            p.add(sums, m.start, at, a);
        } else {
            // The month of the instant: its records up to it, decayed to it.
            p.add(
                &MonthSums::of(ev, a, &refs, (m.start, at + 1), at),
                at,
                at,
                a,
            );
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Complaint, Service};
    use crate::domain::time::month_start;
    use proptest::prelude::*;

    #[test]
    fn penalties_halve_every_half_life() {
        assert!((decay(20.0, 60 * DAY_MS, 60.0) - 10.0).abs() < 1e-9);
        assert!((decay(20.0, 120 * DAY_MS, 60.0) - 5.0).abs() < 1e-9);
    }

    /// The definition, record by record: what the month sums must equal.
    fn record_by_record(ev: &Evidence, a: &AttitudePolicy, from: Millis, at: Millis) -> Penalties {
        let refs = ResolvedRefs::new(&ev.resolved_refs);
        let (complaints, signals) = records(ev, from, at + 1);
        let mut p = Penalties {
            complaint: 0.0,
            complaints: 0,
            open_complaint: false,
            signal: 0.0,
            signals: Signals::new(),
        };
        for c in complaints {
            let (points, can_be_open) = weigh(a, &refs, c);
            p.complaint += decay(points, at - c.ts, a.penalty_half_life_days);
            p.complaints += 1;
            p.open_complaint |=
                can_be_open && (at - c.ts) as f64 <= a.open_complaint_days * DAY_MS as f64;
        }
        for s in signals {
            p.signal += decay(
                a.signal_penalty * s.signals.len() as f64,
                at - s.ts,
                a.penalty_half_life_days,
            );
            add_distinct(&mut p.signals, &s.signals);
        }
        p
    }

    /// Sums made under one policy are not used under another: changing any
    /// one figure the sums weigh by (the cache keeps a hash of them) gives
    /// that policy's record-by-record penalties.
    #[test]
    fn sums_are_rebuilt_for_a_policy_that_weighs_differently() {
        let base = crate::domain::tests::policy().loyalty.attitude;
        let origin = month_start(2024 * 12);
        let hash = |r: &str| xxhash_rust::xxh3::xxh3_64(r.as_bytes());
        let mut ev = Evidence::default();
        for (i, (severity, resolved)) in [
            (Severity::Low, false),
            (Severity::Medium, true),
            (Severity::High, false),
            (Severity::Critical, true),
        ]
        .into_iter()
        .enumerate()
        {
            let ts = origin + (i as i64) * 9 * DAY_MS;
            let complaint = Complaint {
                severity,
                resolved,
                reference: None,
            };
            ev.record_complaint(ts, hash(&format!("e{i}")), &complaint, hash);
        }
        ev.record_service(
            origin + 40 * DAY_MS,
            hash("s"),
            &Service {
                signals: vec![Signal::CompetitorOffer],
                ..Service::default()
            },
        );
        let changes: [fn(&mut AttitudePolicy); 7] = [
            |a| a.penalty_half_life_days *= 2.0,
            |a| a.complaint_penalty[0] += 1.0,
            |a| a.complaint_penalty[1] += 1.0,
            |a| a.complaint_penalty[2] += 1.0,
            |a| a.complaint_penalty[3] += 1.0,
            |a| a.resolved_factor /= 2.0,
            |a| a.signal_penalty += 1.0,
        ];
        let at = origin + 70 * DAY_MS;
        for change in changes {
            // Built and cached under the base policy first.
            penalties(&ev, &base, origin, at);
            let mut other = base.clone();
            change(&mut other);
            let fast = penalties(&ev, &other, origin, at);
            let slow = record_by_record(&ev, &other, origin, at);
            let before = record_by_record(&ev, &base, origin, at);
            assert!(
                !close(
                    before.complaint + before.signal,
                    slow.complaint + slow.signal
                ),
                "the change must matter for the test to say anything"
            );
            assert!(close(fast.complaint, slow.complaint), "{fast:?} {slow:?}");
            assert!(close(fast.signal, slow.signal), "{fast:?} {slow:?}");
        }
    }

    const ALL: [Signal; 4] = [
        Signal::CompetitorOffer,
        Signal::PriceMatchRequest,
        Signal::CancellationInquiry,
        Signal::ContractEndInquiry,
    ];

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
    }

    proptest! {
        /// Whatever the order records arrive in, with resolutions naming
        /// complaints and months pruned, the month sums give the
        /// record-by-record penalties (to rounding) at every instant, and
        /// the counts, open flag and signal list exactly.
        #[test]
        fn month_sums_equal_the_record_by_record_sum(
            records in proptest::collection::vec((0i64..400, 0u8..6, 0usize..4), 1..120),
            probes in proptest::collection::vec(0i64..460, 1..12),
            prune_at in 0usize..120,
        ) {
            let a = crate::domain::tests::policy().loyalty.attitude;
            let origin = month_start(2024 * 12);
            let hash = |r: &str| xxhash_rust::xxh3::xxh3_64(r.as_bytes());
            let mut ev = Evidence::default();
            for (i, (day, kind, sev)) in records.iter().enumerate() {
                let ts = origin + day * DAY_MS + (i as i64) * 1000;
                let severity = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical][*sev];
                match kind {
                    0..=2 => ev.record_complaint(ts, hash(&format!("e{i}")), &Complaint {
                        severity,
                        resolved: *kind == 1,
                        reference: None,
                    }, hash),
                    3 => ev.record_complaint(ts, hash(&format!("r{i}")), &Complaint {
                        severity,
                        resolved: true,
                        reference: Some(format!("e{}", i / 2)),
                    }, hash),
                    _ => ev.record_service(ts, hash(&format!("e{i}")), &Service {
                        signals: (0..1 + *sev % 3).map(|k| ALL[(sev + k) % 4]).collect(),
                        ..Service::default()
                    }),
                }
                // Score now and then while recording, so stale months are
                // exercised, not only a cache built at the end.
                if i % 7 == 0 {
                    penalties(&ev, &a, origin, ts);
                }
                if i == prune_at {
                    ev.prune_before(2024 * 12 + 1);
                }
            }
            for day in probes {
                let at = origin + day * DAY_MS;
                for from_month in [0, 1, 3] {
                    let from = month_start(2024 * 12 + from_month);
                    let fast = penalties(&ev, &a, from, at);
                    let slow = record_by_record(&ev, &a, from, at);
                    prop_assert!(close(fast.complaint, slow.complaint), "{fast:?} {slow:?}");
                    prop_assert!(close(fast.signal, slow.signal), "{fast:?} {slow:?}");
                    prop_assert_eq!(fast.complaints, slow.complaints);
                    prop_assert_eq!(fast.open_complaint, slow.open_complaint);
                    prop_assert_eq!(&fast.signals, &slow.signals);
                }
            }
        }
    }
}
