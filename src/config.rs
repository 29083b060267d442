//! Typed configuration: compiled-in defaults (`config/default.toml`), an
//! optional TOML file, then `TIERSTREAM_<SECTION>__<KEY>` environment
//! overrides. Anything unknown or out of range is refused at start with the
//! offending key named, so a typo never silently falls back to a default.

use crate::codec::input::DecodeRules;
use crate::domain::engine::{LoyaltyPolicy, Policy};
use crate::domain::event::Minor;
use crate::domain::lifetime::StakePolicy;
use crate::domain::loyalty::{AttitudePolicy, BehaviourPolicy, QuadrantPolicy};
use crate::domain::ranking::Shares;
use crate::domain::risk::{Feature, OpenOn, RiskModel, RiskPolicy, Shape, FEATURES};
use crate::domain::tier::{TierPolicy, TierSettings};
use crate::domain::time::DAY_MS;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use rust_decimal::prelude::*;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefix of an environment variable naming one librdkafka property with
/// `_` for `.`.
const ENV_PROPERTY: &str = "TIERSTREAM_KAFKA_PROPERTY_";
/// `[kafka.properties]` as an environment section, after `TIERSTREAM_`.
const ENV_PROPERTIES: &str = "KAFKA__PROPERTIES__";

/// The defaults, shipped inside the binary so they cannot drift from the docs.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The whole configuration: the sections as written, validated, with the
/// engine policy and the input rules parsed from them once, at load. The
/// sections are read through `Deref` (`cfg.kafka.group_id`).
#[derive(Debug, Clone)]
pub struct Config {
    sections: Sections,
    policy: Policy,
    decode_rules: DecodeRules,
}

impl std::ops::Deref for Config {
    type Target = Sections;

    fn deref(&self) -> &Sections {
        &self.sections
    }
}

impl TryFrom<Sections> for Config {
    type Error = ConfigError;

    /// Validates the sections and parses them into the policy and rules;
    /// an invalid value is an error naming its key.
    fn try_from(sections: Sections) -> Result<Self, ConfigError> {
        sections.validate()?;
        Ok(Config {
            policy: sections.policy()?,
            decode_rules: sections.decode_rules()?,
            sections,
        })
    }
}

/// The configuration's sections, as the TOML file and the environment
/// give them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sections {
    /// Broker, topics and librdkafka pass-through.
    pub kafka: KafkaConfig,
    /// Input validation.
    pub input: InputConfig,
    /// Event-time rules.
    pub time: TimeConfig,
    /// The pyramid.
    pub tiers: TiersConfig,
    /// Behaviour score and quadrants.
    pub loyalty: LoyaltyConfig,
    /// Attitude score.
    pub attitude: AttitudeConfig,
    /// Churn-warning lifecycle.
    pub warnings: WarningsConfig,
    /// Local state.
    pub state: StateConfig,
    /// HTTP server.
    pub http: HttpConfig,
}

/// `[loyalty]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyConfig {
    /// Purchases in 12 months that count as fully frequent.
    pub repeat_target: f64,
    /// Share of wallet that counts as fully loyal.
    pub full_share_of_wallet: f64,
    /// Recency reaches 0 at this many expected gaps.
    pub dormancy_factor: f64,
    /// Expected gap with fewer than 3 purchases.
    pub default_gap_days: f64,
    /// Scores at or above this are high.
    pub quadrant_threshold: f64,
    /// Points a score must cross the threshold by to change side.
    pub quadrant_hysteresis: f64,
}

/// `[attitude]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttitudeConfig {
    /// Weight of recommend.
    pub w_recommend: f64,
    /// Weight of repurchase intent.
    pub w_repurchase: f64,
    /// The formula's k.
    pub k: f64,
    /// Top of the answer scale.
    pub scale_max: f64,
    /// Survey part without survey or satisfaction.
    pub neutral_prior: f64,
    /// Penalty half-life.
    pub penalty_half_life_days: f64,
    /// Penalty of a low complaint.
    pub complaint_penalty_low: f64,
    /// Penalty of a medium complaint.
    pub complaint_penalty_medium: f64,
    /// Penalty of a high complaint.
    pub complaint_penalty_high: f64,
    /// Penalty of a critical complaint.
    pub complaint_penalty_critical: f64,
    /// Factor on a resolved complaint's penalty.
    pub resolved_factor: f64,
    /// Penalty per known signal.
    pub signal_penalty: f64,
    /// Days a high/critical complaint stays open for escalation.
    pub open_complaint_days: f64,
}

/// `[warnings]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarningsConfig {
    /// Minimum event time between non-escalating warning outputs.
    pub cooldown_hours: f64,
    /// `risk` or `quadrant`: what opens a warning.
    pub open_on: String,
    /// Risk at which a spurious customer's warning opens.
    pub open_risk: f64,
    /// Risk below which an open warning clears.
    pub clear_risk: f64,
    /// Risk from which a warning's severity is one step higher.
    pub escalate_risk: f64,
    /// What the risk is the probability of: no purchase within this many
    /// days (the horizon `train` labels with and `backtest` scores by).
    pub risk_horizon_days: f64,
    /// The logistic model: `intercept` and one coefficient per feature.
    pub risk_coefficients: BTreeMap<String, f64>,
    /// The map of the summed logit to the final one, as `[[logit,
    /// calibrated], ...]` (piecewise linear, flat beyond the ends, never
    /// falling); `[]` for none.
    pub risk_calibration: Vec<[f64; 2]>,
    /// `[warnings.risk_shapes]`: a feature's contribution as
    /// `[[value, contribution], ...]` (piecewise linear, flat beyond the
    /// ends) instead of coefficient x value; `[]` for none.
    pub risk_shapes: BTreeMap<String, Vec<[f64; 2]>>,
    /// `[warnings.priority]`: value-at-risk floors of the priorities.
    pub priority: PriorityConfig,
}

