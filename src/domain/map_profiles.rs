//! A plain in-memory [`Profiles`]: the engine without an adapter, for the
//! domain tests and for the drivers that must look at every customer at
//! once (the churn-risk sampler behind `train` and `backtest`), which the
//! lending, write-back stores of the pipeline are not built for.

use super::engine::Profiles;
use super::output::TimerKind;
use super::profile::{Profile, Timers};
use super::ranking::Ranking;
use super::time::Millis;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

/// Profiles by customer id and the deadline index, in memory.
#[derive(Debug, Default, Clone)]
pub struct MapProfiles {
    /// Every stored profile, by customer id.
    pub profiles: BTreeMap<String, Profile>,
    /// The deadline index: (kind, deadline, customer id).
    pub timers: BTreeSet<(TimerKind, Millis, String)>,
    /// The task's part in percentile tiers.
    pub ranking: Ranking,
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
    /// Lends like the real store does (the profile leaves the map until
    /// handed back), so a path that forgets to hand one back loses it here.
    fn load(&mut self, id: &str) -> Result<Option<Box<Profile>>, Infallible> {
        Ok(self.profiles.remove(id).map(Box::new))
    }
    fn release(&mut self, p: Box<Profile>) {
        self.profiles.insert(p.customer_id.to_string(), *p);
    }
    fn save(&mut self, p: Box<Profile>, prev: Timers) -> Result<(), Infallible> {
        self.set(
            TimerKind::MonthClose,
            &p.customer_id,
            prev.month_close,
            p.timers.month_close,
        );
        self.set(TimerKind::Daily, &p.customer_id, prev.daily, p.timers.daily);
        self.profiles.insert(p.customer_id.to_string(), *p);
        Ok(())
    }
    fn erase(&mut self, id: &str, prev: Timers) -> Result<(), Infallible> {
        self.set(TimerKind::MonthClose, id, prev.month_close, None);
        self.set(TimerKind::Daily, id, prev.daily, None);
        self.profiles.remove(id);
        Ok(())
    }
    /// A range of the index, not a scan: a tick with nothing due costs one
    /// lookup, as in the real store.
    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<(Millis, String)>, Infallible> {
        Ok(self
            .timers
            .range((kind, Millis::MIN, String::new())..)
            .take_while(|(k, t, _)| *k == kind && *t <= at)
            .map(|(_, t, id)| (*t, id.clone()))
            .collect())
    }
    fn drop_timer(&mut self, kind: TimerKind, at: Millis, id: &str) -> Result<(), Infallible> {
        self.set(kind, id, Some(at), None);
        Ok(())
    }
    fn ranking(&mut self) -> &mut Ranking {
        &mut self.ranking
    }
}
