//! Access lists: `hosts.allow` and `hosts.deny` compiled for each listener
//! of a parsed configuration (the parser and compiler are
//! [`crate::hosts`]).
//!
//! An entry's daemon name is what tcpd would see: the basename of its
//! argv[0], or the builtin's name. Each listener gets the list for its own
//! address families, as the core checks it after accept, before fork:
//!
//! * a nowait stream service on an internet socket gets its list;
//! * a dgram service (`wait`, and the dgram builtins) gets its list, which
//!   the core checks on the datagram that would start the server; what the
//!   server reads after that is not checked (as with tcpd), and its row
//!   says so;
//! * a wait stream service (the server accepts for itself) and a unix
//!   socket (whose clients have no address) cannot be checked: an access
//!   list for it that is not allow-all rejects the entry, never runs it
//!   unfiltered;
//! * a rule with a problem (an unsupported pattern, a malformed one) that
//!   could decide something for a listener rejects its entry, with the
//!   rule's FILE:LINE; where the server is tcpd itself, which reads the
//!   same files with their full language, the entry runs with no list in
//!   the core and a warning instead.
//!
//! Rejections are errors of the configuration (`inetctl check` fails and a
//! reload is all or nothing); problems in rules that decide nothing for any
//! configured listener are warnings.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use inetd_protocol::{Action, Bind, IpMode, SocketType, MAX_ACL_RULES};

use super::{Config, ConfigError, Diagnostic, Entry, RejectedEntry, Source, MAX_FILE};
use crate::hosts::{self, Blocked, Families, HostsFile, RuleRef, Verdict};

pub const DEFAULT_HOSTS_ALLOW: &str = "/etc/hosts.allow";
pub const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";

/// `--hosts-allow` and `--hosts-deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFiles {
    pub allow: PathBuf,
    pub deny: PathBuf,
}

impl Default for AccessFiles {
    fn default() -> Self {
        AccessFiles {
            allow: PathBuf::from(DEFAULT_HOSTS_ALLOW),
            deny: PathBuf::from(DEFAULT_HOSTS_DENY),
        }
    }
}

/// Reads one access file: a missing file is empty (as tcpd); any other
/// failure to read it is an error, never an empty list.
fn read_one(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let mut data = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
    if data.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE,
        });
    }
    Ok(data)
}

/// The text of both files, hosts.allow first, as [`parse`] takes them.
pub(crate) fn read_bytes(files: &AccessFiles) -> Result<[Vec<u8>; 2], ConfigError> {
    Ok([read_one(&files.allow)?, read_one(&files.deny)?])
}

/// Parses both files' text, as [`read`] gives them.
pub(crate) fn parse(files: &AccessFiles, text: &[Vec<u8>; 2]) -> Vec<HostsFile> {
    vec![
        hosts::parse(&files.allow.to_string_lossy(), &text[0], Verdict::Allow),
        hosts::parse(&files.deny.to_string_lossy(), &text[1], Verdict::Deny),
    ]
}

/// Reads and parses both files: hosts.allow first, as they are compiled.
pub fn read(files: &AccessFiles) -> Result<Vec<HostsFile>, ConfigError> {
    Ok(parse(files, &read_bytes(files)?))
}

/// The daemon name tcpd would see for an entry.
pub fn daemon_name(spec_action: &Action) -> String {
    match spec_action {
        Action::Builtin(b) => b.name().to_owned(),
        Action::Exec { path, argv } => {
            let arg0 = argv.first().unwrap_or(path);
            match arg0.rsplit('/').next() {
                Some(base) if !base.is_empty() => base.to_owned(),
                _ => arg0.clone(),
            }
        }
    }
}

/// Whether the server is tcpd, which checks the access files itself.
fn wrapped_by_tcpd(action: &Action) -> bool {
    matches!(action, Action::Exec { path, .. } if path.rsplit('/').next() == Some("tcpd"))
}