/// `[warnings.priority]`: the value at risk (currency units) from which a
/// warning has priority 1, 2 and 3; below `p3` it has priority 4.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    /// Priority 1 from this value at risk.
    pub p1: f64,
    /// Priority 2 from this value at risk.
    pub p2: f64,
    /// Priority 3 from this value at risk.
    pub p3: f64,
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group shared by all instances.
    pub group_id: String,
    /// Topics events are read from.
    pub input_topics: Vec<String>,
    /// Where tier changes go.
    pub tier_topic: String,
    /// Where churn warnings go.
    pub warning_topic: String,
    /// Compacted latest-profile topic; empty to disable.
    pub profile_topic: String,
    /// Where rejected input goes.
    pub dlq_topic: String,
    /// Delivery guarantee of the pipeline.
    pub processing_guarantee: ProcessingGuarantee,
    /// Stable name of this instance, the suffix of its transactional id.
    /// Empty: derived from the host name and the state directory, which is
    /// stable across restarts and unique per instance on one host.
    pub instance_id: String,
    /// Join the group as a static member (`group.instance.id` =
    /// the instance id): a restarted instance takes its partitions back at
    /// once instead of after the dead member's session timeout.
    pub static_membership: bool,
    /// Create missing topics at start.
    pub create_topics: bool,
    /// Write outputs as CloudEvents 1.0 in structured JSON mode.
    pub cloudevents: bool,
    /// Partitions of topics created at start.
    pub topic_partitions: i32,
    /// Replication factor of topics created at start.
    pub replication_factor: i32,
    /// Largest batch processed and committed together.
    pub batch_max_records: usize,
    /// Longest time a batch stays open, from its oldest record's Kafka
    /// timestamp (a backlog's batch: from when it opened).
    pub commit_interval_ms: u64,
    /// How long a task waits for an empty input partition that has reached
    /// its end before it processes its other partitions without it (0: not
    /// at all; a partition with more to fetch is always waited for).
    pub max_task_idle_ms: u64,
    /// Records buffered per input partition for event-time alignment; a
    /// full partition of a waiting task is paused.
    pub buffered_records_per_partition: usize,
    /// Threads that process a batch's tasks in parallel (a task stays on
    /// one thread); 0: twice the cores (see `threads`).
    pub stream_threads: usize,
    /// librdkafka properties passed through unchanged (TLS, SASL, tuning).
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// `stream_threads` with 0 resolved to twice the cores there are (a
    /// batch never uses more threads than it has tasks). Not one per
    /// core: three tasks on two threads leave one thread idle half the
    /// time, and a backlog's commit runs beside the processing threads.
    pub fn threads(&self) -> usize {
        match self.stream_threads {
            0 => 2 * std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// How outputs and input offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Outputs, state changelog and input offsets commit in one Kafka
    /// transaction; state is written locally only after the commit.
    ExactlyOnce,
    /// Offsets are committed only after outputs are acknowledged and state
    /// is written: nothing is lost, a crash may repeat some outputs.
    AtLeastOnce,
}

/// `[input]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Larger records go to the DLQ as `too_large`.
    pub max_event_bytes: usize,
    /// The only accepted currency.
    pub currency: String,
    /// Margin assumed when a purchase has none.
    pub default_margin_rate: f64,
    /// Event ids remembered per customer for duplicate detection.
    pub dedup_window: usize,
}

/// `[time]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// Events further behind stream time update state but cause no output.
    pub allowed_lateness_days: u32,
}

/// Tier assignment policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierPolicyKind {
    /// Fixed thresholds on value_12m.
    Absolute,
    /// Thresholds at ranks of value_12m among all customers of the group,
    /// recomputed at each month close.
    Percentile,
}

/// `[tiers.percentile]`: the shares of the pyramid by rank.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentileConfig {
    /// Share of customers in platinum (the most valuable).
    pub platinum: f64,
    /// Share in gold (the next ones).
    pub gold: f64,
    /// Share in iron; the rest (and every negative value) is lead.
    pub iron: f64,
    /// How long a task waits at a month close for the other tasks'
    /// summaries before it closes the month with what it has.
    pub summary_wait_seconds: u64,
}

