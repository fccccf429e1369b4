//! tcpwrappers access files, `hosts.allow` and `hosts.deny` in the format of
//! hosts_access(5): the parser, and the compiler that turns them into the
//! address lists the core checks after accept, before fork.
//!
//! Pure: bytes in, rules and notes out; no files, no names, no clock.
//!
//! What is read, as tcpd reads it:
//!
//! * one rule per logical line, `daemon_list : client_list [ : options ]`;
//!   a line ending in a backslash continues on the next one (before
//!   comments are recognised, as in tcpd); a line whose first character is
//!   `#` is a comment; blank lines are skipped;
//! * lists are separated by commas, spaces and tabs; `ALL` and `EXCEPT` in
//!   either list, nested right to left (`a EXCEPT b EXCEPT c` is
//!   `a \ (b \ c)`); keywords and daemon names compare without case;
//!   a colon inside `[...]` does not separate fields;
//! * daemon patterns: a process name (`in.fingerd`), `ALL`, `.suffix`,
//!   `prefix.`, and `*`/`?` wildcards; `daemon@host` is unsupported (it
//!   needs the server's address per connection);
//! * client patterns: `ALL`, IPv4 addresses, `[IPv6]` addresses, `n.n.n.`
//!   prefixes, `a.b.c.d/nn`, `a.b.c.d/m.m.m.m` (a contiguous mask),
//!   `[v6]/len`; addresses compare as addresses, and an IPv4-mapped IPv6
//!   pattern is its IPv4 address;
//! * patterns that need a host name, an ident lookup or a netgroup
//!   (`LOCAL`, `KNOWN`, `UNKNOWN`, `PARANOID`, names, `.domain`, `name.`,
//!   `user@host`, `@netgroup`), wildcards in client patterns and `%`
//!   expansions are unsupported; so are patterns tcpd itself never matches
//!   (`10.1`, a net/mask with host bits set): each is a [`Problem`] of its
//!   rule. A rule with a problem is never compiled into anything: a
//!   service it applies to is rejected (see [`compile`]);
//! * options after a second colon (hosts_options(5)): `allow` and `deny`
//!   decide the rule's verdict; `twist` refuses the client (the real server
//!   never runs under tcpd either) without running its command; `spawn`,
//!   `severity`, `setenv`, `umask`, `user`, `nice`, `keepalive`, `linger`,
//!   `rfc931` and `banners` are ignored with a note; anything else, or
//!   `allow`/`deny` not last, makes tcpd refuse the client, and so the rule
//!   refuses.
#![forbid(unsafe_code)]

pub mod addrset;
mod compile;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use addrset::AddrSet;
pub use compile::{
    acl_allows, applicable, compile, evaluate, Blocked, Compiled, Families, RuleRef,
};

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// One access file, parsed.
#[derive(Debug, Clone, Default)]
pub struct HostsFile {
    /// The file's name as given (for `FILE:LINE`).
    pub name: String,
    pub rules: Vec<Rule>,
    /// Remarks about the file that are not a rule's (a comment continued by
    /// a trailing backslash, a last line without a newline).
    pub notes: Vec<(u32, String)>,
}

/// A list of patterns with `EXCEPT`: it matches when one of `items` does
/// and `except` (itself such a list) does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T> {
    pub items: Vec<T>,
    pub except: Option<Box<List<T>>>,
}

/// A daemon pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonPattern {
    /// `ALL` (and `KNOWN`, which matches every daemon name).
    All,
    /// A name, compared without case; `*` and `?` are wildcards.
    Name(String),
    /// `.suffix`: names ending with it (and longer).
    Suffix(String),
    /// `prefix.`: names starting with it.
    Prefix(String),
    /// `daemon@host`: may match where `daemon` does, but cannot be checked.
    Unsupported {
        daemon: Box<DaemonPattern>,
        why: String,
    },
}

/// A client pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPattern {
    /// The addresses it matches (`ALL` is every address).
    Addrs(AddrSet),
    /// Cannot be compiled into addresses: why, for the diagnostic.
    Problem(String),
}

