//! `tierstream run`: the composition root of the Kafka pipeline. One tokio
//! runtime and one shutdown signal (SIGTERM or Ctrl-C) that every part —
//! the pipeline, the HTTP server, the gauges — listens to.

use super::{open_rocks, processor};
use crate::config::Config;
use crate::domain::engine::Engine;
use crate::kafka::group::Owners;
use crate::ops::gauges;
use crate::ops::http::{self, HttpState};
use crate::ops::status::Status;
use crate::pipeline::Pipeline;
use crate::store::owner;
use crate::store::rocks::RocksStore;
use crate::store::KvStore;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (defaults and TIERSTREAM_* variables apply without one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop by itself once no input arrived for this many milliseconds
    /// (catch-up jobs and benchmarks); by default run until signalled.
    /// Idle means idle on the partitions this instance owns: start a
    /// catch-up job once an instance that crashed has left the group (its
    /// session timed out), or the partitions it still holds are not waited
    /// for.
    #[arg(long)]
    pub stop_when_idle_ms: Option<u64>,
    /// Delete the state directory first and rebuild the state from the
    /// changelog topic: the remedy for a damaged state directory or one
    /// another consumer group wrote. Refused while another process has the
    /// directory open. Costs a full restore of this instance's tasks.
    #[arg(long)]
    pub reset_state: bool,
}

pub(super) fn run(a: RunArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let auth_token = cfg.http.auth_token()?;
    let dir = &cfg.state.dir;
    if a.reset_state {
        RocksStore::destroy(dir)
            .with_context(|| format!("--reset-state: deleting state.dir {}", dir.display()))?;
        tracing::warn!(dir = %dir.display(), "state directory deleted (--reset-state); the state is rebuilt from the changelog");
    }
    let store: Arc<dyn KvStore> = Arc::new(open_rocks(&cfg, dir)?);
    owner::claim(dir, &cfg.kafka.group_id)?;
    let processor = Arc::new(processor(&cfg));
    let status = Arc::new(Status::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // The one shutdown signal: SIGTERM / Ctrl-C, or the pipeline ending
        // by itself (idle, or an error).
        let (tx, rx) = tokio::sync::watch::channel(false);
        let tx = Arc::new(tx);
        let gauges = tokio::spawn(gauges::sample_until_stopped(
            status.clone(),
            store.clone(),
            processor.metrics.clone(),
            rx.clone(),
        ));
        if let Some(addr) = cfg.http.addr() {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.listen: cannot listen on {addr}"))?;
            let state = Arc::new(HttpState {
                registry: processor.metrics.registry.clone(),
                status: status.clone(),
                store: store.clone(),
                engine: Arc::new(Engine::new(cfg.policy())),
                kafka: cfg.kafka.clone(),
                owners: Owners::new(&cfg.kafka)?,
                auth_token,
            });
            let mut stop = rx.clone();
            tokio::spawn(async move {
                let app = http::router(state);
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP server failed");
                }
            });
            tracing::info!(%addr, "serving /metrics, /health/live, /health/ready, /customers/{{id}}");
        }
        let signalled = tx.clone();
        tokio::spawn(async move {
            wait_for_shutdown_signal().await;
            let _ = signalled.send(true);
        });
        let result = Pipeline::new(cfg.clone(), processor.clone(), store.clone(), status)
            .stop_when_idle(a.stop_when_idle_ms.map(Duration::from_millis))
            .restore_progress(super::progress(0, super::Unit::Restored))
            .run(rx)
            .await;
        let _ = tx.send(true);
        let _ = gauges.await;
        result
    })
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
