//! Messages of the core link. Numbers and paths only: the core resolves no
//! names, so every user, group, address and port arrives here already
//! numeric (trust rule 2, docs/architecture.md).
//!
//! Every enum is append-only: bincode encodes a variant by its index.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// A request from the controller to the core. `Hello` must come first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreRequest {
    /// The first message on every connection.
    Hello { version: u32 },
    /// The full desired state. Listeners not named here are closed.
    Apply { listeners: Vec<ListenerSpec> },
    /// What the core runs now.
    Status,
}

/// The core's answer to one [`CoreRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreResponse {
    Hello(HelloReply),
    Applied(ApplyReport),
    Status(StatusReport),
    /// The request was refused as a whole; nothing changed.
    Error {
        reason: String,
    },
}

/// The core's answer to `Hello`: who it is and what it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The core's [`crate::PROTOCOL_VERSION`].
    pub version: u32,
    /// The core's package version, for `inetctl status`.
    pub software_version: String,
    pub pid: u32,
    /// The core's uid: 0 when it runs as root.
    pub uid: u32,
    pub policy: Policy,
}

/// Where the core makes unix-domain listeners. The directories are
/// canonical absolute paths (the core resolved its `--unix-dir`s at start),
/// and so are the listener paths (the controller resolves them), so the
/// rule is a comparison of text; the core's walk of the path with
/// `O_NOFOLLOW` makes it hold on the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnixDirs {
    /// Directly in one of these directories, never in a subdirectory: a
    /// root core's `--unix-dir`s (default `RUN/sockets`), or those given to
    /// a core that is not root.
    Only(Vec<String>),
    /// In any directory but the core's runtime directory RUN (this) and
    /// those below it: a core that is not root, given no `--unix-dir`.
    AnyBut(String),
}

/// No directory at all: every unix listener is refused. What a policy
/// means before the core has told its own.
impl Default for UnixDirs {
    fn default() -> UnixDirs {
        UnixDirs::Only(Vec::new())
    }
}

impl UnixDirs {
    /// Whether a unix listener may be at `path` (absolute and canonical);
    /// the error is the reason the core refuses it with.
    pub fn check(&self, path: &str) -> Result<(), String> {
        let dir = match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        };
        match self {
            UnixDirs::Only(dirs) if dirs.iter().any(|d| d == dir) => Ok(()),
            UnixDirs::Only(dirs) => Err(format!(
                "{dir} is not a directory for unix sockets: the core makes them only directly in {} (allow another with --unix-dir DIR)",
                dirs.join(", ")
            )),
            UnixDirs::AnyBut(run) if dir == run || dir.starts_with(&format!("{run}/")) => {
                Err(format!(
                    "{dir} is in the core's runtime directory {run}, where it makes no unix sockets (use another directory, or name one with --unix-dir DIR)"
                ))
            }
            UnixDirs::AnyBut(_) => Ok(()),
        }
    }
}

/// Address family handling of an internet listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpMode {
    /// An IPv4 socket (`tcp4`, `udp4`, or the IPv4 half of `tcp`).
    V4,
    /// An IPv6 socket with `IPV6_V6ONLY` on (`tcp6`, the IPv6 half of `tcp`).
    V6Only,
    /// An IPv6 socket with `IPV6_V6ONLY` off (`tcp46`, `udp46`).
    Dual,
}

impl IpMode {
    /// The suffix of the protocol names: `4` (`tcp4`), `6` (`tcp6`), `46`
    /// (`tcp46`).
    pub fn suffix(self) -> &'static str {
        match self {
            IpMode::V4 => "4",
            IpMode::V6Only => "6",
            IpMode::Dual => "46",
        }
    }
}

/// Written as its [`IpMode::suffix`].
impl fmt::Display for IpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bind {
    /// An internet socket. `addr` is IPv4 exactly when `mode` is `V4`.
    Inet {
        addr: IpAddr,
        port: u16,
        mode: IpMode,
    },
    /// A unix-domain socket at an absolute, canonical path.
    Unix { path: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SocketType {
    Stream,
    Dgram,
    Seqpacket,
}

impl SocketType {
    /// The name used in inetd.conf and in `inetctl list`.
    pub fn name(self) -> &'static str {
        match self {
            SocketType::Stream => "stream",
            SocketType::Dgram => "dgram",
            SocketType::Seqpacket => "seqpacket",
        }
    }
}

/// Written as its [`SocketType::name`].
impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `internal` services, served by a forked child of the core that has
/// dropped to the service's user and never execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Builtin {
    Echo,
    Discard,
    Chargen,
    Daytime,
    Time,
}

