//! Bounds on what the internet can make the axon hold: connections (in all and per address),
//! time (a socket that stops reading, a connection that never ends), requests per connection,
//! request bodies in memory, and a validator's requests in flight.
//!
//! The axon listens on a public port and every stage before the signature check is free for an
//! attacker, so each bound here is checked before any work is done for the request it limits, and
//! each is a count or a deadline, never "until the peer behaves". The limits are constants sized
//! for a validator set of at most a few hundred permits (`docs/predictor.md`, "Limits"); the ones
//! an operator may need to move are in `[predictor]`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections one address (an IPv4 address, an IPv6 /64) may hold open by default
/// (`predictor.connections_per_address`). A validator's dendrite keeps one keep-alive connection
/// per axon and opens a few more under concurrency.
pub const CONNECTIONS_PER_ADDRESS: usize = 16;

/// The most connections at once, whatever the fd limit allows.
pub const MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept out of the connection budget: the listener, the model and its
/// runtime's files, the D-Bus socket, the journal, the state directory.
const FD_RESERVE: u64 = 128;

/// A client has this long to send a request's headers, and an idle keep-alive connection is
/// closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A write that makes no progress for this long (the peer stopped reading) ends the connection.
pub const WRITE_STALL: Duration = Duration::from_secs(10);

/// A connection is asked to close after this long (after its request in progress), and dropped
/// [`CLOSE_GRACE`] later whatever it is doing.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
pub const CLOSE_GRACE: Duration = Duration::from_secs(75);

/// Requests one connection may carry; the last is answered with `Connection: close`.
pub const REQUESTS_PER_CONNECTION: u32 = 1000;

/// Request headers at most (bytes, all of them with the request line).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Bytes of a refused request's body read (and thrown away) so that the client can read the
/// answer; a longer body closes the connection instead.
pub const DRAIN_BYTES: usize = 64 * 1024;
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The total connection cap: [`MAX_CONNECTIONS`], lowered to stay under the process's soft
/// `RLIMIT_NOFILE` (systemd's default soft limit is 1024; the unit raises it) so that accepting
/// never fails with `EMFILE` while a stalled flood holds descriptors.
pub fn connection_cap() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let usable = soft.saturating_sub(FD_RESERVE).max(16);
    (usable as usize).min(MAX_CONNECTIONS)
}

/// The key a per-address count uses: IPv4 addresses alone, IPv6 by /64 (one host's usual
/// allocation, so one host cannot multiply its share by rotating addresses).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Places held per key (an address's connections, a hotkey's requests) and in all, each one
/// given back when its [`Place`] is dropped. Keys with no place left are removed, so the table
/// only holds what is open now.
pub struct PerKey<K: Hash + Eq + Clone> {
    counts: Mutex<HashMap<K, usize>>,
    total: AtomicUsize,
}

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    /// The table holds its total cap.
    Full,
    /// This key holds its own cap.
    KeyFull,
}

