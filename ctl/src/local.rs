//! Local sockets on the unprivileged side go through the interprocess
//! crate: the control socket's listener and its clients, and the
//! controller's link to the core. See docs/decisions.md for what it does
//! not do and what is done here instead.
#![forbid(unsafe_code)]

use std::path::Path;

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use interprocess::os::unix::uds_local_socket::Stream;

/// Connects to the unix socket at `path` (a filesystem name, never the
/// abstract namespace), blocking and close-on-exec.
pub fn connect(path: &Path) -> std::io::Result<Stream> {
    Stream::connect(path.to_fs_name::<GenericFilePath>()?)
}
