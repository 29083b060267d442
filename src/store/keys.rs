//! Key layout and record encoding. Every key starts with the task
//! (partition number, big-endian) so a task's state is one contiguous range
//! that can be dropped or restored as a unit. Values are compact postcard
//! with a leading version byte, so the format can evolve without guessing.

use super::{Cf, StoreError, TaskId, Write};
use crate::domain::output::TimerKind;
use crate::domain::profile::Profile;
use crate::domain::time::Millis;

/// Version of the profile record format.
const PROFILE_VERSION: u8 = 4;

/// Key of a customer's profile.
pub fn profile_key(task: TaskId, customer_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + customer_id.len());
    k.extend_from_slice(&task.key_prefix());
    k.extend_from_slice(customer_id.as_bytes());
    k
}

fn kind_byte(kind: TimerKind) -> u8 {
    match kind {
        TimerKind::MonthClose => 0,
        TimerKind::Daily => 1,
    }
}

/// Instants sort correctly as bytes once the sign bit is flipped.
fn instant_bytes(at: Millis) -> [u8; 8] {
    ((at.ms() as u64) ^ (1 << 63)).to_be_bytes()
}

fn timer_prefix(task: TaskId, kind: TimerKind, at: Millis) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.extend_from_slice(&task.key_prefix());
    k.push(kind_byte(kind));
    k.extend_from_slice(&instant_bytes(at));
    k
}

/// Key of one deadline-index entry.
pub fn timer_key(task: TaskId, kind: TimerKind, at: Millis, customer_id: &str) -> Vec<u8> {
    let mut k = timer_prefix(task, kind, at);
    k.extend_from_slice(customer_id.as_bytes());
    k
}

/// The key range holding every `kind` timer of `task` due in
/// `from ..= at`.
pub fn timers_due_range(
    task: TaskId,
    kind: TimerKind,
    from: Millis,
    at: Millis,
) -> (Vec<u8>, Vec<u8>) {
    (
        timer_prefix(task, kind, from),
        timer_prefix(task, kind, at + 1),
    )
}

/// The key range holding every `kind` timer of `task` due at or after
/// `from`.
pub fn timers_from_range(task: TaskId, kind: TimerKind, from: Millis) -> (Vec<u8>, Vec<u8>) {
    let mut end = task.key_prefix().to_vec();
    end.push(kind_byte(kind) + 1);
    (timer_prefix(task, kind, from), end)
}

/// The instant inside a timer key.
pub fn timer_instant(key: &[u8]) -> Result<Millis, StoreError> {
    let bytes: [u8; 8] = key
        .get(5..13)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("timer key".into()))?;
    Ok(Millis::from_ms(
        (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64,
    ))
}

/// The customer id inside a timer key.
pub fn timer_customer(key: &[u8]) -> Result<String, StoreError> {
    key.get(13..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Corrupt("timer key".into()))
}

/// Key of a task metadata entry.
pub fn meta_key(task: TaskId, name: &str) -> Vec<u8> {
    let mut k = task.key_prefix().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The full key range of one task in any family.
pub fn task_range(task: TaskId) -> (Vec<u8>, Vec<u8>) {
    (task.key_prefix().to_vec(), task.key_prefix_end().to_vec())
}

/// The deadline-index entries a stored profile (`key`, `value`) names:
/// what a restore rebuilds the index from, since the index is not logged
/// (`changelog::is_logged`).
pub fn index_entries(key: &[u8], value: &[u8]) -> Result<Vec<Write>, StoreError> {
    let task = TaskId::of_key(key).ok_or_else(|| StoreError::Corrupt("profile key".into()))?;
    let profile = decode_profile(value)?;
    Ok(TimerKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let at = profile.timers.of(kind)?;
            Some(Write {
                cf: Cf::Timers,
                key: timer_key(task, kind, at, &profile.customer_id),
                value: Some(Vec::new()),
            })
        })
        .collect())
}

/// Encodes a profile record.
pub fn encode_profile(p: &Profile) -> Vec<u8> {
    encode_profile_with(p, &mut Vec::new())
}

/// Encodes a profile record through `scratch`, which keeps its capacity
/// between calls: the record is built there and copied out once, at its
/// exact size, instead of growing from empty (which reallocates and
/// moves a busy customer's record at every doubling).
pub fn encode_profile_with(p: &Profile, scratch: &mut Vec<u8>) -> Vec<u8> {
    scratch.clear();
    scratch.push(PROFILE_VERSION);
    let built = postcard::to_extend(p, std::mem::take(scratch)).expect("profiles always serialize");
    *scratch = built;
    scratch.clone()
}

/// Decodes a profile record, refusing versions this build does not know.
pub fn decode_profile(bytes: &[u8]) -> Result<Profile, StoreError> {
    match bytes.split_first() {
        Some((&PROFILE_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(format!("profile: {e}")))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!("unknown profile version {v}"))),
        None => Err(StoreError::Corrupt("empty profile record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::ms;

    #[test]
    fn timer_keys_sort_by_instant_then_customer() {
        let a = timer_key(TaskId::new(1), TimerKind::Daily, ms(-5), "z");
        let b = timer_key(TaskId::new(1), TimerKind::Daily, ms(3), "a");
        let c = timer_key(TaskId::new(1), TimerKind::Daily, ms(3), "b");
        assert!(a < b && b < c);
        let (from, to) = timers_due_range(TaskId::new(1), TimerKind::Daily, Millis::MIN, ms(3));
        assert!(from <= a && c < to);
        assert!(timer_key(TaskId::new(1), TimerKind::Daily, ms(4), "") >= to);
        assert_eq!(timer_customer(&c).unwrap(), "b");
        assert_eq!(timer_instant(&a).unwrap(), ms(-5));
        assert_eq!(timer_instant(&c).unwrap(), ms(3));
        let (from, to) = timers_from_range(TaskId::new(1), TimerKind::Daily, ms(3));
        assert!(a < from && from <= b && c < to);
        assert!(timer_key(TaskId::new(1), TimerKind::MonthClose, ms(9), "") < from);
        assert!(timer_key(TaskId::new(2), TimerKind::MonthClose, ms(-9), "") >= to);
    }

    #[test]
    fn task_range_covers_only_the_task() {
        let (from, to) = task_range(TaskId::new(7));
        assert!(
            profile_key(TaskId::new(7), "x") >= from
                && profile_key(TaskId::new(7), "\u{10FFFF}") < to
        );
        assert!(profile_key(TaskId::new(8), "") >= to && profile_key(TaskId::new(6), "zz") < from);
    }

    /// The stored form of a profile is a format: this pins its bytes, so
    /// a change to the profile's Rust types that would change them (and
    /// leave existing state unreadable) fails here, not in production.
    #[test]
    fn a_profile_is_stored_as_these_bytes() {
        let mut p = Profile::new("c-1");
        p.seq = 300;
        p.timers.daily = Some(ms(86_400_000));
        assert_eq!(
            encode_profile(&p)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "0403632d31ac020000000000000180f0b25200000000000000000000000000000000"
        );
        let long = Profile::new(&"c".repeat(40));
        assert_eq!(decode_profile(&encode_profile(&long)).unwrap(), long);
    }

    #[test]
    fn profile_round_trip_and_version_check() {
        let mut p = Profile::new("c-1");
        p.seq = 42;
        let bytes = encode_profile(&p);
        assert_eq!(bytes[0], PROFILE_VERSION);
        assert_eq!(decode_profile(&bytes).unwrap(), p);
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(decode_profile(&bad).is_err());
    }
}
