//! Compiles `hosts.allow` and `hosts.deny` for one daemon name into the
//! address list the core checks.
//!
//! tcpd's decision for a client is: the first matching rule of hosts.allow,
//! then of hosts.deny, decides (by its file, or by its `allow`/`deny`
//! option); no match allows. Walking the rules in that order over sets of
//! addresses gives the exact set of clients denied, which becomes a list of
//! prefixes (or of its complement, whichever is shorter). A rule with a
//! problem that could decide something for this daemon makes the whole
//! compilation fail: an access list that cannot be compiled faithfully is
//! never turned into something looser, or stricter, than tcpd's.

use std::net::IpAddr;

use inetd_protocol::{Acl, AclRule, MAX_ACL_RULES};

use super::addrset::AddrSet;
use super::{ClientPattern, DaemonPattern, HostsFile, List, Problem, Rule, Verdict};

/// Which peers a listener can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Families {
    V4,
    V6,
    /// A dual-stack socket, or a listener with no address at all (a unix
    /// socket), for which every rule that could apply counts.
    Both,
}

/// A rule: which file (index into the files compiled), which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub file: usize,
    pub rule: usize,
}

/// A compiled access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// `None` when every client is allowed.
    pub acl: Option<Acl>,
    /// Every client denied.
    pub denied: AddrSet,
    /// The rules that decided something, in order.
    pub used: Vec<RuleRef>,
    /// The first rule that denied a client.
    pub first_deny: Option<RuleRef>,
}

/// Why an access list cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// A rule that may apply to this daemon has a problem.
    Rule { rule: RuleRef, problem: Problem },
    /// The list would need more rules than the core accepts.
    TooLarge { rules: usize },
}

/// Whether a daemon list matches `name`: `None` when a pattern that cannot
/// be checked decides it.
pub fn daemon_list_matches(l: &List<DaemonPattern>, name: &str) -> Option<bool> {
    list_matches_lowercase(l, &name.to_ascii_lowercase())
}

fn list_matches_lowercase(l: &List<DaemonPattern>, name: &str) -> Option<bool> {
    let mut base = Some(false);
    for item in &l.items {
        match item.matches_lowercase(name) {
            Some(true) => {
                base = Some(true);
                break;
            }
            None => base = None,
            Some(false) => {}
        }
    }
    if base == Some(false) {
        return Some(false);
    }
    let except = match &l.except {
        None => Some(false),
        Some(e) => list_matches_lowercase(e, name),
    };
    match (base, except) {
        (_, Some(true)) => Some(false),
        (Some(true), Some(false)) => Some(true),
        _ => None,
    }
}

/// How every rule of `files` applies to the daemon `name`, one byte per
/// rule (0 no, 1 yes, 2 cannot be told): two names with the same bytes get
/// the same compiled list.
pub fn applicable(files: &[HostsFile], name: &str) -> Vec<u8> {
    files
        .iter()
        .flat_map(|f| f.rules.iter())
        .map(|r| match daemon_list_matches(&r.daemons, name) {
            Some(false) => 0,
            Some(true) => 1,
            None => 2,
        })
        .collect()
}

/// The clients a list matches, or the first problem in it.
pub fn client_set(l: &List<ClientPattern>) -> Result<AddrSet, Problem> {
    let mut sets = Vec::with_capacity(l.items.len());
    for item in &l.items {
        match item {
            ClientPattern::Addrs(a) => sets.push(a),
            ClientPattern::Problem(p) => return Err(p.clone()),
        }
    }
    // One sort for the whole list: a long list costs n log n, not n².
    let mut set = AddrSet::union_all(sets);
    if let Some(e) = &l.except {
        set = set.difference(&client_set(e)?);
    }
    Ok(set)
}

fn rule_set(r: &Rule) -> Result<AddrSet, Problem> {
    match &r.problem {
        Some(p) => Err(p.clone()),
        None => client_set(&r.clients),
    }
}

