//! The state changelog: every state write of a batch, as a record of a
//! compacted topic with one partition per task, produced in the same Kafka
//! transaction as the batch's outputs and input offsets. Replaying it in
//! order rebuilds a task's store exactly, which is what restores a task on
//! another instance or after the local state directory is lost.
//!
//! The deadline index is the one family left out: its entries are named
//! by the profiles (`Profile::timers`), so a restore rebuilds it from the
//! profiles it restores (`keys::index_entries`). Logged, it was more than
//! half the changelog's records (a busy customer's deadline moves with
//! most of its events), each produced, replicated and compacted for
//! nothing. Index records in a changelog written before are skipped.
//!
//! Record key: one byte naming the column family, then the store key (which
//! already starts with the task). Record value: a format byte, then the
//! stored value; a delete is a tombstone (no value), so compaction drops it.

use crate::config::KafkaConfig;
use crate::store::{Cf, StoreError, Write};

/// Format byte in front of every changelog value. Values are never empty
/// on the wire (an empty value and a tombstone must not be confused).
const VALUE_FORMAT: u8 = 1;

/// The changelog topic of the pipeline's state store: named after the
/// consumer group, like Kafka Streams' `<application.id>-<store>-changelog`,
/// so two applications on one cluster never share one.
pub fn topic(cfg: &KafkaConfig) -> String {
    format!("{}-state-changelog", cfg.group_id)
}

/// Whether writes to `cf` go to the changelog (see the module doc).
pub fn is_logged(cf: Cf) -> bool {
    cf != Cf::Timers
}

fn cf_byte(cf: Cf) -> u8 {
    match cf {
        Cf::Profiles => 0,
        Cf::Timers => 1,
        Cf::Meta => 2,
    }
}

/// The record key and value (`None`: tombstone) of one state write.
pub fn encode(w: &Write) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut key = Vec::with_capacity(1 + w.key.len());
    key.push(cf_byte(w.cf));
    key.extend_from_slice(&w.key);
    let value = w.value.as_ref().map(|v| {
        let mut out = Vec::with_capacity(1 + v.len());
        out.push(VALUE_FORMAT);
        out.extend_from_slice(v);
        out
    });
    (key, value)
}

/// The state write a changelog record stands for.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Write, StoreError> {
    let (&cf, store_key) = key
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("empty changelog key".into()))?;
    let cf = Cf::ALL
        .into_iter()
        .find(|c| cf_byte(*c) == cf)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown changelog family {cf}")))?;
    let value = match value.map(<[u8]>::split_first) {
        None => None,
        Some(Some((&VALUE_FORMAT, v))) => Some(v.to_vec()),
        Some(_) => return Err(StoreError::Corrupt("unknown changelog value format".into())),
    };
    Ok(Write {
        cf,
        key: store_key.to_vec(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_including_empty_values_and_deletes() {
        for cf in Cf::ALL {
            for value in [None, Some(vec![]), Some(vec![7, 8, 9])] {
                let w = Write {
                    cf,
                    key: vec![0, 0, 0, 2, b'c'],
                    value,
                };
                let (k, v) = encode(&w);
                assert!(v.as_ref().is_none_or(|v| !v.is_empty()));
                assert_eq!(decode(&k, v.as_deref()).unwrap(), w);
            }
        }
    }

    #[test]
    fn foreign_records_are_refused() {
        assert!(decode(&[], None).is_err());
        assert!(decode(&[9, 1], None).is_err());
        assert!(decode(&[0, 1], Some(&[])).is_err());
        assert!(decode(&[0, 1], Some(&[2, 5])).is_err());
    }
}
