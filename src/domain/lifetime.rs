//! Lifetime value at stake on a churn warning: the customer's profit
//! contribution projected over the risk horizon from its own trend, the
//! value at risk (churn risk × projection) and a priority an alerting
//! system can sort its calls by.
//!
//! A severity word says how valuable the customer's tier is; whom to call
//! first is a question of money: a gold customer whose spending is rising
//! and whose risk is 0.9 stands to lose more than a platinum customer who
//! is already fading at 0.57. So every warning carries the money.
//!
//! The projection reads only complete calendar months (the current one is
//! still filling up, and a projection that moved with every purchase of
//! the month would make the priority of an open warning jitter), so it
//! changes at month starts and with late events into past months; it is a
//! pure function of the value buckets, like every other figure, and so is
//! the same in replay and through Kafka.

use super::event::Minor;
use super::time::MonthIndex;
use super::value::{Buckets, MonthBucket};

/// Complete months the long-run rate is taken over: those of the value
/// window before the current month.
const LONG_MONTHS: i32 = 11;
/// Complete months the recent rate is taken over.
const RECENT_MONTHS: i32 = 3;
/// The projected monthly rate at the end of the horizon stays within this
/// factor of the recent rate either way: a trend read from a few months
/// must not compound into a fortune or into nothing.
const TREND_CAP: f64 = 3.0;
/// An average calendar month, in days (365.25 / 12).
const MONTH_DAYS: f64 = 30.4375;
/// How many priorities there are: 1 (call first) to 4.
pub const PRIORITIES: u8 = 4;

/// How the money at stake is figured.
#[derive(Debug, Clone, PartialEq)]
pub struct StakePolicy {
    /// The horizon the value is projected over (`warnings.risk_horizon_days`,
    /// the horizon the churn risk is the probability of).
    pub horizon_days: f64,
    /// The value at risk (minor units) from which a warning has priority 1,
    /// 2 and 3, descending; below the last it has priority 4.
    pub priority_floors: [Minor; (PRIORITIES - 1) as usize],
}

/// The money on one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stake {
    /// Profit contribution over the horizon if the customer stays.
    pub projected_value: Minor,
    /// `churn_risk × projected_value`, with the risk as written (two
    /// decimals), so a consumer can check the product.
    pub value_at_risk: Minor,
    /// 1 (call first) ..= [`PRIORITIES`], by value at risk.
    pub priority: u8,
}

/// Profit contribution of the months `from ..= to`.
fn value_of(b: &Buckets, from: MonthIndex, to: MonthIndex) -> Minor {
    b.months(from, to).iter().map(MonthBucket::value).sum()
}

/// The customer's profit contribution over the next `horizon_days` if it
/// stays, projected from its own months (minor units, rounded).
///
/// The rate now is the average of the last [`RECENT_MONTHS`] complete
/// months (fewer for a newer customer; a customer first seen this month
/// has only this month's value so far). The trend is how that rate stands
/// against the average of the last [`LONG_MONTHS`] complete months, spread
/// over the months between the two periods' middles: a monthly growth
/// factor `q = (recent / long)^(1 / distance)`, applied while both rates
/// are positive (a trend between a loss and a profit has no ratio). The
/// projection is the rate compounding at `q` over the horizon, with the
/// rate at its end held within [`TREND_CAP`] of today's:
/// `rate · ∫₀ⁿ qᵗ dt` for `n` months. A customer who costs more than it
/// brings projects a negative value, and so a negative value at risk.
pub fn projected_value(
    buckets: &Buckets,
    first_month: Option<MonthIndex>,
    month: MonthIndex,
    horizon_days: f64,
) -> Minor {
    let seen = (month - first_month.unwrap_or(month)).clamp(0, LONG_MONTHS);
    let (rate, q) = if seen == 0 {
        (value_of(buckets, month, month) as f64, 1.0)
    } else {
        let recent_months = seen.min(RECENT_MONTHS);
        let recent =
            value_of(buckets, month - recent_months, month - 1) as f64 / f64::from(recent_months);
        let long = value_of(buckets, month - seen, month - 1) as f64 / f64::from(seen);
        let distance = f64::from(seen - recent_months) / 2.0;
        let q = if recent > 0.0 && long > 0.0 && distance > 0.0 {
            (recent / long).powf(distance.recip())
        } else {
            1.0
        };
        (recent, q)
    };
    let n = horizon_days / MONTH_DAYS;
    let end = q.powf(n).clamp(TREND_CAP.recip(), TREND_CAP);
    let growth = end.ln() / n;
    let months = if growth.abs() < 1e-12 {
        n
    } else {
        (end - 1.0) / growth
    };
    (rate * months).round() as Minor
}

/// The risk as a warning writes it: hundredths, rounded half away from 0.
pub fn risk_hundredths(risk: f64) -> i64 {
    (risk * 100.0).round() as i64
}

