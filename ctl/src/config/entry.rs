//! One entry, field by field: syntax, names, and the listeners it gives.
//!
//! Fields are checked in this order, and the first problem is the entry's
//! one error: the field count, socket-type (2), protocol (3, including
//! whether it fits the socket type), service and address (1, which needs
//! the protocol to be read), wait (4), user (5), server (6), arguments (7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Component, Path};

use inetd_protocol::{
    Action, Bind, Builtin, Credentials, IpMode, Limits, ListenerSpec, SocketType, MAX_ARGS,
    MAX_ARG_LEN, MAX_GROUPS, MAX_PATH, MAX_UNIX_PATH,
};

use super::lexer::Record;
use super::names::{Names, Service};
use super::{Diagnostic, Entry, Label, LoadOptions, Source};

/// What a file has set with `addr:` lines so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileState {
    default: DefaultAddr,
}

#[derive(Debug, Clone, Default)]
enum DefaultAddr {
    /// `*`, the start of every file and what `*:` resets to.
    #[default]
    Any,
    /// An `addr:` line that resolved.
    Hosts {
        line: u32,
        text: String,
        hosts: Vec<Host>,
    },
    /// An `addr:` line that did not: every entry that would use it is an
    /// error, so that a typo never widens a service to every address.
    Bad { line: u32 },
}

/// One item of an address list.
#[derive(Debug, Clone)]
enum Host {
    Any,
    Ip(IpAddr),
    /// A host name and what it resolved to.
    Name(String, Vec<IpAddr>),
}

pub(crate) enum Outcome {
    /// A default address line that was fine.
    None,
    /// A problem that is not an entry's (a bad `addr:` line).
    Error(Diagnostic),
    Parsed(Parsed),
}

/// An entry, good or bad, before bind keys are checked across files.
pub(crate) struct Parsed {
    /// Where the entry starts in the file `file_index`, from 1.
    pub line: u32,
    pub file_index: usize,
    /// Field 1 and field 3 as written. A good entry leaves them out: they
    /// are needed only if it is rejected later (an overlap, too many
    /// listeners), and are then read again from the text; kept for every
    /// entry, they were three strings each (with the file name) alive
    /// until the end of the load, between the configuration's own. Boxed,
    /// so that the list of parsed entries, grown while a reload builds a
    /// configuration beside the one in effect, is 40 bytes an entry less.
    pub written: Option<Box<(String, String)>>,
    pub warnings: Vec<String>,
    /// Where its listeners are in the load's [`Pool`], or the entry's one
    /// error message.
    pub result: Result<Range<usize>, String>,
}

/// The listeners of every entry of a load, in file order, parsed straight
/// into the vector that becomes the configuration's entries: no entry has
/// a vector of its own to be moved out of at the end, so a load holds one
/// copy of each listener, not two (with 10,000 entries, 4 MB less at the
/// peak of a reload, while the configuration in effect is still alive).
#[derive(Default)]
pub(crate) struct Pool {
    pub entries: Vec<Entry>,
    /// Per listener: the IPv4 or IPv6 half of a `*` `tcp`/`udp` entry: an
    /// explicit `tcp4`/`tcp6` entry with the same bind key takes it over.
    pub plain: Vec<bool>,
    /// Per listener: `false` once the other entry of a `tcp`/`tcp6` twin
    /// took this half.
    pub live: Vec<bool>,
}

impl Pool {
    /// The listeners in `range` still their entry's.
    pub fn live_in(&self, range: &Range<usize>) -> usize {
        self.live[range.clone()].iter().filter(|l| **l).count()
    }

    /// The listeners of the entries `parsed` keeps (live, of an entry that
    /// is not rejected), in order, in the same vector, without spare room.
    pub fn into_entries(self, parsed: &[Parsed]) -> Vec<Entry> {
        let Pool {
            mut entries, live, ..
        } = self;
        let mut keep = vec![false; entries.len()];
        for range in parsed.iter().filter_map(|p| p.result.as_ref().ok()) {
            for i in range.clone() {
                keep[i] = live[i];
            }
        }
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        entries.shrink_to_fit();
        entries
    }
}

/// The entry's one problem.
enum Problem {
    Field {
        n: usize,
        found: String,
        expected: String,
    },
    Whole(String),
}

const FIELD_NAMES: [&str; 7] = [
    "service",
    "socket-type",
    "protocol",
    "wait",
    "user",
    "server",
    "arguments",
];

impl Problem {
    fn field(n: usize, found: &str, expected: impl Into<String>) -> Problem {
        Problem::Field {
            n,
            found: found.to_owned(),
            expected: expected.into(),
        }
    }

