//! The state each listener's limits need between connections (pure): the
//! service's rate window, the fixed-size table of sources, the children
//! of each source, the history of failed wait servers, and the
//! once-per-burst logging of refusals and holds. The decisions themselves
//! are made in `admission`; this module only keeps count.
//!
//! Memory is fixed per listener: the source table is allocated once, when
//! the listener is made with a per-source limit, and never grows; a new
//! source takes a free slot of its set, else the slot of a source without
//! children whose window started first. Only children are remembered one
//! by one (their source, until they are reaped), and children are bounded.
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use inetd_protocol::Limits;

use crate::peer::unmap;

/// Sets and ways of a source table: 1,024 sources, 40 bytes each, about
/// 40 KiB per listener with a per-source limit.
pub const SOURCE_SETS: usize = 128;
pub const SOURCE_WAYS: usize = 8;
/// Listeners with a per-source limit the core runs at once: with
/// [`SOURCE_SETS`] x [`SOURCE_WAYS`] entries each, the tables of all
/// listeners together stay under 40 MiB. An apply past it is refused for
/// the listeners past it.
pub const MAX_SOURCE_TABLES: usize = 1024;

/// Failed wait servers within the rate window before the service is
/// `failed`.
pub const WAIT_FAILURES: usize = 10;
/// The first backoff of a failed wait service (doubling up to the pause).
pub const WAIT_BACKOFF_FIRST: Duration = Duration::from_secs(10);

/// A refusal or a hold after this long without one starts a new burst,
/// which is logged again.
pub const BURST_QUIET: Duration = Duration::from_secs(10);

/// The core's own knobs for the limits (its command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Live servers of all listeners together; `None`: unlimited.
    pub max_children: Option<u32>,
    /// The window of every per-minute limit (`--rate-window`).
    pub window: Duration,
    /// How long a rate-limited service stays paused (`--pause`), and the
    /// longest backoff of a failed wait service.
    pub pause: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            max_children: Some(1024),
            window: Duration::from_secs(60),
            pause: Duration::from_secs(600),
        }
    }
}

impl Knobs {
    /// The backoff of a failed wait service at its `attempt`-th failure
    /// (0 first): 10 s doubling, at most the pause (never under a second).
    pub fn wait_backoff(&self, attempt: u32) -> Duration {
        let max = self.pause.max(Duration::from_secs(1));
        let first = WAIT_BACKOFF_FIRST.min(max);
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        first.saturating_mul(factor).min(max)
    }
}

/// A source as the limits see it: its address cut to the listener's
/// prefix, IPv4 (mapped or not) in the IPv4-mapped range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey([u64; 2]);

impl SourceKey {
    pub fn of(ip: IpAddr, limits: &Limits) -> SourceKey {
        let bits = match unmap(ip) {
            IpAddr::V4(a) => {
                let p = u32::from(limits.source_prefix_v4.min(32));
                let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                u128::from(std::net::Ipv4Addr::from(u32::from(a) & mask).to_ipv6_mapped())
            }
            IpAddr::V6(a) => {
                let p = u32::from(limits.source_prefix_v6.min(128));
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                u128::from(a) & mask
            }
        };
        SourceKey([(bits >> 64) as u64, bits as u64])
    }
}

#[derive(Debug, Clone, Copy)]
struct SourceEntry {
    key: SourceKey,
    /// Milliseconds since the table was made.
    window_start: u64,
    count: u32,
    children: u32,
}

/// Which per-source limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRefusal {
    Rate,
    Children,
    /// Every slot of the source's set holds a source with children: the
    /// new source is refused rather than one with children forgotten.
    TableFull,
}

/// The per-source table of one listener (see the module's header).
pub struct SourceTable {
    slots: Box<[Option<SourceEntry>]>,
    hasher: RandomState,
    epoch: Instant,
}

