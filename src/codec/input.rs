//! Decoding and validating input events exactly per SPEC §1.
//!
//! Every way an input can be wrong maps to one error code, and the first
//! problem found is reported with a message naming the field, so a producer
//! team can fix its payload from the DLQ headers alone.

use crate::domain::event::{
    Complaint, Event, EventKind, EventType, Id, Minor, Purchase, Service, Severity, Signal,
};
use crate::domain::time::{parse_utc_z, Millis, DAY_MS};
use rust_decimal::prelude::*;
use rust_decimal::RoundingStrategy;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use strum::EnumCount;

/// Why an input record was rejected (the `tierstream.error.code` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// Not JSON, or not a JSON object.
    InvalidJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong type or is out of range.
    InvalidField,
    /// `type` is not purchase, complaint, service or forget.
    UnknownType,
    /// Larger than the configured limit.
    TooLarge,
    /// `currency` differs from the configured one.
    CurrencyMismatch,
    /// More than a day ahead of the wall clock, or before 1970.
    TimestampOutOfRange,
    /// The Kafka message key is present and is not the `customer_id`: the
    /// record's partition (its task) need not be the customer's, and
    /// applying it there would split the customer's state across tasks.
    KeyMismatch,
}

impl ErrorCode {
    /// Every code, for metrics initialisation and docs.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidJson,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::CurrencyMismatch,
        ErrorCode::TimestampOutOfRange,
        ErrorCode::KeyMismatch,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A rejected input: its code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What exactly was wrong (names the field; never echoes values).
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Checks a Kafka record's key against the event it carries. A record
/// without a key is taken as it is (its partition is its task); one keyed
/// by anything but its `customer_id` is refused, since the producer routed
/// it by something else than the customer.
pub fn check_key(key: Option<&[u8]>, event: &Event) -> Result<(), Rejection> {
    match key {
        Some(k) if k != event.customer_id.as_bytes() => Err(reject(
            ErrorCode::KeyMismatch,
            "the message key is not the customer_id: produce each event keyed by its customer_id, \
             so that all of a customer's events share one partition",
        )),
        _ => Ok(()),
    }
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// The configurable parts of validation.
#[derive(Debug, Clone)]
pub struct DecodeRules {
    /// Largest accepted record, in bytes.
    pub max_bytes: usize,
    /// The only accepted `currency`.
    pub currency: String,
    /// Margin rate applied when a purchase has no `margin`.
    pub default_margin_rate: Decimal,
}

/// Largest money amount accepted, in major units, so sums never overflow.
const MAX_MONEY: i64 = 1_000_000_000_000;
/// Longest accepted `event_id` and `customer_id`, in characters.
const MAX_ID_CHARS: usize = 128;

/// Decodes one record. `now` is the wall clock, for the future-skew check.
pub fn decode(bytes: &[u8], rules: &DecodeRules, now: Millis) -> Result<Event, Rejection> {
    if bytes.len() > rules.max_bytes {
        return Err(reject(
            ErrorCode::TooLarge,
            format!(
                "record is {} bytes, limit is {}",
                bytes.len(),
                rules.max_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| reject(ErrorCode::InvalidUtf8, format!("not UTF-8: {e}")))?;
    let Some(fields) = members(text) else {
        // The rare bad record pays for a second parse, into a tree, to say
        // why in the words of serde_json's own parser.
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => reject(ErrorCode::InvalidJson, format!("not JSON: {e}")),
            Ok(_) => reject(ErrorCode::InvalidJson, "expected a JSON object"),
        });
    };
    let f = Fields(&fields);
    let event_id = f.id(Member::EventId)?;
    let type_name = f.required_str(Member::Type)?;
    let customer_id = f.id(Member::CustomerId)?;
    let ts = f.timestamp(Member::Ts, now)?;
    let Ok(event_type) = type_name.parse::<EventType>() else {
        return Err(reject(
            ErrorCode::UnknownType,
            "field `type` must be purchase, complaint, service or forget",
        ));
    };
    let kind = match event_type {
        EventType::Purchase => EventKind::Purchase(purchase(&f, rules)?),
        EventType::Complaint => EventKind::Complaint(complaint(&f)?),
        EventType::Service => EventKind::Service(service(&f)?),
        EventType::Forget => EventKind::Forget,
    };
    Ok(Event {
        event_id: Id::from(event_id.as_ref()),
        customer_id: Id::from(customer_id.as_ref()),
        ts,
        kind,
    })
}

fn purchase(f: &Fields, rules: &DecodeRules) -> Result<Purchase, Rejection> {
    let amount = f
        .money(Member::Amount)?
        .ok_or_else(|| missing(Member::Amount))?;
    if amount < 0 {
        return Err(invalid(Member::Amount, "must be >= 0"));
    }
    let margin = match f.money(Member::Margin)? {
        Some(m) => m,
        None => (Decimal::from(amount) * rules.default_margin_rate)
            .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
            .to_i64()
            .ok_or_else(|| invalid(Member::Amount, "is too large"))?,
    };
    let refund = f.optional_bool(Member::Refund)?.unwrap_or(false);
    if let Some(currency) = f.optional_str(Member::Currency)? {
        if currency != rules.currency {
            return Err(reject(
                ErrorCode::CurrencyMismatch,
                format!("currency must be {}", rules.currency),
            ));
        }
    }
    for name in [Member::OrderId, Member::Category, Member::Channel] {
        f.optional_str(name)?;
    }
    Ok(Purchase {
        amount,
        margin,
        refund,
    })
}

fn complaint(f: &Fields) -> Result<Complaint, Rejection> {
    let severity = Severity::parse(&f.required_str(Member::Severity)?)
        .ok_or_else(|| invalid(Member::Severity, "must be low, medium, high or critical"))?;
    let resolved = match f.optional_str(Member::Status)?.as_deref() {
        None | Some("opened") => false,
        Some("resolved") => true,
        Some(_) => return Err(invalid(Member::Status, "must be opened or resolved")),
    };
    let reference = f.optional_str(Member::Ref)?.map(Cow::into_owned);
    f.optional_str(Member::Category)?;
    Ok(Complaint {
        severity,
        resolved,
        reference,
    })
}

fn service(f: &Fields) -> Result<Service, Rejection> {
    let cost = f.money(Member::Cost)?.unwrap_or(0);
    if cost < 0 {
        return Err(invalid(Member::Cost, "must be >= 0"));
    }
    // Both are checked when present; `recommend` wins over a mapped `nps`.
    let nps = f.ranged(Member::Nps, 0.0, 10.0)?.map(|n| 1.0 + n * 0.4);
    let recommend = f.ranged(Member::Recommend, 1.0, 5.0)?.or(nps);
    let mut signals = Vec::new();
    let mut unknown_signals = 0;
    match f.get(Member::Signals) {
        None => {}
        Some(Field::Array(raw)) => {
            let items: Vec<&RawValue> = serde_json::from_str(raw)
                .map_err(|_| invalid(Member::Signals, "must be an array of strings"))?;
            for item in items {
                let Field::String(name) = Field::of(item.get()) else {
                    return Err(invalid(Member::Signals, "must be an array of strings"));
                };
                match Signal::parse(&name) {
                    Some(s) => signals.push(s),
                    None => unknown_signals += 1,
                }
            }
        }
        Some(_) => return Err(invalid(Member::Signals, "must be an array of strings")),
    }
    Ok(Service {
        cost,
        satisfaction: f.ranged(Member::Satisfaction, 1.0, 5.0)?,
        recommend,
        repurchase_intent: f.ranged(Member::RepurchaseIntent, 1.0, 5.0)?,
        share_of_wallet: f.ranged(Member::ShareOfWallet, 0.0, 1.0)?,
        signals,
        unknown_signals,
    })
}

fn missing(name: Member) -> Rejection {
    reject(
        ErrorCode::MissingField,
        format!("field `{}` is required", name.as_str()),
    )
}

fn invalid(name: Member, what: &str) -> Rejection {
    reject(
        ErrorCode::InvalidField,
        format!("field `{}` {what}", name.as_str()),
    )
}

/// The event time of a record if it has a readable one, without the other
/// checks: the pipeline uses it only to interleave, in time order, records
/// of one task that arrived together from several input topics (the record
/// is decoded properly, with every rule, when it is processed). Its members
/// are read as `decode` reads them — by the scanner when it can, a
/// repeated `ts` as its last value — so a record is placed at the time it
/// is then applied at.
pub fn peek_ts(bytes: &[u8]) -> Option<Millis> {
    let members = members(std::str::from_utf8(bytes).ok()?)?;
    Fields(&members).timestamp(Member::Ts, Millis::MAX).ok()
}

/// A JSON object's members the rules read, as raw text: by the one-pass
/// scanner when the object is flat and plain (nearly every event), else
/// by serde_json; `None` when the text is not a JSON object.
fn members(text: &str) -> Option<[Option<&str>; Member::COUNT]> {
    scan_flat_object(text).or_else(|| parsed_object(text))
}

/// The members the rules read, by name; any other member of a record is
/// skipped. A record's members are kept in a slot per name, so a rule
/// finds its member without comparing names.
#[derive(Debug, Clone, Copy, strum::EnumString, strum::IntoStaticStr, strum::EnumCount)]
#[strum(serialize_all = "snake_case")]
enum Member {
    EventId,
    Type,
    CustomerId,
    Ts,
    Amount,
    Margin,
    Refund,
    Currency,
    OrderId,
    Category,
    Channel,
    Severity,
    Status,
    Ref,
    Cost,
    Nps,
    Recommend,
    Satisfaction,
    RepurchaseIntent,
    ShareOfWallet,
    Signals,
}

impl Member {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The members of `text` when it is a flat JSON object of plain members
/// (keys and strings without escapes, numbers, `true`, `false`, `null`),
/// as nearly every event is; `None` for anything else (an array, an
/// escape, any syntax error), which [`RawObject`] reads through serde_json.
/// A flat object needs no recursion and no unescaping: one pass over the
/// bytes, where serde_json's visitor protocol took 3,300 instructions an
/// event, a sixth of a replay's. Whatever this accepts, serde_json reads
/// to the same members; a property test holds the two to each other.
fn scan_flat_object(text: &str) -> Option<[Option<&str>; Member::COUNT]> {
    let b = text.as_bytes();
    let mut at = skip_whitespace(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(b, at + 1);
    let mut members = [None; Member::COUNT];
    if b.get(at) == Some(&b'}') {
        return (skip_whitespace(b, at + 1) == b.len()).then_some(members);
    }
    loop {
        let key_end = plain_string(b, at)?;
        let key = &text[at + 1..key_end - 1];
        at = skip_whitespace(b, key_end);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(b, at + 1);
        let value_end = scalar(b, at)?;
        if let Ok(m) = key.parse::<Member>() {
            members[m as usize] = Some(&text[at..value_end]);
        }
        at = skip_whitespace(b, value_end);
        match b.get(at)? {
            b',' => at = skip_whitespace(b, at + 1),
            b'}' => return (skip_whitespace(b, at + 1) == b.len()).then_some(members),
            _ => return None,
        }
    }
}

/// Past the JSON whitespace at `at`.
fn skip_whitespace(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The end (past the closing quote) of the string at `at`, if it has no
/// escape and no control character.
fn plain_string(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let len = b[at + 1..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    let end = at + 1 + len;
    (b[end] == b'"').then_some(end + 1)
}

/// The end of the plain string, number or literal at `at`.
fn scalar(b: &[u8], at: usize) -> Option<usize> {
    let literal = |word: &[u8]| b[at..].starts_with(word).then_some(at + word.len());
    match b.get(at)? {
        b'"' => plain_string(b, at),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        _ => number(b, at),
    }
}

/// The end of the JSON number at `at`: an optional `-`, `0` or digits not
/// starting with `0`, then a fraction and an exponent, each optional and
/// each with at least one digit. (A digit after a leading `0` ends the
/// number there, and the caller finds no `,` or `}` after it.)
fn number(b: &[u8], mut at: usize) -> Option<usize> {
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(at) == Some(&b'-') {
        at += 1;
    }
    match b.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(at),
        _ => return None,
    }
    if b.get(at) == Some(&b'.') {
        let end = digits(at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// The members of `text` if it is a JSON object, read by serde_json.
fn parsed_object(text: &str) -> Option<[Option<&str>; Member::COUNT]> {
    let RawObject(members) = serde_json::from_str(text).ok()?;
    Some(members.map(|m| m.map(RawValue::get)))
}

/// A JSON object's members as unparsed values, borrowed from the record:
/// a valid event is read without building a tree, and each field is
/// parsed only by the rule that reads it. A repeated key keeps its last
/// value (as a parsed map would).
struct RawObject<'a>([Option<&'a RawValue>; Member::COUNT]);

/// An object key, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject<'de>, A::Error> {
                let mut members = [None; Member::COUNT];
                while let Some(Key(k)) = map.next_key::<Key>()? {
                    match k.parse::<Member>() {
                        Ok(m) => members[m as usize] = Some(map.next_value()?),
                        Err(_) => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawObject(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// One member's value, classified by its first character (the record was
/// checked to be JSON, so that decides its type).
enum Field<'a> {
    Null,
    Bool(bool),
    /// The literal as written, for exact decimal parsing.
    Number(&'a str),
    String(Cow<'a, str>),
    /// Unparsed; only `signals` is an array.
    Array(&'a str),
    Object,
}

impl<'a> Field<'a> {
    /// `text` is one valid JSON value as written.
    fn of(text: &'a str) -> Field<'a> {
        match text.as_bytes().first() {
            Some(b'n') => Field::Null,
            Some(b't') => Field::Bool(true),
            Some(b'f') => Field::Bool(false),
            // A valid JSON string without escapes is its bytes between the
            // quotes (the record was parsed, so control characters are out).
            Some(b'"') if !text.contains('\\') => {
                Field::String(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(b'"') => match serde_json::from_str::<Key>(text) {
                Ok(Key(s)) => Field::String(s),
                Err(_) => Field::Object, // unreachable for valid JSON
            },
            Some(b'[') => Field::Array(text),
            Some(b'{') => Field::Object,
            _ => Field::Number(text),
        }
    }
}

/// The minor units of a plain amount literal — digits, then at most two
/// decimals (`855`, `855.0`, `362.79`), below the largest amount — read
/// exactly without a decimal type; `None` for every other literal (a sign,
/// an exponent, more decimals), which `Decimal` reads. Nearly every amount
/// has this form, and the decimal path was a sixth of decoding.
fn plain_minor(n: &str) -> Option<Minor> {
    let (units, cents) = match n.split_once('.') {
        Some((u, c)) if (1..=2).contains(&c.len()) => (u, c),
        Some(_) => return None,
        None => (n, ""),
    };
    // Twelve digits stay below `MAX_MONEY` (a valid JSON number has no
    // leading zeros to pad them).
    if units.is_empty() || units.len() > 12 {
        return None;
    }
    let digits = |s: &str| {
        s.bytes().try_fold(0i64, |v, c| {
            c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
        })
    };
    let scale = if cents.len() == 1 { 10 } else { 1 };
    Some(digits(units)? * 100 + digits(cents)? * scale)
}

/// Any number literal as minor units, exactly, rounded half-even; the
/// error says what is wrong with it.
fn decimal_minor(n: &str) -> Result<Minor, &'static str> {
    let exact = Decimal::from_str_exact(n)
        .or_else(|_| Decimal::from_scientific(n))
        .map_err(|_| "is not a representable amount")?;
    if exact.abs() > Decimal::from(MAX_MONEY) {
        return Err("is too large");
    }
    (exact * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .ok_or("is too large")
}

/// Typed access to the fields of one JSON object. A `null` counts as absent.
struct Fields<'a, 'b>(&'b [Option<&'a str>; Member::COUNT]);

impl<'a> Fields<'a, '_> {
    fn get(&self, name: Member) -> Option<Field<'a>> {
        match Field::of(self.0[name as usize]?) {
            Field::Null => None,
            f => Some(f),
        }
    }

    fn required_str(&self, name: Member) -> Result<Cow<'a, str>, Rejection> {
        self.optional_str(name)?.ok_or_else(|| missing(name))
    }

    fn optional_str(&self, name: Member) -> Result<Option<Cow<'a, str>>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(Field::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(name, "must be a string")),
        }
    }

    fn id(&self, name: Member) -> Result<Cow<'a, str>, Rejection> {
        let s = self.required_str(name)?;
        let n = s.chars().count();
        if n == 0 || n > MAX_ID_CHARS {
            return Err(invalid(name, "must be 1..128 characters"));
        }
        Ok(s)
    }

    fn optional_bool(&self, name: Member) -> Result<Option<bool>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(Field::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(invalid(name, "must be true or false")),
        }
    }

    /// A number's literal.
    fn number(&self, name: Member) -> Result<Option<&'a str>, Rejection> {
        match self.get(name) {
            None => Ok(None),
            Some(Field::Number(n)) => Ok(Some(n)),
            Some(_) => Err(invalid(name, "must be a number")),
        }
    }

    /// A number within `lo..=hi`.
    fn ranged(&self, name: Member, lo: f64, hi: f64) -> Result<Option<f64>, Rejection> {
        let Some(n) = self.number(name)? else {
            return Ok(None);
        };
        match n.parse::<f64>() {
            Ok(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            _ => Err(invalid(name, &format!("must be between {lo} and {hi}"))),
        }
    }

    /// Money: the exact decimal literal rounded half-even to minor units.
    fn money(&self, name: Member) -> Result<Option<Minor>, Rejection> {
        let Some(n) = self.number(name)? else {
            return Ok(None);
        };
        plain_minor(n)
            .map_or_else(|| decimal_minor(n), Ok)
            .map(Some)
            .map_err(|what| invalid(name, what))
    }

    /// `ts`: RFC 3339 with an offset, or integer epoch milliseconds; not
    /// before 1970 and not more than one day ahead of the wall clock.
    fn timestamp(&self, name: Member, now: Millis) -> Result<Millis, Rejection> {
        let ts = match self.get(name) {
            None => return Err(missing(name)),
            Some(Field::String(s)) => match parse_utc_z(&s) {
                Some(ts) => ts.ms(),
                None => chrono::DateTime::parse_from_rfc3339(&s)
                    .map_err(|_| {
                        invalid(
                            name,
                            "must be RFC 3339 with an offset, or epoch milliseconds",
                        )
                    })?
                    .timestamp_millis(),
            },
            Some(Field::Number(n)) => n
                .parse::<i64>()
                .map_err(|_| invalid(name, "must be an integer number of epoch milliseconds"))?,
            Some(_) => {
                return Err(invalid(
                    name,
                    "must be RFC 3339 with an offset, or epoch milliseconds",
                ))
            }
        };
        if ts < 0 || ts > now.ms().saturating_add(DAY_MS) {
            return Err(reject(
                ErrorCode::TimestampOutOfRange,
                format!(
                    "field `{}` is before 1970 or more than 1 day ahead of the wall clock",
                    name.as_str()
                ),
            ));
        }
        Ok(Millis::from_ms(ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = Millis::from_ms(1_767_607_200_000); // 2026-01-05T10:00:00Z

    fn rules() -> DecodeRules {
        DecodeRules {
            max_bytes: 65_536,
            currency: "USD".into(),
            default_margin_rate: Decimal::new(25, 2),
        }
    }

    fn ok(s: &str) -> Event {
        decode(s.as_bytes(), &rules(), NOW).unwrap()
    }

    fn code(s: &[u8]) -> ErrorCode {
        decode(s, &rules(), NOW).unwrap_err().code
    }

    const BASE: &str = r#""event_id":"e1","customer_id":"c1","ts":"2026-01-05T10:00:00Z""#;

    fn with(body: &str) -> String {
        format!("{{{BASE},{body}}}")
    }

    proptest::proptest! {
        #[test]
        fn plain_amounts_read_as_the_decimal_path_reads_them(
            n in "(0|[1-9][0-9]{0,13})(\\.[0-9]{1,3})?|-?[0-9]{1,3}(\\.[0-9]{1,2})?(e-?[0-9])?",
        ) {
            if let Some(minor) = plain_minor(&n) {
                proptest::prop_assert_eq!(Ok(minor), decimal_minor(&n), "{}", n);
            }
        }
    }

    /// Pieces of JSON, valid and not, that records are strung from.
    const PIECES: &[&str] = &[
        "{",
        "}",
        ",",
        ":",
        " ",
        "\n",
        "\t",
        "\u{a0}",
        "\"event_id\"",
        "\"type\"",
        "\"ts\"",
        "\"amount\"",
        "\"other\"",
        "\"\"",
        "\"é ✓\"",
        "\"a\\\"b\"",
        "\"\\u0041\"",
        "\"\u{1}\"",
        "\"\u{7f}\"",
        "\"open",
        "0",
        "-0",
        "01",
        "-",
        "1.5e3",
        "1.",
        ".5",
        "2E+9",
        "1e",
        "-12.50",
        "true",
        "tru",
        "false",
        "null",
        "nul",
        "[1]",
        "[",
        "{}",
        "x",
    ];

    /// Flat objects of plain members, spaced every way JSON allows.
    fn flat_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let space = prop::sample::select(vec!["", " ", "\n\t", "\r "]);
        let key = prop::sample::select(vec!["event_id", "type", "ts", "amount", "x", "", "é"]);
        let value = prop::sample::select(vec![
            "\"v\"",
            "\"\"",
            "\"2024-01-01T00:00:00Z\"",
            "0",
            "-0.5",
            "12",
            "1e-3",
            "3.25E+2",
            "true",
            "false",
            "null",
        ]);
        prop::collection::vec(
            (space.clone(), key, space.clone(), value, space.clone()),
            0..8,
        )
        .prop_map(|members| {
            let inner: Vec<String> = members
                .into_iter()
                .map(|(a, k, b, v, c)| format!("{a}\"{k}\"{b}:{c}{v}"))
                .collect();
            format!(" {{{}}} ", inner.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Whatever the scanner accepts, serde_json reads to the same
        /// members.
        #[test]
        fn the_scanner_agrees_with_serde_json(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..14),
        ) {
            let text = pieces.concat();
            if let Some(scanned) = scan_flat_object(&text) {
                proptest::prop_assert_eq!(Some(scanned), parsed_object(&text), "{}", text);
            }
        }

        /// Also for a flat object with one piece put in anywhere, which
        /// is mostly invalid in one place.
        #[test]
        fn the_scanner_agrees_with_serde_json_on_near_misses(
            text in flat_object(),
            piece in proptest::sample::select(PIECES),
            at in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let at = bounds[at.index(bounds.len())];
            let text = format!("{}{piece}{}", &text[..at], &text[at..]);
            if let Some(scanned) = scan_flat_object(&text) {
                proptest::prop_assert_eq!(Some(scanned), parsed_object(&text), "{}", text);
            }
        }

        /// And it accepts every flat object of plain members.
        #[test]
        fn the_scanner_reads_every_flat_object(text in flat_object()) {
            proptest::prop_assert!(scan_flat_object(&text).is_some(), "{}", text);
            proptest::prop_assert_eq!(scan_flat_object(&text), parsed_object(&text), "{}", text);
        }
    }

    #[test]
    fn the_scanner_leaves_the_rest_to_serde_json() {
        for text in [
            "[]",
            "{\"signals\":[\"competitor_offer\"]}",
            "{\"type\":\"purch\\u0061se\"}",
            "{\"a\":1}x",
            "{\"a\":01}",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "\u{feff}{}",
            "{\"a\":\"\u{1}\"}",
        ] {
            assert_eq!(scan_flat_object(text), None, "{text}");
        }
        assert_eq!(scan_flat_object(" {} "), Some([None; Member::COUNT]));
    }

    #[test]
    fn plain_amounts_are_read_without_the_decimal_path() {
        for (n, minor) in [("0", 0), ("0.1", 10), ("855.0", 85_500), ("362.79", 36_279)] {
            assert_eq!(plain_minor(n), Some(minor), "{n}");
        }
        for n in ["-1.0", "1e2", "10.005", "1000000000000", "1."] {
            assert_eq!(plain_minor(n), None, "{n}");
        }
    }

    #[test]
    fn purchase_defaults_and_money_rounding() {
        let e = ok(&with(r#""type":"purchase","amount":10.005"#));
        assert_eq!(e.ts, NOW);
        // 10.005 -> 1000 (half-even), margin 1000 * 0.25 = 250
        assert_eq!(
            e.kind,
            EventKind::Purchase(Purchase {
                amount: 1000,
                margin: 250,
                refund: false
            })
        );
        let e = ok(&with(
            r#""type":"purchase","amount":10.015,"margin":-3.5,"refund":true,"currency":"USD""#,
        ));
        assert_eq!(
            e.kind,
            EventKind::Purchase(Purchase {
                amount: 1002,
                margin: -350,
                refund: true
            })
        );
        // default margin rounds half-even too: 0.10 * 0.25 = 0.025 -> 0.02
        let e = ok(&with(r#""type":"purchase","amount":0.1"#));
        assert_eq!(
            e.kind,
            EventKind::Purchase(Purchase {
                amount: 10,
                margin: 2,
                refund: false
            })
        );
    }

    #[test]
    fn json_as_written_is_read_as_parsed() {
        // Escaped keys and values, a repeated key (its last value counts),
        // exponent money and nulls as absent: what a parsed map would give.
        let e = ok(&with(
            r#""\u0074ype":"purchase","amount":1,"amount":1.5E1,"margin":null,"order_id":"o\"1""#,
        ));
        assert_eq!(
            e.kind,
            EventKind::Purchase(Purchase {
                amount: 1500,
                margin: 375,
                refund: false
            })
        );
        let e =
            ok(r#"{"event_id":"e\u00e9","customer_id":"c","ts":1767607200000,"type":"forget"}"#);
        assert_eq!(e.event_id, "eé");
        let bad = |s: &str| decode(s.as_bytes(), &rules(), NOW).unwrap_err().message;
        assert!(bad("[1,2]").contains("expected a JSON object"));
        assert!(bad(r#"{"a":1,}"#).starts_with("not JSON"));
        assert!(
            bad(r#"{"event_id":"e","customer_id":"c","ts":1.7e12,"type":"forget"}"#)
                .contains("integer number of epoch milliseconds")
        );
        assert!(bad(&with(
            r#""type":"service","signals":["competitor_offer",1]"#
        ))
        .contains("array of strings"));
        assert!(bad(&with(r#""type":"service","satisfaction":1e400"#)).contains("between 1 and 5"));
    }

    #[test]
    fn peek_ts_reads_the_time_decode_applies_the_record_at() {
        let records = [
            r#"{"event_id":"e","customer_id":"c","ts":1767607200000,"type":"forget"}"#,
            r#"{"ts":"2026-01-05T12:00:00+02:00","event_id":"e","customer_id":"c","type":"forget"}"#,
            // Read by serde_json (an escape), and a repeated `ts`: its last.
            r#"{"event_id":"e\u00e9","customer_id":"c","ts":1,"type":"forget","ts":1767607200000}"#,
            r#"{"event_id":"e","customer_id":"c","ts":1,"ts":1767607200000,"type":"forget"}"#,
        ];
        for r in records {
            assert_eq!(peek_ts(r.as_bytes()), Some(ok(r).ts), "{r}");
        }
        // No time to read: the aligner places the record after the last.
        for r in [
            "not json",
            "[1]",
            r#"{"event_id":"e","customer_id":"c","type":"forget"}"#,
            r#"{"ts":"yesterday"}"#,
            r#"{"ts":1,}"#,
        ] {
            assert_eq!(peek_ts(r.as_bytes()), None, "{r}");
        }
        assert_eq!(peek_ts(b"{\"ts\":1,\"x\":\"\xff\"}"), None, "not UTF-8");
        // Nothing but the time is checked.
        assert_eq!(
            peek_ts(br#"{"ts":5,"type":"teleport"}"#),
            Some(Millis::from_ms(5))
        );
    }

    #[test]
    fn epoch_millis_and_offsets() {
        let e = ok(r#"{"event_id":"e","customer_id":"c","ts":1767607200000,"type":"forget"}"#);
        assert_eq!(e.ts, NOW);
        let e = ok(
            r#"{"event_id":"e","customer_id":"c","ts":"2026-01-05T12:00:00+02:00","type":"forget"}"#,
        );
        assert_eq!(e.ts, NOW);
    }

    #[test]
    fn service_fields_and_nps_mapping() {
        let e = ok(&with(
            r#""type":"service","cost":2.5,"nps":10,"satisfaction":4,"repurchase_intent":3,"share_of_wallet":0.4,"signals":["competitor_offer","weird"]"#,
        ));
        let EventKind::Service(s) = e.kind else {
            panic!()
        };
        assert_eq!(s.cost, 250);
        assert_eq!(s.recommend, Some(5.0));
        assert_eq!(s.signals, vec![Signal::CompetitorOffer]);
        assert_eq!(s.unknown_signals, 1);
        assert!(!ok(&with(r#""type":"service","cost":1"#)).is_attitudinal_evidence());
    }

    #[test]
    fn complaint_fields() {
        let e = ok(&with(
            r#""type":"complaint","severity":"high","status":"resolved","ref":"e0""#,
        ));
        assert_eq!(
            e.kind,
            EventKind::Complaint(Complaint {
                severity: Severity::High,
                resolved: true,
                reference: Some("e0".into())
            })
        );
    }

    #[test]
    fn error_invalid_utf8() {
        assert_eq!(code(b"{\"a\":\"\xff\"}"), ErrorCode::InvalidUtf8);
    }

    #[test]
    fn error_invalid_json() {
        assert_eq!(code(b"{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,2]"), ErrorCode::InvalidJson);
    }

    #[test]
    fn error_missing_field() {
        assert_eq!(
            code(br#"{"type":"forget","customer_id":"c","ts":1}"#),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(with(r#""type":"purchase""#).as_bytes()),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(with(r#""type":"complaint""#).as_bytes()),
            ErrorCode::MissingField
        );
        assert_eq!(
            code(br#"{"event_id":"e","type":"forget","customer_id":null,"ts":1}"#),
            ErrorCode::MissingField
        );
    }

    #[test]
    fn error_invalid_field() {
        for body in [
            r#""type":"purchase","amount":-1"#,
            r#""type":"purchase","amount":"12""#,
            r#""type":"purchase","amount":1,"refund":"yes""#,
            r#""type":"complaint","severity":"huge""#,
            r#""type":"complaint","severity":"low","status":"closed""#,
            r#""type":"service","satisfaction":6"#,
            r#""type":"service","nps":11"#,
            r#""type":"service","recommend":4,"nps":"x""#,
            r#""type":"service","share_of_wallet":1.5"#,
            r#""type":"service","signals":"competitor_offer""#,
            r#""type":"service","cost":-2"#,
        ] {
            assert_eq!(
                code(with(body).as_bytes()),
                ErrorCode::InvalidField,
                "{body}"
            );
        }
        let long = "x".repeat(129);
        assert_eq!(
            code(
                format!(r#"{{"event_id":"{long}","type":"forget","customer_id":"c","ts":1}}"#)
                    .as_bytes()
            ),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(br#"{"event_id":"","type":"forget","customer_id":"c","ts":1}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(br#"{"event_id":"e","type":"forget","customer_id":"c","ts":"yesterday"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(br#"{"event_id":"e","type":"forget","customer_id":"c","ts":1.5}"#),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn error_unknown_type() {
        assert_eq!(
            code(with(r#""type":"refund""#).as_bytes()),
            ErrorCode::UnknownType
        );
    }

    #[test]
    fn error_too_large() {
        let big = with(&format!(
            r#""type":"forget","pad":"{}""#,
            "x".repeat(70_000)
        ));
        assert_eq!(code(big.as_bytes()), ErrorCode::TooLarge);
        let limit = with(r#""type":"forget""#);
        let exact = DecodeRules {
            max_bytes: limit.len(),
            ..rules()
        };
        assert!(decode(limit.as_bytes(), &exact, NOW).is_ok());
    }

    #[test]
    fn error_currency_mismatch() {
        assert_eq!(
            code(with(r#""type":"purchase","amount":1,"currency":"EUR""#).as_bytes()),
            ErrorCode::CurrencyMismatch
        );
    }

    #[test]
    fn deep_nesting_is_ignored_in_an_unknown_field_and_refused_in_a_known_one() {
        let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let e = ok(&format!(
            r#"{{"event_id":"e","type":"forget","customer_id":"c","ts":1,"x":{deep}}}"#
        ));
        assert_eq!(e.customer_id, "c");
        assert_eq!(
            code(with(&format!(r#""type":"purchase","amount":{deep}"#)).as_bytes()),
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn a_key_must_be_the_customer_id_when_there_is_one() {
        let e = ok(r#"{"event_id":"e","type":"forget","customer_id":"c-1","ts":1}"#);
        assert_eq!(check_key(Some(b"c-1"), &e), Ok(()));
        assert_eq!(check_key(None, &e), Ok(()));
        let r = check_key(Some(b"c-2"), &e).unwrap_err();
        assert_eq!(r.code, ErrorCode::KeyMismatch);
        assert_eq!(r.code.as_str(), "key_mismatch");
        assert!(!r.message.contains("c-2"), "never echoes values");
    }

    #[test]
    fn error_timestamp_out_of_range() {
        assert_eq!(
            code(br#"{"event_id":"e","type":"forget","customer_id":"c","ts":-1}"#),
            ErrorCode::TimestampOutOfRange
        );
        assert_eq!(
            code(br#"{"event_id":"e","type":"forget","customer_id":"c","ts":"1969-12-31T23:59:59Z"}"#),
            ErrorCode::TimestampOutOfRange
        );
        let ahead = NOW + DAY_MS + 1;
        assert_eq!(
            code(
                format!(r#"{{"event_id":"e","type":"forget","customer_id":"c","ts":{ahead}}}"#)
                    .as_bytes()
            ),
            ErrorCode::TimestampOutOfRange
        );
        let just = NOW + DAY_MS;
        assert!(decode(
            format!(r#"{{"event_id":"e","type":"forget","customer_id":"c","ts":{just}}}"#)
                .as_bytes(),
            &rules(),
            NOW
        )
        .is_ok());
    }
}
