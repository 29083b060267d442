//! Wakes the run loop when librdkafka has something for it.
//!
//! The loop reads the consumer's main queue (rebalances, statistics) and
//! one queue per input partition. A poll can block on only one of them,
//! so instead every queue rings this bell when it turns non-empty, and an
//! idle loop waits on the bell — no sleep-polling, no missed records.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A flag with a condition variable.
#[derive(Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    ring: Condvar,
}

impl Doorbell {
    /// Something arrived (called from librdkafka's threads).
    pub fn ring(&self) {
        *self.rung.lock().expect("doorbell lock") = true;
        self.ring.notify_one();
    }

    /// Forgets earlier rings; call before looking at the queues, so a ring
    /// after the look is not lost.
    pub fn clear(&self) {
        *self.rung.lock().expect("doorbell lock") = false;
    }

    /// Waits until rung (since the last `clear`) or `timeout` passed.
    pub fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().expect("doorbell lock");
        if !*rung {
            let _ = self.ring.wait_timeout_while(rung, timeout, |r| !*r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_ring_before_the_wait_is_not_lost_and_a_ring_wakes_a_waiter() {
        let bell = Arc::new(Doorbell::default());
        bell.clear();
        bell.ring();
        let started = Instant::now();
        bell.wait(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));

        bell.clear();
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                bell.ring();
            })
        };
        let started = Instant::now();
        bell.wait(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
        ringer.join().unwrap();

        bell.clear();
        let started = Instant::now();
        bell.wait(Duration::from_millis(30));
        assert!(
            started.elapsed() >= Duration::from_millis(30),
            "times out unrung"
        );
    }
}