/// `x · hundredths / 100`, rounded half away from 0, exactly.
fn times_hundredths(x: Minor, hundredths: i64) -> Minor {
    let p = i128::from(x) * i128::from(hundredths);
    let half = if p < 0 { -50 } else { 50 };
    ((p + half) / 100) as Minor
}

impl StakePolicy {
    /// The stake of a customer with projection `projected_value` at churn
    /// risk `risk`.
    pub fn stake(&self, projected_value: Minor, risk: f64) -> Stake {
        let value_at_risk = times_hundredths(projected_value, risk_hundredths(risk));
        let above = self
            .priority_floors
            .iter()
            .take_while(|floor| value_at_risk < **floor)
            .count();
        Stake {
            projected_value,
            value_at_risk,
            priority: above as u8 + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets with `values[i]` as the margin of month `first + i`.
    fn months(first: MonthIndex, values: &[Minor]) -> Buckets {
        Buckets(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| MonthBucket {
                    month: first + i as MonthIndex,
                    margin: *v,
                    ..MonthBucket::default()
                })
                .collect(),
        )
    }

    /// Eleven months from month 1: `before` a month, the last three `after`.
    fn stepped(before: Minor, after: Minor) -> Buckets {
        let mut v = [before; 11];
        v[8..].fill(after);
        months(1, &v)
    }

    const HALF_YEAR: f64 = 6.0 * MONTH_DAYS;

    #[test]
    fn a_steady_customer_projects_its_rate() {
        // 12 months of 100.00, asked in month 12: six months of 100.00
        let b = months(0, &[10_000; 13]);
        assert_eq!(projected_value(&b, Some(0), 12, HALF_YEAR), 60_000);
    }

    #[test]
    fn the_current_month_is_not_read_once_a_month_is_complete() {
        let mut b = months(0, &[10_000; 12]);
        b.0.push(MonthBucket {
            month: 12,
            margin: 9_999_999,
            ..MonthBucket::default()
        });
        assert_eq!(projected_value(&b, Some(0), 12, HALF_YEAR), 60_000);
    }

    #[test]
    fn a_new_customer_projects_its_first_month() {
        let b = months(5, &[2_500]);
        assert_eq!(projected_value(&b, Some(5), 5, HALF_YEAR), 15_000);
    }

    #[test]
    fn a_rising_customer_projects_more_and_a_fading_one_less() {
        // recent rate 200/month; long rate (8*50 + 3*200)/11 ≈ 90.9
        let b = stepped(5_000, 20_000);
        let up = projected_value(&b, Some(1), 12, HALF_YEAR);
        assert!(up > 6 * 20_000, "{up}");
        assert!(up < 6 * 20_000 * 3, "{up}");
        let b = stepped(20_000, 5_000);
        let down = projected_value(&b, Some(1), 12, HALF_YEAR);
        assert!(down < 6 * 5_000, "{down}");
        assert!(down > 6 * 5_000 / 3, "{down}");
    }

    #[test]
    fn the_trend_is_capped_at_the_horizon() {
        // a tenfold rise compounds to at most 3x the recent rate at the end
        let b = stepped(1_000, 100_000);
        let capped = projected_value(&b, Some(1), 12, HALF_YEAR);
        // ∫ rate·e^(gt) over 6 months with e^(6g) = 3: rate · 2 / (ln 3 / 6)
        let expected = 100_000.0 * 2.0 / (3f64.ln() / 6.0);
        assert!(
            (capped as f64 - expected).abs() < 1.0,
            "{capped} {expected}"
        );
    }

    #[test]
    fn a_loss_making_customer_projects_a_loss_without_a_trend() {
        let mut v = [-1_000; 11];
        v[10] = -4_000;
        let b = months(1, &v);
        // recent: (-1000 - 1000 - 4000) / 3 = -2000 a month
        assert_eq!(projected_value(&b, Some(1), 12, HALF_YEAR), -12_000);
    }

    #[test]
    fn value_at_risk_uses_the_written_risk_and_priority_the_floors() {
        let p = StakePolicy {
            horizon_days: HALF_YEAR,
            priority_floors: [200_000, 50_000, 10_000],
        };
        // 0.567 is written 0.57: 0.57 · 1000.01 = 570.0057 → 570.01
        let s = p.stake(100_001, 0.567);
        assert_eq!(s.value_at_risk, 57_001);
        assert_eq!(s.priority, 2);
        assert_eq!(p.stake(400_000, 0.5).priority, 1);
        // 199.98 · 0.5 = 99.99, below p3; 199.99 · 0.5 rounds up to 100.00
        assert_eq!(p.stake(19_998, 0.5).priority, 4);
        assert_eq!(p.stake(19_999, 0.5).priority, 3);
        assert_eq!(p.stake(20_000, 0.5).priority, 3);
        let loss = p.stake(-12_345, 0.5);
        assert_eq!(loss.value_at_risk, -6_173);
        assert_eq!(loss.priority, PRIORITIES);
    }
}
