//! A deadline for every request head, not just the first on a connection.
//!
//! actix-http times the head of a connection's *first* request
//! (`client_request_timeout`) and closes idle keep-alive connections
//! (`keep_alive`), but once a byte of a later request arrives on a
//! keep-alive connection neither timer runs: a client that sends half of
//! its second head and stops holds the connection and its descriptor
//! forever (the review held 300 such connections for over a minute).
//!
//! So every connection is registered when accepted, the request middleware
//! marks when each request starts and ends, and a watchdog shuts down (at
//! the socket, so the worker sees end-of-stream and drops the connection)
//! any connection that has had no request in progress for longer than
//! `keep_alive + client_request_timeout`: one that is idle for that long
//! was already closed by actix, so it must be stuck in a head.
//!
//! The registry holds a duplicate of each connection's descriptor, so the
//! shutdown reaches that socket even if the original descriptor number has
//! just been closed and reused; the duplicate is closed when the connection
//! ends. (Connections therefore cost two descriptors; the connection budget
//! accounts for it.)

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// One accepted connection.
pub struct Connection {
    fd: OwnedFd,
    /// Requests in progress (head received, response not yet done).
    in_flight: AtomicU32,
    /// Milliseconds after `epoch` of the last time a request ended (or the
    /// connection was accepted).
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Connection {
    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request's head has arrived.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A request's response is done.
    pub fn request_ended(&self) {
        self.idle_since.store(self.millis(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Stuck: nothing in progress for longer than `limit`.
    fn stuck(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self
                .millis()
                .saturating_sub(self.idle_since.load(Ordering::SeqCst))
                > limit.as_millis() as u64
    }
}

/// Every open connection of this process, weakly.
#[derive(Default)]
pub struct Connections {
    open: Mutex<Vec<Weak<Connection>>>,
}

impl Connections {
    /// Registers a connection whose socket is `socket` (a raw descriptor the
    /// caller owns); `None` if it cannot be duplicated (it is then only
    /// subject to actix's own timers).
    pub fn register(&self, socket: std::os::fd::BorrowedFd<'_>) -> Option<Arc<Connection>> {
        let fd = socket.try_clone_to_owned().ok()?;
        let epoch = Instant::now();
        let connection = Arc::new(Connection {
            fd,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            epoch,
        });
        self.open
            .lock()
            .expect("connection registry lock")
            .push(Arc::downgrade(&connection));
        Some(connection)
    }

    /// Shuts down every stuck connection and forgets ended ones; returns how
    /// many were shut down.
    pub fn sweep(&self, limit: Duration) -> usize {
        let mut open = self.open.lock().expect("connection registry lock");
        let mut shut = 0;
        open.retain(|weak| {
            let Some(c) = weak.upgrade() else {
                return false;
            };
            if c.stuck(limit) {
                // SAFETY: shutdown(2) on a descriptor this registry owns (a
                // duplicate, open until `c` is dropped).
                unsafe {
                    libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR);
                }
                shut += 1;
                return false;
            }
            true
        });
        shut
    }

    /// Connections registered and not yet ended.
    pub fn len(&self) -> usize {
        let open = self.open.lock().expect("connection registry lock");
        open.iter().filter(|w| w.strong_count() > 0).count()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sweeps `connections` every second until aborted.
pub fn spawn_watchdog(
    connections: Arc<Connections>,
    limit: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let shut = connections.sweep(limit);
            if shut > 0 {
                tracing::info!(
                    connections = shut,
                    "closed connections that sent part of a request head and stopped"
                );
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd as _;

    #[test]
    fn stuck_connections_are_shut_down_and_ended_ones_forgotten() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let registry = Connections::default();
        let c = registry.register(server.as_fd()).unwrap();
        c.request_started();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            registry.sweep(Duration::from_millis(10)),
            0,
            "a request is in progress"
        );
        c.request_ended();
        assert_eq!(registry.sweep(Duration::from_millis(10)), 0, "just ended");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(registry.sweep(Duration::from_millis(10)), 1);
        // The peer sees the connection closed.
        client.write_all(b"GET / HTTP/1.1\r\nHo").ok();
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0);
        drop(c);
        assert!(registry.is_empty());
        let other = registry.register(server.as_fd()).unwrap();
        drop(other);
        assert_eq!(registry.sweep(Duration::ZERO), 0);
        assert!(registry.open.lock().unwrap().is_empty());
    }
}
