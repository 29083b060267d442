//! Property tests of the input decoder on hostile bytes: arbitrary bytes,
//! and valid events (from the generator, every type) mutated byte by byte —
//! flipped, dropped, inserted, truncated, spliced. The decoder must never
//! panic, every rejection must carry a message (the code is in its type),
//! and whatever it accepts must decode to the same event after a round
//! trip through a canonical re-encoding (so acceptance does not hang on
//! formatting, key order or escapes).
//!
//! CI runs a bounded number of cases (`PROPTEST_CASES`, default 20 000 per
//! property); `scripts/fuzz.sh MINUTES` runs fresh random cases until the
//! time is up. A failing case is shrunk and kept in `proptest-regressions/`.

use proptest::prelude::*;
use rust_decimal::Decimal;
use tierstream::codec::input::{decode, DecodeRules};
use tierstream::domain::time::Millis;
use tierstream::workload::generate::{generate, GenerateSpec};

/// 2026-01-05T10:00:00Z: after every generated event, so none is "future".
const NOW: Millis = Millis::from_ms(1_767_607_200_000);

fn rules() -> DecodeRules {
    DecodeRules {
        max_bytes: 65_536,
        currency: "USD".into(),
        default_margin_rate: Decimal::new(25, 2),
    }
}

/// A few hundred valid events of every type, as the generator writes them.
fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(|| {
        let spec = GenerateSpec {
            customers: 50,
            events: 400,
            seed: 3,
            start: Millis::from_ms(1_735_689_600_000),
            days: 300,
            ..GenerateSpec::default()
        };
        generate(&spec)
            .events
            .iter()
            .map(|g| serde_json::to_vec(&g.json).unwrap())
            .collect()
    })
}

/// One byte-level change to a valid event.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Drop(usize),
    Insert(usize, u8),
    Truncate(usize),
    /// Copies `len` bytes from `from` to `to` (a repeated key, a nested
    /// object, a doubled value).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..40, any::<usize>()).prop_map(|(from, len, to)| Mutation::Splice {
            from,
            len,
            to
        }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Flip(i, x) => {
            if !bytes.is_empty() {
                bytes[i % n] ^= x
            }
        }
        Mutation::Drop(i) => {
            if !bytes.is_empty() {
                bytes.remove(i % n);
            }
        }
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Truncate(i) => bytes.truncate(i % n),
        Mutation::Splice { from, len, to } => {
            let from = from % n;
            let piece: Vec<u8> = bytes.iter().skip(from).take(len).copied().collect();
            let to = to % (bytes.len() + 1);
            bytes.splice(to..to, piece);
        }
    }
}

/// The decoder's verdict on `bytes`, with the properties every verdict
/// must have: a rejection explains itself, an acceptance survives a
/// canonical re-encoding unchanged.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode(bytes, &rules(), NOW) {
        Err(r) => prop_assert!(!r.message.is_empty(), "{:?} without a message", r.code),
        Ok(event) => {
            let value: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| TestCaseError::fail(format!("accepted, but not JSON: {e}")))?;
            let again = decode(&serde_json::to_vec(&value).unwrap(), &rules(), NOW);
            prop_assert_eq!(again.as_ref(), Ok(&event), "re-encoded: {}", value);
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_rejection_explains_itself(
        bytes in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_valid_events_are_rejected_with_a_reason_or_round_trip(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4)
    ) {
        let samples = samples();
        let mut bytes = samples[pick.index(samples.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check(&bytes)?;
    }
}

#[test]
fn every_generated_event_is_accepted_and_round_trips() {
    for bytes in samples() {
        assert!(
            decode(bytes, &rules(), NOW).is_ok(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
        check(bytes).unwrap();
    }
}
