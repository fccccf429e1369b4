//! Internet and unix sockets: bind, listen, accept, peer information.
//!
//! Every socket the core makes is nonblocking and close-on-exec. Accepted
//! connections are blocking (they go to a child as its stdio) and
//! close-on-exec (the child's copy is made by dup2, which clears the flag).

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    SockaddrLike, SockaddrStorage,
};

use inetd_protocol::{IpMode, SocketType};

use super::{nix_err, owned};

/// Listen backlog of every stream listener (Debian's openbsd-inetd `-q`
/// default, and busybox's).
pub const BACKLOG: i32 = 128;

/// Whether a socket of type `t` is listened on and accepted from.
pub fn connected(t: SocketType) -> bool {
    t != SocketType::Dgram
}

/// Makes a nonblocking, close-on-exec socket of type `t`.
pub fn new_socket(af: AddressFamily, t: SocketType) -> io::Result<OwnedFd> {
    let ty = match t {
        SocketType::Stream => SockType::Stream,
        SocketType::Dgram => SockType::Datagram,
        SocketType::Seqpacket => SockType::SeqPacket,
    };
    socket::socket(
        af,
        ty,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_err)
}

/// Where listening sockets are moved to: above the descriptors a
/// connection is given (the lowest free), so that a child that shares the
/// core's descriptor table at first copies only the low part of it (see
/// `spawn.rs`).
pub const LISTENER_FD_BASE: i32 = 256;

/// `fd` moved to the lowest free descriptor from [`LISTENER_FD_BASE`] up
/// (close-on-exec, the same open file), or left where it is if there is
/// none.
pub fn move_high(fd: OwnedFd) -> OwnedFd {
    use nix::fcntl::{fcntl, FcntlArg};
    if fd.as_raw_fd() >= LISTENER_FD_BASE {
        return fd;
    }
    match fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(LISTENER_FD_BASE)) {
        // SAFETY: the kernel just returned this new descriptor, owned by
        // no one else; the old one is closed when `fd` drops.
        Ok(high) => unsafe { OwnedFd::from_raw_fd(high) },
        Err(_) => fd,
    }
}

/// Binds (and for stream sockets, listens on) an internet socket.
pub fn bind_inet(addr: IpAddr, port: u16, mode: IpMode, t: SocketType) -> io::Result<OwnedFd> {
    let af = match mode {
        IpMode::V4 => AddressFamily::Inet,
        IpMode::V6Only | IpMode::Dual => AddressFamily::Inet6,
    };
    let fd = move_high(new_socket(af, t)?);
    if connected(t) {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(nix_err)?;
    }
    match (mode, addr) {
        (IpMode::V4, IpAddr::V4(a)) => {
            let sa = SockaddrIn::from(SocketAddrV4::new(a, port));
            socket::bind(fd.as_raw_fd(), &sa).map_err(nix_err)?;
        }
        (IpMode::V6Only | IpMode::Dual, IpAddr::V6(a)) => {
            // Set explicitly either way: the system default
            // (net.ipv6.bindv6only) must not decide what a listener is.
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &(mode == IpMode::V6Only))
                .map_err(nix_err)?;
            let sa = SockaddrIn6::from(SocketAddrV6::new(a, port, 0, 0));
            socket::bind(fd.as_raw_fd(), &sa).map_err(nix_err)?;
        }
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    }
    if connected(t) {
        listen(&fd)?;
    }
    Ok(fd)
}

pub fn listen(fd: &OwnedFd) -> io::Result<()> {
    let backlog = Backlog::new(BACKLOG).map_err(nix_err)?;
    socket::listen(fd, backlog).map_err(nix_err)
}

/// Why an accept produced no connection.
#[derive(Debug)]
pub enum AcceptError {
    /// Nothing (more) to accept, or the client went away first
    /// (EAGAIN, ECONNABORTED, EPROTO, EINTR): harmless.
    Nothing,
    /// Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
    /// caller stops polling listeners for a while.
    Resources(io::Error),
    Other(io::Error),
}

/// Accepts one connection: blocking (it becomes a child's stdio),
/// close-on-exec; with its peer's internet address, which the kernel
/// writes in the same call (`None` for a unix peer), so that no
/// `getpeername` is needed.
pub fn accept(listener: BorrowedFd<'_>) -> Result<(OwnedFd, Option<SocketAddr>), AcceptError> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of that plain
    // C struct.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid and exclusively borrowed; accept4
    // writes at most `len` bytes of address.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::addr_of_mut!(ss).cast(),
            &mut len,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd == -1 {
        return Err(match nix::Error::last() {
            nix::Error::EAGAIN
            | nix::Error::ECONNABORTED
            | nix::Error::EPROTO
            | nix::Error::EINTR
            | nix::Error::EPERM => AcceptError::Nothing,
            e @ (nix::Error::EMFILE
            | nix::Error::ENFILE
            | nix::Error::ENOBUFS
            | nix::Error::ENOMEM) => AcceptError::Resources(nix_err(e)),
            e => AcceptError::Other(nix_err(e)),
        });
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let conn = unsafe { owned(fd) };
    // SAFETY: accept4 wrote an address of `len` bytes into `ss`.
    let sa = unsafe { SockaddrStorage::from_raw(std::ptr::addr_of!(ss).cast(), Some(len)) };
    Ok((conn, sa.as_ref().and_then(to_std)))
}

fn to_std(sa: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = sa.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = sa.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

/// The peer of an internet connection.
pub fn peer_inet(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|s| to_std(&s))
}

/// The local address of an internet socket.
pub fn local_inet(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|s| to_std(&s))
}

/// The credentials of a unix peer, as the kernel recorded them at connect
/// time (SO_PEERCRED): pid, uid, gid.
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(i32, u32, u32)> {
    let c = socket::getsockopt(&fd, sockopt::PeerCredentials).map_err(nix_err)?;
    Ok((c.pid(), c.uid(), c.gid()))
}

/// Reads one datagram away and drops it, so a dgram service whose server
/// cannot start does not make the socket readable forever.
pub fn discard_datagram(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 1];
    let _ = socket::recv(
        fd.as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    );
}

/// Whether a unix socket path has a live listener behind it.
pub fn unix_answers(path: &std::path::Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// The source of the next queued datagram, left in the queue (MSG_PEEK);
/// `None` when there is none (or it has no internet source).
pub fn peek_source(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    loop {
        match socket::recvmsg::<SockaddrStorage>(
            fd.as_raw_fd(),
            &mut iov,
            None,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(m) => return m.address.as_ref().and_then(to_std),
            Err(nix::Error::EINTR) => {}
            Err(_) => return None,
        }
    }
}
