//! The three stages of the hot path apart, on a heavy-tailed workload
//! (`generate --profile heavy-tailed`): decoding input lines into events,
//! applying events to the engine (state in memory, so only the engine and
//! its profile cache are measured), and encoding outputs to bytes.
//! Run with `cargo bench --bench stages`; `scripts/bench.sh` measures the
//! whole path end to end.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tierstream::codec::input::decode;
use tierstream::codec::output::to_bytes;
use tierstream::config::Config;
use tierstream::domain::engine::Engine;
use tierstream::domain::event::Event;
use tierstream::domain::output::Output;
use tierstream::store::memory::MemoryStore;
use tierstream::store::session::TaskState;
use tierstream::store::TaskId;
use tierstream::workload::generate::{generate, Activity, GenerateSpec};

const EVENTS: u64 = 100_000;

fn lines() -> Vec<Vec<u8>> {
    generate(&GenerateSpec {
        customers: EVENTS / 10,
        events: EVENTS,
        seed: 7,
        start: tierstream::domain::time::Millis::from_ms(1_725_148_800_000), // 2024-09-01
        days: 730,
        activity: Activity::HeavyTailed,
        noise: 1.0,
    })
    .events
    .iter()
    .map(|g| serde_json::to_vec(&g.json).unwrap())
    .collect()
}

/// Applies every event to one task in memory; returns the outputs.
fn apply_all(engine: &Engine, events: &[Event], cache_bytes: usize) -> Vec<Output> {
    let store = MemoryStore::new();
    let mut task = TaskState::open(TaskId::new(0), &store, cache_bytes).unwrap();
    let mut out = Vec::new();
    let mut clock = task.clock;
    for e in events {
        engine
            .apply(&mut clock, &mut task.session(&store), e, &mut out)
            .unwrap();
    }
    out
}

fn bench(c: &mut Criterion) {
    let cfg = Config::load(None).unwrap();
    let rules = cfg.decode_rules();
    let engine = Engine::new(cfg.policy());
    let cache = cfg.state.cache_bytes_per_task(1);
    let now = tierstream::pipeline::wall_clock();
    let lines = lines();
    let events: Vec<Event> = lines
        .iter()
        .map(|l| decode(l, &rules, now).unwrap())
        .collect();
    let outputs = apply_all(&engine, &events, cache);

    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("decode", |b| {
        b.iter(|| {
            for l in &lines {
                std::hint::black_box(decode(l, &rules, now).unwrap());
            }
        })
    });
    g.bench_function("apply", |b| {
        b.iter_batched(
            || (),
            |()| apply_all(&engine, &events, cache),
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(outputs.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            for o in &outputs {
                std::hint::black_box(to_bytes(o));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