/// One rule: `daemons : clients [: options]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Where the logical line starts, from 1.
    pub line: u32,
    pub daemons: List<DaemonPattern>,
    pub clients: List<ClientPattern>,
    /// The verdict when it matches: the file's, or its options'.
    pub verdict: Verdict,
    /// A problem of the whole rule (no `:` separator).
    pub problem: Option<String>,
    /// Remarks that matter where the rule applies (ignored options, a
    /// refusal they force, an empty client list).
    pub notes: Vec<String>,
}

/// Why a rule cannot be compiled: its own problem, or its first client
/// pattern that cannot be, or a daemon pattern that cannot be checked.
pub type Problem = String;

impl Rule {
    /// The rule's first problem, if any: the rule itself, then its client
    /// patterns (`EXCEPT` lists included), then its daemon patterns.
    pub fn first_problem(&self) -> Option<Problem> {
        if let Some(p) = &self.problem {
            return Some(p.clone());
        }
        let mut list = Some(&self.clients);
        while let Some(l) = list {
            for c in &l.items {
                if let ClientPattern::Problem(p) = c {
                    return Some(p.clone());
                }
            }
            list = l.except.as_deref();
        }
        let mut list = Some(&self.daemons);
        while let Some(l) = list {
            for d in &l.items {
                if let DaemonPattern::Unsupported { why, .. } = d {
                    return Some(why.clone());
                }
            }
            list = l.except.as_deref();
        }
        None
    }
}

/// Separators of daemon and client lists (tcpd's `sep`).
fn is_sep(c: char) -> bool {
    matches!(c, ',' | ' ' | '\t' | '\r' | '\n')
}

/// Text with the line it is at (from 1).
type Lines = Vec<(u32, String)>;

/// Logical lines: `(first physical line, text)`, backslash-newline joined.
/// Also returns the notes about how the lines were joined.
fn logical_lines(text: &str) -> (Lines, Lines) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut pending: Option<(u32, String)> = None;
    let mut physical = text.split('\n').peekable();
    let mut n: u32 = 0;
    while let Some(line) = physical.next() {
        n = n.saturating_add(1);
        let last = physical.peek().is_none();
        if last && line.is_empty() {
            // The text ended with a newline: nothing after it.
            break;
        }
        let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
        if let Some(body) = line.strip_suffix('\\').filter(|_| !last) {
            acc.push_str(body);
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        if last && !acc.starts_with('#') && !acc.chars().all(is_sep) {
            notes.push((
                n,
                "the last line has no newline: tcpd skips such a line, this rule is read anyway"
                    .to_owned(),
            ));
        }
        if acc.starts_with('#') && start != n {
            notes.push((
                start,
                format!(
                    "the comment continues to line {n} (a trailing backslash joins lines, comments included, as in tcpd)"
                ),
            ));
        }
        out.push((start, acc));
    }
    if let Some((start, acc)) = pending {
        // A backslash on the last line continues into nothing.
        out.push((start, acc));
    }
    (out, notes)
}

/// Splits at the first `delim` outside `[...]` (tcpd's `split_at`).
fn split_at(s: &str, delim: char) -> Option<(&str, &str)> {
    let mut depth: i32 = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            // A stray `]` does not hide the separators after it.
            ']' => depth = (depth - 1).max(0),
            c if c == delim && depth == 0 => return Some((&s[..i], &s[i + c.len_utf8()..])),
            _ => {}
        }
    }
    None
}

/// Tokens of a list, `[...]` around a whole token removed (as tcpd's
/// `list_match` does), split into the list and its `EXCEPT` parts.
///
/// Lists nest once per `EXCEPT`; past [`MAX_EXCEPT`] the rest of the list is
/// dropped and the second value is true (a problem of the rule), so no
/// input can make the recursion over a list deep.
fn parse_list<T>(text: &str, item: &dyn Fn(&str) -> T) -> (List<T>, bool) {
    let mut tokens: Vec<&str> = text.split(is_sep).filter(|t| !t.is_empty()).collect();
    let mut excepts = 0;
    let cut = tokens.iter().position(|t| {
        if t.eq_ignore_ascii_case("EXCEPT") {
            excepts += 1;
        }
        excepts > MAX_EXCEPT
    });
    if let Some(i) = cut {
        tokens.truncate(i);
    }
    (build_list(&tokens, item), cut.is_some())
}

