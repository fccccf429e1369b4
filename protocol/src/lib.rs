//! The wire protocol of inetd: every message that crosses a process boundary,
//! the frame codec, the version and the bounds.
//!
//! Two links use it:
//!
//! * the core link (`core.sock`, or a socketpair in one-command mode), where
//!   `inetd-controller` sends [`CoreRequest`]s and `inetd-core` answers with
//!   [`CoreResponse`]s;
//! * the control link (`control.sock`), where `inetctl` sends
//!   [`control::CtlRequest`]s and the controller answers.
//!
//! This crate is pure: types and the codec, no sockets, no system calls
//! (the clock read by [`unix_now`] aside), so it can be fuzzed and run under
//! miri. It also holds what both sides must decide or write the same way:
//! whether a listener's ids are allowed, with the reason ([`verdict`]), the
//! escape of outside text for a log line ([`escape_log`]), the runtime
//! directory ([`runtime_dir`]), and the names of socket types and IP modes
//! (`Display`). Every message is a frame: a `u32`
//! big-endian length followed by that many bytes of bincode 1.3.3 payload.
//! The length is checked against [`MAX_FRAME`] before anything is allocated;
//! decoding is bounded by the frame's length and trailing bytes are an error.
//! All bincode calls live in [`codec`], so a change of codec touches one file.
//!
//! Enums here are append-only: a new variant goes at the end, and any change
//! to the encoding bumps [`PROTOCOL_VERSION`] together with the golden-bytes
//! test in `tests/codec.rs`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod control;
mod error;
mod local;
mod policy;
mod text;
mod types;

pub use codec::{
    check_apply, decode_payload, encode_frame, read_message, read_payload, write_message, FrameBuf,
};
pub use error::ProtocolError;
pub use local::{runtime_dir, unix_now, unix_seconds, SYSTEM_RUNTIME_DIR};
pub use policy::{verdict, AllowedGroup, AllowedUser, IdNames, Policy, RootCommand};
pub use text::{escape_log, interpreted, log_safe};
pub use types::*;

/// Version of both links. Core, controller and inetctl ship together; a
/// mismatch is an error that names both numbers.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame payload accepted on any link: 16 MiB. Enough for
/// [`MAX_LISTENERS`] listeners with long argv; refused before allocation.
pub const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Largest request the core reads: 8 MiB, half a frame. An `Apply` that
/// fits here leaves room in one [`MAX_FRAME`] for its `Status` (every spec
/// again, with its state, counters and children), so a restarted
/// controller can always read what the core runs. A longer request is
/// answered with an error and the connection closed, before its payload is
/// buffered.
pub const MAX_REQUEST: u32 = MAX_FRAME / 2;

/// Most listeners in one `Apply` (at least 10,000 must fit).
pub const MAX_LISTENERS: usize = 16_384;

/// Longest executable path, in bytes (Linux `PATH_MAX`, without the NUL).
pub const MAX_PATH: usize = 4095;

/// Longest unix socket path, in bytes: `sun_path` is 108 bytes and the path
/// needs its terminating NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// Most argv entries for one server (argv[0] included).
pub const MAX_ARGS: usize = 256;

/// Longest single argv entry, in bytes.
pub const MAX_ARG_LEN: usize = 4096;

/// Most supplementary groups for one service (Linux `NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65_536;

/// Longest controller label, in bytes. The core never interprets it.
pub const MAX_LABEL: usize = 1024;

/// Longest reason or error text, in bytes.
pub const MAX_REASON: usize = 4096;

/// Most access-list rules for one listener.
pub const MAX_ACL_RULES: usize = 4096;
