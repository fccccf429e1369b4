//! Messages of the control link (`control.sock`), between `inetctl` and
//! `inetd-controller`. Same framing and codec as the core link.
//!
//! Every request carries the protocol version as its first field, so a
//! controller can tell an `inetctl` of another version what is wrong even
//! when the rest of the request does not decode ([`request_version`]).
//!
//! The reply rows mirror the JSON that `inetctl list --json` and
//! `inetctl status --json` print (docs/inetctl.md), field for
//! field and in the same order; only the representation differs where JSON
//! wants text (times are unix seconds here, RFC 3339 there; states are enums
//! here, lowercase words there). Every enum is append-only.

use serde::{Deserialize, Serialize};

/// Largest control request payload, in bytes. Requests are a version and a
/// command, a few bytes; the controller refuses a longer frame from its
/// header, before allocating, so anyone who can reach the control socket
/// can make it hold at most this much per connection.
pub const MAX_CTL_REQUEST: u32 = 4096;

/// A request from `inetctl` to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlRequest {
    /// The sender's [`crate::PROTOCOL_VERSION`]. Must stay the first field.
    pub version: u32,
    pub command: CtlCommand,
}

impl CtlRequest {
    pub fn new(command: CtlCommand) -> Self {
        CtlRequest {
            version: crate::PROTOCOL_VERSION,
            command,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlCommand {
    /// One row per listener, rejected entries included. Anyone may ask.
    List,
    /// The controller's and the core's state. Anyone may ask.
    Status,
    /// Reread the configuration and apply it. Admins only. Without
    /// `partial`, a configuration with any bad entry changes nothing.
    Reload { partial: bool },
    /// The live children, one per connection (or per wait server), from
    /// the core's child table. Admins only: clients' addresses are not
    /// everyone's business.
    Connections,
}

/// The version a request claims, read from its first four payload bytes
/// (a little-endian `u32`, as the codec encodes [`CtlRequest::version`]),
/// without decoding the rest: a request of another version may not decode
/// at all, and its sender should still be told which versions differ.
pub fn request_version(payload: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// The controller's answer to one [`CtlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlResponse {
    List(ListReply),
    Status(StatusReply),
    Reload(ReloadReply),
    /// The request was not carried out. Stays variant 3, so an `inetctl`
    /// of another version still decodes a version mismatch.
    Error {
        kind: CtlErrorKind,
        message: String,
    },
    Connections(ConnectionsReply),
}

/// Why a request was not carried out; each kind has its exit code
/// (docs/inetctl.md: 1 refused or failed, 3 not reachable, 4 permission denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtlErrorKind {
    /// Understood and refused, or it failed.
    Failed,
    /// The caller is not an admin (root, the controller's uid, or a member
    /// of the admin group).
    PermissionDenied,
    /// The controller cannot reach the core, so it cannot answer.
    CoreUnreachable,
    /// The request's version differs from the controller's.
    VersionMismatch,
    /// The request did not decode.
    Malformed,
}

impl CtlErrorKind {
    /// The exit code `inetctl` leaves with for this error.
    pub fn exit_code(self) -> i32 {
        match self {
            CtlErrorKind::Failed | CtlErrorKind::VersionMismatch | CtlErrorKind::Malformed => 1,
            CtlErrorKind::CoreUnreachable => 3,
            CtlErrorKind::PermissionDenied => 4,
        }
    }
}

/// `list`: what runs, one row per listener, and what was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReply {
    /// The core's generation.
    pub generation: u64,
    pub services: Vec<ServiceRow>,
}

/// Where an entry comes from: `FILE:LINE` as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub file: String,
    pub line: u32,
}

/// One listener (or one rejected entry). Fields in the JSON's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub source: SourceRef,
    /// The service field without its address: `echo`, `8007`, `/run/x.sock`.
    pub service: String,
    /// Numeric bind address; `None` for unix sockets and unparsed entries.
    pub address: Option<String>,
    pub port: Option<u16>,
    /// Socket path of a unix listener.
    pub path: Option<String>,
    /// `stream`, `dgram`, `seqpacket`; empty when the entry did not parse.
    pub socket_type: String,
    /// The row's own: `tcp4`, `tcp6`, `tcp46`, `udp4`, `udp6`, `udp46`, `unix`.
    pub protocol: String,
    pub wait: bool,
    pub user: String,
    pub group: String,
    /// Absolute path, or `internal`.
    pub server: String,
    pub argv: Vec<String>,
    pub state: RowState,
    /// Why the row is paused, failed or rejected.
    pub reason: Option<String>,
    /// When a paused or failed row retries, unix seconds.
    pub until: Option<u64>,
    pub children: u32,
    pub accepted: u64,
    pub exec_failures: u64,
    pub refused: Refused,
    /// Times the listener stopped accepting at its children limit (or the
    /// core's total) while connections waited in the kernel backlog.
    pub at_max_children: u64,
    /// The limits in force; `None` for an entry that did not parse.
    pub limits: Option<RowLimits>,
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
}

/// The limits of a row as `inetctl list --json` shows them: `None` is
/// unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowLimits {
    pub max_children: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_source_per_minute: Option<u32>,
    pub per_source_children: Option<u32>,
}