/// Compiles `files` (hosts.allow first, then hosts.deny) for the daemon
/// `name`, for a listener whose peers are of `families`.
pub fn compile(files: &[HostsFile], name: &str, families: Families) -> Result<Compiled, Blocked> {
    let universe = match families {
        Families::V4 => AddrSet::universe(true, false),
        Families::V6 => AddrSet::universe(false, true),
        Families::Both => AddrSet::all(),
    };
    let mut remaining = universe.clone();
    let mut denied = AddrSet::empty();
    let mut used = Vec::new();
    let mut first_deny = None;
    'files: for (fi, f) in files.iter().enumerate() {
        for (ri, r) in f.rules.iter().enumerate() {
            if remaining.is_empty() {
                // Every client is decided: later rules cannot matter.
                break 'files;
            }
            let rule = RuleRef { file: fi, rule: ri };
            let daemon = daemon_list_matches(&r.daemons, name);
            if daemon == Some(false) {
                continue;
            }
            let set = match (daemon, rule_set(r)) {
                (Some(true), Ok(s)) => s,
                (None, Ok(s)) if s.intersect(&remaining).is_empty() => continue,
                _ => {
                    return Err(Blocked::Rule {
                        rule,
                        problem: r.first_problem().unwrap_or_default(),
                    })
                }
            };
            let hit = set.intersect(&remaining);
            if hit.is_empty() {
                continue;
            }
            used.push(rule);
            if r.verdict == Verdict::Deny {
                denied = denied.union(&hit);
                first_deny.get_or_insert(rule);
            }
            remaining = remaining.difference(&hit);
        }
    }
    let acl = if denied.is_empty() {
        None
    } else {
        let allowed = universe.difference(&denied);
        let (deny_n, allow_n) = (denied.prefix_count(), allowed.prefix_count());
        // Whichever is shorter: the denied prefixes with everything else
        // allowed, or the allowed ones with everything else denied. Peers of
        // a family the listener cannot have never reach either.
        let (set, allow) = if allow_n < deny_n {
            (&allowed, true)
        } else {
            (&denied, false)
        };
        let rules: Vec<AclRule> = set
            .prefixes()
            .into_iter()
            .map(|(addr, prefix)| AclRule {
                addr,
                prefix,
                allow,
            })
            .collect();
        if rules.len() > MAX_ACL_RULES {
            return Err(Blocked::TooLarge { rules: rules.len() });
        }
        Some(Acl {
            rules,
            default_allow: !allow,
        })
    };
    Ok(Compiled {
        acl,
        denied,
        used,
        first_deny,
    })
}

/// Whether an access list admits `peer`, as the core decides: the first
/// rule whose prefix holds the (unmapped) peer decides; `None` allows all.
pub fn acl_allows(acl: Option<&Acl>, peer: IpAddr) -> bool {
    let Some(acl) = acl else { return true };
    let peer = super::addrset::unmap(peer);
    for r in &acl.rules {
        let within = match (r.addr, peer) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(r.prefix.min(32)));
                let mask = mask.unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(r.prefix.min(128)));
                let mask = mask.unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        };
        if within {
            return r.allow;
        }
    }
    acl.default_allow
}

/// Whether a client list matches `peer`, as tcpd's `list_match`: `None`
/// when a pattern that cannot be checked comes before the decision.
fn client_list_matches(l: &List<ClientPattern>, peer: IpAddr) -> Option<bool> {
    let mut matched = false;
    for item in &l.items {
        match item {
            ClientPattern::Addrs(a) if a.contains(peer) => {
                matched = true;
                break;
            }
            ClientPattern::Addrs(_) => {}
            ClientPattern::Problem(_) => return None,
        }
    }
    if !matched {
        return Some(false);
    }
    match &l.except {
        None => Some(true),
        Some(e) => client_list_matches(e, peer).map(|m| !m),
    }
}

/// tcpd's decision for one client, rule by rule, without sets: `None` when
/// it cannot be told. The reference the compiler is tested against.
pub fn evaluate(files: &[HostsFile], name: &str, peer: IpAddr) -> Option<bool> {
    for f in files {
        for r in &f.rules {
            let daemon = daemon_list_matches(&r.daemons, name);
            if daemon == Some(false) {
                continue;
            }
            if r.problem.is_some() {
                return None;
            }
            match (daemon, client_list_matches(&r.clients, peer)?) {
                (_, false) => continue,
                (None, true) => return None,
                (_, true) => return Some(r.verdict == Verdict::Allow),
            }
        }
    }
    Some(true)
}
