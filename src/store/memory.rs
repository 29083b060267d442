//! An in-memory `KvStore` for tests and quick replays: same semantics as
//! RocksDB (ordered keys, atomic batches), no durability.

use super::{Cf, Entries, KvStore, StoreError, StoreStats, Write};
use std::collections::BTreeMap;
use std::sync::Mutex;

type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// Ordered maps behind a mutex, one per column family.
#[derive(Debug, Default)]
pub struct MemoryStore {
    families: Mutex<BTreeMap<Cf, Family>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry of one family, for tests that inspect raw state.
    pub fn dump(&self, cf: Cf) -> Entries {
        let families = self.families.lock().expect("store lock");
        families
            .get(&cf)
            .map(|f| f.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

impl KvStore for MemoryStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let families = self.families.lock().expect("store lock");
        Ok(families.get(&cf).and_then(|f| f.get(key).cloned()))
    }

    fn range(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Entries, StoreError> {
        let families = self.families.lock().expect("store lock");
        Ok(families
            .get(&cf)
            .map(|f| {
                f.range(from.to_vec()..to.to_vec())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn first_key(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let families = self.families.lock().expect("store lock");
        Ok(families.get(&cf).and_then(|f| {
            f.range(from.to_vec()..to.to_vec())
                .next()
                .map(|(k, _)| k.clone())
        }))
    }

    fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        for (k, v) in self.range(cf, from, to)? {
            f(&k, &v);
        }
        Ok(())
    }

    fn write_parts(&self, parts: &[&[Write]]) -> Result<(), StoreError> {
        let mut families = self.families.lock().expect("store lock");
        for w in parts.iter().flat_map(|p| p.iter()) {
            let family = families.entry(w.cf).or_default();
            match &w.value {
                Some(v) => {
                    family.insert(w.key.clone(), v.clone());
                }
                None => {
                    family.remove(&w.key);
                }
            }
        }
        Ok(())
    }

    fn write_unlogged(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.write_parts(&[&writes])
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