/// How the core can check a listener's clients.
enum Check {
    /// Every accepted connection.
    Each,
    /// The datagram that would start the server.
    FirstDatagram,
    /// Not at all, for this reason.
    Never(&'static str),
}

fn how_checked(e: &Entry) -> (Check, Families) {
    let spec = &e.spec;
    let families = match &spec.bind {
        Bind::Inet { mode, .. } => match mode {
            IpMode::V4 => Families::V4,
            IpMode::V6Only => Families::V6,
            IpMode::Dual => Families::Both,
        },
        Bind::Unix { .. } => Families::Both,
    };
    let check = match (&spec.bind, spec.socket_type, spec.wait) {
        (Bind::Unix { .. }, _, _) => Check::Never(
            "it listens on a unix socket, whose clients have no address to check",
        ),
        (_, SocketType::Dgram, _) => Check::FirstDatagram,
        (_, _, true) => Check::Never(
            "it is a wait stream service: the server accepts its connections itself, so the core never sees a client",
        ),
        _ => Check::Each,
    };
    (check, families)
}

fn at(files: &[HostsFile], r: RuleRef) -> String {
    format!(
        "{}:{}",
        files[r.file].name,
        files[r.file].rules.get(r.rule).map_or(0, |x| x.line)
    )
}

/// Compiles the access lists of every listener of `config` from `files`
/// (hosts.allow, then hosts.deny, as [`read`] gives them): sets each
/// spec's `acl`, rejects the entries whose list cannot be checked or
/// compiled, and adds the diagnostics of both files.
pub fn apply(config: &mut Config, files: &[HostsFile]) {
    // Rules that rejected an entry, and those left to tcpd, with the
    // daemons they did it for.
    let mut blocking: BTreeMap<RuleRef, BTreeSet<String>> = BTreeMap::new();
    let mut left_to_tcpd: BTreeMap<RuleRef, BTreeSet<String>> = BTreeMap::new();
    let mut used: BTreeSet<RuleRef> = BTreeSet::new();
    // (source, reason) of every rejected entry, first reason per source.
    let mut rejected: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut warned: BTreeSet<(String, u32, String)> = BTreeSet::new();
    let mut entry_warnings: Vec<Diagnostic> = Vec::new();
    let mut memo: BTreeMap<(Vec<u8>, Families), Result<hosts::Compiled, Blocked>> = BTreeMap::new();

    for e in &mut config.entries {
        let name = daemon_name(&e.spec.action);
        let (check, families) = how_checked(e);
        let key = (e.source.file.clone(), e.source.line);
        let mut warn = |e: &mut Entry, text: String| {
            e.warnings.push(text.clone());
            if warned.insert((key.0.clone(), key.1, text.clone())) {
                entry_warnings.push(Diagnostic::warning(&key.0, key.1, text));
            }
        };
        // Listeners to which the same rules apply, for the same families,
        // share their list: a large configuration compiles each once.
        let shared = (hosts::applicable(files, &name), families);
        let compiled = memo
            .entry(shared)
            .or_insert_with(|| hosts::compile(files, &name, families))
            .clone();
        match compiled {
            Err(Blocked::Rule { rule, problem }) => {
                if wrapped_by_tcpd(&e.spec.action) && !matches!(check, Check::Never(_)) {
                    left_to_tcpd.entry(rule).or_default().insert(name.clone());
                    warn(
                        e,
                        format!(
                            "no access list in the core: {} has a pattern it cannot check ({problem}); tcpd, the server, checks {name}'s clients itself",
                            at(files, rule)
                        ),
                    );
                    continue;
                }
                blocking.entry(rule).or_default().insert(name.clone());
                rejected.entry(key).or_insert_with(|| {
                    format!(
                        "the access list for {name:?} cannot be checked faithfully: {}: {problem}",
                        at(files, rule)
                    )
                });
            }
            Err(Blocked::TooLarge { rules }) => {
                rejected.entry(key).or_insert_with(|| {
                    format!(
                        "the access list for {name:?} compiles to {rules} address rules, more than the {MAX_ACL_RULES} the core accepts"
                    )
                });
            }
            Ok(c) => {
                used.extend(c.used.iter().copied());
                let Some(acl) = c.acl else { continue };
                match check {
                    Check::Each => e.spec.acl = Some(acl),
                    Check::FirstDatagram => {
                        e.spec.acl = Some(acl);
                        warn(
                            e,
                            "the access list is checked on the datagram that starts the server only: what the server reads after it is not checked (as with tcpd)"
                                .to_owned(),
                        );
                    }
                    Check::Never(why) => {
                        let rule = c.first_deny.map(|r| at(files, r)).unwrap_or_default();
                        rejected.entry(key).or_insert_with(|| {
                            format!(
                                "an access list applies to {name:?} ({rule} refuses some clients) but {why}; it is never run unfiltered: allow all its clients (\"{name}: ALL\" in hosts.allow) to serve it"
                            )
                        });
                    }
                }
            }
        }
    }

    let mut entry_diags: Vec<Diagnostic> = Vec::new();
    // Entries rejected: one error per entry (its listeners share it), and
    // the entries move to the rejected list with everything they parsed.
    // Usually none is: the entries then stay where they are rather than
    // being moved, one by one, into a second list as long.
    let entries = if rejected.is_empty() {
        Vec::new()
    } else {
        let n = config.entries.len();
        std::mem::replace(&mut config.entries, Vec::with_capacity(n))
    };
    let mut reported: BTreeSet<(String, u32)> = BTreeSet::new();
    for e in entries {
        let key = (e.source.file.clone(), e.source.line);
        match rejected.get(&key) {
            None => config.entries.push(e),
            Some(reason) => {
                if reported.insert(key.clone()) {
                    entry_diags.push(Diagnostic::error(&key.0, key.1, reason.clone()));
                }
                config.rejected.push(RejectedEntry {
                    source: Source {
                        file: key.0,
                        line: key.1,
                    },
                    service: e.service.clone(),
                    protocol: e.protocol.clone(),
                    reason: reason.clone(),
                    entry: Some(Box::new(e)),
                });
            }
        }
    }
    entry_warnings.retain(|d| !rejected.contains_key(&(d.file.clone(), d.line)));
    entry_diags.extend(entry_warnings);

    // The access files' own diagnostics, in file and line order.
    let mut file_diags: Vec<Diagnostic> = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let mut mine: Vec<Diagnostic> = f
            .notes
            .iter()
            .map(|(line, note)| Diagnostic::warning(&f.name, *line, note.clone()))
            .collect();
        for (ri, r) in f.rules.iter().enumerate() {
            let rule = RuleRef { file: fi, rule: ri };
            if let Some(problem) = r.first_problem() {
                let d = if let Some(names) = blocking.get(&rule) {
                    Diagnostic::error(
                        &f.name,
                        r.line,
                        format!("{problem}; rejects {}", list(names)),
                    )
                } else if let Some(names) = left_to_tcpd.get(&rule) {
                    Diagnostic::warning(
                        &f.name,
                        r.line,
                        format!("{problem}; left to tcpd for {}", list(names)),
                    )
                } else {
                    Diagnostic::warning(
                        &f.name,
                        r.line,
                        format!("{problem} (it decides nothing for the services configured here)"),
                    )
                };
                mine.push(d);
            }
            if used.contains(&rule) {
                for n in &r.notes {
                    mine.push(Diagnostic::warning(&f.name, r.line, n.clone()));
                }
            }
        }
        mine.sort_by_key(|d| d.line);
        file_diags.extend(mine);
    }

    // The configuration's own diagnostics stay as they are; an entry's go
    // to its place among them (files as read, then lines), the access
    // files' after them all.
    let rank: BTreeMap<String, usize> = config
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.to_string_lossy().into_owned(), i))
        .collect();
    let key = |d: &Diagnostic| rank.get(&d.file).map(|r| (*r, d.line));
    for d in entry_diags {
        let k = key(&d).unwrap_or((usize::MAX, d.line));
        let pos = config
            .diagnostics
            .iter()
            .position(|x| key(x).is_some_and(|xk| xk > k))
            .unwrap_or(config.diagnostics.len());
        config.diagnostics.insert(pos, d);
    }
    config.diagnostics.extend(file_diags);
}

fn list(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}
