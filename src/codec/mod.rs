//! Wire formats: JSON in (with SPEC §1 validation and DLQ error codes) and
//! JSON out (SPEC §5 schemas).

pub mod input;
pub mod output;
