//! Per-customer value buckets, one per calendar month (UTC).
//!
//! `value_12m` is a sum over "the current calendar month and the 11 before
//! it" (SPEC §3). Keeping one bucket per month (not one per event) bounds the
//! state at 12 small records per customer and makes sums exact and
//! order-independent: a late event just adds into its month.

use super::event::{Minor, Purchase};
use super::time::{month_of, Millis, MonthIndex};
use serde::{Deserialize, Serialize};

/// How many months a window spans: the current one and the 11 before it.
pub const WINDOW_MONTHS: i32 = 12;

/// Everything that happened in one calendar month that value and behaviour
/// scores need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthBucket {
    /// The month this bucket covers.
    pub month: MonthIndex,
    /// Margin of purchases minus margin of refunds.
    pub margin: Minor,
    /// Amount of purchases minus amount of refunds.
    pub revenue: Minor,
    /// Service cost.
    pub cost: Minor,
    /// Non-refund purchases.
    pub purchases: u32,
    /// Earliest non-refund purchase time in the month (valid when purchases > 0).
    pub first_purchase: Millis,
    /// Latest non-refund purchase time in the month (valid when purchases > 0).
    pub last_purchase: Millis,
}

impl MonthBucket {
    /// The month's profit contribution: margin net of refunds minus
    /// service cost.
    pub fn value(&self) -> Minor {
        self.margin - self.cost
    }
}

/// Sums over a window of buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Margin minus refunds minus service cost: the profit contribution.
    pub value: Minor,
    /// Amounts minus refunded amounts.
    pub revenue: Minor,
    /// Purchase margin net of refunds (no service cost), for the fake-big test.
    pub margin: Minor,
    /// Non-refund purchases.
    pub purchases: u32,
    /// Earliest non-refund purchase in the window.
    pub first_purchase: Option<Millis>,
    /// Latest non-refund purchase in the window.
    pub last_purchase: Option<Millis>,
}

/// A customer's month buckets, sorted by month, never more than the window
/// (plus the allowed-lateness margin) needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets(pub Vec<MonthBucket>);

/// The first month of the window that ends in the month of `t`.
pub fn window_start(t: Millis) -> MonthIndex {
    first_month_of_window(month_of(t))
}

/// The first month of the window that ends in `month`; a month leaves
/// the window at the start of the month `WINDOW_MONTHS` after it.
pub fn first_month_of_window(month: MonthIndex) -> MonthIndex {
    month - (WINDOW_MONTHS - 1)
}