    fn message(&self) -> String {
        match self {
            Problem::Field { n, found, expected } => {
                let name = FIELD_NAMES[(*n).clamp(1, 7) - 1];
                let hint = near_miss(*n, found)
                    .map(|k| format!("; did you mean {k:?}?"))
                    .unwrap_or_default();
                format!("field {n} ({name}): found {found:?}, expected {expected}{hint}")
            }
            Problem::Whole(m) => m.clone(),
        }
    }
}

/// The keywords of field `n`, for "did you mean".
fn keywords(n: usize) -> &'static [&'static str] {
    match n {
        2 => &["stream", "dgram", "seqpacket"],
        3 => &[
            "tcp", "tcp4", "tcp6", "tcp46", "udp", "udp4", "udp6", "udp46", "unix",
        ],
        4 => &["wait", "nowait"],
        6 => &["internal"],
        _ => &[],
    }
}

/// Edits from `a` to `b`: insertions, deletions, substitutions and swaps
/// of neighbours (`nowiat`), each one.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The keyword of field `n` that `found` nearly is (`nowiat` -> `nowait`,
/// `internl` -> `internal`, `strem` -> `stream`), keeping a wait field's
/// `.N` or `/N` suffix.
fn near_miss(n: usize, found: &str) -> Option<String> {
    let (word, suffix) = if n == 4 {
        let cut = found.find(['.', '/']).unwrap_or(found.len());
        found.split_at(cut)
    } else {
        (found, "")
    };
    let lower = word.to_ascii_lowercase();
    let most = if lower.chars().count() <= 4 { 1 } else { 2 };
    keywords(n)
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|&(d, _)| d > 0 && d <= most)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| format!("{k}{suffix}"))
}

/// Whether a record is xinetd's syntax (`service NAME`, `{`, `attribute =
/// value`, `}`) rather than an inetd.conf line.
fn looks_like_xinetd(fields: &[String]) -> bool {
    // Not `=` alone: NetBSD's own key-value syntax (`5432 on protocol =
    // udp, ...`) has it, and gets its own message.
    fields.iter().any(|w| matches!(w.as_str(), "{" | "}"))
        || (fields.first().map(String::as_str) == Some("service") && fields.len() < 6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `tcp4`: IPv4 only.
    V4,
    /// `tcp6`: IPv6 only.
    V6,
    /// `tcp46`: one dual-stack socket.
    Dual,
    /// `tcp`: both families, one listener per family.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Inet { udp: bool, family: Family },
    Unix,
}

const BUILTIN_LIST: &str = "echo, discard, chargen, daytime or time";

pub(crate) fn parse_record(
    file: &str,
    file_index: usize,
    record: Record,
    state: &mut FileState,
    names: &mut Names,
    options: &LoadOptions,
    pool: &mut Pool,
) -> Outcome {
    match record {
        Record::DefaultAddr { line, host } => {
            if host.is_empty() || host == "*" {
                state.default = DefaultAddr::Any;
                return Outcome::None;
            }
            match parse_hosts(&host, names) {
                Ok(hosts) => {
                    state.default = DefaultAddr::Hosts {
                        line,
                        text: host,
                        hosts,
                    };
                    Outcome::None
                }
                Err(p) => {
                    state.default = DefaultAddr::Bad { line };
                    let why = match p {
                        Problem::Field {
                            found, expected, ..
                        } => format!("found {found:?}, expected {expected}"),
                        Problem::Whole(m) => m,
                    };
                    Outcome::Error(Diagnostic::error(
                        file,
                        line,
                        format!(
                            "default address line: {why}; the entries after it that use it are rejected"
                        ),
                    ))
                }
            }
        }
        Record::Bad {
            line,
            first,
            message,
        } => Outcome::Parsed(Parsed {
            line,
            file_index,
            written: Some(Box::new((first, String::new()))),
            warnings: Vec::new(),
            result: Err(message),
        }),
        Record::Entry { line, fields } => {
            let source = Source {
                file: file.to_owned(),
                line,
            };
            let mut parser = EntryParser {
                names,
                options,
                state,
                warnings: Vec::new(),
                source: &source,
            };
            let result = parser.parse(&fields, pool).map_err(|p| p.message());
            // A bad entry is one error: its warnings would only distract.
            let warnings = if result.is_ok() {
                parser.warnings
            } else {
                Vec::new()
            };
            let written = result.is_err().then(|| {
                let mut fields = fields.into_iter();
                let service = fields.next().unwrap_or_default();
                Box::new((service, fields.nth(1).unwrap_or_default()))
            });
            Outcome::Parsed(Parsed {
                line,
                file_index,
                written,
                warnings,
                result,
            })
        }
    }
}

struct EntryParser<'a> {
    names: &'a mut Names,
    options: &'a LoadOptions,
    state: &'a FileState,
    warnings: Vec<String>,
    source: &'a Source,
}

