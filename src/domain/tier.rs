//! The customer pyramid (SPEC §3): which tier a value puts a customer in,
//! and the month-close rules (hysteresis, minimum residence, one step at a
//! time, at-risk).

use super::event::Minor;
use super::ranking::{CutPoints, Shares};
use super::time::{Millis, DAY_MS};
use rust_decimal::prelude::*;

wire_enum! {
    /// Pyramid tiers, ordered from least to most valuable so `>` means "better".
    pub enum Tier {
        /// Serving costs exceed contribution.
        Lead,
        /// The many low-profit customers.
        Iron,
        /// Profitable, with growth potential.
        Gold,
        /// The most profitable few.
        Platinum,
    }
}

impl Tier {
    /// Every tier from the top down, the order thresholds are tested in.
    pub const TOP_DOWN: [Tier; 4] = [Tier::Platinum, Tier::Gold, Tier::Iron, Tier::Lead];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The tier one step down, if any (downgrades move one step per month close).
    pub fn below(self) -> Option<Tier> {
        match self {
            Tier::Platinum => Some(Tier::Gold),
            Tier::Gold => Some(Tier::Iron),
            Tier::Iron => Some(Tier::Lead),
            Tier::Lead => None,
        }
    }
}

/// The bounds of one tier, precomputed in minor units so every decision is
/// an exact integer comparison (SPEC §7: thresholds inclusive, downgrade and
/// at-risk strictly below the scaled threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierBounds {
    /// Value needed to be in (or upgrade to) the tier: `value >= threshold`.
    pub threshold: Minor,
    /// Downgrade when `value < downgrade_below` = ceil((1 - hysteresis) x threshold).
    pub downgrade_below: Minor,
    /// At risk when `value < at_risk_below` = ceil((1 + margin) x threshold).
    pub at_risk_below: Minor,
}

/// The bounds of platinum, gold and iron in force (lead has none: it is
/// the floor): the configured thresholds under `absolute`, the month's cut
/// points under `percentile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pyramid {
    /// Platinum's bounds.
    pub platinum: TierBounds,
    /// Gold's bounds.
    pub gold: TierBounds,
    /// Iron's bounds.
    pub iron: TierBounds,
}

/// The tier rules: thresholds (fixed, or the starting point of percentile
/// tiers) and the month-close rules that apply to whichever are in force.
#[derive(Debug, Clone, PartialEq)]
pub struct TierPolicy {
    /// The configured thresholds (in force before the first month close
    /// under `percentile`).
    pub absolute: Pyramid,
    /// Under `percentile`: the shares the cut points are computed for.
    pub percentile: Option<Shares>,
    /// Downgrade hysteresis fraction.
    pub hysteresis: Decimal,
    /// At-risk margin fraction.
    pub at_risk_margin: Decimal,
    /// Minimum time in a tier before a downgrade (ms).
    pub min_residence: i64,
    /// Revenue from which a customer may be a "fake big customer".
    pub fake_big_revenue: Minor,
    /// Margin rate below which such a customer is flagged.
    pub fake_big_margin_rate: f64,
}

/// Inputs to build a `TierPolicy`, as configured (fractions as decimals so
/// that 0.1 means exactly one tenth).
#[derive(Debug, Clone)]
pub struct TierSettings {
    /// Thresholds in minor units.
    pub platinum: Minor,
    /// See `platinum`.
    pub gold: Minor,
    /// See `platinum`.
    pub iron: Minor,
    /// Downgrade hysteresis fraction (0.10).
    pub hysteresis: Decimal,
    /// At-risk margin fraction (0.10).
    pub at_risk_margin: Decimal,
    /// Minimum residence in days.
    pub min_residence_days: u32,
    /// Fake-big revenue in minor units.
    pub fake_big_revenue: Minor,
    /// Fake-big margin rate.
    pub fake_big_margin_rate: f64,
    /// Under `percentile`: the shares of the pyramid.
    pub percentile: Option<Shares>,
}