/// Most `EXCEPT`s in one list. Real files use one or two.
pub const MAX_EXCEPT: usize = 32;

fn build_list<T>(tokens: &[&str], item: &dyn Fn(&str) -> T) -> List<T> {
    let split = tokens.iter().position(|t| t.eq_ignore_ascii_case("EXCEPT"));
    let (mine, rest) = match split {
        Some(i) => (&tokens[..i], Some(&tokens[i + 1..])),
        None => (tokens, None),
    };
    List {
        items: mine
            .iter()
            .map(|t| {
                let t = t
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(t);
                item(t)
            })
            .collect(),
        except: rest.map(|r| Box::new(build_list(r, item))),
    }
}

fn daemon_pattern(tok: &str) -> DaemonPattern {
    // As tcpd: an `@` after the first character makes `daemon@host`.
    if let Some(i) = tok.get(1..).and_then(|t| t.find('@')) {
        let daemon = &tok[..=i];
        return DaemonPattern::Unsupported {
            daemon: Box::new(daemon_pattern(daemon)),
            why: format!(
                "daemon pattern {tok:?}: daemon@host patterns are unsupported (they need the server address of each connection)"
            ),
        };
    }
    let lower = tok.to_ascii_lowercase();
    if lower == "all" || lower == "known" {
        DaemonPattern::All
    } else if lower.contains(['*', '?']) {
        DaemonPattern::Name(lower)
    } else if lower.starts_with('.') {
        DaemonPattern::Suffix(lower)
    } else if lower.ends_with('.') {
        DaemonPattern::Prefix(lower)
    } else {
        DaemonPattern::Name(lower)
    }
}

/// `*` and `?` wildcards, without case (bytes: daemon names are ASCII in
/// practice, and a non-ASCII one simply compares byte by byte).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

impl DaemonPattern {
    /// Whether the pattern matches `name`, as tcpd's `string_match`:
    /// `Some(true)`, `Some(false)`, or `None` when it cannot be told.
    pub fn matches(&self, name: &str) -> Option<bool> {
        self.matches_lowercase(&name.to_ascii_lowercase())
    }

    /// [`DaemonPattern::matches`] for a name already in lowercase.
    pub fn matches_lowercase(&self, name: &str) -> Option<bool> {
        Some(match self {
            DaemonPattern::All => true,
            DaemonPattern::Name(p) if p.contains(['*', '?']) => glob(p, name),
            DaemonPattern::Name(p) => *p == name,
            DaemonPattern::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            DaemonPattern::Prefix(p) => name.starts_with(p.as_str()),
            DaemonPattern::Unsupported { daemon, .. } => {
                return match daemon.matches_lowercase(name) {
                    Some(false) => Some(false),
                    _ => None,
                }
            }
        })
    }
}

/// Parses a dotted quad strictly (four decimal octets).
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// A netmask or a prefix length for a network of `bits` bits.
fn mask_len(mask: &str, v4: bool) -> Result<u8, String> {
    if !mask.is_empty() && mask.bytes().all(|b| b.is_ascii_digit()) {
        let max = if v4 { 32 } else { 128 };
        return match mask.parse::<u32>() {
            Ok(n) if n <= max => Ok(n as u8),
            _ => Err(format!("a prefix length of at most {max}")),
        };
    }
    if v4 {
        if let Some(m) = dotted_quad(mask) {
            let m = u32::from(m);
            // Contiguous: ones then zeros.
            if m.leading_ones() + m.trailing_zeros() == 32 {
                return Ok(m.leading_ones() as u8);
            }
            return Err(
                "a contiguous netmask (a non-contiguous one cannot be written as a prefix, unsupported)"
                    .to_owned(),
            );
        }
    }
    Err(if v4 {
        "a netmask (m.m.m.m) or a prefix length".to_owned()
    } else {
        "a prefix length".to_owned()
    })
}

