//! Admission to password checks: Argon2id costs tens of milliseconds of CPU
//! and 19 MiB per check, so an instance runs one per core, and everything
//! else about the wait is bounded:
//!
//! - at most `queue` logins wait for a slot (beyond it: 503 at once);
//! - a login waits at most `wait` for its slot (then 503, `Retry-After`);
//! - one network (an IPv4 address, an IPv6 /64) has at most `per_network`
//!   logins admitted at once (beyond it: 429 at once), so a single source
//!   cannot fill the queue, and many sources each get a turn.
//!
//! Without these bounds 200 bad-login workers from 200 addresses made a
//! legitimate login from elsewhere wait 3.5 s (p50), and 1,200 held requests
//! 21 s: the queue was unbounded, first come first served, with no deadline.
//! The slots are a FIFO semaphore, so admitted logins are served in order.
//!
//! Memory is bounded by the same numbers: one counter per network with a
//! login admitted, removed when its last login leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds of [`LoginGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatePolicy {
    /// Checks running at once (one per core).
    pub slots: usize,
    /// Logins waiting for a slot at most.
    pub queue: usize,
    /// Longest wait for a slot.
    pub wait: Duration,
    /// Logins admitted at once (waiting or running) per network.
    pub per_network: usize,
}

/// Why a login was not admitted; both mean "retry later".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is full, or no slot came free in time: 503.
    Busy,
    /// This network already has its share of logins in progress: 429.
    NetworkBusy,
}

/// Admission to password checks; see the module documentation.
pub struct LoginGate {
    policy: GatePolicy,
    slots: Arc<Semaphore>,
    /// Logins admitted and not yet gone (waiting or running).
    admitted: AtomicUsize,
    per_network: Mutex<HashMap<String, usize>>,
}

/// A login admitted to the queue: it may wait for a slot. Dropping it
/// (whatever happened) frees its place.
pub struct Admission<'a> {
    gate: &'a LoginGate,
    network: Option<String>,
    started: tokio::time::Instant,
}

/// A running check's slot.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl LoginGate {
    /// A gate with `policy`.
    pub fn new(policy: GatePolicy) -> LoginGate {
        LoginGate {
            slots: Arc::new(Semaphore::new(policy.slots.max(1))),
            admitted: AtomicUsize::new(0),
            per_network: Mutex::new(HashMap::new()),
            policy,
        }
    }

    /// The bounds in force.
    pub fn policy(&self) -> GatePolicy {
        self.policy
    }

    /// Admits a login from `network`, or refuses it at once.
    pub fn admit(&self, network: Option<String>) -> Result<Admission<'_>, Refusal> {
        if let Some(key) = &network {
            let mut map = self.per_network.lock().expect("login gate lock");
            let count = map.entry(key.clone()).or_insert(0);
            if *count >= self.policy.per_network {
                return Err(Refusal::NetworkBusy);
            }
            *count += 1;
        }
        // From here on the admission's Drop gives back what was taken.
        let admission = Admission {
            gate: self,
            network,
            started: tokio::time::Instant::now(),
        };
        let limit = self.policy.slots + self.policy.queue;
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= limit {
            // Counted by fetch_add: the Drop takes it back.
            return Err(Refusal::Busy);
        }
        Ok(admission)
    }

    /// Logins admitted now (waiting or running), for metrics and tests.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }
}

impl Admission<'_> {
    /// Waits for a slot until `wait` after admission.
    pub async fn slot(&self) -> Result<Slot, Refusal> {
        let deadline = self.started + self.gate.policy.wait;
        match tokio::time::timeout_at(deadline, self.gate.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => Err(Refusal::Busy),
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.gate.admitted.fetch_sub(1, Ordering::SeqCst);
        if let Some(key) = &self.network {
            let mut map = self.gate.per_network.lock().expect("login gate lock");
            if let Some(count) = map.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(slots: usize, queue: usize, per_network: usize, wait_ms: u64) -> LoginGate {
        LoginGate::new(GatePolicy {
            slots,
            queue,
            wait: Duration::from_millis(wait_ms),
            per_network,
        })
    }

    #[test]
    fn the_queue_and_each_network_are_bounded() {
        let g = gate(1, 2, 2, 1000);
        let a = g.admit(Some("n1".into())).unwrap();
        let _b = g.admit(Some("n1".into())).unwrap();
        assert_eq!(g.admit(Some("n1".into())).err(), Some(Refusal::NetworkBusy));
        let _c = g.admit(Some("n2".into())).unwrap();
        assert_eq!(g.admit(Some("n3".into())).err(), Some(Refusal::Busy));
        assert_eq!(g.admitted(), 3, "refusals leave nothing behind");
        drop(a);
        assert!(g.admit(Some("n1".into())).is_ok());
        assert_eq!(g.per_network.lock().unwrap().len(), 2);
    }

    #[test]
    fn leaving_frees_every_counter() {
        let g = gate(1, 4, 1, 1000);
        for i in 0..100 {
            let _a = g.admit(Some(format!("net-{i}"))).unwrap();
        }
        assert_eq!(g.admitted(), 0);
        assert!(g.per_network.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_slot_is_waited_for_until_the_deadline_only() {
        let g = gate(1, 4, 4, 100);
        let first = g.admit(None).unwrap();
        let held = first.slot().await.unwrap();
        let second = g.admit(None).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(second.slot().await.err(), Some(Refusal::Busy));
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(held);
        let third = g.admit(None).unwrap();
        assert!(third.slot().await.is_ok());
    }
}