impl Builtin {
    /// Every builtin, in the order they are listed to users.
    pub const ALL: [Builtin; 5] = [
        Builtin::Echo,
        Builtin::Discard,
        Builtin::Chargen,
        Builtin::Daytime,
        Builtin::Time,
    ];

    /// The official service name (as in `/etc/services`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::Discard => "discard",
            Builtin::Chargen => "chargen",
            Builtin::Daytime => "daytime",
            Builtin::Time => "time",
        }
    }

    /// The builtin with this official name.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// What runs for a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Exec `path` with `argv` (argv[0] included).
    Exec {
        path: String,
        argv: Vec<String>,
    },
    Builtin(Builtin),
}

/// The ids a service's children run with, already resolved by the
/// controller: the primary gid and the supplementary groups as
/// `initgroups(user, gid)` gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Limits carried per listener, enforced by the core after accept and
/// before fork. In every count field 0 means unlimited (as in FreeBSD's
/// inetd.conf); [`Limits::get`] reads a field as `None` for unlimited.
/// Limits count per listener: the two listeners of a `*` `tcp` entry each
/// have their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Connections (invocations) per rate window before the service is
    /// paused (`nowait.N`, NetBSD `nowait:N`); 0 = unlimited, the default.
    pub max_per_minute: u32,
    /// Live children of this listener (FreeBSD `max-child`); past it the
    /// listener is not polled, so connections wait in the kernel backlog.
    /// 0 = unlimited; the default is [`DEFAULT_MAX_CHILDREN`].
    pub max_children: u32,
    /// Connections per rate window from one source prefix (FreeBSD
    /// `max-connections-per-ip-per-minute`); 0 = unlimited, the default.
    pub max_per_source_per_minute: u32,
    /// Live children for one source prefix (FreeBSD `max-child-per-ip`);
    /// 0 = unlimited, the default.
    pub max_children_per_source: u32,
    /// Sources are grouped by this IPv4 prefix length (0..=32; default 32).
    /// IPv4-mapped IPv6 peers count as IPv4.
    pub source_prefix_v4: u8,
    /// Sources are grouped by this IPv6 prefix length (0..=128; default 128).
    pub source_prefix_v6: u8,
}

/// Children per listener when the configuration does not say (FreeBSD's
/// `max-child` field): concurrency is what the defaults bound, never a
/// legitimate burst's rate.
pub const DEFAULT_MAX_CHILDREN: u32 = 256;

impl Limits {
    /// A count field as a limit: `None` is unlimited (the field is 0).
    pub fn get(field: u32) -> Option<u32> {
        (field != 0).then_some(field)
    }
}

impl Default for Limits {
    /// [`DEFAULT_MAX_CHILDREN`] children, nothing else limited, sources
    /// grouped by /32 and /128. There is no default rate: unlike OpenBSD's
    /// hidden 256 per minute, a rate limit applies only where `.N` says so.
    fn default() -> Self {
        Limits {
            max_per_minute: 0,
            max_children: DEFAULT_MAX_CHILDREN,
            max_per_source_per_minute: 0,
            max_children_per_source: 0,
            source_prefix_v4: 32,
            source_prefix_v6: 128,
        }
    }
}

/// An access list compiled by the controller: the first rule that matches
/// the peer decides; no match means `default_allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub rules: Vec<AclRule>,
    pub default_allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    pub addr: IpAddr,
    pub prefix: u8,
    pub allow: bool,
}

/// One listener as the controller wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSpec {
    pub bind: Bind,
    pub socket_type: SocketType,
    /// `wait`: the child gets the listening socket and the core stops
    /// polling it until that child exits.
    pub wait: bool,
    pub action: Action,
    pub creds: Credentials,
    pub limits: Limits,
    pub acl: Option<Acl>,
    /// Opaque to the core, bounded by [`crate::MAX_LABEL`]: the controller
    /// puts the service name, FILE:LINE and user and group names here so a
    /// restarted controller can show what runs before it reads its config.
    pub label: String,
}

/// What identifies a listener across applies: two listeners with the same
/// key cannot both exist, and a listener whose key is unchanged by an
/// `Apply` keeps its socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindKey {
    pub bind: Bind,
    pub socket_type: SocketType,
}

impl ListenerSpec {
    pub fn key(&self) -> BindKey {
        BindKey {
            bind: self.bind.clone(),
            socket_type: self.socket_type,
        }
    }
}

