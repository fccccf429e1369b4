//! The reply budgets of the UDP builtins: per source for every builtin
//! that answers (echo included), and for the whole child for those whose
//! answer can be larger than the request; in fixed memory.
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::canonical_ip;

/// Per source (an IPv4 address, or an IPv6 /64, the smallest block one
/// customer usually holds): bursts of 32 replies, then 16 per second.
pub(crate) const SOURCE_BURST: u32 = 32;
pub(crate) const SOURCE_INTERVAL: Duration = Duration::from_micros(62_500);
/// All sources of one child together: bursts of 256 replies, then 512 per
/// second. This bounds what one child sends whatever the number of spoofed
/// sources (chargen: at most 512 x 74 bytes, about 38 KB/s).
const TOTAL_BURST: u32 = 256;
const TOTAL_INTERVAL: Duration = Duration::from_micros(1_953);
/// Sources remembered: 256 sets of 4, 1024 in all, a fixed table allocated
/// once (about 40 KiB).
const LIMITER_SETS: usize = 256;
const LIMITER_WAYS: usize = 4;

/// A fixed-size table of per-source reply budgets plus one budget for the
/// whole child, as GCRA ("virtual scheduling"), the integer form of a token
/// bucket: each budget is a theoretical arrival time `tat`; a reply at `now`
/// is allowed when `tat - now <= (burst - 1) * interval`, and moves `tat` to
/// `max(tat, now) + interval`.
///
/// Memory is bounded: a new source takes a free slot in its set, else the
/// slot with the earliest `tat`. An entry whose `tat` has passed is in the
/// same state as a fresh one, so evicting it loses nothing; under a flood of
/// spoofed sources an evicted source may get a fresh burst, which the total
/// budget still bounds.
pub(crate) struct ReplyLimiter {
    slots: Vec<Option<Slot>>,
    total_tat: Instant,
    hasher: RandomState,
}

#[derive(Clone, Copy)]
struct Slot {
    key: u128,
    tat: Instant,
}

impl ReplyLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        ReplyLimiter {
            slots: vec![None; LIMITER_SETS * LIMITER_WAYS],
            total_tat: now,
            hasher: RandomState::new(),
        }
    }

    /// Charge one reply to `ip` at `now`, against its source's budget and,
    /// with `total`, the child's; false if over either (then nothing is
    /// charged).
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant, total: bool) -> bool {
        let total_next = if total {
            match gcra(self.total_tat, now, TOTAL_INTERVAL, TOTAL_BURST) {
                Some(t) => t,
                None => return false,
            }
        } else {
            self.total_tat
        };
        let key = source_key(ip);
        let set = (self.hasher.hash_one(key) % LIMITER_SETS as u64) as usize;
        let start = set * LIMITER_WAYS;
        let Some(ways) = self.slots.get_mut(start..start + LIMITER_WAYS) else {
            return false;
        };
        let index = ways
            .iter()
            .position(|s| matches!(s, Some(s) if s.key == key))
            .or_else(|| ways.iter().position(Option::is_none))
            .or_else(|| {
                ways.iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.map(|s| s.tat))
                    .map(|(i, _)| i)
            });
        let Some(slot) = index.and_then(|i| ways.get_mut(i)) else {
            return false;
        };
        let tat = match slot {
            Some(s) if s.key == key => s.tat,
            // A new or evicted entry starts with its full burst.
            _ => now,
        };
        let Some(source_next) = gcra(tat, now, SOURCE_INTERVAL, SOURCE_BURST) else {
            return false;
        };
        *slot = Some(Slot {
            key,
            tat: source_next,
        });
        self.total_tat = total_next;
        true
    }
}

/// One GCRA step: the new theoretical arrival time if a reply at `now` fits
/// the budget, `None` if it does not.
fn gcra(tat: Instant, now: Instant, interval: Duration, burst: u32) -> Option<Instant> {
    let tolerance = interval.saturating_mul(burst.saturating_sub(1));
    let base = tat.max(now);
    if base.saturating_duration_since(now) > tolerance {
        return None;
    }
    base.checked_add(interval)
}

/// The rate-limiting key of a source: an IPv4 address (mapped or not) whole,
/// an IPv6 address by its /64.
fn source_key(ip: IpAddr) -> u128 {
    match canonical_ip(ip) {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a) & !u128::from(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn limiter_per_source_burst_then_rate() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for i in 0..SOURCE_BURST {
            assert!(l.allow(a, t0, true), "reply {i}");
        }
        assert!(!l.allow(a, t0, true));
        // The same host through a dual-stack socket shares the budget.
        assert!(!l.allow("::ffff:192.0.2.1".parse().expect("ip"), t0, true));
        // Other sources are not affected.
        assert!(l.allow(b, t0, true));
        // One interval later, exactly one more.
        let t1 = t0 + SOURCE_INTERVAL;
        assert!(l.allow(a, t1, true));
        assert!(!l.allow(a, t1, true));
        // A long pause refills the whole burst, not more.
        let t2 = t1 + SOURCE_INTERVAL * 1000;
        for i in 0..SOURCE_BURST {
            assert!(l.allow(a, t2, true), "reply {i} after the pause");
        }
        assert!(!l.allow(a, t2, true));
    }

    #[test]
    fn limiter_groups_ipv6_by_slash_64() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        for i in 0..SOURCE_BURST {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().expect("ip");
            assert!(l.allow(ip, t0, true));
        }
        assert!(!l.allow("2001:db8:1:2:ffff::1".parse().expect("ip"), t0, true));
        assert!(l.allow("2001:db8:1:3::1".parse().expect("ip"), t0, true));
    }

    #[test]
    fn without_the_total_only_the_source_budget_counts() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        let mut allowed = 0u32;
        for i in 0..5_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i % 100));
            if l.allow(ip, t0, false) {
                allowed += 1;
            }
        }
        // 100 sources, each its burst: more than the child's total.
        assert_eq!(allowed, 100 * SOURCE_BURST);
        assert!(allowed > TOTAL_BURST);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..SOURCE_BURST {
            assert!(l.allow(a, t0, false));
        }
        assert!(!l.allow(a, t0, false), "one source's budget holds");
    }

    #[test]
    fn limiter_total_cap_across_many_sources_and_fixed_memory() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        let slots = l.slots.len();
        let mut allowed = 0u32;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            if l.allow(ip, t0, true) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, TOTAL_BURST);
        assert_eq!(l.slots.len(), slots);
        assert_eq!(slots, LIMITER_SETS * LIMITER_WAYS);
        // After a pause the total budget is a full burst again, never more.
        let t1 = t0 + Duration::from_secs(1);
        let mut later = 0u32;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            if l.allow(ip, t1, true) {
                later += 1;
            }
        }
        assert_eq!(later, TOTAL_BURST);
        // Then exactly one more per TOTAL_INTERVAL, whoever asks.
        let t2 = t1 + TOTAL_INTERVAL;
        assert!(l.allow(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), t2, true));
        assert!(!l.allow(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), t2, true));
    }
}
