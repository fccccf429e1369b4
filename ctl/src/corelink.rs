//! The controller's link to the core: a connection to `core.sock`, or the
//! socketpair end a one-command core passed as `--core-fd N`, both as
//! interprocess local-socket streams. Requests are strictly one at a time,
//! each answered by one response.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::traits::{Stream as _, StreamCommon as _};
use interprocess::os::unix::uds_local_socket::Stream;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, SFlag};

use std::io::Write;

use inetd_protocol::{
    encode_frame, read_message, CoreRequest, CoreResponse, HelloReply, ListenerSpec, MAX_REQUEST,
    PROTOCOL_VERSION,
};
use serde::Serialize;

/// How long one answer of the core may take. An `Apply` of many listeners
/// binds them all; a core that takes longer than this is treated as gone.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// [`CoreRequest::Apply`] over borrowed specs. Serde encodes a `&T` as the
/// `T` and a variant by its index, so the frame is the one of
/// `CoreRequest::Apply` with the same specs (a test checks it), without a
/// copy of every spec: 10,000 of them are several megabytes.
#[derive(Serialize)]
#[serde(rename = "CoreRequest")]
pub enum ApplyRequest<'a> {
    /// Never made: it holds `Apply`'s index where `CoreRequest` has it.
    #[allow(dead_code)]
    Hello {
        version: u32,
    },
    Apply {
        listeners: Vec<&'a ListenerSpec>,
    },
}

