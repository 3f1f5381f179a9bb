//! Admission to password checks: Argon2id costs tens of milliseconds of CPU
//! and 19 MiB per check, so an instance runs one per core, and everything
//! else about the wait is bounded:
//!
//! - at most `queue` logins wait for a slot in each lane (beyond it: 503 at
//!   once);
//! - a login waits at most `wait` for its slot (then 503, `Retry-After`);
//! - one network (an IPv4 address, an IPv6 /64) has at most `per_network`
//!   logins admitted at once (beyond it: 429 at once), so a single source
//!   cannot fill a lane.
//!
//! Two lanes: logins from networks whose logins failed recently on this
//! instance ("suspect") wait in the low lane, everyone else in the high
//! lane, and a free slot goes to the high lane first. A flood of wrong
//! passwords thus fills the low lane and keeps its own sources waiting,
//! while a login from a network with no recent failure is checked next.
//! (Without lanes, attackers retrying the instant they are refused took
//! every place that freed, and legitimate logins were refused as often.)
//! A botnet that never repeats an address lands in the high lane once per
//! address; the lane is bounded like the other.
//!
//! Without these bounds 200 bad-login workers from 200 addresses made a
//! legitimate login from elsewhere wait 3.5 s (p50), and 1,200 held
//! requests 21 s: the queue was unbounded, first come first served, with no
//! deadline. Within a lane slots go in arrival order. A login takes its slot
//! before any database work (counting the attempt, reading the user), so
//! the decision to refuse is made in memory, at the deadline, and a refused
//! login has cost nothing and counted nothing.
//!
//! Memory is bounded by the same numbers: one counter per network with a
//! login admitted (removed when its last login leaves), and a bounded cache
//! of suspect networks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The bounds of [`LoginGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatePolicy {
    /// Checks running at once (one per core).
    pub slots: usize,
    /// Logins waiting for a slot at most, per lane.
    pub queue: usize,
    /// Longest wait for a slot.
    pub wait: Duration,
    /// Logins admitted at once (waiting or running) per network.
    pub per_network: usize,
}

/// Why a login was not admitted; both mean "retry later".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its lane is full, or no slot came free in time: 503. `suspect`: the
    /// login came from a network whose logins failed recently.
    Busy {
        /// From a suspect network (the low lane).
        suspect: bool,
    },
    /// This network already has its share of logins in progress: 429.
    NetworkBusy,
}

/// How long a "busy" refusal is held before it is answered. A flood that
/// retries the instant it is refused would otherwise spend on refusals the
/// CPU the checks need (measured: 8,700 refusals a second left 18 checks a
/// second instead of 60, so the flood's sources were never checked, never
/// marked suspect, and kept the high lane full). Held, each connection
/// makes at most four attempts a second; a held request costs a socket and
/// no CPU, and a legitimate login still has its answer within a quarter of
/// a second.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(250);

/// Networks suspect at most at once (a cache: the oldest are forgotten).
const SUSPECTS: usize = 65_536;
/// How long a failed login makes its network suspect.
const SUSPECT_FOR: Duration = Duration::from_secs(900);

#[derive(Default)]
struct Lanes {
    free: usize,
    high: VecDeque<oneshot::Sender<Slot>>,
    low: VecDeque<oneshot::Sender<Slot>>,
}

/// Admission to password checks; see the module documentation.
pub struct LoginGate {
    policy: GatePolicy,
    lanes: Arc<Mutex<Lanes>>,
    /// Logins admitted and not yet gone (waiting or running), per lane.
    admitted: [AtomicUsize; 2],
    per_network: Mutex<HashMap<String, usize>>,
    suspects: quick_cache::sync::Cache<String, Instant>,
}

/// A login admitted to a lane: it may wait for a slot. Dropping it
/// (whatever happened) frees its place.
pub struct Admission<'a> {
    gate: &'a LoginGate,
    network: Option<String>,
    high: bool,
    started: tokio::time::Instant,
}

/// A running check's slot; dropping it hands it to the next waiter.
pub struct Slot {
    lanes: Arc<Mutex<Lanes>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        release(&self.lanes);
    }
}

/// Gives a freed slot to the first live waiter, high lane first.
fn release(lanes: &Arc<Mutex<Lanes>>) {
    loop {
        let next = {
            let mut l = lanes.lock().expect("login gate lock");
            match l.high.pop_front().or_else(|| l.low.pop_front()) {
                Some(tx) => tx,
                None => {
                    l.free += 1;
                    return;
                }
            }
        };
        match next.send(Slot {
            lanes: lanes.clone(),
        }) {
            Ok(()) => return,
            // That waiter gave up; try the next (without recursing through Drop).
            Err(slot) => std::mem::forget(slot),
        }
    }
}