/// One place in a [`PerKey`] table.
pub struct Place<K: Hash + Eq + Clone> {
    table: Arc<PerKey<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> PerKey<K> {
    pub fn new() -> Arc<PerKey<K>> {
        Arc::new(PerKey {
            counts: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    /// Takes a place for `key` if it holds fewer than `per_key` and the table fewer than
    /// `total_cap`.
    pub fn enter(
        self: &Arc<Self>,
        key: K,
        per_key: usize,
        total_cap: usize,
    ) -> Result<Place<K>, Turned> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= total_cap {
            return Err(Turned::Full);
        }
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= per_key {
            return Err(Turned::KeyFull);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Place {
            table: self.clone(),
            key,
        })
    }

    /// Places held now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl<K: Hash + Eq + Clone> Drop for Place<K> {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
        self.table.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Open connections, in all and per address.
pub struct Connections {
    table: Arc<PerKey<IpAddr>>,
    cap: usize,
    per_address_cap: usize,
}

impl Connections {
    pub fn new(cap: usize, per_address_cap: usize) -> Connections {
        Connections {
            table: PerKey::new(),
            cap,
            per_address_cap,
        }
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn enter(&self, ip: IpAddr) -> Result<Place<IpAddr>, Turned> {
        self.table
            .enter(address_key(ip), self.per_address_cap, self.cap)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.total()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// Requests in flight per caller hotkey (only the gate's authenticated callers are keys, so its
/// size is bounded by the validator set).
pub type InFlight = PerKey<String>;

/// Request bodies held in memory at once, in KiB: a body is read only once its whole declared
/// size (or the largest allowed, when it is chunked) is reserved here, so bodies in memory never
/// exceed the budget however many validators send at once.
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl BodyBudget {
    pub fn new(bytes: u64) -> BodyBudget {
        let total_kib = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        BodyBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Reserves room for a body of at most `bytes`, or `None` when the budget is spent now.
    pub fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = bytes.div_ceil(1024).clamp(1, u64::from(self.total_kib)) as u32;
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }
}

/// A socket with a write deadline: a peer that stops reading our answer (its receive window
/// full) cannot hold the connection, its buffers and its task forever. Reads are bounded by
/// hyper's header timeout and the request's own deadline.
pub struct StallGuardedIo<S> {
    inner: S,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> StallGuardedIo<S> {
    pub fn new(inner: S, stall: Duration) -> StallGuardedIo<S> {
        StallGuardedIo {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
        }
    }

    /// Called when a write is pending: starts the stall clock, or fails once it has run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.stall);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuardedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuardedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx).map(Err),
            done => {
                self.armed = false;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// At most `max` characters of `s`, printable ASCII only: what an answer may echo of what a
/// stranger sent.
pub fn echo(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_caps_hold_and_places_come_back() {
        let c = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = c.enter(a).unwrap();
        let _g2 = c.enter(a).unwrap();
        assert_eq!(c.enter(a).err(), Some(Turned::KeyFull));
        let _g3 = c.enter(b).unwrap();
        assert_eq!(c.enter(b).err(), Some(Turned::Full));
        drop(g1);
        assert_eq!(c.open(), 2);
        assert!(c.enter(a).is_ok());
    }

    #[test]
    fn one_ipv6_64_counts_as_one_address() {
        let c = Connections::new(100, 1);
        let _g = c.enter("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            c.enter("2001:db8:1:2:ffff::9".parse().unwrap()).err(),
            Some(Turned::KeyFull)
        );
        assert!(c.enter("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        let _v4 = c.enter("10.1.1.1".parse().unwrap()).unwrap();
        assert!(c.enter("::ffff:10.1.1.1".parse().unwrap()).is_err());
    }

    #[test]
    fn in_flight_per_hotkey_is_capped_and_released() {
        let t = InFlight::new();
        let enter = |k: &str| t.enter(k.to_string(), 2, usize::MAX);
        let a = enter("k").unwrap();
        let _b = enter("k").unwrap();
        assert_eq!(enter("k").err(), Some(Turned::KeyFull));
        let _other = enter("other").unwrap();
        drop(a);
        let _again = enter("k").unwrap();
        assert_eq!(t.total(), 3);
    }

    #[test]
    fn body_budget_reserves_whole_bodies() {
        let b = BodyBudget::new(10 * 1024);
        let p = b.reserve(6 * 1024).unwrap();
        assert!(b.reserve(6 * 1024).is_none());
        drop(p);
        assert!(b.reserve(6 * 1024).is_some());
        // Larger than the budget: takes all of it rather than never fitting.
        let all = BodyBudget::new(4096);
        assert!(all.reserve(1 << 30).is_some());
    }

    #[test]
    fn echoes_are_short_and_printable() {
        assert_eq!(echo("abc", 10), "abc");
        assert_eq!(echo("a\nb\u{7f}", 10), "a?b?");
        assert_eq!(echo(&"x".repeat(100), 4), "xxxx...");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_stall_deadline() {
        // Proves the write deadline: with the peer's buffer full (it reads nothing), a write
        // fails with TimedOut after the stall time instead of waiting forever; a peer that reads
        // keeps the connection.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = StallGuardedIo::new(ours, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = io.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));

        let (ours, mut reader) = tokio::io::duplex(1024);
        let mut io = StallGuardedIo::new(ours, Duration::from_millis(200));
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            reader.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        io.write_all(&[0u8; 64 * 1024]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(drain.await.unwrap().unwrap(), 64 * 1024);
        let _ = theirs.read(&mut [0u8; 1]).await;
    }

    #[test]
    fn the_connection_cap_stays_under_the_fd_limit() {
        let cap = connection_cap();
        assert!((16..=MAX_CONNECTIONS).contains(&cap));
    }
}