fn scaled_ceil(threshold: Minor, factor: Decimal) -> Minor {
    (Decimal::from(threshold) * factor)
        .ceil()
        .to_i64()
        .expect("threshold x factor fits in i64")
}

impl TierBounds {
    fn new(threshold: Minor, hysteresis: Decimal, at_risk_margin: Decimal) -> Self {
        TierBounds {
            threshold,
            downgrade_below: scaled_ceil(threshold, Decimal::ONE - hysteresis),
            at_risk_below: scaled_ceil(threshold, Decimal::ONE + at_risk_margin),
        }
    }
}

/// What month close decides for one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthCloseDecision {
    /// Value (after late events or expired refunds/costs) reaches a higher tier.
    Upgrade(Tier),
    /// Below the hysteresis line after the minimum residence: one step down.
    Downgrade(Tier),
    /// Stays, but below the safety margin; `shortfall` is what it needs.
    AtRisk {
        /// Value missing to be back above `(1 + margin) x threshold`.
        shortfall: Minor,
    },
}

impl Pyramid {
    /// The bounds of three thresholds under the policy's hysteresis and
    /// margin.
    fn new(platinum: Minor, gold: Minor, iron: Minor, p: (Decimal, Decimal)) -> Self {
        Pyramid {
            platinum: TierBounds::new(platinum, p.0, p.1),
            gold: TierBounds::new(gold, p.0, p.1),
            iron: TierBounds::new(iron, p.0, p.1),
        }
    }

    /// The bounds of a tier; `None` for lead, which has no floor.
    pub fn bounds(&self, tier: Tier) -> Option<&TierBounds> {
        match tier {
            Tier::Platinum => Some(&self.platinum),
            Tier::Gold => Some(&self.gold),
            Tier::Iron => Some(&self.iron),
            Tier::Lead => None,
        }
    }

    /// The tier a value belongs in: the highest whose threshold it reaches
    /// (cut points are never below 0, so under `percentile` a negative
    /// value is lead whatever its rank).
    pub fn tier_for(&self, value: Minor) -> Tier {
        Tier::TOP_DOWN
            .into_iter()
            .find(|t| self.bounds(*t).is_none_or(|b| value >= b.threshold))
            .unwrap_or(Tier::Lead)
    }

    /// Whether `value` is below the downgrade line of `tier`.
    pub fn below_downgrade_line(&self, tier: Tier, value: Minor) -> bool {
        self.bounds(tier).is_some_and(|b| value < b.downgrade_below)
    }
}

impl TierPolicy {
    /// Precomputes the integer bounds from the configured settings.
    pub fn new(s: &TierSettings) -> Self {
        let scale = (s.hysteresis, s.at_risk_margin);
        TierPolicy {
            absolute: Pyramid::new(s.platinum, s.gold, s.iron, scale),
            percentile: s.percentile,
            hysteresis: s.hysteresis,
            at_risk_margin: s.at_risk_margin,
            min_residence: i64::from(s.min_residence_days) * DAY_MS,
            fake_big_revenue: s.fake_big_revenue,
            fake_big_margin_rate: s.fake_big_margin_rate,
        }
    }

    /// The pyramid of a month's cut points, under the same hysteresis and
    /// margin as the configured thresholds.
    pub fn pyramid_of(&self, cut: &CutPoints) -> Pyramid {
        let scale = (self.hysteresis, self.at_risk_margin);
        Pyramid::new(cut.platinum, cut.gold, cut.iron, scale)
    }

    /// The fake-big-customer flag: big revenue, almost no margin.
    pub fn is_fake_big(&self, revenue: Minor, margin: Minor) -> bool {
        revenue >= self.fake_big_revenue
            && revenue > 0
            && (margin as f64) < self.fake_big_margin_rate * revenue as f64
    }