/// `[tiers]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    /// Which policy assigns tiers.
    pub policy: TierPolicyKind,
    /// value_12m needed for platinum.
    pub platinum: f64,
    /// value_12m needed for gold.
    pub gold: f64,
    /// value_12m needed for iron (below it: lead).
    pub iron: f64,
    /// Downgrade only below (1 - this) x threshold.
    pub downgrade_hysteresis: f64,
    /// Days in a tier before a downgrade.
    pub min_residence_days: u32,
    /// At risk below (1 + this) x threshold.
    pub at_risk_margin: f64,
    /// Revenue from which the fake-big flag applies.
    pub fake_big_revenue: f64,
    /// Margin rate under which such a customer is fake-big.
    pub fake_big_margin_rate: f64,
    /// Shares under `policy = "percentile"`.
    pub percentile: PercentileConfig,
}

/// `[state]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// RocksDB directory.
    pub dir: PathBuf,
    /// Shared block cache size.
    pub block_cache_mb: usize,
    /// Total memtable budget.
    pub write_buffer_mb: usize,
    /// Decoded profiles kept in memory between batches, per instance
    /// (split evenly across its tasks); 0 reads every profile from RocksDB.
    pub cache_mb: usize,
}

impl StateConfig {
    /// The profile cache of each of `tasks` tasks, in bytes.
    pub fn cache_bytes_per_task(&self, tasks: usize) -> usize {
        (self.cache_mb << 20) / tasks.max(1)
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the metrics, health and customer endpoints; empty
    /// disables the server.
    pub listen: String,
    /// A file holding the bearer token `/customers/{id}` requires (it
    /// returns personal data); empty: no token.
    pub auth_token_file: String,
}

impl HttpConfig {
    /// The address to listen on, `None` when disabled.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    /// The token of `auth_token_file` (surrounding whitespace trimmed),
    /// `None` when none is configured; an unreadable or empty file is
    /// refused, so a mistyped path never leaves the endpoint open.
    pub fn auth_token(&self) -> Result<Option<String>, ConfigError> {
        const KEY: &str = "http.auth_token_file";
        if self.auth_token_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&self.auth_token_file)
            .map_err(|e| invalid(KEY, format!("cannot be read ({e})")))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(invalid(KEY, "holds no token"));
        }
        Ok(Some(token.to_owned()))
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or parsed, or a key is unknown.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// Dotted key, e.g. `tiers.gold`.
        key: Cow<'static, str>,
        /// What is wrong with it.
        problem: String,
    },
}

/// One line per problem, each naming the dotted key and where it came from.
fn describe(e: figment::Error) -> ConfigError {
    let lines: Vec<String> = e
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            let source = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            if key.is_empty() {
                format!("{} ({source})", e.kind)
            } else {
                format!("`{key}`: {} ({source})", e.kind)
            }
        })
        .collect();
    ConfigError::Load(lines.join("; "))
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    invalid_owned(key, problem)
}

/// [`invalid`] for a key built at run time (a table entry's name).
fn invalid_owned(key: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

fn decimal(key: &'static str, x: f64) -> Result<Decimal, ConfigError> {
    Decimal::from_f64(x).ok_or_else(|| invalid(key, "is not a finite number"))
}

fn minor(key: &'static str, x: f64) -> Result<Minor, ConfigError> {
    (decimal(key, x)? * Decimal::ONE_HUNDRED)
        .round()
        .to_i64()
        .ok_or_else(|| invalid(key, "is out of range"))
}

/// The floors of `[warnings.priority]`, in minor units: each at least 0
/// and no higher than the one before, so every value at risk has one
/// priority.
fn priority_floors(p: &PriorityConfig) -> Result<[Minor; 3], ConfigError> {
    let floors = [
        minor("warnings.priority.p1", p.p1)?,
        minor("warnings.priority.p2", p.p2)?,
        minor("warnings.priority.p3", p.p3)?,
    ];
    if floors[2] < 0 {
        return Err(invalid("warnings.priority.p3", "must be >= 0"));
    }
    if floors[1] > floors[0] {
        return Err(invalid(
            "warnings.priority.p2",
            "must not exceed warnings.priority.p1",
        ));
    }
    if floors[2] > floors[1] {
        return Err(invalid(
            "warnings.priority.p3",
            "must not exceed warnings.priority.p2",
        ));
    }
    Ok(floors)
}

fn in_range(key: &'static str, x: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if x.is_finite() && (lo..=hi).contains(&x) {
        Ok(())
    } else if hi == f64::MAX {
        Err(invalid(key, format!("must be >= {lo}")))
    } else {
        Err(invalid(key, format!("must be between {lo} and {hi}")))
    }
}

fn positive(key: &'static str, x: f64) -> Result<(), ConfigError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be > 0"))
    }
}

fn fraction(key: &'static str, x: f64) -> Result<(), ConfigError> {
    if (0.0..1.0).contains(&x) {
        Ok(())
    } else {
        Err(invalid(key, "must be in [0, 1)"))
    }
}