impl SourceTable {
    pub fn new(now: Instant) -> SourceTable {
        SourceTable {
            slots: vec![None; SOURCE_SETS * SOURCE_WAYS].into_boxed_slice(),
            hasher: RandomState::new(),
            epoch: now,
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn set_of(&mut self, key: SourceKey) -> &mut [Option<SourceEntry>] {
        let set = (self.hasher.hash_one(key) % SOURCE_SETS as u64) as usize;
        let start = set * SOURCE_WAYS;
        self.slots
            .get_mut(start..start + SOURCE_WAYS)
            .unwrap_or_default()
    }

    /// Counts a connection of `key` at `now` against `rate` connections
    /// per `window` and `children` live children (0: unlimited).
    pub fn admit(
        &mut self,
        key: SourceKey,
        now: Instant,
        window: Duration,
        rate: u32,
        children: u32,
    ) -> Result<(), SourceRefusal> {
        let now_ms = self.ms(now);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let ways = self.set_of(key);
        let index = ways
            .iter()
            .position(|s| matches!(s, Some(e) if e.key == key))
            .or_else(|| ways.iter().position(Option::is_none))
            .or_else(|| {
                ways.iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.filter(|e| e.children == 0).map(|e| (i, e)))
                    .min_by_key(|(_, e)| e.window_start)
                    .map(|(i, _)| i)
            })
            .ok_or(SourceRefusal::TableFull)?;
        let slot = ways.get_mut(index).ok_or(SourceRefusal::TableFull)?;
        let mut e = match *slot {
            Some(e) if e.key == key => e,
            _ => SourceEntry {
                key,
                window_start: now_ms,
                count: 0,
                children: 0,
            },
        };
        if now_ms.saturating_sub(e.window_start) >= window_ms {
            e.window_start = now_ms;
            e.count = 0;
        }
        let verdict = if rate != 0 && e.count >= rate {
            Err(SourceRefusal::Rate)
        } else if children != 0 && e.children >= children {
            Err(SourceRefusal::Children)
        } else {
            e.count += 1;
            Ok(())
        };
        *slot = Some(e);
        verdict
    }

    /// A child of `key` started (`delta` 1) or ended (`delta` -1).
    fn children_of(&mut self, key: SourceKey, started: bool) {
        let ways = self.set_of(key);
        if let Some(Some(e)) = ways
            .iter_mut()
            .find(|s| matches!(s, Some(e) if e.key == key))
        {
            e.children = if started {
                e.children.saturating_add(1)
            } else {
                e.children.saturating_sub(1)
            };
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Logging once per burst: the first event of a burst is logged, the rest
/// only counted, until [`BURST_QUIET`] passes without one. Boxed at its
/// first event: most listeners never have one, and pay one pointer.
#[derive(Debug, Default, Clone)]
pub struct Burst(Option<Box<BurstState>>);

#[derive(Debug, Clone)]
struct BurstState {
    last: Instant,
    /// Events since the last one logged.
    unlogged: u64,
}

impl Burst {
    /// Notes an event at `now`: `Some(n)` when it is to be logged, `n`
    /// being the events of the previous burst that were not.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        let Some(b) = &mut self.0 else {
            self.0 = Some(Box::new(BurstState {
                last: now,
                unlogged: 0,
            }));
            return Some(0);
        };
        let new_burst = now.saturating_duration_since(b.last) >= BURST_QUIET;
        b.last = now;
        if new_burst {
            Some(std::mem::take(&mut b.unlogged))
        } else {
            b.unlogged += 1;
            None
        }
    }
}

/// The sources of one listener's connections, when it counts them.
struct PerSource {
    table: SourceTable,
    /// The source of each live child.
    child_source: HashMap<i32, SourceKey>,
}

/// Failed wait servers: their times within the window, oldest first, and
/// how many times in a row the service was failed (its backoff).
#[derive(Default)]
struct WaitFailures {
    times: VecDeque<Instant>,
    attempt: u32,
}

/// What one listener's limits remember. Only the rate window is inline;
/// the rest exists once it is used, a pointer each until then.
pub struct ListenerLimits {
    /// When the current rate window started and how many connections (or
    /// wait servers) it has counted.
    rate: Option<(Instant, u32)>,
    /// Only with a per-source limit: most listeners have none.
    sources: Option<Box<PerSource>>,
    /// From the first failed wait server: most services are not `wait`
    /// ones and never fail that way.
    failures: Option<Box<WaitFailures>>,
    pub refusals: Burst,
    pub holds: Burst,
}

impl ListenerLimits {
    pub fn new(limits: &Limits, now: Instant) -> ListenerLimits {
        let per_source =
            limits.max_per_source_per_minute != 0 || limits.max_children_per_source != 0;
        ListenerLimits {
            rate: None,
            sources: per_source.then(|| {
                Box::new(PerSource {
                    table: SourceTable::new(now),
                    child_source: HashMap::new(),
                })
            }),
            failures: None,
            refusals: Burst::default(),
            holds: Burst::default(),
        }
    }

    /// Counts a connection (or a wait server) against the service's rate:
    /// false when it is one too many (the service is then paused).
    pub fn count_rate(&mut self, max: u32, now: Instant, window: Duration) -> bool {
        if max == 0 {
            return true;
        }
        let (start, count) = match self.rate {
            Some((start, count)) if now.saturating_duration_since(start) < window => (start, count),
            _ => (now, 0),
        };
        if count >= max {
            self.rate = Some((start, count));
            return false;
        }
        self.rate = Some((start, count + 1));
        true
    }

    /// A pause is over: the next window starts afresh.
    pub fn reset_rate(&mut self) {
        self.rate = None;
    }

    /// Counts a connection of `ip` against the per-source limits.
    pub fn admit_source(
        &mut self,
        ip: IpAddr,
        limits: &Limits,
        now: Instant,
        window: Duration,
    ) -> Result<Option<SourceKey>, SourceRefusal> {
        let Some(t) = &mut self.sources else {
            return Ok(None);
        };
        let key = SourceKey::of(ip, limits);
        t.table.admit(
            key,
            now,
            window,
            limits.max_per_source_per_minute,
            limits.max_children_per_source,
        )?;
        Ok(Some(key))
    }

    /// Child `pid` of source `key` started.
    pub fn child_started(&mut self, pid: i32, key: SourceKey) {
        if let Some(t) = &mut self.sources {
            t.table.children_of(key, true);
            t.child_source.insert(pid, key);
        }
    }

    /// Child `pid` was reaped.
    pub fn child_ended(&mut self, pid: i32) {
        if let Some(t) = &mut self.sources {
            if let Some(key) = t.child_source.remove(&pid) {
                t.table.children_of(key, false);
            }
        }
    }

    /// A wait server failed at `now`: true when that makes
    /// [`WAIT_FAILURES`] within `window` (the history then starts afresh).
    pub fn wait_failed(&mut self, now: Instant, window: Duration) -> bool {
        let f = &mut self.failures.get_or_insert_with(Box::default).times;
        while f
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            f.pop_front();
        }
        f.push_back(now);
        if f.len() >= WAIT_FAILURES {
            f.clear();
            return true;
        }
        false
    }

    /// The wait service is failed once more: the number of times before
    /// this one (0 the first), which sets its backoff.
    pub fn next_failed_attempt(&mut self) -> u32 {
        let f = self.failures.get_or_insert_with(Box::default);
        let attempt = f.attempt;
        f.attempt = attempt.saturating_add(1);
        attempt
    }

    /// A wait server did its work: the failures before it are forgotten.
    pub fn wait_served(&mut self) {
        self.failures = None;
    }

    /// Whether sources are counted (the listener has a per-source limit).
    #[cfg(test)]
    pub fn has_source_table(&self) -> bool {
        self.sources.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(v4: u8, v6: u8) -> Limits {
        Limits {
            source_prefix_v4: v4,
            source_prefix_v6: v6,
            ..Limits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_group_by_prefix() {
        let l = limits(24, 64);
        assert_eq!(
            SourceKey::of(ip("192.0.2.1"), &l),
            SourceKey::of(ip("192.0.2.200"), &l)
        );
        assert_eq!(
            SourceKey::of(ip("192.0.2.1"), &l),
            SourceKey::of(ip("::ffff:192.0.2.9"), &l),
            "a mapped peer is IPv4"
        );
        assert_ne!(
            SourceKey::of(ip("192.0.2.1"), &l),
            SourceKey::of(ip("192.0.3.1"), &l)
        );
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1"), &l),
            SourceKey::of(ip("2001:db8:1:2:ffff::7"), &l)
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1"), &l),
            SourceKey::of(ip("2001:db8:1:3::1"), &l)
        );
        let exact = Limits::default();
        assert_ne!(
            SourceKey::of(ip("192.0.2.1"), &exact),
            SourceKey::of(ip("192.0.2.2"), &exact)
        );
        let all = limits(0, 0);
        assert_eq!(
            SourceKey::of(ip("10.0.0.1"), &all),
            SourceKey::of(ip("192.0.2.2"), &all)
        );
        assert_ne!(
            SourceKey::of(ip("10.0.0.1"), &all),
            SourceKey::of(ip("2001:db8::1"), &all),
            "families never share a source"
        );
    }

    #[test]
    fn the_rate_window_admits_exactly_its_number() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut l = ListenerLimits::new(&Limits::default(), t0);
        for i in 0..5 {
            assert!(l.count_rate(5, t0 + Duration::from_secs(i), w), "{i}");
        }
        assert!(!l.count_rate(5, t0 + Duration::from_secs(10), w));
        assert!(!l.count_rate(5, t0 + Duration::from_secs(59), w));
        // The next window.
        assert!(l.count_rate(5, t0 + Duration::from_secs(60), w));
        // Unlimited.
        for _ in 0..1000 {
            assert!(l.count_rate(0, t0, w));
        }
        l.reset_rate();
        assert!(l.count_rate(1, t0, w));
        assert!(!l.count_rate(1, t0, w));
    }

    #[test]
    fn per_source_rate_and_children() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let lim = Limits {
            max_per_source_per_minute: 3,
            max_children_per_source: 2,
            ..Limits::default()
        };
        let mut l = ListenerLimits::new(&lim, t0);
        let a = ip("192.0.2.1");
        let k = l.admit_source(a, &lim, t0, w).unwrap().unwrap();
        l.child_started(100, k);
        let k = l.admit_source(a, &lim, t0, w).unwrap().unwrap();
        l.child_started(101, k);
        assert_eq!(l.admit_source(a, &lim, t0, w), Err(SourceRefusal::Children));
        l.child_ended(100);
        l.child_ended(100);
        assert!(l.admit_source(a, &lim, t0, w).is_ok());
        assert_eq!(l.admit_source(a, &lim, t0, w), Err(SourceRefusal::Rate));
        // Another source is not affected; the window ends by itself.
        assert!(l.admit_source(ip("192.0.2.2"), &lim, t0, w).is_ok());
        assert!(l.admit_source(a, &lim, t0 + w, w).is_ok());
        // No per-source limit: no table, nothing counted.
        let mut none = ListenerLimits::new(&Limits::default(), t0);
        assert!(!none.has_source_table());
        assert_eq!(none.admit_source(a, &Limits::default(), t0, w), Ok(None));
    }

    #[test]
    fn a_flood_of_sources_evicts_and_never_grows() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut t = SourceTable::new(t0);
        let lim = Limits::default();
        let size = t.len();
        let first = SourceKey::of(ip("10.0.0.1"), &lim);
        assert!(t.admit(first, t0, w, 1, 0).is_ok());
        assert_eq!(t.admit(first, t0, w, 1, 0), Err(SourceRefusal::Rate));
        for i in 0..100_000u32 {
            let k = SourceKey::of(IpAddr::V4((0x0b00_0000 + i).into()), &lim);
            assert!(t.admit(k, t0, w, 1, 0).is_ok());
        }
        assert_eq!(t.len(), size);
        assert_eq!(size, SOURCE_SETS * SOURCE_WAYS);
        // The first source was evicted: it starts afresh.
        assert!(t.admit(first, t0, w, 1, 0).is_ok());
    }

