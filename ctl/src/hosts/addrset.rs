//! Sets of IPv4 and IPv6 addresses, kept as sorted, disjoint, non-adjacent
//! ranges so that union, difference and intersection are exact, and turned
//! back into the fewest CIDR prefixes for the core's access lists.
//!
//! A whole access file (`EXCEPT` nesting included) evaluates to one such
//! set per rule, so what the core checks is exactly what tcpd would decide
//! for every address, not an approximation.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A set of integers in `0..=max`, as sorted, disjoint, non-adjacent
/// inclusive ranges. IPv4 uses `max = u32::MAX`, IPv6 `u128::MAX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u128, u128)>,
}

impl RangeSet {
    pub fn empty() -> RangeSet {
        RangeSet::default()
    }

    /// `lo..=hi`; empty if `lo > hi`.
    pub fn range(lo: u128, hi: u128) -> RangeSet {
        if lo > hi {
            return RangeSet::empty();
        }
        RangeSet {
            ranges: vec![(lo, hi)],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    pub fn contains(&self, x: u128) -> bool {
        // Ranges are sorted and disjoint: the candidate is the last range
        // starting at or before x.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= x);
        i > 0 && self.ranges[i - 1].1 >= x
    }

    /// The union of any ranges, in any order.
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> RangeSet {
        ranges.sort_unstable();
        RangeSet::join(ranges)
    }

    /// Merges overlapping or adjacent ranges of a sorted list.
    fn join(ranges: Vec<(u128, u128)>) -> RangeSet {
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                // Adjacent (last.hi + 1 == lo) merges too; a last range that
                // ends at the maximum swallows everything after it.
                Some(last) if last.1 == u128::MAX || lo <= last.1 + 1 => {
                    last.1 = last.1.max(hi);
                }
                _ => out.push((lo, hi)),
            }
        }
        RangeSet { ranges: out }
    }

    pub fn union(&self, other: &RangeSet) -> RangeSet {
        // Both are sorted: merge them in one pass, then join neighbours.
        let (a, b) = (&self.ranges, &other.ranges);
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i] <= b[j]) {
                merged.push(a[i]);
                i += 1;
            } else {
                merged.push(b[j]);
                j += 1;
            }
        }
        RangeSet::join(merged)
    }

    pub fn intersect(&self, other: &RangeSet) -> RangeSet {
        let (a, b) = (&self.ranges, &other.ranges);
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < a.len() && j < b.len() {
            let lo = a[i].0.max(b[j].0);
            let hi = a[i].1.min(b[j].1);
            if lo <= hi {
                out.push((lo, hi));
            }
            // Advance whichever ends first.
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        RangeSet { ranges: out }
    }

    /// `self \ other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let b = &other.ranges;
        let mut j = 0;
        for &(lo, hi) in &self.ranges {
            let mut cur = lo;
            // Skip subtrahend ranges entirely below this range.
            while j < b.len() && b[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < b.len() && b[k].0 <= hi {
                if b[k].0 > cur {
                    out.push((cur, b[k].0 - 1));
                }
                if b[k].1 >= hi {
                    done = true;
                    break;
                }
                cur = b[k].1 + 1;
                k += 1;
            }
            if !done {
                out.push((cur, hi));
            }
        }
        RangeSet { ranges: out }
    }

    /// The fewest prefixes `(network, length)` of a `bits`-wide space that
    /// cover exactly this set.
    pub fn prefixes(&self, bits: u32) -> Vec<(u128, u8)> {
        let span = |k: u32| -> u128 {
            if k >= 128 {
                u128::MAX
            } else {
                (1u128 << k) - 1
            }
        };
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let mut cur = lo;
            loop {
                // The largest aligned block starting at cur that stays
                // within hi.
                let mut k = if cur == 0 {
                    bits
                } else {
                    cur.trailing_zeros().min(bits)
                };
                while k > 0 && span(k) > hi - cur {
                    k -= 1;
                }
                out.push((cur, (bits - k) as u8));
                let last = cur + span(k);
                if last >= hi {
                    break;
                }
                cur = last + 1;
            }
        }
        out
    }

    /// How many prefixes [`RangeSet::prefixes`] would give, without
    /// building them.
    pub fn prefix_count(&self, bits: u32) -> usize {
        self.prefixes(bits).len()
    }
}