fn client_pattern(tok: &str) -> ClientPattern {
    let unsupported = |why: &str| ClientPattern::Problem(format!("client pattern {tok:?}: {why}"));
    let lower = tok.to_ascii_lowercase();
    if tok.starts_with('@') {
        return unsupported("netgroups are unsupported (they need host names)");
    }
    if tok.get(1..).is_some_and(|t| t.contains('@')) {
        return unsupported("user@host patterns are unsupported (they need an ident lookup)");
    }
    if tok.contains('%') {
        return unsupported("% expansions are unsupported");
    }
    match lower.as_str() {
        "all" => return ClientPattern::Addrs(AddrSet::all()),
        "local" | "known" | "unknown" | "paranoid" => {
            return unsupported(&format!(
                "{} needs host names, which are not looked up: unsupported",
                tok.to_ascii_uppercase()
            ))
        }
        _ => {}
    }
    if let Some((net, mask)) = split_at(tok, '/') {
        return net_mask(tok, net, mask);
    }
    if tok.contains(['*', '?']) {
        return unsupported("wildcards are unsupported (write a prefix or net/len)");
    }
    if tok.starts_with('.') {
        return unsupported("a domain pattern needs host names: unsupported");
    }
    let address_like = tok.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if let Some(prefix) = tok.strip_suffix('.') {
        if !address_like {
            return unsupported("a host name prefix needs host names: unsupported");
        }
        let octets: Vec<&str> = prefix.split('.').collect();
        let parsed: Option<Vec<u8>> = octets
            .iter()
            .map(|o| {
                if o.is_empty() || o.len() > 3 {
                    None
                } else {
                    o.parse::<u8>().ok()
                }
            })
            .collect();
        return match parsed {
            Some(v) if (1..=3).contains(&v.len()) => {
                let mut a = [0u8; 4];
                a[..v.len()].copy_from_slice(&v);
                ClientPattern::Addrs(AddrSet::prefix(
                    IpAddr::V4(Ipv4Addr::from(a)),
                    (v.len() * 8) as u8,
                ))
            }
            _ => unsupported(
                "an address prefix is one to three octets and a dot (10. or 192.168.1.); tcpd never matches this",
            ),
        };
    }
    if let Some(a) = dotted_quad(tok) {
        return ClientPattern::Addrs(AddrSet::prefix(IpAddr::V4(a), 32));
    }
    if let Ok(a) = tok.parse::<Ipv6Addr>() {
        return ClientPattern::Addrs(AddrSet::prefix(IpAddr::V6(a), 128));
    }
    if address_like {
        return unsupported(
            "not a complete address (tcpd never matches it; a prefix ends with a dot)",
        );
    }
    if tok.contains(':') {
        return unsupported("not an IPv6 address");
    }
    unsupported("a host name needs name lookups, which are not done: unsupported")
}

fn net_mask(tok: &str, net: &str, mask: &str) -> ClientPattern {
    let bad = |why: String| ClientPattern::Problem(format!("client pattern {tok:?}: {why}"));
    let bare = net
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(net);
    // `[v6]/len` as hosts_access(5) writes it; `[v6/len]` arrives here
    // without its brackets (the list strips them) and means the same.
    let addr: IpAddr = if let Some(a) = dotted_quad(bare) {
        IpAddr::V4(a)
    } else if let Ok(a) = bare.parse::<Ipv6Addr>() {
        IpAddr::V6(a)
    } else {
        return bad("the network is not an address (net/mask needs a.b.c.d or [IPv6])".to_owned());
    };
    let len = match mask_len(mask, addr.is_ipv4()) {
        Ok(l) => l,
        Err(expected) => return bad(format!("expected {expected} after the /")),
    };
    let host_bits = match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u32::from(a) & m != 0
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u128::from(a) & m != 0
        }
    };
    if host_bits {
        return bad(format!(
            "host bits are set past /{len}: tcpd never matches such a pattern (write the network address)"
        ));
    }
    ClientPattern::Addrs(AddrSet::prefix(addr, len))
}