    #[test]
    fn sources_with_children_are_never_evicted() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut t = SourceTable::new(t0);
        let lim = Limits::default();
        let mut refused = 0;
        for i in 0..(SOURCE_SETS * SOURCE_WAYS * 4) as u32 {
            let k = SourceKey::of(IpAddr::V4((0x0a00_0000 + i).into()), &lim);
            match t.admit(k, t0, w, 0, 1) {
                Ok(()) => t.children_of(k, true),
                Err(e) => {
                    assert_eq!(e, SourceRefusal::TableFull);
                    refused += 1;
                }
            }
        }
        let held = t.slots.iter().flatten().filter(|e| e.children == 1).count();
        assert_eq!(held, SOURCE_SETS * SOURCE_WAYS, "every slot holds a child");
        assert_eq!(refused, SOURCE_SETS * SOURCE_WAYS * 3);
    }

    #[test]
    fn wait_failures_within_the_window() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut l = ListenerLimits::new(&Limits::default(), t0);
        for i in 0..9 {
            assert!(!l.wait_failed(t0 + Duration::from_secs(i), w));
        }
        assert!(l.wait_failed(t0 + Duration::from_secs(9), w));
        // Spread over more than the window: never ten at once.
        for i in 0..30 {
            assert!(!l.wait_failed(t0 + Duration::from_secs(100 + i * 7), w));
        }
        for _ in 0..5 {
            l.wait_failed(t0 + Duration::from_secs(400), w);
        }
        l.wait_served();
        for _ in 0..9 {
            assert!(!l.wait_failed(t0 + Duration::from_secs(401), w));
        }
        // The backoff's count of failed times in a row, forgotten when a
        // server does its work.
        assert_eq!(l.next_failed_attempt(), 0);
        assert_eq!(l.next_failed_attempt(), 1);
        l.wait_served();
        assert_eq!(l.next_failed_attempt(), 0);
    }

    #[test]
    fn the_wait_backoff_doubles_up_to_the_pause() {
        let k = Knobs::default();
        let got: Vec<u64> = (0..8).map(|a| k.wait_backoff(a).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 320, 600, 600]);
        let short = Knobs {
            pause: Duration::from_secs(2),
            ..k
        };
        assert_eq!(short.wait_backoff(0).as_secs(), 2);
        assert_eq!(short.wait_backoff(5).as_secs(), 2);
        assert_eq!(k.wait_backoff(u32::MAX).as_secs(), 600);
    }

    #[test]
    fn bursts_are_logged_once() {
        let t0 = Instant::now();
        let mut b = Burst::default();
        assert_eq!(b.note(t0), Some(0));
        for i in 1..100 {
            assert_eq!(b.note(t0 + Duration::from_millis(i * 50)), None);
        }
        // Quiet for BURST_QUIET: a new burst, with the count of the last.
        let later = t0 + Duration::from_millis(99 * 50) + BURST_QUIET;
        assert_eq!(b.note(later), Some(99));
        assert_eq!(b.note(later), None);
    }
}