    /// Month close for one customer in `tier` since `tier_since`, at instant
    /// `at`, with `value` over the window that ends in `at`'s month, against
    /// the pyramid in force.
    pub fn month_close(
        &self,
        pyramid: &Pyramid,
        tier: Tier,
        tier_since: Millis,
        value: Minor,
        at: Millis,
    ) -> Option<MonthCloseDecision> {
        let target = pyramid.tier_for(value);
        if target > tier {
            return Some(MonthCloseDecision::Upgrade(target));
        }
        let bounds = pyramid.bounds(tier)?;
        let resided = at - tier_since >= self.min_residence;
        if value < bounds.downgrade_below && resided {
            return tier.below().map(MonthCloseDecision::Downgrade);
        }
        (value < bounds.at_risk_below).then_some(MonthCloseDecision::AtRisk {
            shortfall: bounds.at_risk_below - value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's default tier policy, in minor units.
    pub fn default_policy() -> TierPolicy {
        crate::domain::tests::policy().tiers
    }

    #[test]
    fn thresholds_are_inclusive() {
        let p = default_policy();
        assert_eq!(p.absolute.tier_for(1_000_000), Tier::Platinum);
        assert_eq!(p.absolute.tier_for(999_999), Tier::Gold);
        assert_eq!(p.absolute.tier_for(200_000), Tier::Gold);
        assert_eq!(p.absolute.tier_for(199_999), Tier::Iron);
        assert_eq!(p.absolute.tier_for(0), Tier::Iron);
        assert_eq!(p.absolute.tier_for(-1), Tier::Lead);
    }

    #[test]
    fn bounds_are_exact() {
        let p = default_policy();
        assert_eq!(p.absolute.gold.downgrade_below, 180_000);
        assert_eq!(p.absolute.gold.at_risk_below, 220_000);
        assert_eq!(p.absolute.platinum.downgrade_below, 900_000);
        assert_eq!(p.absolute.iron.downgrade_below, 0);
        assert_eq!(p.absolute.iron.at_risk_below, 0);
    }

    #[test]
    fn month_close_boundaries() {
        let p = default_policy();
        let since = Millis::from_ms(0);
        let ok = since + 90 * DAY_MS;
        let early = ok - 1;
        // exactly on the hysteresis line: not a downgrade, but at risk
        assert_eq!(
            p.month_close(&p.absolute, Tier::Gold, since, 180_000, ok),
            Some(MonthCloseDecision::AtRisk { shortfall: 40_000 })
        );
        assert_eq!(
            p.month_close(&p.absolute, Tier::Gold, since, 179_999, ok),
            Some(MonthCloseDecision::Downgrade(Tier::Iron))
        );
        // residence not met: at risk instead
        assert_eq!(
            p.month_close(&p.absolute, Tier::Gold, since, 179_999, early),
            Some(MonthCloseDecision::AtRisk { shortfall: 40_001 })
        );
        // safe exactly at the margin
        assert_eq!(
            p.month_close(&p.absolute, Tier::Gold, since, 220_000, ok),
            None
        );
        assert_eq!(
            p.month_close(&p.absolute, Tier::Gold, since, 219_999, ok),
            Some(MonthCloseDecision::AtRisk { shortfall: 1 })
        );
        // one step at a time even when far below
        assert_eq!(
            p.month_close(&p.absolute, Tier::Platinum, since, -5, ok),
            Some(MonthCloseDecision::Downgrade(Tier::Gold))
        );
        // iron: strictly below 0
        assert_eq!(p.month_close(&p.absolute, Tier::Iron, since, 0, ok), None);
        assert_eq!(
            p.month_close(&p.absolute, Tier::Iron, since, -1, ok),
            Some(MonthCloseDecision::Downgrade(Tier::Lead))
        );
        // lead: floor, no at-risk; upgrades due are applied
        assert_eq!(
            p.month_close(&p.absolute, Tier::Lead, since, -100, ok),
            None
        );
        assert_eq!(
            p.month_close(&p.absolute, Tier::Lead, since, 250_000, early),
            Some(MonthCloseDecision::Upgrade(Tier::Gold))
        );
    }

    #[test]
    fn fake_big_needs_revenue_and_thin_margin() {
        let p = default_policy();
        assert!(p.is_fake_big(2_000_000, 39_999));
        assert!(!p.is_fake_big(2_000_000, 40_000));
        assert!(!p.is_fake_big(1_999_999, 0));
    }
}
