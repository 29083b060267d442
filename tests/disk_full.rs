//! The state directory's disk fills up mid-run, against the real broker
//! and real RocksDB on a size-limited filesystem (a tmpfs mounted here;
//! the test needs root, as CI has): the instance stops with an error naming
//! the directory and the space left — exiting rather than pausing, so the
//! platform sees it (a restarting pod, an alert) and a restart is the whole
//! recovery — and once space is freed, a restart's committed outputs equal
//! an uninterrupted replay's: no offset was committed past state that was
//! not saved (the changelog holds it).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted at a path for the test's duration.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_disk_stops_the_instance_and_a_restart_after_freeing_it_loses_nothing() {
    let env = TestEnv::new("disk-full", 1);
    env.create_topics();
    let w = workload(&env, &spec(800, 16_000, 51), Some(997));
    let dir = env.state_dir("a");
    let _mount = Mount::tmpfs(&dir, "64m");
    let small = [
        ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "200"),
        ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
    ];
    let mut a = env.spawn("a", &small, &[]);
    assert!(a.wait_for_log("consuming", Duration::from_secs(60)));
    // Leave about 2 MB: less than the workload's state.
    let filler = dir.join("filler");
    let free = rustix::fs::statvfs(&dir).unwrap();
    let keep = 2 << 20;
    let fill = (free.f_bavail * free.f_frsize).saturating_sub(keep);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    produce(&w.records);
    let status = a.wait_exit(Duration::from_secs(120));
    let log = a.log_text();
    assert!(!status.success(), "exited cleanly on a full disk: {log}");
    assert!(
        log.contains(&format!("out of disk space in state.dir {}", dir.display()))
            && log.contains("free)"),
        "the error names the directory and its free space: {log}"
    );
    let lag = env.lag();
    assert!(lag > 0, "the disk filled before the input was done");
    let error = log
        .lines()
        .find(|l| l.contains("out of disk space"))
        .unwrap();
    eprintln!("stopped on a full disk with {lag} input records to go: {error}");
    std::fs::remove_file(&filler).unwrap();
    env.run_until_idle("a", &small);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison, "each poison pill reaches the DLQ once");
}
