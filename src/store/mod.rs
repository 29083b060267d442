//! State storage: a small key-value port with column families, a RocksDB
//! implementation for real runs and an in-memory one for tests, plus the
//! per-task session that implements the engine's `Profiles` port on top.
//!
//! Writes are collected per batch and applied as one atomic write, so the
//! store is always at a batch boundary (the exactly-once pipeline relies on
//! this to commit state only after its Kafka transaction).

pub mod checkpoint;
mod clock_cache;
pub mod keys;
pub mod memory;
pub mod owner;
pub mod rocks;
pub mod session;
mod task;
mod timer_writes;

pub use task::TaskId;

/// Column families: each kind of record lives apart so scans stay cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Cf {
    /// Customer profiles, keyed by task and customer id.
    Profiles,
    /// The deadline index, keyed by task, timer kind, instant and customer.
    Timers,
    /// Per-task metadata: stream time, input offsets, changelog position.
    Meta,
}

impl Cf {
    /// Every family, in a fixed order.
    pub const ALL: [Cf; 3] = [Cf::Profiles, Cf::Timers, Cf::Meta];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// One put (`Some`) or delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Family written to.
    pub cf: Cf,
    /// Full key.
    pub key: Vec<u8>,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// The bytes of its key and value.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, no space left, a lock held by
    /// another process, corruption it detected); the text is the engine's.
    /// A string, not the engine's error type, so the port does not tie its
    /// users to RocksDB.
    #[error("state store: {0}")]
    Backend(String),
    /// The engine found its own files damaged (a checksum mismatch, a
    /// truncated or missing file): the local copy cannot be trusted, but
    /// the changelog topic holds every committed change.
    #[error(
        "state store damaged: {0}. Stop every process using this state.dir and start once \
         with `tierstream run --reset-state`, which deletes it and rebuilds the state from \
         the changelog topic"
    )]
    Damaged(String),
    /// The state directory's filesystem is full. Nothing is lost: a batch
    /// whose state could not be saved locally is in the changelog (exactly
    /// once) or not yet committed (at least once).
    #[error(
        "state store out of disk space in state.dir {dir} ({free} free): {text}. Free space or \
         grow the volume, then restart: the state catches up from the changelog"
    )]
    NoSpace {
        /// The state directory.
        dir: String,
        /// What is left on its filesystem.
        free: String,
        /// The engine's text.
        text: String,
    },
    /// Another process holds the store's lock.
    #[error(
        "state store locked: {0}. Another process (a second instance on this host?) uses this \
         state.dir: give every instance its own"
    )]
    Locked(String),
    /// A stored record could not be decoded.
    #[error("corrupt state record: {0}")]
    Corrupt(String),
}

/// Key-value pairs as read from a range.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The storage port: point reads, bounded range reads and atomic batches.
pub trait KvStore: Send + Sync {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads every entry with `from <= key < to`, in key order.
    fn range(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Entries, StoreError>;
    /// The first key with `from <= key < to` (one seek: how the deadline
    /// index learns its next instant without reading what follows).
    fn first_key(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f` for every entry with `from <= key < to`, in key order,
    /// without holding them all in memory (whole-task scans for gauges).
    fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError>;
    /// Applies all writes atomically.
    fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.write_parts(&[&writes])
    }
    /// Applies the writes of all `parts`, in order, atomically: a commit
    /// writes each task's batch (which its task may still be reading, see
    /// `TaskState::land`) and the changelog positions as one.
    fn write_parts(&self, parts: &[&[Write]]) -> Result<(), StoreError>;
    /// Applies writes without the write-ahead log: for bulk restores from
    /// the changelog, which can always be redone, so durability is bought
    /// once with `flush` instead of per write.
    fn write_unlogged(&self, writes: Vec<Write>) -> Result<(), StoreError>;
    /// Makes every write so far durable (flushes all column families).
    fn flush(&self) -> Result<(), StoreError>;
    /// Memory and write-pressure figures, for metrics.
    fn stats(&self) -> StoreStats;
}

/// What a store uses and whether it is holding writes back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Block cache in use.
    pub block_cache_bytes: u64,
    /// Memtables of every column family.
    pub memtable_bytes: u64,
    /// Bytes compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// Writes are being delayed or stopped.
    pub write_stalled: bool,
}