impl From<&crate::Limits> for RowLimits {
    fn from(l: &crate::Limits) -> Self {
        use crate::Limits as L;
        RowLimits {
            max_children: L::get(l.max_children),
            per_minute: L::get(l.max_per_minute),
            per_source_per_minute: L::get(l.max_per_source_per_minute),
            per_source_children: L::get(l.max_children_per_source),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowState {
    Listening,
    /// A `wait` child holds the socket.
    Waiting,
    Paused,
    Failed,
    Rejected,
}

impl RowState {
    /// The word `inetctl` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Listening => "listening",
            RowState::Waiting => "waiting",
            RowState::Paused => "paused",
            RowState::Failed => "failed",
            RowState::Rejected => "rejected",
        }
    }
}

/// Connections closed before fork, by reason (the core's
/// `refused_*` counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub acl: u64,
    pub rate: u64,
    pub per_source: u64,
}

/// `status`: the controller, and the core as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub controller: ControllerInfo,
    /// `None` when the core is not reachable.
    pub core: Option<CoreInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerInfo {
    /// The controller's package version.
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub admin_group: String,
    /// The files the last load read, in order.
    pub config: Vec<ConfigFileInfo>,
    /// `None` until the first configuration has been applied or refused.
    pub last_reload: Option<LastReload>,
    /// The configuration paths as given (`--config`, or the defaults):
    /// what `inetctl check` checks when given none.
    pub config_paths: Vec<String>,
    /// Loads since start (the first included), by result.
    pub reloads: ReloadCounts,
}

/// How many loads ended with each [`ReloadResult`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadCounts {
    pub ok: u64,
    pub rejected: u64,
    pub partial: u64,
    pub failed: u64,
}

impl ReloadCounts {
    pub fn count(&mut self, r: ReloadResult) {
        match r {
            ReloadResult::Ok => self.ok += 1,
            ReloadResult::Rejected => self.rejected += 1,
            ReloadResult::Partial => self.partial += 1,
            ReloadResult::Failed => self.failed += 1,
        }
    }

    /// Each result with its count, in [`ReloadResult`]'s order.
    pub fn by_result(&self) -> [(ReloadResult, u64); 4] {
        [
            (ReloadResult::Ok, self.ok),
            (ReloadResult::Rejected, self.rejected),
            (ReloadResult::Partial, self.partial),
            (ReloadResult::Failed, self.failed),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFileInfo {
    pub path: String,
    /// Modification time when it was read, unix seconds.
    pub mtime: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    /// Unix seconds.
    pub at: u64,
    pub result: ReloadResult,
    /// Every error of that reload, one line each.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReloadResult {
    /// Everything was applied.
    Ok,
    /// The configuration had errors; nothing was applied.
    Rejected,
    /// The configuration had errors; its good entries were applied.
    Partial,
    /// Applied, but the core refused or could not bind some listeners, or
    /// refused the request as a whole.
    Failed,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Rejected => "rejected",
            ReloadResult::Partial => "partial",
            ReloadResult::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreInfo {
    /// The core's package version.
    pub version: String,
    pub pid: u32,
    pub uid: u32,
    pub uptime_s: u64,
    pub generation: u64,
    /// What the core allows (the JSON spreads it over several keys).
    pub policy: crate::Policy,
    pub listeners: u32,
    pub children: u32,
}

/// `reload`: what changed, or why nothing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub result: ReloadResult,
    /// The core's generation after the reload.
    pub generation: u64,
    pub added: Vec<ReloadItem>,
    pub changed: Vec<ReloadItem>,
    pub removed: Vec<ReloadItem>,
    /// Refused by the core or by its policy as the controller applies it:
    /// not retried until the configuration or the core's flags change.
    pub rejected: Vec<ReloadItem>,
    /// Not bound (address in use, ...): the core retries them.
    pub failed: Vec<ReloadItem>,
    /// Listeners left exactly as they were.
    pub unchanged: u32,
    /// Every diagnostic of the configuration (errors and warnings), in the
    /// `FILE:LINE: error: ...` form, plus whole-request failures.
    pub diagnostics: Vec<String>,
}

/// One listener named in a reload report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadItem {
    pub source: SourceRef,
    pub service: String,
    pub protocol: String,
    /// `ADDRESS:PORT` (`[v6]:PORT`) or the socket path.
    pub bind: String,
    /// Why it failed; `None` for added, changed and removed.
    pub reason: Option<String>,
}

/// `connections`: the live children of the core's listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsReply {
    /// The core's generation.
    pub generation: u64,
    /// The controller's clock when it answered, unix seconds: the ages are
    /// counted to it.
    pub now: u64,
    /// Oldest first.
    pub connections: Vec<ConnectionRow>,
}

/// One live child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub pid: u32,
    /// The service field of its entry, as in `list`; empty if its listener
    /// is gone (a nowait child of a removed listener, left to finish).
    pub service: String,
    pub protocol: String,
    pub source: SourceRef,
    /// A wait server (it holds the listening socket), not one connection.
    pub wait: bool,
    pub client: Client,
    /// Who the child runs as.
    pub uid: u32,
    /// Its name, when the controller can resolve it.
    pub user: Option<String>,
    /// When the core started it, unix seconds.
    pub started_at: u64,
}

/// The other end of a child's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Client {
    /// A wait server: it has no single client.
    None,
    Inet {
        address: String,
        port: u16,
    },
    /// A unix peer's credentials (SO_PEERCRED).
    Unix {
        pid: i32,
        uid: u32,
        gid: u32,
    },
}