/// The core's answer to `Apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The core's generation after this apply; it rises only when something
    /// changed.
    pub generation: u64,
    /// One outcome per listener of the request, in the request's order.
    pub outcomes: Vec<Outcome>,
    /// Listeners the core ran before and closed because the request did not
    /// name them.
    pub removed: Vec<Removed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// New key, bound and listening.
    Added,
    /// Same key, new spec: new connections get the new spec; the socket and
    /// the running children are kept.
    Changed,
    /// Same key, same spec: nothing touched.
    Unchanged,
    /// Refused by validation or policy; nothing was bound.
    Rejected { reason: String },
    /// Accepted, but the socket could not be set up (for example the address
    /// is in use). The core retries at `retry_at` (unix seconds).
    Failed { reason: String, retry_at: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub key: BindKey,
    pub label: String,
}

/// The core's answer to `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub generation: u64,
    pub software_version: String,
    pub pid: u32,
    pub uid: u32,
    /// When the core started, unix seconds.
    pub started_at: u64,
    pub policy: Policy,
    pub listeners: Vec<ListenerStatus>,
    /// Live children, servers and builtins.
    pub children: Vec<ChildInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub spec: ListenerSpec,
    pub state: ListenerState,
    pub counters: Counters,
    /// The last problem seen on this listener (a failed exec, accept error).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerState {
    Listening,
    /// A `wait` child holds the socket; it is not polled until it exits.
    Waiting,
    /// Not accepting until `until` (unix seconds), for `reason`.
    Paused {
        reason: String,
        until: u64,
    },
    /// Not bound, for `reason`; retried at `retry_at` (unix seconds).
    Failed {
        reason: String,
        retry_at: u64,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub accepted: u64,
    pub exec_failures: u64,
    /// Connections closed before fork because the access list refused the
    /// peer.
    pub refused_acl: u64,
    /// Connections closed before fork while the listener was paused by its
    /// rate limit.
    pub refused_rate: u64,
    /// Connections closed before fork by a per-source limit.
    pub refused_per_source: u64,
    /// Times the listener stopped accepting because its children (or the
    /// core's total) reached the limit; the connections waited in the
    /// kernel backlog, none was refused.
    pub at_max_children: u64,
    /// Live children of this listener now.
    pub children: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub pid: u32,
    /// Index into [`StatusReport::listeners`], if the listener still exists.
    pub listener: Option<u32>,
    /// The peer, as text (`192.0.2.1:4000`, `[2001:db8::1]:4000`, or a unix
    /// peer's pid and uid); `None` for wait services.
    pub peer: Option<String>,
    pub uid: u32,
    /// Unix seconds.
    pub started_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_listeners_only_directly_in_the_allowed_directories() {
        let only = UnixDirs::Only(vec!["/run/inetd/sockets".into(), "/srv/s".into()]);
        assert_eq!(only.check("/run/inetd/sockets/a.sock"), Ok(()));
        assert_eq!(only.check("/srv/s/b"), Ok(()));
        for refused in [
            "/run/inetd/sockets/sub/a.sock",
            "/run/inetd/core.sock",
            "/run/inetd/sockets",
            "/srv/s2/b",
            "/srv/b",
            "/a",
        ] {
            let e = only.check(refused).unwrap_err();
            assert!(e.contains("--unix-dir"), "{refused}: {e}");
        }
        let any = UnixDirs::AnyBut("/run/user/7/inetd".into());
        assert_eq!(any.check("/run/user/7/x.sock"), Ok(()));
        assert_eq!(any.check("/run/user/7/inetd2/x.sock"), Ok(()));
        assert_eq!(any.check("/x"), Ok(()));
        for refused in ["/run/user/7/inetd/x", "/run/user/7/inetd/control/y"] {
            let e = any.check(refused).unwrap_err();
            assert!(e.contains("runtime directory"), "{refused}: {e}");
        }
    }

    #[test]
    fn socket_types_and_ip_modes_are_written_as_in_inetd_conf() {
        let st: Vec<String> = [SocketType::Stream, SocketType::Dgram, SocketType::Seqpacket]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(st, ["stream", "dgram", "seqpacket"]);
        let m: Vec<String> = [IpMode::V4, IpMode::V6Only, IpMode::Dual]
            .iter()
            .map(|m| format!("tcp{m}"))
            .collect();
        assert_eq!(m, ["tcp4", "tcp6", "tcp46"]);
    }
}
