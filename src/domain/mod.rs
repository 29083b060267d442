//! The pure domain core: customers, events, value, tiers,
//! loyalty, churn warnings and time.
//!
//! Nothing in here does I/O or knows about Kafka, RocksDB, tokio or
//! Prometheus (ARCHITECTURE.md): the engine is `apply(state, event) ->
//! (state', outputs)` and `tick(state, now) -> (state', outputs)` behind the
//! `Profiles` port. That is what makes replay, property tests and
//! benchmarks cheap, and lets a reader learn the product from one folder.

/// Declares an enum that appears on the wire (in events, outputs or the
/// state): its names are the snake_case variant names, derived once for
/// serde (JSON, postcard) and strum (`as_str`, `FromStr`) alike, so no
/// hand-written name table can drift from the serialised one.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident $body:tt) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            strum::IntoStaticStr,
            strum::EnumString,
            strum::EnumIter,
            strum::EnumCount,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        $vis enum $name $body
    };
}

pub mod engine;
pub mod event;
pub mod lifetime;
pub mod loyalty;
pub mod map_profiles;
pub mod output;
pub mod penalties;
pub mod profile;
pub mod ranking;
pub mod risk;
pub mod tier;
pub mod time;
pub mod value;
pub mod warning;

#[cfg(test)]
mod tests;