/// `[warnings.risk_coefficients]` and `[warnings.risk_shapes]` as a
/// model: every feature named, nothing else, all finite, and the
/// purchase gap's pull not falling as the gap grows (the gap is the one
/// feature that grows with time alone; a pull that never falls is what
/// keeps the risk monotone between evidence, so the engine can compute
/// when it crosses a threshold instead of scanning).
fn risk_model(
    c: &BTreeMap<String, f64>,
    shapes: &BTreeMap<String, Vec<[f64; 2]>>,
) -> Result<RiskModel, ConfigError> {
    const KEY: &str = "warnings.risk_coefficients";
    let known = || {
        std::iter::once(INTERCEPT)
            .chain(Feature::all().map(Feature::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(unknown) = shapes.keys().find(|k| k.parse::<Feature>().is_err()) {
        return Err(invalid(
            "warnings.risk_shapes",
            format!(
                "unknown feature {unknown:?} (known: {})",
                Feature::all()
                    .map(Feature::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(unknown) = c
        .keys()
        .find(|k| k.as_str() != INTERCEPT && k.parse::<Feature>().is_err())
    {
        return Err(invalid(
            KEY,
            format!("unknown coefficient {unknown:?} (known: {})", known()),
        ));
    }
    let get = |name: &str| match c.get(name) {
        Some(v) if v.is_finite() => Ok(*v),
        Some(_) => Err(invalid(KEY, format!("{name} is not a finite number"))),
        None => Err(invalid(
            KEY,
            format!("{name} is missing (needed: {})", known()),
        )),
    };
    let mut model = RiskModel::linear(get(INTERCEPT)?, [0.0; FEATURES]);
    for f in Feature::all() {
        model.weights[f as usize] = get(f.as_str())?;
        model.shapes[f as usize] = match shapes.get(f.as_str()) {
            None => None,
            Some(points) if points.is_empty() => None,
            Some(points) => Some(risk_shape(f, points, model.weights[f as usize])?),
        };
    }
    let gap = Feature::PurchaseGap as usize;
    if model.weights[gap] < 0.0 {
        return Err(invalid(
            KEY,
            "purchase_gap must be >= 0 (the risk must not fall while a customer stays away)",
        ));
    }
    if model.shapes[gap]
        .as_ref()
        .is_some_and(|s| !s.is_non_decreasing())
    {
        return Err(invalid(
            "warnings.risk_shapes.purchase_gap",
            "its contributions must not fall as the gap grows (the risk must not fall while \
             a customer stays away)",
        ));
    }
    Ok(model)
}

/// `[[x, y], ...]` as a [`Shape`]: at least two points, finite, `x`
/// strictly increasing.
fn shape(key: &str, points: &[[f64; 2]]) -> Result<Shape, ConfigError> {
    let fail = |why: &str| Err(invalid_owned(key.to_owned(), why));
    if points.len() < 2 {
        return fail("needs at least two [x, y] points, or [] for none");
    }
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return fail("points must be finite numbers");
    }
    if points.windows(2).any(|w| w[1][0] <= w[0][0]) {
        return fail("point x values must be strictly increasing");
    }
    Ok(Shape {
        points: points.iter().map(|[x, y]| (*x, *y)).collect(),
    })
}

/// One feature's `[warnings.risk_shapes]` entry, with no coefficient
/// beside it (a shape replaces the coefficient; a config that merged a
/// coefficient over a shipped shape would otherwise mean something nobody
/// wrote).
fn risk_shape(f: Feature, points: &[[f64; 2]], weight: f64) -> Result<Shape, ConfigError> {
    let key = format!("warnings.risk_shapes.{}", f.as_str());
    let s = shape(&key, points)?;
    if weight != 0.0 {
        return Err(invalid_owned(
            key,
            format!(
                "has a shape and warnings.risk_coefficients.{} = {weight}: give one of the two \
                 (the other 0, or the shape [])",
                f.as_str()
            ),
        ));
    }
    Ok(s)
}

/// `warnings.risk_calibration`: none, or a map that never falls (a
/// falling one would reorder customers and let the risk fall while a
/// customer stays away).
fn risk_calibration(points: &[[f64; 2]]) -> Result<Option<Shape>, ConfigError> {
    const KEY: &str = "warnings.risk_calibration";
    if points.is_empty() {
        return Ok(None);
    }
    let s = shape(KEY, points)?;
    if !s.is_non_decreasing() {
        return Err(invalid(
            KEY,
            "must not fall: its y values must be non-decreasing",
        ));
    }
    Ok(Some(s))
}

/// The name of the model's constant term among its coefficients.
pub const INTERCEPT: &str = "intercept";

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(file)?)
    }

    /// The layers [`load`](Self::load) extracts, not yet extracted: defaults,
    /// then `file` (if any), then the environment. Callers that need to
    /// change a few keys merge their own provider on top (`backtest` runs
    /// each rule with `fig.merge(("warnings.cooldown_hours", 5.0))` and the
    /// like) and hand it to [`from_figment`](Self::from_figment).
    pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            fig = fig.merge(Toml::file(path));
        }
        Ok(fig.merge(Self::env()).merge(Self::env_properties()))
    }

    /// The environment provider: only `TIERSTREAM_<SECTION>__<KEY>` names,
    /// so unrelated `TIERSTREAM_*` variables of scripts are not mistaken
    /// for config keys. librdkafka properties are left to
    /// [`env_properties`](Self::env_properties): their names contain dots,
    /// which this provider would split into nested tables.
    fn env() -> Env {
        Env::prefixed("TIERSTREAM_")
            .filter(|k| k.as_str().contains("__") && !k.as_str().starts_with(ENV_PROPERTIES))
            .split("__")
    }

    /// librdkafka properties from the environment, so secrets come from a
    /// Kubernetes Secret instead of the config file:
    /// `TIERSTREAM_KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`
    /// (lower case, `_` for `.`: librdkafka's names have no underscores),
    /// and `TIERSTREAM_KAFKA__PROPERTIES__sasl.password`, where the
    /// platform allows dots in names, sets the name after the prefix.
    fn env_properties() -> Serialized<BTreeMap<String, String>> {
        let mut properties = BTreeMap::new();
        for (name, value) in std::env::vars() {
            if let Some(p) = name.strip_prefix(ENV_PROPERTY) {
                properties.insert(p.to_ascii_lowercase().replace('_', "."), value);
            } else if let Some(p) = name
                .strip_prefix("TIERSTREAM_")
                .and_then(|n| n.strip_prefix(ENV_PROPERTIES))
            {
                properties.insert(p.to_ascii_lowercase(), value);
            }
        }
        Serialized::default("kafka.properties", properties)
    }

    /// The compiled-in defaults alone (no file, no environment).
    pub fn defaults() -> Config {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
            .expect("the shipped defaults are valid")
    }

    /// Extracts and validates a config from any figment (tests use this).
    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        let sections: Sections = fig.extract().map_err(describe)?;
        let cfg = Config::try_from(sections)?;
        Ok(cfg)
    }

    /// The engine policy, parsed at load.
    pub fn policy(&self) -> Policy {
        self.policy.clone()
    }

    /// The input validation rules, parsed at load.
    pub fn decode_rules(&self) -> DecodeRules {
        self.decode_rules.clone()
    }
}

impl Sections {
    fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            return Err(invalid("kafka.bootstrap_servers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "kafka.input_topics",
                "must list at least one non-empty topic",
            ));
        }
        if k.tier_topic.trim().is_empty() {
            return Err(invalid("kafka.tier_topic", "must not be empty"));
        }
        if k.warning_topic.trim().is_empty() {
            return Err(invalid("kafka.warning_topic", "must not be empty"));
        }
        if k.dlq_topic.trim().is_empty() {
            return Err(invalid("kafka.dlq_topic", "must not be empty"));
        }
        if k.topic_partitions < 1 {
            return Err(invalid("kafka.topic_partitions", "must be >= 1"));
        }
        if k.replication_factor < 1 {
            return Err(invalid("kafka.replication_factor", "must be >= 1"));
        }
        if k.batch_max_records == 0 {
            return Err(invalid("kafka.batch_max_records", "must be >= 1"));
        }
        if k.commit_interval_ms == 0 {
            return Err(invalid("kafka.commit_interval_ms", "must be >= 1"));
        }
        if k.buffered_records_per_partition == 0 {
            return Err(invalid(
                "kafka.buffered_records_per_partition",
                "must be >= 1",
            ));
        }
        if !self.http.listen.is_empty() && self.http.addr().is_none() {
            return Err(invalid(
                "http.listen",
                "must be an address like 127.0.0.1:9898 (or empty to disable)",
            ));
        }
        if k.instance_id.contains(char::is_whitespace) {
            return Err(invalid("kafka.instance_id", "must not contain spaces"));
        }
        // A task spans one partition number of every input topic; only the
        // range assignor keeps those on one instance. cooperative-sticky
        // assigns each topic's partitions independently.
        let strategy = k
            .properties
            .get("partition.assignment.strategy")
            .map_or("", String::as_str);
        if k.input_topics.len() > 1 && !strategy.is_empty() && strategy != "range" {
            return Err(invalid(
                "kafka.properties.partition.assignment.strategy",
                "must be \"range\" when there is more than one input topic (a task is one partition number across all of them)",
            ));
        }
        if self.input.max_event_bytes == 0 {
            return Err(invalid("input.max_event_bytes", "must be >= 1"));
        }
        if self.input.currency.trim().is_empty() {
            return Err(invalid("input.currency", "must not be empty"));
        }
        if !(self.input.default_margin_rate.is_finite()
            && self.input.default_margin_rate.abs() <= 1.0)
        {
            return Err(invalid(
                "input.default_margin_rate",
                "must be between -1 and 1",
            ));
        }
        let t = &self.tiers;
        let (platinum, gold, iron) = (
            minor("tiers.platinum", t.platinum)?,
            minor("tiers.gold", t.gold)?,
            minor("tiers.iron", t.iron)?,
        );
        if gold >= platinum {
            return Err(invalid("tiers.gold", "must be below tiers.platinum"));
        }
        if iron >= gold {
            return Err(invalid("tiers.iron", "must be below tiers.gold"));
        }
        fraction("tiers.downgrade_hysteresis", t.downgrade_hysteresis)?;
        fraction("tiers.at_risk_margin", t.at_risk_margin)?;
        fraction("tiers.fake_big_margin_rate", t.fake_big_margin_rate)?;
        minor("tiers.fake_big_revenue", t.fake_big_revenue)?;
        self.shares()?;
        if t.percentile.summary_wait_seconds == 0 {
            return Err(invalid(
                "tiers.percentile.summary_wait_seconds",
                "must be >= 1",
            ));
        }
        let l = &self.loyalty;
        positive("loyalty.repeat_target", l.repeat_target)?;
        positive("loyalty.full_share_of_wallet", l.full_share_of_wallet)?;
        if l.dormancy_factor.is_nan() || l.dormancy_factor <= 1.0 {
            return Err(invalid("loyalty.dormancy_factor", "must be > 1"));
        }
        positive("loyalty.default_gap_days", l.default_gap_days)?;
        in_range(
            "loyalty.quadrant_threshold",
            l.quadrant_threshold,
            0.0,
            100.0,
        )?;
        in_range(
            "loyalty.quadrant_hysteresis",
            l.quadrant_hysteresis,
            0.0,
            50.0,
        )?;
        let a = &self.attitude;
        in_range("attitude.w_recommend", a.w_recommend, 0.0, f64::MAX)?;
        in_range("attitude.w_repurchase", a.w_repurchase, 0.0, f64::MAX)?;
        if a.w_recommend + a.w_repurchase <= 0.0 {
            return Err(invalid(
                "attitude.w_recommend",
                "and attitude.w_repurchase must not both be 0",
            ));
        }
        positive("attitude.k", a.k)?;
        if a.scale_max.is_nan() || a.scale_max <= 1.0 {
            return Err(invalid("attitude.scale_max", "must be > 1"));
        }
        in_range("attitude.neutral_prior", a.neutral_prior, 0.0, 100.0)?;
        positive("attitude.penalty_half_life_days", a.penalty_half_life_days)?;
        for (key, v) in [
            ("attitude.complaint_penalty_low", a.complaint_penalty_low),
            (
                "attitude.complaint_penalty_medium",
                a.complaint_penalty_medium,
            ),
            ("attitude.complaint_penalty_high", a.complaint_penalty_high),
            (
                "attitude.complaint_penalty_critical",
                a.complaint_penalty_critical,
            ),
            ("attitude.signal_penalty", a.signal_penalty),
            ("attitude.open_complaint_days", a.open_complaint_days),
        ] {
            in_range(key, v, 0.0, f64::MAX)?;
        }
        in_range("attitude.resolved_factor", a.resolved_factor, 0.0, 1.0)?;
        in_range(
            "warnings.cooldown_hours",
            self.warnings.cooldown_hours,
            0.0,
            f64::MAX,
        )?;
        let w = &self.warnings;
        in_range("warnings.open_risk", w.open_risk, 0.0, 1.0)?;
        in_range("warnings.clear_risk", w.clear_risk, 0.0, w.open_risk).map_err(|_| {
            invalid(
                "warnings.clear_risk",
                "must be between 0 and warnings.open_risk",
            )
        })?;
        in_range("warnings.escalate_risk", w.escalate_risk, 0.0, 1.0)?;
        positive("warnings.risk_horizon_days", w.risk_horizon_days)?;
        if self.state.block_cache_mb == 0 {
            return Err(invalid("state.block_cache_mb", "must be >= 1"));
        }
        if self.state.write_buffer_mb == 0 {
            return Err(invalid("state.write_buffer_mb", "must be >= 1"));
        }
        Ok(())
    }

    /// The pyramid's shares as cumulative fractions from the top, each
    /// share checked (the three must leave room for lead, or fill it).
    fn shares(&self) -> Result<Shares, ConfigError> {
        let p = &self.tiers.percentile;
        let mut top = Decimal::ZERO;
        let mut cumulative = [Decimal::ZERO; 3];
        for (slot, (key, x)) in [
            ("tiers.percentile.platinum", p.platinum),
            ("tiers.percentile.gold", p.gold),
            ("tiers.percentile.iron", p.iron),
        ]
        .into_iter()
        .enumerate()
        {
            if !(x.is_finite() && x > 0.0 && x < 1.0) {
                return Err(invalid(key, "must be a share between 0 and 1 (exclusive)"));
            }
            top += decimal(key, x)?;
            if top > Decimal::ONE {
                return Err(invalid(
                    key,
                    "makes the shares of platinum, gold and iron add up to more than 1",
                ));
            }
            cumulative[slot] = top;
        }
        Ok(Shares {
            platinum: cumulative[0],
            gold: cumulative[1],
            iron: cumulative[2],
        })
    }

    /// The engine policy these sections describe.
    fn policy(&self) -> Result<Policy, ConfigError> {
        let t = &self.tiers;
        let settings = TierSettings {
            platinum: minor("tiers.platinum", t.platinum)?,
            gold: minor("tiers.gold", t.gold)?,
            iron: minor("tiers.iron", t.iron)?,
            hysteresis: decimal("tiers.downgrade_hysteresis", t.downgrade_hysteresis)?,
            at_risk_margin: decimal("tiers.at_risk_margin", t.at_risk_margin)?,
            min_residence_days: t.min_residence_days,
            fake_big_revenue: minor("tiers.fake_big_revenue", t.fake_big_revenue)?,
            fake_big_margin_rate: t.fake_big_margin_rate,
            percentile: match t.policy {
                TierPolicyKind::Absolute => None,
                TierPolicyKind::Percentile => Some(self.shares()?),
            },
        };
        let (l, a) = (&self.loyalty, &self.attitude);
        Ok(Policy {
            tiers: TierPolicy::new(&settings),
            allowed_lateness: i64::from(self.time.allowed_lateness_days) * DAY_MS,
            dedup_window: self.input.dedup_window,
            emit_profiles: !self.kafka.profile_topic.is_empty(),
            loyalty: LoyaltyPolicy {
                behaviour: BehaviourPolicy {
                    repeat_target: l.repeat_target,
                    full_share_of_wallet: l.full_share_of_wallet,
                    dormancy_factor: l.dormancy_factor,
                    default_gap_days: l.default_gap_days,
                },
                attitude: AttitudePolicy {
                    w_recommend: a.w_recommend,
                    w_repurchase: a.w_repurchase,
                    k: a.k,
                    scale_max: a.scale_max,
                    neutral_prior: a.neutral_prior,
                    penalty_half_life_days: a.penalty_half_life_days,
                    complaint_penalty: [
                        a.complaint_penalty_low,
                        a.complaint_penalty_medium,
                        a.complaint_penalty_high,
                        a.complaint_penalty_critical,
                    ],
                    resolved_factor: a.resolved_factor,
                    signal_penalty: a.signal_penalty,
                    open_complaint_days: a.open_complaint_days,
                },
                quadrant: QuadrantPolicy {
                    threshold: l.quadrant_threshold,
                    hysteresis: l.quadrant_hysteresis,
                },
                warning_cooldown: (self.warnings.cooldown_hours * 3_600_000.0).round() as i64,
                risk: self.risk_policy()?,
            },
        })
    }

    /// The churn-risk policy of `[warnings]`.
    fn risk_policy(&self) -> Result<RiskPolicy, ConfigError> {
        let w = &self.warnings;
        let open_on: OpenOn = w
            .open_on
            .parse()
            .map_err(|_| invalid("warnings.open_on", "must be \"risk\" or \"quadrant\""))?;
        Ok(RiskPolicy {
            open_on,
            open_risk: w.open_risk,
            clear_risk: w.clear_risk,
            escalate_risk: w.escalate_risk,
            model: RiskModel {
                calibration: risk_calibration(&w.risk_calibration)?,
                ..risk_model(&w.risk_coefficients, &w.risk_shapes)?
            },
            stake: StakePolicy {
                horizon_days: w.risk_horizon_days,
                priority_floors: priority_floors(&w.priority)?,
            },
        })
    }

    /// The input validation rules these sections describe.
    fn decode_rules(&self) -> Result<DecodeRules, ConfigError> {
        Ok(DecodeRules {
            max_bytes: self.input.max_event_bytes,
            currency: self.input.currency.clone(),
            default_margin_rate: decimal(
                "input.default_margin_rate",
                self.input.default_margin_rate,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    #[test]
    fn defaults_load_and_match_the_spec() {
        let c = with("").unwrap();
        let p = c.policy();
        assert_eq!(p.tiers.absolute.platinum.threshold, 1_000_000);
        assert_eq!(p.tiers.absolute.gold.downgrade_below, 180_000);
        assert_eq!(p.allowed_lateness, 7 * DAY_MS);
        assert_eq!(p.dedup_window, 32);
        assert_eq!(c.decode_rules().max_bytes, 65_536);
    }

    #[test]
    fn the_risk_model_is_read_whole_and_bad_settings_are_refused_by_name() {
        let p = with("").unwrap().policy();
        assert_eq!(p.loyalty.risk.open_on, OpenOn::Risk, "the shipped default");
        assert!(p.loyalty.risk.clear_risk < p.loyalty.risk.open_risk);
        let q = with("[warnings]\nopen_on = \"quadrant\"").unwrap().policy();
        assert_eq!(q.loyalty.risk.open_on, OpenOn::Quadrant);
        let c = with("[warnings.risk_coefficients]\ntenure = -0.5")
            .unwrap()
            .policy();
        assert_eq!(c.loyalty.risk.model.weights[Feature::Tenure as usize], -0.5);
        let shaped = with(
            "[warnings.risk_coefficients]\ntier_gold = 0\n\
             [warnings.risk_shapes]\ntier_gold = [[0, 0], [1, 0.5]]",
        )
        .unwrap()
        .policy();
        assert_eq!(
            shaped.loyalty.risk.model.shapes[Feature::TierGold as usize],
            Some(Shape {
                points: vec![(0.0, 0.0), (1.0, 0.5)]
            })
        );
        assert_eq!(
            p.loyalty.risk.stake.priority_floors,
            [20_000_000, 2_500_000, 250_000],
            "[warnings.priority] in minor units"
        );
        assert_eq!(p.loyalty.risk.stake.horizon_days, 180.0);
        for (toml, key, says) in [
            (
                "[warnings]\nopen_on = \"mood\"",
                "warnings.open_on",
                "quadrant",
            ),
            (
                "[warnings]\nclear_risk = 0.9",
                "warnings.clear_risk",
                "open_risk",
            ),
            (
                "[warnings]\nopen_risk = 1.5",
                "warnings.open_risk",
                "between",
            ),
            (
                "[warnings]\nrisk_horizon_days = 0",
                "warnings.risk_horizon_days",
                "> 0",
            ),
            (
                "[warnings.risk_coefficients]\nmood = 1",
                "warnings.risk_coefficients",
                "mood",
            ),
            (
                "[warnings.risk_coefficients]\npurchase_gap = -1",
                "warnings.risk_coefficients",
                "purchase_gap must be >= 0",
            ),
            (
                "[warnings]\nrisk_calibration = [[0, 1], [1, 0]]",
                "warnings.risk_calibration",
                "must not fall",
            ),
            (
                "[warnings.risk_shapes]\nmood = []",
                "warnings.risk_shapes",
                "mood",
            ),
            (
                "[warnings.risk_shapes]\ncomplaint_surge = [[0, 1]]",
                "warnings.risk_shapes.complaint_surge",
                "at least two",
            ),
            (
                "[warnings.risk_shapes]\ncomplaint_surge = [[1, 0], [0, 1]]",
                "warnings.risk_shapes.complaint_surge",
                "strictly increasing",
            ),
            (
                "[warnings.risk_coefficients]\nsignal_surge = 1\n\
                 [warnings.risk_shapes]\nsignal_surge = [[0, 0], [1, 1]]",
                "warnings.risk_shapes.signal_surge",
                "give one of the two",
            ),
            (
                "[warnings.risk_coefficients]\npurchase_gap = 0\n\
                 [warnings.risk_shapes]\npurchase_gap = [[0, 1], [1, 0]]",
                "warnings.risk_shapes.purchase_gap",
                "must not fall",
            ),
            (
                "[warnings.priority]\np2 = 500000",
                "warnings.priority.p2",
                "p1",
            ),
            (
                "[warnings.priority]\np3 = -1",
                "warnings.priority.p3",
                ">= 0",
            ),
        ] {
            let e = with(toml).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{toml}: {e}");
        }
    }

    #[test]
    fn an_auth_token_file_must_be_readable_and_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let cfg =
            |p: &Path| with(&format!("[http]\nauth_token_file = \"{}\"", p.display())).unwrap();
        let e = cfg(&path).http.auth_token().unwrap_err().to_string();
        assert!(
            e.contains("http.auth_token_file") && e.contains("cannot be read"),
            "{e}"
        );
        std::fs::write(&path, " \n").unwrap();
        let e = cfg(&path).http.auth_token().unwrap_err().to_string();
        assert!(
            e.contains("http.auth_token_file") && e.contains("no token"),
            "{e}"
        );
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(
            cfg(&path).http.auth_token().unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(Config::defaults().http.auth_token().unwrap(), None);
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = with("[tiers]\ngoldd = 3").unwrap_err().to_string();
        assert!(e.contains("goldd"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = with("[tiers]\ngold = 20000").unwrap_err().to_string();
        assert!(e.contains("tiers.gold"), "{e}");
        let e = with("[tiers]\ndowngrade_hysteresis = 1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tiers.downgrade_hysteresis"), "{e}");
        let e = with("[kafka]\ntopic_partitions = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka.topic_partitions"), "{e}");
        let e = with("[kafka]\nprocessing_guarantee = \"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processing_guarantee"), "{e}");
    }

    #[test]
    fn exactly_once_is_the_default_and_at_least_once_an_option() {
        let c = with("").unwrap();
        assert_eq!(
            c.kafka.processing_guarantee,
            ProcessingGuarantee::ExactlyOnce
        );
        let c = with("[kafka]\nprocessing_guarantee = \"at_least_once\"").unwrap();
        assert_eq!(
            c.kafka.processing_guarantee,
            ProcessingGuarantee::AtLeastOnce
        );
    }

    #[test]
    fn an_assignor_that_splits_tasks_is_refused_by_name() {
        let coop = "[kafka.properties]\n\"partition.assignment.strategy\" = \"cooperative-sticky\"";
        let e = with(coop).unwrap_err().to_string();
        assert!(
            e.contains("kafka.properties.partition.assignment.strategy"),
            "{e}"
        );
        // With a single input topic a partition is a whole task.
        let one_topic = format!("[kafka]\ninput_topics = [\"events\"]\n{coop}");
        assert!(with(&one_topic).is_ok());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn environment_overrides_use_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TIERSTREAM_TIERS__GOLD", "2500");
            jail.set_env("TIERSTREAM_CACHE", "/tmp/ignored");
            let c = Config::load(None).unwrap();
            assert_eq!(c.policy().tiers.absolute.gold.threshold, 250_000);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn librdkafka_properties_come_from_the_environment_with_their_dots() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "[kafka.properties]\n\"sasl.username\" = \"tierstream\"\n\"sasl.password\" = \"in-file\"\n",
            )?;
            jail.set_env("TIERSTREAM_KAFKA_PROPERTY_SASL_PASSWORD", "from-secret");
            jail.set_env(
                "TIERSTREAM_KAFKA__PROPERTIES__SSL.KEY.PASSWORD",
                "key-secret",
            );
            let c = Config::load(Some(Path::new("t.toml"))).unwrap();
            let p = &c.kafka.properties;
            assert_eq!(
                p["sasl.username"], "tierstream",
                "the file's other keys stay"
            );
            assert_eq!(p["sasl.password"], "from-secret", "the environment wins");
            assert_eq!(p["ssl.key.password"], "key-secret");
            assert_eq!(p.len(), 3);
            Ok(())
        });
    }
}
