//! Engine throughput: decoding and applying generated events with state in
//! memory and in RocksDB. Run with `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Cursor;
use tierstream::cli::replay::{replay, ReplayIo, ReplayShape};
use tierstream::config::Config;
use tierstream::domain::engine::Engine;
use tierstream::ops::metrics::Metrics;
use tierstream::pipeline::processor::Processor;
use tierstream::store::memory::MemoryStore;
use tierstream::store::rocks::{RocksLimits, RocksStore};
use tierstream::store::KvStore;
use tierstream::workload::generate::{generate, GenerateSpec};

fn workload() -> Vec<u8> {
    let events = generate(&GenerateSpec {
        customers: 2_000,
        events: 20_000,
        seed: 3,
        start: tierstream::domain::time::Millis::from_ms(1_735_689_600_000),
        days: 365,
        ..GenerateSpec::default()
    })
    .events;
    let mut jsonl = Vec::new();
    for g in events {
        jsonl.extend(serde_json::to_vec(&g.json).unwrap());
        jsonl.push(b'\n');
    }
    jsonl
}

fn bench(c: &mut Criterion) {
    let input = workload();
    let cfg = Config::load(None).unwrap();
    let now = tierstream::pipeline::wall_clock();
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(20_000));
    group.sample_size(10);
    let run = |store: &dyn KvStore| {
        let p = Processor::new(
            Engine::new(cfg.policy()),
            cfg.decode_rules(),
            Metrics::new(),
        );
        let mut sink = std::io::sink();
        let mut reader = Cursor::new(&input);
        let io = ReplayIo {
            input: &mut reader,
            output: &mut sink,
            dlq: None,
            on_bytes: &|_| {},
        };
        replay(
            &p,
            store,
            ReplayShape::sequential(1, cfg.state.cache_bytes_per_task(1)),
            io,
            now,
        )
        .unwrap();
    };
    group.bench_function("memory_20k_events", |b| b.iter(|| run(&MemoryStore::new())));
    group.bench_function("rocksdb_20k_events", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let limits = RocksLimits {
                block_cache_bytes: 64 << 20,
                write_buffer_bytes: 64 << 20,
            };
            run(&RocksStore::open(dir.path(), limits).unwrap());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
