//! The map under a task's profile cache: a CLOCK (second-chance) cache.
//!
//! Why not an LRU list: with 100 000 customers cached, every hit on a
//! linked LRU moved its node to the front, touching the node and both its
//! neighbours — three cache misses on top of the hash lookup, the largest
//! single item of a replay's profile (`LruCache::get_mut`, 9%). Here a hit
//! sets a bit in the map's own slot, and the order in which entries leave
//! is kept in a ring that is only walked when something must leave. The
//! cache evicts only when asked (after a drain, when nothing is dirty or
//! lent), which is why a self-evicting cache crate does not fit.
//!
//! The map is hashbrown's rather than std's (the same table) because it
//! tells what its table takes (`allocation_size`): a cache charged for its
//! entries alone held a quarter more than its budget in tables and ring
//! (53 MB at the peak of 4M events over 1M customers with 128 MB,
//! heaptrack), which never shrink as entries leave.

use hashbrown::HashMap;
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::Hash;

/// A map whose entries leave, when asked, roughly least recently used
/// first: each entry gets a second chance if it was used since the clock
/// hand last passed it.
#[derive(Debug)]
pub struct ClockCache<K, V> {
    map: HashMap<K, Slot<V>, foldhash::fast::RandomState>,
    /// Every key of `map` once, in the order the hand visits them.
    ring: VecDeque<K>,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    /// Used since the hand last passed.
    referenced: bool,
}

impl<K: Hash + Eq + Clone, V> ClockCache<K, V> {
    /// An empty cache (the caller bounds it).
    pub fn new() -> Self {
        ClockCache {
            map: HashMap::default(),
            ring: VecDeque::new(),
        }
    }

    /// The entry for `key`, marked as used.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key).map(|s| {
            s.referenced = true;
            &mut s.value
        })
    }

    /// The entry for `key`, without counting it as a use.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|s| &s.value)
    }

    /// The entry for `key`, without counting it as a use.
    pub fn peek_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Adds or replaces the entry for `key`, marked as used.
    pub fn insert(&mut self, key: K, value: V) {
        let slot = Slot {
            value,
            referenced: true,
        };
        if self.map.insert(key.clone(), slot).is_none() {
            self.ring.push_back(key);
        }
    }

    /// Removes and returns the entry the hand stops at: the first not used
    /// since it last passed (clearing the mark of each used one it passes).
    pub fn evict(&mut self) -> Option<(K, V)> {
        self.evict_where(|_| true)
    }

    /// `evict`, passing over entries that may not leave now: the hand
    /// stops at the first that `may_leave` and was not used since it last
    /// passed. `None` when none may leave (after two turns at most: one
    /// clears the marks, the next finds an entry if there is one).
    pub fn evict_where(&mut self, may_leave: impl Fn(&V) -> bool) -> Option<(K, V)> {
        for _ in 0..=2 * self.ring.len() {
            let key = self.ring.pop_front()?;
            let slot = self
                .map
                .get_mut(&key)
                .expect("the ring holds the map's keys");
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back(key);
            } else if may_leave(&slot.value) {
                let slot = self.map.remove(&key).expect("just found");
                return Some((key, slot.value));
            } else {
                self.ring.push_back(key);
            }
        }
        None
    }

    /// Bytes the map's table and the ring take for the entries they have
    /// room for: what the cache costs beside its values.
    pub fn table_bytes(&self) -> usize {
        self.map.allocation_size() + self.ring.capacity() * size_of::<K>()
    }

    /// Gives back the room of entries that left, once under a quarter of
    /// it is used, keeping twice what is (a table that grew for one large
    /// batch would otherwise keep its size for good, and count against
    /// the budget).
    pub fn shrink(&mut self) {
        let len = self.map.len();
        if len * 4 < self.map.capacity() {
            self.map.shrink_to(len * 2);
        }
        if len * 4 < self.ring.capacity() {
            self.ring.shrink_to(len * 2);
        }
    }

    /// How many entries are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_used_since_the_hand_passed_gets_a_second_chance() {
        let mut c = ClockCache::new();
        for k in ["a", "b", "c"] {
            c.insert(k.to_string(), k.len());
        }
        // All were used on insert: one full turn clears the marks, then
        // the oldest leaves.
        assert_eq!(c.evict().map(|(k, _)| k), Some("a".into()));
        // b is used again: c leaves before it.
        *c.get_mut("b").unwrap() += 1;
        assert_eq!(c.evict().map(|(k, _)| k), Some("c".into()));
        assert_eq!(c.evict(), Some(("b".into(), 2)));
        assert_eq!(c.evict(), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn entries_that_may_not_leave_are_passed_over() {
        let mut c = ClockCache::new();
        for (k, pinned) in [("a", true), ("b", false), ("c", true)] {
            c.insert(k.to_string(), pinned);
        }
        let unpinned = |pinned: &bool| !*pinned;
        assert_eq!(c.evict_where(unpinned), Some(("b".into(), false)));
        assert_eq!(c.evict_where(unpinned), None, "only pinned ones left");
        assert_eq!(c.len(), 2);
        *c.get_mut("a").unwrap() = false;
        assert_eq!(c.evict_where(unpinned), Some(("a".into(), false)));
    }

    #[test]
    fn the_table_is_counted_by_its_room_and_shrinks_once_mostly_empty() {
        let mut c = ClockCache::new();
        assert_eq!(c.table_bytes(), 0);
        for k in 0..1000u64 {
            c.insert(k, k);
        }
        let full = c.table_bytes();
        // At least a control byte and a slot per entry, and the ring's key.
        assert!(full >= 1000 * (1 + size_of::<(u64, Slot<u64>)>() + size_of::<u64>()));
        while c.len() > 600 {
            c.evict();
        }
        c.shrink();
        assert_eq!(c.table_bytes(), full, "over a quarter used: kept");
        while c.len() > 100 {
            c.evict();
        }
        c.shrink();
        assert!(c.table_bytes() < full / 2, "a tenth used: given back");
        for k in 2000..2100u64 {
            c.insert(k, k);
        }
        assert_eq!(c.len(), 200, "still a working cache after shrinking");
    }

    #[test]
    fn peeking_is_not_a_use_and_replacing_keeps_one_ring_entry() {
        let mut c = ClockCache::new();
        c.insert(1, "one");
        c.insert(2, "two");
        assert_eq!(c.evict(), Some((1, "one")));
        c.insert(1, "one again");
        c.insert(1, "one more");
        // 2's mark was cleared by the turn above; peeking does not set it.
        *c.peek_mut(&2).unwrap() = "two, peeked";
        assert_eq!(c.evict(), Some((2, "two, peeked")));
        assert_eq!(c.evict(), Some((1, "one more")));
        assert_eq!(c.evict(), None);
    }
}