/// Field 1 once read: where to bind.
enum Where {
    Unix(String),
    Inet {
        port: u16,
        /// The services-file entry, when the service was a name.
        service: Option<Service>,
        hosts: Vec<Host>,
        /// How the addresses were written, for messages.
        hosts_text: String,
        /// The `addr:` line they came from, if any.
        default_line: Option<u32>,
    },
}

impl EntryParser<'_> {
    /// Checks an entry and, when it is good, adds its listeners to `pool`
    /// (nothing when it is not).
    fn parse(&mut self, fields: &[String], pool: &mut Pool) -> Result<Range<usize>, Problem> {
        if looks_like_xinetd(fields) {
            return Err(Problem::Whole(
                "this is xinetd syntax (service NAME { attribute = value ... }), which inetd.conf does not take: \
                 write each service on one line: service socket-type protocol wait user server [arguments]"
                    .into(),
            ));
        }
        if fields.len() < 6 {
            return Err(Problem::Whole(format!(
                "too few fields: found {}, expected at least 6 \
                 (service socket-type protocol wait user server [arguments])",
                fields.len()
            )));
        }
        let socket_type = parse_socket_type(&fields[1])?;
        let proto = self.parse_protocol(&fields[2], socket_type)?;
        let (service_text, place) = self.parse_service(&fields[0], proto)?;
        let (wait_word, mut wait, limits) = parse_wait(&fields[3])?;
        // A datagram server gets the socket itself (there is nothing to
        // accept); builtins are the exception, they ignore the field.
        if socket_type == SocketType::Dgram && !wait && fields[5] != "internal" {
            return Err(Problem::field(
                4,
                &fields[3],
                "wait: a datagram server is handed the socket itself",
            ));
        }
        let (mut user, mut group, mut creds) = self.parse_user(&fields[4])?;
        let server = fields[5].clone();
        let args = &fields[6..];
        self.check_args(args)?;
        let (action, argv) = if server == "internal" {
            let builtin = self.builtin(&service_text, proto, &place, args)?;
            // Builtins need no privilege: a root builtin (Debian's
            // update-inetd writes `discard stream tcp nowait root
            // internal`) runs as nobody instead of being refused.
            if creds.uid == 0 {
                if let Ok((u, g, c)) = self.parse_user("nobody") {
                    self.warnings.push(format!(
                        "runs as {u}:{g}, not {user}:{group}: builtins need no privilege"
                    ));
                    (user, group, creds) = (u, g, c);
                }
            }
            // Builtins are run per connection (stream) or by one child per
            // socket (dgram) whatever the wait field says; the spec carries
            // what actually happens.
            let natural = socket_type == SocketType::Dgram;
            if wait != natural {
                self.warnings.push(format!(
                    "the {} builtin {} ignores {wait_word:?}: {}",
                    socket_type,
                    builtin.name(),
                    if natural {
                        "a datagram builtin is served by one child per socket, as with wait"
                    } else {
                        "a stream builtin is served per connection, as with nowait"
                    }
                ));
            }
            wait = natural;
            let argv = if args.is_empty() {
                vec![builtin.name().to_owned()]
            } else {
                args.to_vec()
            };
            (Action::Builtin(builtin), argv)
        } else if server.starts_with('/') {
            if server.len() > MAX_PATH {
                return Err(Problem::field(
                    6,
                    &server,
                    format!("a path of at most {MAX_PATH} bytes"),
                ));
            }
            self.check_server(&server);
            let argv = if args.is_empty() {
                vec![Path::new(&server)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| server.clone())]
            } else {
                args.to_vec()
            };
            (
                Action::Exec {
                    path: server.clone(),
                    argv: argv.clone(),
                },
                argv,
            )
        } else {
            return Err(Problem::field(
                6,
                &server,
                "an absolute path or \"internal\"",
            ));
        };

        let binds = self.binds(proto, place)?;
        let start = pool.entries.len();
        for (bind, row, plain) in binds {
            {
                let label = Label {
                    service: service_text.clone(),
                    file: self.source.file.clone(),
                    line: self.source.line,
                    protocol: row.clone(),
                    user: user.clone(),
                    group: group.clone(),
                };
                pool.plain.push(plain);
                pool.live.push(true);
                pool.entries.push(Entry {
                    source: self.source.clone(),
                    service: service_text.clone(),
                    protocol: row,
                    user: user.clone(),
                    group: group.clone(),
                    server: server.clone(),
                    argv: argv.clone(),
                    warnings: self.warnings.clone(),
                    spec: ListenerSpec {
                        bind,
                        socket_type,
                        wait,
                        action: action.clone(),
                        creds: creds.clone(),
                        limits,
                        acl: None,
                        label: label.encode(),
                    },
                });
            }
        }
        Ok(start..pool.entries.len())
    }

    /// Field 3. Debian's `,sndbuf=N` and `,rcvbuf=N` suffixes are accepted
    /// and ignored with a warning: they tune buffers, they do not change
    /// what is served.
    fn parse_protocol(&mut self, text: &str, st: SocketType) -> Result<Proto, Problem> {
        const ALL: &str = "tcp, tcp4, tcp6, tcp46, udp, udp4, udp6, udp46 or unix";
        let (base, options) = match text.split_once(',') {
            Some((b, o)) => (b, Some(o)),
            None => (text, None),
        };
        let proto = match base {
            "tcp" | "tcp4" | "tcp6" | "tcp46" | "udp" | "udp4" | "udp6" | "udp46" => {
                let udp = base.starts_with("udp");
                let family = match &base[3..] {
                    "4" => Family::V4,
                    "6" => Family::V6,
                    "46" => Family::Dual,
                    _ => Family::Both,
                };
                Proto::Inet { udp, family }
            }
            "unix" => Proto::Unix,
            _ if base.starts_with("rpc/") => {
                return Err(Problem::field(
                    3,
                    text,
                    format!("{ALL} (RPC services are unsupported)"),
                ))
            }
            "tli" => {
                return Err(Problem::field(
                    3,
                    text,
                    format!("{ALL} (TLI is unsupported)"),
                ))
            }
            _ => return Err(Problem::field(3, text, ALL)),
        };
        if let Some(options) = options {
            for opt in options.split(',') {
                let ok = match opt.split_once('=') {
                    Some(("sndbuf" | "rcvbuf", size)) => {
                        let digits = size.trim_end_matches(['k', 'K', 'm', 'M']);
                        !digits.is_empty()
                            && digits.bytes().all(|b| b.is_ascii_digit())
                            && size.len() - digits.len() <= 1
                    }
                    _ => false,
                };
                if !ok || proto == Proto::Unix {
                    return Err(Problem::field(
                        3,
                        text,
                        "a protocol optionally followed by ,sndbuf=SIZE or ,rcvbuf=SIZE (tcp and udp only)",
                    ));
                }
            }
            self.warnings.push(format!(
                "protocol options {options:?} are ignored: socket buffer sizes are not configurable"
            ));
        }
        let fits = match (st, proto) {
            (_, Proto::Unix) => true,
            (SocketType::Stream, Proto::Inet { udp, .. }) => !udp,
            (SocketType::Dgram, Proto::Inet { udp, .. }) => udp,
            (SocketType::Seqpacket, Proto::Inet { .. }) => false,
        };
        if !fits {
            let expected = match st {
                SocketType::Stream => "tcp, tcp4, tcp6, tcp46 or unix for a stream socket",
                SocketType::Dgram => "udp, udp4, udp6, udp46 or unix for a dgram socket",
                SocketType::Seqpacket => "unix for a seqpacket socket",
            };
            return Err(Problem::field(3, text, expected));
        }
        Ok(proto)
    }

    /// Field 1: the service, and the addresses for an internet protocol.
    /// Returns the service without its address prefix.
    fn parse_service(&mut self, field: &str, proto: Proto) -> Result<(String, Where), Problem> {
        let Proto::Inet { udp, .. } = proto else {
            return Ok((
                field.to_owned(),
                Where::Unix(unix_path(field, &mut self.warnings)?),
            ));
        };
        let transport = if udp { "udp" } else { "tcp" };
        if field.starts_with('[') && !field.contains("]:") {
            return Err(Problem::field(1, field, "[IPV6-ADDRESS]:SERVICE"));
        }
        let (host_text, service) = split_host(field);
        if service.is_empty() {
            return Err(Problem::field(
                1,
                field,
                "a service after the address (ADDRESS:SERVICE); \
                 an address alone on a line sets the default address",
            ));
        }
        if service.starts_with('/') {
            return Err(Problem::field(
                1,
                service,
                "a service name or a port number (a socket path needs protocol unix)",
            ));
        }
        if service.contains('/') {
            let what = if service.starts_with("tcpmux/") {
                "tcpmux services are unsupported"
            } else {
                "RPC services (NAME/VERSION) are unsupported"
            };
            return Err(Problem::field(
                1,
                service,
                format!("a service name or a port number ({what})"),
            ));
        }
        let (port, service_entry) = if service.bytes().all(|b| b.is_ascii_digit()) {
            match service.parse::<u16>() {
                Ok(p) if p >= 1 => (p, None),
                _ => {
                    return Err(Problem::field(1, service, "a port number from 1 to 65535"));
                }
            }
        } else {
            match self.names.service(service, transport) {
                Some(s) => (s.port, Some(s.clone())),
                None => {
                    let mut expected = format!(
                        "a service name in {} for {transport}, or a port number from 1 to 65535",
                        self.names.services_path.display()
                    );
                    if let Some(why) = &self.names.services_problem {
                        expected.push_str(&format!(
                            " ({} could not be read: {why})",
                            self.names.services_path.display()
                        ));
                    }
                    return Err(Problem::field(1, service, expected));
                }
            }
        };
        let (hosts, hosts_text, default_line) = match host_text {
            Some(text) => (parse_hosts(text, self.names)?, text.to_owned(), None),
            None => match &self.state.default {
                DefaultAddr::Any => (vec![Host::Any], "*".to_owned(), None),
                DefaultAddr::Hosts { line, text, hosts } => {
                    (hosts.clone(), text.clone(), Some(*line))
                }
                DefaultAddr::Bad { line } => {
                    return Err(Problem::Whole(format!(
                        "the default address set at line {line} is invalid, so this entry has no address"
                    )))
                }
            },
        };
        Ok((
            service.to_owned(),
            Where::Inet {
                port,
                service: service_entry,
                hosts,
                hosts_text,
                default_line,
            },
        ))
    }

    /// Field 5: `user`, `user:group`, `user.group` (only when the whole
    /// field is not itself a user), with FreeBSD's `/login-class` ignored.
    fn parse_user(&mut self, field: &str) -> Result<(String, String, Credentials), Problem> {
        let spec = match field.split_once('/') {
            Some((spec, class)) => {
                self.warnings.push(format!(
                    "login class {class:?} is ignored: login classes are not supported"
                ));
                spec
            }
            None => field,
        };
        let (user_name, group_name) = if let Some((u, g)) = spec.split_once(':') {
            (u, Some(g))
        } else if self.lookup_user(spec).ok().flatten().is_some() {
            (spec, None)
        } else if let Some(i) = spec.rfind('.') {
            (&spec[..i], Some(&spec[i + 1..]))
        } else {
            (spec, None)
        };
        let user = match self.lookup_user(user_name) {
            Ok(Some(u)) => u,
            Ok(None) => {
                let numeric = user_name
                    .trim_start_matches(['-', '+'])
                    .starts_with(|c: char| c.is_ascii_digit());
                let expected = format!(
                    "a user name{}{}",
                    self.user_source(),
                    if numeric {
                        " (numeric user ids are not accepted)"
                    } else {
                        ""
                    }
                );
                return Err(Problem::field(5, user_name, expected));
            }
            Err(e) => {
                return Err(Problem::field(
                    5,
                    user_name,
                    format!("a user name (the lookup failed: {e})"),
                ))
            }
        };
        let (gid, group) = match group_name {
            Some(g) => match self.names.group(g) {
                Ok(Some(info)) => (info.gid, info.name),
                Ok(None) => {
                    return Err(Problem::Whole(format!(
                        "field 5 (user): found group {g:?}, expected a group name{} (the user {user_name:?} exists)",
                        self.group_source()
                    )));
                }
                Err(e) => {
                    return Err(Problem::field(
                        5,
                        g,
                        format!("a group name (the lookup failed: {e})"),
                    ))
                }
            },
            None => (
                user.gid,
                self.names
                    .group_name(user.gid)
                    .unwrap_or_else(|| user.gid.to_string()),
            ),
        };
        let groups = self.names.group_list(&user.name, gid).map_err(|e| {
            Problem::field(5, field, format!("a user whose groups can be listed ({e})"))
        })?;
        if groups.len() > MAX_GROUPS {
            return Err(Problem::field(
                5,
                field,
                format!("a user in at most {MAX_GROUPS} groups"),
            ));
        }
        Ok((
            user.name.clone(),
            group,
            Credentials {
                uid: user.uid,
                gid,
                groups,
            },
        ))
    }

    fn lookup_user(&mut self, name: &str) -> Result<Option<super::names::UserInfo>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        self.names.user(name)
    }

    fn user_source(&self) -> String {
        match &self.names.passwd_path {
            Some(p) => format!(" in {}", p.display()),
            None => " known to the system".to_owned(),
        }
    }

    fn group_source(&self) -> String {
        match &self.names.group_path {
            Some(p) => format!(" in {}", p.display()),
            None => " known to the system".to_owned(),
        }
    }

    /// Which builtin an `internal` entry runs: the service's name (or the
    /// official name of the alias it is), or for a port number or a socket
    /// path the first argument.
    fn builtin(
        &mut self,
        service: &str,
        proto: Proto,
        place: &Where,
        args: &[String],
    ) -> Result<Builtin, Problem> {
        let by_service = match place {
            Where::Inet {
                service: Some(s), ..
            } => Some(s.official.clone()),
            _ => None,
        };
        match by_service {
            Some(official) => {
                if official == "tcpmux" {
                    return Err(Problem::field(
                        1,
                        service,
                        format!("a builtin service: {BUILTIN_LIST} (tcpmux is unsupported)"),
                    ));
                }
                let Some(b) = Builtin::from_name(&official) else {
                    return Err(Problem::field(
                        1,
                        service,
                        format!(
                            "a builtin service: {BUILTIN_LIST}, or an alias of one in {}",
                            self.names.services_path.display()
                        ),
                    ));
                };
                let same = args.len() == 1 && self.builtin_by_name(&args[0], proto) == Some(b);
                if !args.is_empty() && !same {
                    self.warnings.push(format!(
                        "the arguments of the {} builtin are ignored",
                        b.name()
                    ));
                }
                Ok(b)
            }
            None => {
                let what = if proto == Proto::Unix {
                    "a socket path"
                } else {
                    "a port number"
                };
                let Some(first) = args.first() else {
                    return Err(Problem::field(
                        7,
                        "",
                        format!("the builtin's name ({what} names none): {BUILTIN_LIST}"),
                    ));
                };
                if first == "tcpmux" {
                    return Err(Problem::field(
                        7,
                        first,
                        format!("a builtin name: {BUILTIN_LIST} (tcpmux is unsupported)"),
                    ));
                }
                let Some(b) = self.builtin_by_name(first, proto) else {
                    return Err(Problem::field(
                        7,
                        first,
                        format!("a builtin name: {BUILTIN_LIST}"),
                    ));
                };
                if args.len() > 1 {
                    self.warnings.push(format!(
                        "the arguments of the {} builtin after its name are ignored",
                        b.name()
                    ));
                }
                Ok(b)
            }
        }
    }

    fn builtin_by_name(&self, name: &str, proto: Proto) -> Option<Builtin> {
        if let Some(b) = Builtin::from_name(name) {
            return Some(b);
        }
        let order: &[&str] = match proto {
            Proto::Inet { udp: true, .. } => &["udp", "tcp"],
            _ => &["tcp", "udp"],
        };
        order
            .iter()
            .find_map(|p| self.names.service(name, p))
            .and_then(|s| Builtin::from_name(&s.official))
    }

    fn check_args(&self, args: &[String]) -> Result<(), Problem> {
        if args.len() > MAX_ARGS {
            return Err(Problem::field(
                7,
                &format!("{} arguments", args.len()),
                format!("at most {MAX_ARGS} arguments"),
            ));
        }
        if let Some(a) = args.iter().find(|a| a.len() > MAX_ARG_LEN) {
            let shown: String = a.chars().take(40).collect();
            return Err(Problem::field(
                7,
                &format!("{shown}..."),
                format!("arguments of at most {MAX_ARG_LEN} bytes"),
            ));
        }
        Ok(())
    }

    /// A missing or non-executable server is a warning: the package that
    /// provides it may come later, and the core logs each failed exec.
    fn check_server(&mut self, server: &str) {
        let path = match &self.options.server_root {
            Some(root) => root.join(server.trim_start_matches('/')),
            None => Path::new(server).to_path_buf(),
        };
        if let Some(p) = self.names.server_problem(&path) {
            self.warnings.push(format!("server {server:?} {p}"));
        }
    }

    /// The listeners of the entry: (bind, the row's protocol, plain half).
    fn binds(&mut self, proto: Proto, place: Where) -> Result<Vec<(Bind, String, bool)>, Problem> {
        let (udp, family, port, hosts, hosts_text, default_line) = match (proto, place) {
            (Proto::Unix, Where::Unix(path)) => {
                return Ok(vec![(Bind::Unix { path }, "unix".to_owned(), false)])
            }
            (
                Proto::Inet { udp, family },
                Where::Inet {
                    port,
                    hosts,
                    hosts_text,
                    default_line,
                    ..
                },
            ) => (udp, family, port, hosts, hosts_text, default_line),
            // parse_service gives Where::Unix exactly for Proto::Unix.
            _ => {
                return Err(Problem::Whole(
                    "internal error: protocol and service disagree".into(),
                ))
            }
        };
        let from_default = default_line
            .map(|l| format!(" (the default address set at line {l})"))
            .unwrap_or_default();
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let mut out: Vec<(Bind, String, bool)> = Vec::new();
        let mut push = |addr: IpAddr, mode: IpMode, plain: bool| -> Result<(), Problem> {
            let bind = Bind::Inet { addr, port, mode };
            if out.iter().any(|(b, _, _)| *b == bind) {
                return Err(Problem::field(
                    1,
                    &hosts_text,
                    format!("each address once ({addr} is given twice){from_default}"),
                ));
            }
            out.push((bind, mode_row(udp, mode), plain));
            Ok(())
        };
        for host in hosts {
            match host {
                Host::Any => match family {
                    Family::V4 => push(any4, IpMode::V4, false)?,
                    Family::V6 => push(any6, IpMode::V6Only, false)?,
                    Family::Dual => push(any6, IpMode::Dual, false)?,
                    Family::Both => {
                        push(any4, IpMode::V4, true)?;
                        if self.names.has_ipv6() {
                            push(any6, IpMode::V6Only, true)?;
                        } else {
                            self.warnings.push(format!(
                                "this host has no IPv6: only the IPv4 half of {} is served",
                                if udp { "udp" } else { "tcp" }
                            ));
                        }
                    }
                },
                Host::Ip(ip) => {
                    let Some(mode) = mode_for(ip, family) else {
                        return Err(Problem::field(
                            1,
                            &ip.to_string(),
                            format!("{}{from_default}", family_expected(family, udp)),
                        ));
                    };
                    push(ip, mode, false)?;
                }
                Host::Name(name, addrs) => {
                    let fitting: Vec<(IpAddr, IpMode)> = addrs
                        .iter()
                        .filter_map(|&a| mode_for(a, family).map(|m| (a, m)))
                        .collect();
                    if fitting.is_empty() {
                        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                        return Err(Problem::field(
                            1,
                            &name,
                            format!(
                                "a host name with {} (it resolves to {}){from_default}",
                                family_expected(family, udp).trim_start_matches("an "),
                                list.join(", ")
                            ),
                        ));
                    }
                    for (a, m) in fitting {
                        push(a, m, false)?;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The socket an address gets under a protocol's family, if it fits.
fn mode_for(ip: IpAddr, family: Family) -> Option<IpMode> {
    match (family, ip) {
        (Family::V4 | Family::Both, IpAddr::V4(_)) => Some(IpMode::V4),
        (Family::V6 | Family::Both, IpAddr::V6(_)) => Some(IpMode::V6Only),
        (Family::Dual, IpAddr::V6(_)) => Some(IpMode::Dual),
        _ => None,
    }
}

fn family_expected(family: Family, udp: bool) -> String {
    let t = if udp { "udp" } else { "tcp" };
    match family {
        Family::V4 => format!("an IPv4 address for {t}4"),
        Family::V6 => format!("an IPv6 address for {t}6"),
        Family::Dual => format!("an IPv6 address for {t}46 (a dual-stack socket)"),
        Family::Both => format!("an address for {t}"),
    }
}

/// Field 1 of a unix entry: an absolute path, its directory canonicalised
/// so that `/var/run/x` and `/run/x` are one bind key. The socket itself
/// need not exist; a directory that does not exist (yet) is a warning and
/// the path is kept as written.
fn unix_path(field: &str, warnings: &mut Vec<String>) -> Result<String, Problem> {
    if field.starts_with(':') {
        return Err(Problem::field(
            1,
            field,
            "an absolute socket path (FreeBSD's :user:group:mode:/path form is unsupported)",
        ));
    }
    if !field.starts_with('/') {
        return Err(Problem::field(
            1,
            field,
            "an absolute socket path (a unix service has no address prefix)",
        ));
    }
    let path = Path::new(field);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Problem::field(
            1,
            field,
            "an absolute socket path with a file name",
        ));
    };
    if field.ends_with('/') {
        return Err(Problem::field(1, field, "a socket path, not a directory"));
    }
    let full = match parent.canonicalize() {
        Ok(dir) => dir.join(name),
        Err(e) => {
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(Problem::field(
                    1,
                    field,
                    format!(
                        "a socket path whose directory exists ({}: {})",
                        parent.display(),
                        io_text(&e)
                    ),
                ));
            }
            warnings.push(format!(
                "the directory {} of the socket path cannot be resolved ({}); the path is used as written",
                parent.display(),
                io_text(&e)
            ));
            path.components().collect()
        }
    };
    let Some(text) = full.to_str() else {
        return Err(Problem::field(
            1,
            field,
            "a socket path that is valid UTF-8 once resolved",
        ));
    };
    if text.len() > MAX_UNIX_PATH {
        return Err(Problem::field(
            1,
            field,
            format!(
                "a socket path of at most {MAX_UNIX_PATH} bytes once resolved ({text:?} has {})",
                text.len()
            ),
        ));
    }
    Ok(text.to_owned())
}

/// An I/O error as a short phrase ("No such file or directory"), without
/// the "(os error N)" suffix std adds.
pub(super) fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// `[v6]:svc`, `host:svc`, `a,b:svc`, `svc`: the address part is
/// everything before the last `:`.
fn split_host(field: &str) -> (Option<&str>, &str) {
    if field.starts_with('[') {
        if let Some(close) = field.find(']') {
            if let Some(rest) = field[close + 1..].strip_prefix(':') {
                return (Some(&field[..=close]), rest);
            }
        }
    }
    match field.rfind(':') {
        Some(i) => (Some(&field[..i]), &field[i + 1..]),
        None => (None, field),
    }
}

/// An address list: `*`, addresses (IPv6 with or without brackets), host
/// names, separated by commas. Empty means `*`.
fn parse_hosts(text: &str, names: &mut Names) -> Result<Vec<Host>, Problem> {
    if text.is_empty() || text == "*" {
        return Ok(vec![Host::Any]);
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        let bare = item
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(item);
        if item == "*" {
            out.push(Host::Any);
        } else if item.is_empty() {
            return Err(Problem::field(
                1,
                text,
                "a comma-separated list of addresses without empty items",
            ));
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            out.push(Host::Ip(ip));
        } else if bare.contains('%') {
            return Err(Problem::field(
                1,
                item,
                "an address without a zone index (%IFACE is unsupported)",
            ));
        } else if bare.len() <= 253
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && !bare.starts_with(['-', '.'])
        {
            match names.host(bare) {
                Ok(addrs) => out.push(Host::Name(bare.to_owned(), addrs)),
                Err(e) => {
                    return Err(Problem::field(
                        1,
                        item,
                        format!("an address or a host name that resolves ({e})"),
                    ))
                }
            }
        } else {
            return Err(Problem::field(
                1,
                item,
                "an IPv4 address, an [IPv6] address, a host name or *",
            ));
        }
    }
    Ok(out)
}

fn parse_socket_type(text: &str) -> Result<SocketType, Problem> {
    const ALL: &str = "stream, dgram or seqpacket";
    match text {
        "stream" => Ok(SocketType::Stream),
        "dgram" => Ok(SocketType::Dgram),
        "seqpacket" => Ok(SocketType::Seqpacket),
        "raw" | "rdm" | "tli" => Err(Problem::field(
            2,
            text,
            format!("{ALL} ({text} is unsupported)"),
        )),
        "on" | "off" => Err(Problem::field(
            2,
            text,
            format!("{ALL} (NetBSD's \"SERVICE on\" key = value blocks are unsupported)"),
        )),
        _ => Err(Problem::field(2, text, ALL)),
    }
}

/// Field 4: `wait`/`nowait`, then `.N` or `:N` (N ≥ 1 connections per
/// minute), or FreeBSD's `/max-child[/max-conn-per-ip-per-minute[/max-child-per-ip]]`
/// where 0 means unlimited. Returns the word as written, wait, and limits.
///
/// Without a suffix there is no rate limit (OpenBSD's hidden 256 per
/// minute throttles legitimate bursts) and the children limit is
/// [`Limits::default`]'s; an explicit `max-child` replaces it, 0 included.
fn parse_wait(text: &str) -> Result<(&str, bool, Limits), Problem> {
    const EXPECTED: &str = "wait or nowait, optionally followed by .N or :N \
        (at most N connections per minute, N >= 1) or \
        /MAX-CHILD[/MAX-CONN-PER-IP-PER-MINUTE[/MAX-CHILD-PER-IP]] (0 = unlimited)";
    let bad = || Problem::field(4, text, EXPECTED);
    let split = text.find(['.', ':', '/']).unwrap_or(text.len());
    let (word, rest) = text.split_at(split);
    let wait = match word {
        "wait" => true,
        "nowait" => false,
        _ => return Err(bad()),
    };
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let mut limits = Limits::default();
    if let Some(n) = rest.strip_prefix(['.', ':']) {
        match number(n) {
            Some(n) if n >= 1 => limits.max_per_minute = n,
            _ => return Err(bad()),
        }
    } else if let Some(list) = rest.strip_prefix('/') {
        let parts: Vec<&str> = list.split('/').collect();
        if parts.len() > 3 {
            return Err(bad());
        }
        let mut values = [0u32; 3];
        for (v, p) in values.iter_mut().zip(&parts) {
            *v = number(p).ok_or_else(bad)?;
        }
        limits.max_children = values[0];
        limits.max_per_source_per_minute = values[1];
        limits.max_children_per_source = values[2];
    }
    Ok((word, wait, limits))
}

/// The row's own protocol: `tcp4`, `tcp6`, `tcp46`, `udp4`, ...
fn mode_row(udp: bool, mode: IpMode) -> String {
    let t = if udp { "udp" } else { "tcp" };
    format!("{t}{mode}")
}