impl Buckets {
    fn bucket_mut(&mut self, month: MonthIndex) -> &mut MonthBucket {
        let pos = match self.0.binary_search_by_key(&month, |b| b.month) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(
                    i,
                    MonthBucket {
                        month,
                        ..MonthBucket::default()
                    },
                );
                i
            }
        };
        &mut self.0[pos]
    }

    /// Adds a purchase or refund into the month it happened in.
    pub fn add_purchase(&mut self, ts: Millis, p: &Purchase) {
        let b = self.bucket_mut(month_of(ts));
        if p.refund {
            b.margin -= p.margin;
            b.revenue -= p.amount;
        } else {
            b.margin += p.margin;
            b.revenue += p.amount;
            if b.purchases == 0 {
                b.first_purchase = ts;
                b.last_purchase = ts;
            } else {
                b.first_purchase = b.first_purchase.min(ts);
                b.last_purchase = b.last_purchase.max(ts);
            }
            b.purchases += 1;
        }
    }

    /// Adds a service cost into the month it happened in.
    pub fn add_cost(&mut self, ts: Millis, cost: Minor) {
        if cost != 0 {
            self.bucket_mut(month_of(ts)).cost += cost;
        }
    }

    /// Drops months before `first_kept`. Callers pass a month no evaluation
    /// can ever look at again, so pruning never changes a decision.
    pub fn prune_before(&mut self, first_kept: MonthIndex) {
        self.0.retain(|b| b.month >= first_kept);
    }

    /// The buckets of the months `from ..= to`.
    pub fn months(&self, from: MonthIndex, to: MonthIndex) -> &[MonthBucket] {
        let a = self.0.partition_point(|b| b.month < from);
        let b = self.0.partition_point(|b| b.month <= to);
        &self.0[a..b.max(a)]
    }

    /// The first month from `from` on that has a bucket.
    pub fn first_month_from(&self, from: MonthIndex) -> Option<MonthIndex> {
        self.0
            .get(self.0.partition_point(|b| b.month < from))
            .map(|b| b.month)
    }

    /// Totals over every bucket from `from` on.
    pub fn totals_from(&self, from: MonthIndex) -> WindowTotals {
        let mut t = WindowTotals::default();
        for b in self.0.iter().filter(|b| b.month >= from) {
            t.value += b.value();
            t.revenue += b.revenue;
            t.margin += b.margin;
            if b.purchases > 0 {
                t.purchases += b.purchases;
                t.first_purchase = Some(
                    t.first_purchase
                        .map_or(b.first_purchase, |f: Millis| f.min(b.first_purchase)),
                );
                t.last_purchase = Some(
                    t.last_purchase
                        .map_or(b.last_purchase, |l: Millis| l.max(b.last_purchase)),
                );
            }
        }
        t
    }

    /// The profit contribution of the buckets from `first` on, then from
    /// `first + 1` on, and so on: `totals_from(first + k).value` for every
    /// k, in one pass over the buckets (each month leaves the sum once).
    pub fn values_from(&self, first: MonthIndex) -> impl Iterator<Item = Minor> + '_ {
        let mut rest = &self.0[self.0.partition_point(|b| b.month < first)..];
        let mut value: Minor = rest.iter().map(MonthBucket::value).sum();
        (first..).map(move |from| {
            let at_from = value;
            while let Some((b, tail)) = rest.split_first().filter(|(b, _)| b.month <= from) {
                value -= b.value();
                rest = tail;
            }
            at_from
        })
    }

    /// Totals over the 12-month window that ends in the month of `t`.
    pub fn window_at(&self, t: Millis) -> WindowTotals {
        self.totals_from(window_start(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::month_start;
    use crate::domain::time::ms;

    fn p(amount: Minor, margin: Minor, refund: bool) -> Purchase {
        Purchase {
            amount,
            margin,
            refund,
        }
    }

    #[test]
    fn first_month_from_finds_the_first_bucket_at_or_after() {
        let mut b = Buckets::default();
        assert_eq!(b.first_month_from(0), None);
        for m in [3, 7] {
            b.add_purchase(month_start(2025 * 12 + m), &p(100, 10, false));
        }
        assert_eq!(b.first_month_from(2025 * 12), Some(2025 * 12 + 3));
        assert_eq!(b.first_month_from(2025 * 12 + 3), Some(2025 * 12 + 3));
        assert_eq!(b.first_month_from(2025 * 12 + 4), Some(2025 * 12 + 7));
        assert_eq!(b.first_month_from(2025 * 12 + 8), None);
    }

    #[test]
    fn values_from_each_month_are_the_totals_from_it() {
        let mut b = Buckets::default();
        for (m, margin, cost) in [(3, 500, 0), (5, 700, 100), (6, -200, 0), (9, 50, 25)] {
            b.add_purchase(month_start(2025 * 12 + m), &p(margin * 3, margin, false));
            b.add_cost(month_start(2025 * 12 + m) + 1, cost);
        }
        let first = 2025 * 12 + 1;
        let got: Vec<Minor> = b.values_from(first).take(12).collect();
        let want: Vec<Minor> = (0..12).map(|k| b.totals_from(first + k).value).collect();
        assert_eq!(got, want);
        assert_eq!(got[0], 500 + 600 - 200 + 25);
        assert_eq!(got[11], 0);
    }

    #[test]
    fn window_is_current_month_and_eleven_before() {
        let jan26 = 2026 * 12;
        let mut b = Buckets::default();
        b.add_purchase(month_start(jan26 - 12) + 5, &p(100, 10, false)); // Jan 2025: out
        b.add_purchase(month_start(jan26 - 11) + 5, &p(200, 20, false)); // Feb 2025: in
        b.add_purchase(month_start(jan26) + 5, &p(400, 40, false));
        b.add_cost(month_start(jan26) + 6, 15);
        let t = b.window_at(month_start(jan26) + 10);
        assert_eq!(t.value, 20 + 40 - 15);
        assert_eq!(t.revenue, 600);
        assert_eq!(t.purchases, 2);
        assert_eq!(t.first_purchase, Some(month_start(jan26 - 11) + 5));
        assert_eq!(t.last_purchase, Some(month_start(jan26) + 5));
    }

    #[test]
    fn refunds_subtract_and_do_not_count() {
        let mut b = Buckets::default();
        b.add_purchase(ms(1_000), &p(500, 100, false));
        b.add_purchase(ms(2_000), &p(200, 40, true));
        let t = b.window_at(ms(3_000));
        assert_eq!(
            (t.value, t.revenue, t.margin, t.purchases),
            (60, 300, 60, 1)
        );
    }

    #[test]
    fn order_does_not_matter_and_pruning_keeps_window() {
        let mut a = Buckets::default();
        let mut c = Buckets::default();
        let evs = [(ms(10), 5), (month_start(2026 * 12), 7), (ms(40), 9)];
        for (ts, m) in evs {
            a.add_purchase(ts, &p(m * 10, m, false));
        }
        for (ts, m) in evs.iter().rev() {
            c.add_purchase(*ts, &p(m * 10, *m, false));
        }
        assert_eq!(a, c);
        a.prune_before(2026 * 12);
        assert_eq!(a.0.len(), 1);
    }
}