/// `req` as a frame, or why the core would not read it.
fn request_frame<T: Serialize>(req: &T) -> Result<Vec<u8>, String> {
    let frame = encode_frame(req).map_err(|e| {
        format!(
            "the request does not fit in a frame ({e}): fewer services, or shorter argument lists"
        )
    })?;
    let len = frame.len() - inetd_protocol::codec::HEADER_LEN;
    if len > MAX_REQUEST as usize {
        return Err(format!(
            "a request of {len} bytes is longer than the core reads ({MAX_REQUEST} bytes): fewer \
             services, or shorter argument lists"
        ));
    }
    Ok(frame)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The link is broken (connection refused or closed, a timeout, a bad
    /// frame): the core is not reachable.
    Down(String),
    /// What answers on `core.sock` runs as neither root nor the
    /// controller's own uid: not the core, and never told anything.
    Untrusted(String),
    /// The core speaks another protocol version.
    VersionMismatch { ours: u32, theirs: u32 },
    /// The core answered with something that is not the answer to the
    /// request.
    Unexpected(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Down(e) => write!(f, "the core is not reachable: {e}"),
            LinkError::Untrusted(e) => write!(f, "refusing the core socket: {e}"),
            LinkError::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: the controller speaks version {ours}, the core speaks version {theirs}"
            ),
            LinkError::Unexpected(e) => write!(f, "unexpected answer from the core: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Adopts the descriptor a one-command core passed as `--core-fd N`.
///
/// Checked before adoption: N is above the standard descriptors, open
/// (`F_GETFD`), and a socket (`fstat`). It is then made close-on-exec, so
/// nothing the controller might start could hold the core link.
/// interprocess takes over an `OwnedFd`, but making one from a number is
/// ours to do (it has no safe way to adopt an inherited descriptor).
#[allow(unsafe_code)]
pub fn adopt_core_fd(n: RawFd) -> Result<Stream, String> {
    if n < 3 {
        return Err(format!("--core-fd {n}: must be 3 or more"));
    }
    fcntl(n, FcntlArg::F_GETFD)
        .map_err(|e| format!("--core-fd {n}: not an open descriptor: {e}"))?;
    let st = fstat(n).map_err(|e| format!("--core-fd {n}: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!("--core-fd {n}: not a socket"));
    }
    // `n` was inherited from the core and this function runs once, at the
    // start of main, before the process opens any descriptor of its own, so
    // no other object in this process owns `n`.
    // SAFETY: `n` is open (F_GETFD succeeded) and a socket; the OwnedFd
    // becomes its sole owner and closes it exactly once.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| format!("--core-fd {n}: cannot set close-on-exec: {e}"))?;
    Ok(Stream::from(fd))
}

/// An established link: the Hello exchange is done.
pub struct CoreLink {
    stream: Stream,
    pub hello: HelloReply,
}

impl CoreLink {
    /// Connects to `core.sock` (interprocess sets SOCK_CLOEXEC), checks
    /// with SO_PEERCRED that what listens there runs as root or as `me`
    /// (a core started by the same user), and says Hello. Anything else
    /// could be a local user's socket at a path the core left free: it is
    /// sent nothing, not even Hello.
    pub fn connect(path: &Path, me: u32) -> Result<CoreLink, LinkError> {
        let stream = crate::local::connect(path)
            .map_err(|e| LinkError::Down(format!("{}: {e}", path.display())))?;
        let uid = stream
            .peer_creds()
            .map_err(|e| LinkError::Down(format!("{}: SO_PEERCRED: {e}", path.display())))?
            .euid();
        match uid {
            Some(0) => {}
            Some(u) if u == me => {}
            Some(u) => {
                return Err(LinkError::Untrusted(format!(
                    "{} is served by uid {u}, which is neither root nor this controller's uid {me}; \
                     not a core this controller trusts (check who made it, or give --core-socket the real core's path)",
                    path.display()
                )))
            }
            None => {
                return Err(LinkError::Untrusted(format!(
                    "{}: the kernel gave no peer credentials",
                    path.display()
                )))
            }
        }
        CoreLink::handshake(stream)
    }

    /// Says Hello on an open stream and checks the core's version.
    pub fn handshake(stream: Stream) -> Result<CoreLink, LinkError> {
        stream
            .set_recv_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| stream.set_send_timeout(Some(ANSWER_TIMEOUT)))
            .map_err(|e| LinkError::Down(e.to_string()))?;
        let mut link = CoreLink {
            stream,
            hello: HelloReply {
                version: 0,
                software_version: String::new(),
                pid: 0,
                uid: 0,
                policy: inetd_protocol::Policy::default(),
            },
        };
        match link.request(&CoreRequest::Hello {
            version: PROTOCOL_VERSION,
        })? {
            CoreResponse::Hello(h) if h.version == PROTOCOL_VERSION => {
                link.hello = h;
                Ok(link)
            }
            CoreResponse::Hello(h) => Err(LinkError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            }),
            CoreResponse::Error { reason } => {
                Err(LinkError::Unexpected(format!("Hello refused: {reason}")))
            }
            other => Err(LinkError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends one request and waits for its answer.
    /// A request the core would refuse for its length (it reads at most
    /// `MAX_REQUEST` bytes) is answered here with the core's reason, never
    /// sent: sent, the core would close the link, and the re-sync would
    /// send it again.
    /// `req` is a [`CoreRequest`] or an [`ApplyRequest`].
    pub fn request<T: Serialize>(&mut self, req: &T) -> Result<CoreResponse, LinkError> {
        let frame = match request_frame(req) {
            Ok(f) => f,
            Err(reason) => return Ok(CoreResponse::Error { reason }),
        };
        self.stream
            .write_all(&frame)
            .and_then(|()| self.stream.flush())
            .map_err(|e| LinkError::Down(e.to_string()))?;
        read_message(&mut self.stream).map_err(|e| LinkError::Down(e.to_string()))
    }

    /// Whether the core closed the link. The core never speaks first, so
    /// a readable link between requests means end of file or an error.
    pub fn is_closed(&self) -> bool {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => true,
            Err(nix::errno::Errno::EINTR) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::{Action, Bind, Credentials, IpMode, Limits, ListenerSpec, SocketType};

    fn spec(port: u16, args: usize) -> ListenerSpec {
        ListenerSpec {
            bind: Bind::Inet {
                addr: "127.0.0.1".parse().unwrap(),
                port,
                mode: IpMode::V4,
            },
            socket_type: SocketType::Stream,
            wait: false,
            action: Action::Exec {
                path: "/bin/echo".into(),
                argv: vec!["x".repeat(4000); args],
            },
            creds: Credentials {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            },
            limits: Limits::default(),
            acl: None,
            label: String::new(),
        }
    }

    #[test]
    fn an_apply_over_borrowed_specs_is_the_same_frame() {
        let specs: Vec<ListenerSpec> = (1..=3).map(|p| spec(p, 2)).collect();
        let owned = CoreRequest::Apply {
            listeners: specs.clone(),
        };
        let borrowed = ApplyRequest::Apply {
            listeners: specs.iter().collect(),
        };
        assert_eq!(
            request_frame(&borrowed).unwrap(),
            request_frame(&owned).unwrap()
        );
        let empty = ApplyRequest::Apply { listeners: vec![] };
        let decoded: CoreRequest = inetd_protocol::codec::decode_payload(
            &request_frame(&empty).unwrap()[inetd_protocol::codec::HEADER_LEN..],
        )
        .unwrap();
        assert_eq!(decoded, CoreRequest::Apply { listeners: vec![] });
    }

    #[test]
    fn a_request_longer_than_the_core_reads_is_never_sent() {
        let fits = CoreRequest::Apply {
            listeners: (1..=8).map(|p| spec(p, 256)).collect(),
        };
        assert!(request_frame(&fits).is_ok());
        for n in [9, 17] {
            let long = CoreRequest::Apply {
                listeners: (1..=n).map(|p| spec(p, 256)).collect(),
            };
            let e = request_frame(&long).unwrap_err();
            assert!(e.contains("fewer services"), "{e}");
        }
    }
}