impl LoginGate {
    /// A gate with `policy`.
    pub fn new(policy: GatePolicy) -> LoginGate {
        LoginGate {
            lanes: Arc::new(Mutex::new(Lanes {
                free: policy.slots.max(1),
                ..Lanes::default()
            })),
            admitted: [AtomicUsize::new(0), AtomicUsize::new(0)],
            per_network: Mutex::new(HashMap::new()),
            suspects: quick_cache::sync::Cache::new(SUSPECTS),
            policy,
        }
    }

    /// The bounds in force.
    pub fn policy(&self) -> GatePolicy {
        self.policy
    }

    /// Notes a failed check from `network`: its next logins wait in the low
    /// lane for a while.
    pub fn failed(&self, network: &str) {
        self.suspects.insert(network.to_owned(), Instant::now());
    }

    fn suspect(&self, network: &str) -> bool {
        self.suspects
            .get(network)
            .is_some_and(|at| at.elapsed() < SUSPECT_FOR)
    }

    /// Admits a login from `network`, or refuses it at once.
    pub fn admit(&self, network: Option<String>) -> Result<Admission<'_>, Refusal> {
        let high = !network.as_deref().is_some_and(|n| self.suspect(n));
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
            high,
            started: tokio::time::Instant::now(),
        };
        let limit = self.policy.slots + self.policy.queue;
        if self.admitted[usize::from(high)].fetch_add(1, Ordering::SeqCst) >= limit {
            // Counted by fetch_add: the Drop takes it back.
            return Err(Refusal::Busy { suspect: !high });
        }
        Ok(admission)
    }

    /// Logins admitted now (waiting or running), for metrics and tests.
    pub fn admitted(&self) -> usize {
        self.admitted.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }
}

impl Admission<'_> {
    /// Waits for a slot until `wait` after admission.
    pub async fn slot(&self) -> Result<Slot, Refusal> {
        let rx = {
            let mut l = self.gate.lanes.lock().expect("login gate lock");
            if l.free > 0 && (self.high || l.high.is_empty()) {
                l.free -= 1;
                return Ok(Slot {
                    lanes: self.gate.lanes.clone(),
                });
            }
            let (tx, rx) = oneshot::channel();
            let lane = if self.high { &mut l.high } else { &mut l.low };
            // Waiters that gave up leave a closed sender behind: drop them
            // before the lane outgrows its bound.
            if lane.len() > 2 * (self.gate.policy.queue + self.gate.policy.slots) {
                lane.retain(|tx| !tx.is_closed());
            }
            lane.push_back(tx);
            rx
        };
        let deadline = self.started + self.gate.policy.wait;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Refusal::Busy {
                suspect: !self.high,
            }),
        }
    }

    /// Whether this login waits in the high lane.
    pub fn high(&self) -> bool {
        self.high
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.gate.admitted[usize::from(self.high)].fetch_sub(1, Ordering::SeqCst);
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
    fn the_lanes_and_each_network_are_bounded() {
        let g = gate(1, 2, 2, 1000);
        let a = g.admit(Some("n1".into())).unwrap();
        let _b = g.admit(Some("n1".into())).unwrap();
        assert_eq!(g.admit(Some("n1".into())).err(), Some(Refusal::NetworkBusy));
        let _c = g.admit(Some("n2".into())).unwrap();
        assert_eq!(
            g.admit(Some("n3".into())).err(),
            Some(Refusal::Busy { suspect: false })
        );
        assert_eq!(g.admitted(), 3, "refusals leave nothing behind");
        // The low lane has places of its own.
        g.failed("n4");
        let d = g.admit(Some("n4".into())).unwrap();
        assert!(!d.high());
        drop(a);
        assert!(g.admit(Some("n1".into())).is_ok());
        assert_eq!(g.per_network.lock().unwrap().len(), 3);
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
        assert_eq!(
            second.slot().await.err(),
            Some(Refusal::Busy { suspect: false })
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(held);
        let third = g.admit(None).unwrap();
        assert!(third.slot().await.is_ok());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_high_lane_first() {
        let g = Arc::new(gate(1, 8, 8, 2000));
        g.failed("attacker");
        let holder = g.admit(None).unwrap();
        let held = holder.slot().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (name, network) in [("low", "attacker"), ("high", "clean")] {
            let (g, order) = (g.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let admission = g.admit(Some(network.into())).unwrap();
                let slot = admission.slot().await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(slot);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "low"]);
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_lose_the_slot() {
        let g = gate(1, 8, 8, 50);
        let holder = g.admit(None).unwrap();
        let held = holder.slot().await.unwrap();
        let quitter = g.admit(None).unwrap();
        assert!(quitter.slot().await.is_err());
        drop(held);
        let next = g.admit(None).unwrap();
        assert!(next.slot().await.is_ok(), "the slot came back");
    }
}
