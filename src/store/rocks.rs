//! The RocksDB `KvStore`: one column family per `Cf`, one shared block
//! cache and one write-buffer manager, so memory stays bounded by config
//! whatever the number of customers (SPEC §6).

use super::{Cf, Entries, KvStore, StoreError, StoreStats, Write};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, FlushOptions, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions, DB,
};
use std::path::{Path, PathBuf};

/// Memory budget of the store.
#[derive(Debug, Clone, Copy)]
pub struct RocksLimits {
    /// Shared LRU block cache, bytes.
    pub block_cache_bytes: usize,
    /// Total memtable budget, bytes.
    pub write_buffer_bytes: usize,
}

/// A RocksDB database holding all tasks of this instance.
pub struct RocksStore {
    db: DB,
    cache: Cache,
    /// Where it lives, for errors that are about the directory.
    dir: PathBuf,
}

/// Bytes an unprivileged writer may still use on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let v = rustix::fs::statvfs(dir).ok()?;
    Some(v.f_bavail.saturating_mul(v.f_frsize))
}

impl RocksStore {
    /// Deletes the database in `dir` and whatever else the directory
    /// holds. RocksDB takes the database's lock first, so a directory
    /// another process has open is refused, not pulled from under it.
    pub fn destroy(dir: &Path) -> Result<(), StoreError> {
        if !dir.exists() {
            return Ok(());
        }
        DB::destroy(&Options::default(), dir)?;
        std::fs::remove_dir_all(dir).map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, limits: RocksLimits) -> Result<Self, StoreError> {
        let cache = Cache::new_lru_cache(limits.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            limits.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let cf_opts = || {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // Levels 0 and 1 uncompressed, LZ4 below: their files are
            // rewritten by the next compaction soon, so compressing them
            // spent CPU on flushes and decompressing them on every read of
            // a profile the cache lost (a 4M-event replay over 1M
            // customers: 3-5% less time; its state 290 -> 343 MB on disk).
            {
                use rocksdb::DBCompressionType::{Lz4, None};
                o.set_compression_per_level(&[None, None, Lz4, Lz4, Lz4, Lz4, Lz4]);
            }
            // A bloom filter over the memtable's whole keys: a profile the
            // cache lost was written long ago, and its read skips the
            // memtable's skiplist instead of searching it (6% of a replay
            // of 10M events over 1M customers).
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.02);
            // A family's memtable grows to this before it is switched for
            // a new one and flushed (RocksDB's default is 64 MB whatever
            // the budget). Charged to the block cache, a growing memtable
            // makes it evict blocks, but their memory stays in the heap
            // of glibc's malloc, so memtables add to the peak RSS at their
            // full size: a 10M-event replay's RSS rose and fell by 70 MB
            // with every flush. A quarter of the budget keeps an active
            // and a flushing memtable of the two busy families within it
            // (10M events over 1M customers, one thread: peak RSS
            // 583.7 MiB instead of 617.7 MiB; 3M events 528 instead of
            // 550 MiB; CPU time within the noise).
            o.set_write_buffer_size(limits.write_buffer_bytes / 4);
            o
        };
        let mut db_opts = cf_opts();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        // Restores write without the WAL; atomic flushes keep the families
        // consistent with each other if the process dies mid-restore.
        db_opts.set_atomic_flush(true);
        db_opts.increase_parallelism(2);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), cf_opts()));
        let db = DB::open_cf_descriptors(&db_opts, dir, cfs)?;
        Ok(RocksStore {
            db,
            cache,
            dir: dir.to_path_buf(),
        })
    }

    fn write_with(&self, parts: &[&[Write]], opts: &WriteOptions) -> Result<(), StoreError> {
        let writes = || parts.iter().flat_map(|p| p.iter());
        // Sized up front: a commit's batch is tens of megabytes, and grown
        // by doubling it was copied and page-faulted in again at each step.
        // (Each entry adds a tag, a family id and two lengths: 16 bytes.)
        let bytes = writes().map(|w| 16 + w.bytes()).sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for w in writes() {
            let cf = self.handle(w.cf);
            match &w.value {
                Some(v) => batch.put_cf(cf, &w.key, v),
                None => batch.delete_cf(cf, &w.key),
            }
        }
        self.db.write_opt(batch, opts).map_err(|e| self.located(e))
    }

    /// A full disk is named with its directory and what is left on it:
    /// RocksDB's own text names neither.
    fn located(&self, e: rocksdb::Error) -> StoreError {
        match StoreError::from(e) {
            StoreError::Backend(text) if text.contains("No space left") => StoreError::NoSpace {
                dir: self.dir.display().to_string(),
                free: free_bytes(&self.dir).map_or("unknown".into(), |b| format!("{b} bytes")),
                text,
            },
            other => other,
        }
    }

    /// Entries with `from <= key < to`, in key order.
    fn iter(&self, cf: Cf, from: &[u8], to: &[u8]) -> rocksdb::DBIterator<'_> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(to.to_vec());
        self.db.iterator_cf_opt(
            self.handle(cf),
            opts,
            IteratorMode::From(from, Direction::Forward),
        )
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }
}

impl KvStore for RocksStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.handle(cf), key)?)
    }

    fn range(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        self.scan(cf, from, to, &mut |k, v| out.push((k.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    fn first_key(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut iter = self.iter(cf, from, to);
        Ok(iter.next().transpose()?.map(|(k, _)| k.to_vec()))
    }

    fn scan(
        &self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), StoreError> {
        for item in self.iter(cf, from, to) {
            let (k, v) = item?;
            f(&k, &v);
        }
        Ok(())
    }

    fn write_parts(&self, parts: &[&[Write]]) -> Result<(), StoreError> {
        self.write_with(parts, &WriteOptions::default())
    }

    fn write_unlogged(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.write_with(&[&writes], &opts)
    }

    fn stats(&self) -> StoreStats {
        let per_cf = |name: &str| -> u64 {
            Cf::ALL
                .iter()
                .filter_map(|cf| {
                    self.db
                        .property_int_value_cf(self.handle(*cf), name)
                        .ok()
                        .flatten()
                })
                .sum()
        };
        let db_int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        StoreStats {
            block_cache_bytes: self.cache.get_usage() as u64,
            memtable_bytes: per_cf("rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: per_cf("rocksdb.estimate-pending-compaction-bytes"),
            write_stalled: db_int("rocksdb.is-write-stopped") > 0
                || db_int("rocksdb.actual-delayed-write-rate") > 0,
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        let handles: Vec<_> = Cf::ALL.iter().map(|cf| self.handle(*cf)).collect();
        self.db
            .flush_cfs_opt(&handles, &FlushOptions::default())
            .map_err(|e| self.located(e))?;
        Ok(())
    }
}

impl From<rocksdb::Error> for StoreError {
    /// Damage and a held lock are told apart from other failures: each
    /// has its own remedy, which the error states.
    fn from(e: rocksdb::Error) -> Self {
        let kind = e.kind();
        // RocksDB ends its texts with a full stop; ours go on after them.
        let text = e.into_string().trim_end_matches('.').to_owned();
        match kind {
            rocksdb::ErrorKind::Corruption => StoreError::Damaged(text),
            // RocksDB reports a held LOCK file as an I/O error.
            rocksdb::ErrorKind::IOError if text.contains("lock file") => StoreError::Locked(text),
            _ => StoreError::Backend(text),
        }
    }
}