/// Splits options at colons not escaped by a backslash.
fn split_options(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&':') => {
                cur.push(':');
                chars.next();
            }
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The verdict of a rule with `options`, and remarks about them.
fn options_verdict(text: &str, default: Verdict) -> (Verdict, Vec<String>) {
    let mut notes = Vec::new();
    if text.trim().is_empty() {
        return (default, notes);
    }
    // Empty options (a trailing colon, `::`) say nothing.
    let opts: Vec<String> = split_options(text)
        .into_iter()
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if opts.is_empty() {
        return (default, notes);
    }
    let mut verdict = default;
    let mut refuse: Option<String> = None;
    let mut ignored: Vec<String> = Vec::new();
    let last = opts.len() - 1;
    for (i, opt) in opts.iter().enumerate() {
        let keyword = opt
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match keyword.as_str() {
            "allow" | "deny" if opt.len() == keyword.len() => {
                if i == last {
                    verdict = if keyword == "allow" {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    };
                } else {
                    refuse.get_or_insert(format!(
                        "option {keyword:?} is not the last one: tcpd refuses the client"
                    ));
                }
            }
            "twist" => {
                refuse.get_or_insert(
                    "option \"twist\": the client is refused and the twist command is not run (tcpd would run it instead of the server)"
                        .to_owned(),
                );
            }
            "spawn" | "severity" | "setenv" | "umask" | "user" | "nice" | "keepalive"
            | "linger" | "rfc931" | "banners" => ignored.push(keyword),
            _ => {
                let shown: String = opt.chars().take(40).collect();
                refuse.get_or_insert(format!(
                    "option {shown:?} is not one tcpd knows: tcpd refuses the client"
                ));
            }
        }
    }
    if !ignored.is_empty() {
        notes.push(format!(
            "options ignored (only allow, deny and twist change what is decided): {}",
            ignored.join(", ")
        ));
    }
    if let Some(r) = refuse {
        verdict = Verdict::Deny;
        notes.push(r);
    }
    (verdict, notes)
}

/// Parses one access file. `default` is the verdict of its rules:
/// [`Verdict::Allow`] for `hosts.allow`, [`Verdict::Deny`] for
/// `hosts.deny`. Never fails: every problem is in the result.
pub fn parse(name: &str, data: &[u8], default: Verdict) -> HostsFile {
    let text = String::from_utf8_lossy(data);
    let (lines, mut file_notes) = logical_lines(&text);
    let mut rules = Vec::new();
    for (line, l) in lines {
        if l.starts_with('#') || l.chars().all(is_sep) {
            continue;
        }
        let (daemons_text, rest) = match split_at(&l, ':') {
            Some(x) => x,
            None => {
                rules.push(Rule {
                    line,
                    daemons: parse_list(&l, &daemon_pattern).0,
                    clients: List {
                        items: vec![],
                        except: None,
                    },
                    verdict: default,
                    problem: Some(
                        "no \":\" between the daemon list and the client list (tcpd skips the line)"
                            .to_owned(),
                    ),
                    notes: vec![],
                });
                continue;
            }
        };
        let (clients_text, options) = match split_at(rest, ':') {
            Some((c, o)) => (c, o),
            None => (rest, ""),
        };
        let (verdict, mut notes) = options_verdict(options, default);
        let (daemons, deep_d) = parse_list(daemons_text, &daemon_pattern);
        let (clients, deep_c) = parse_list(clients_text, &client_pattern);
        let problem =
            (deep_d || deep_c).then(|| format!("more than {MAX_EXCEPT} EXCEPTs in one list"));
        if daemons.items.is_empty() {
            file_notes.push((
                line,
                "the daemon list is empty: the rule matches nothing".to_owned(),
            ));
        }
        if clients.items.is_empty() {
            notes.push("the client list is empty: the rule matches nothing".to_owned());
        }
        rules.push(Rule {
            line,
            daemons,
            clients,
            verdict,
            problem,
            notes,
        });
    }
    file_notes.sort_by_key(|(line, _)| *line);
    HostsFile {
        name: name.to_owned(),
        rules,
        notes: file_notes,
    }
}

#[cfg(test)]
mod tests;