/// A set of IPv4 and IPv6 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    pub v4: RangeSet,
    pub v6: RangeSet,
}

const V4_MAX: u128 = u32::MAX as u128;

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

impl AddrSet {
    pub fn empty() -> AddrSet {
        AddrSet::default()
    }

    /// Every IPv4 and IPv6 address.
    pub fn all() -> AddrSet {
        AddrSet {
            v4: RangeSet::range(0, V4_MAX),
            v6: RangeSet::range(0, u128::MAX),
        }
    }

    /// Every address of one family, or both.
    pub fn universe(v4: bool, v6: bool) -> AddrSet {
        AddrSet {
            v4: if v4 {
                RangeSet::range(0, V4_MAX)
            } else {
                RangeSet::empty()
            },
            v6: if v6 {
                RangeSet::range(0, u128::MAX)
            } else {
                RangeSet::empty()
            },
        }
    }

    /// The addresses of `net/len`. An IPv4-mapped IPv6 prefix of length
    /// 96 or more is the IPv4 prefix it maps: the core checks an
    /// IPv4 peer of a dual-stack socket as IPv4. `len` must be in range
    /// and `net` must have no bits set past it (the parser checks both).
    pub fn prefix(net: IpAddr, len: u8) -> AddrSet {
        match net {
            IpAddr::V4(a) => {
                let bits = 32 - u32::from(len.min(32));
                let lo = u128::from(u32::from(a));
                let hi = lo | ((1u128 << bits) - 1);
                AddrSet {
                    v4: RangeSet::range(lo, hi),
                    v6: RangeSet::empty(),
                }
            }
            IpAddr::V6(a) => {
                if len >= 96 {
                    if let Some(v4) = a.to_ipv4_mapped() {
                        return AddrSet::prefix(IpAddr::V4(v4), len - 96);
                    }
                }
                let bits = 128 - u32::from(len.min(128));
                let lo = u128::from(a);
                let hi = if bits == 128 {
                    u128::MAX
                } else {
                    lo | ((1u128 << bits) - 1)
                };
                AddrSet {
                    v4: RangeSet::empty(),
                    v6: RangeSet::range(lo, hi),
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` (unmapped first) is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match unmap(ip) {
            IpAddr::V4(a) => self.v4.contains(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    pub fn union(&self, o: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.union(&o.v4),
            v6: self.v6.union(&o.v6),
        }
    }

    /// The union of many sets at once.
    pub fn union_all<'a>(sets: impl IntoIterator<Item = &'a AddrSet>) -> AddrSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for s in sets {
            v4.extend_from_slice(&s.v4.ranges);
            v6.extend_from_slice(&s.v6.ranges);
        }
        AddrSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        }
    }

    pub fn intersect(&self, o: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.intersect(&o.v4),
            v6: self.v6.intersect(&o.v6),
        }
    }

    pub fn difference(&self, o: &AddrSet) -> AddrSet {
        AddrSet {
            v4: self.v4.difference(&o.v4),
            v6: self.v6.difference(&o.v6),
        }
    }

    /// The set as the fewest CIDR prefixes, IPv4 first.
    pub fn prefixes(&self) -> Vec<(IpAddr, u8)> {
        let v4 = self.v4.prefixes(32).into_iter().map(|(n, l)| {
            // Every value of the IPv4 space fits 32 bits.
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            (IpAddr::V4(Ipv4Addr::from(n)), l)
        });
        let v6 = self
            .v6
            .prefixes(128)
            .into_iter()
            .map(|(n, l)| (IpAddr::V6(Ipv6Addr::from(n)), l));
        v4.chain(v6).collect()
    }

    pub fn prefix_count(&self) -> usize {
        self.v4.prefix_count(32) + self.v6.prefix_count(128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn p(s: &str, len: u8) -> AddrSet {
        AddrSet::prefix(ip(s), len)
    }

    fn shown(set: &AddrSet) -> Vec<String> {
        set.prefixes()
            .into_iter()
            .map(|(n, l)| format!("{n}/{l}"))
            .collect()
    }

    #[test]
    fn prefixes_round_trip_and_merge() {
        assert_eq!(shown(&p("10.0.0.0", 8)), ["10.0.0.0/8"]);
        let two = p("10.0.0.0", 9).union(&p("10.128.0.0", 9));
        assert_eq!(shown(&two), ["10.0.0.0/8"], "adjacent halves merge");
        assert_eq!(shown(&AddrSet::all()), ["0.0.0.0/0", "::/0"]);
        assert_eq!(shown(&p("2001:db8::", 32)), ["2001:db8::/32"]);
        assert_eq!(shown(&p("192.0.2.7", 32)), ["192.0.2.7/32"]);
        assert!(AddrSet::empty().prefixes().is_empty());
    }

    #[test]
    fn difference_splits_into_the_fewest_prefixes() {
        let all4 = AddrSet::universe(true, false);
        let hole = all4.difference(&p("192.0.2.1", 32));
        // Everything but one address: one prefix per bit.
        assert_eq!(hole.prefix_count(), 32);
        assert!(!hole.contains(ip("192.0.2.1")));
        assert!(hole.contains(ip("192.0.2.0")));
        assert!(hole.contains(ip("192.0.2.2")));
        assert!(hole.contains(ip("0.0.0.0")));
        assert!(hole.contains(ip("255.255.255.255")));
        let back = hole.union(&p("192.0.2.1", 32));
        assert_eq!(back, all4);
        let lan = p("10.0.0.0", 8).difference(&p("10.1.0.0", 16));
        assert_eq!(
            shown(&lan),
            [
                "10.0.0.0/16",
                "10.2.0.0/15",
                "10.4.0.0/14",
                "10.8.0.0/13",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9"
            ]
        );
    }

    #[test]
    fn edges_of_the_address_space() {
        let all6 = AddrSet::universe(false, true);
        let top = p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128);
        let bottom = p("::", 128);
        let mid = all6.difference(&top).difference(&bottom);
        assert!(!mid.contains(ip("::")));
        assert!(!mid.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(mid.contains(ip("::1")));
        assert_eq!(mid.prefix_count(), 2 * 127);
        assert_eq!(mid.union(&top).union(&bottom), all6);
        let top4 = p("255.255.255.255", 32);
        assert_eq!(shown(&top4), ["255.255.255.255/32"]);
        assert_eq!(
            AddrSet::universe(true, false)
                .difference(&top4)
                .union(&top4),
            AddrSet::universe(true, false)
        );
    }

    #[test]
    fn intersection_and_contains() {
        let a = p("10.0.0.0", 8).union(&p("2001:db8::", 32));
        let b = p("10.1.0.0", 16).union(&p("192.0.2.0", 24));
        assert_eq!(shown(&a.intersect(&b)), ["10.1.0.0/16"]);
        assert!(a.contains(ip("2001:db8:1::5")));
        assert!(!a.contains(ip("2001:db9::5")));
        assert!(a.contains(ip("::ffff:10.2.3.4")), "mapped peers are IPv4");
        assert!(AddrSet::empty().intersect(&a).is_empty());
    }

    #[test]
    fn mapped_prefixes_are_ipv4() {
        assert_eq!(shown(&p("::ffff:192.0.2.0", 120)), ["192.0.2.0/24"]);
        assert_eq!(shown(&p("::ffff:192.0.2.9", 128)), ["192.0.2.9/32"]);
        // Shorter than the mapped space itself: an IPv6 prefix.
        assert_eq!(shown(&p("::", 80)), ["::/80"]);
    }
}
