//! `inetd-test-probe`: a server for the black-box tests. The core runs it as
//! a service; it tells the test what it was given (descriptors, ids,
//! capabilities, environment, ...) in a line-based report, or plays a
//! simple server role. It is also a small client the tests run as other
//! users (through `setpriv`) to see how the core socket treats them.
//!
//! Modes (the first argument):
//!
//! * `report`: write the report to fd 1, exit 0.
//! * `echo`: copy fd 0 to fd 1 until end of file.
//! * `sleep N`: write `pid P` to fd 1, then hold everything for N seconds.
//! * `udp-echo-once`: fd 0 is a datagram socket (a `wait` service): receive
//!   one datagram, answer `pid P <payload>`, exit.
//! * `udp-echo`: like `udp-echo-once`, but keep answering until a datagram
//!   `quit` has been answered.
//! * `udp-report`: fd 0 is a datagram socket (a `wait` service): take the
//!   report, receive one datagram, answer with the report, exit.
//! * `udp-family TAG [stubborn]`: fd 0 is a datagram socket (a `wait`
//!   service): start a helper (`udp-member`, this program again, in the same
//!   process group, holding the same socket, as tftpd's per-transfer child
//!   does), then both answer every datagram with `TAG pid P PAYLOAD` until
//!   they are killed. `stubborn`: both block SIGTERM, so only SIGKILL ends
//!   them.
//! * `canary FILE`: a process that is no child of the core: a session of
//!   its own, every catchable termination signal blocked and read from a
//!   signalfd; writes `ready` and then `signal N` for each signal received
//!   to FILE, until its stdin reaches end of file.
//! * `accept-once`: fd 0 is a listening stream socket (a `wait` service):
//!   take the report, accept one connection, write the report to it, exit.
//! * `core-client SOCKET [BIND-PATH]`: connect to a core socket (after
//!   binding the client socket to BIND-PATH, if given), send a `Hello` and
//!   print on stdout what happened: `connect ok|err ERRNO`, then `reply ...`,
//!   `eof`, `err ERRNO` or `timeout`.
//! * `hold-unix SOCKET N`: open N connections to SOCKET (a unix stream
//!   socket), print `held K` (those that connected), send nothing, and
//!   hold them until stdin reaches end of file.
//! * `fake-core SOCKET`: listen at SOCKET (mode 0666) as whoever runs the
//!   probe, print `listening`, wait up to 10 s for one connection, then
//!   print what the peer did within 5 s: `frame` (it sent a byte), `eof`
//!   (it closed without one) or `timeout`; `no connection` if none came.
//!
//! The report is one `KEY VALUE` pair per line, ending with `end`:
//! `pid`, `ppid`, `sid`, `pgid`, `uid`/`gid` (real effective saved fs),
//! `groups`, `umask`, `cwd`, `nonewprivs`, `capeff`, `capprm`, `capbnd`,
//! `capinh`, `capamb`, `sigign`, `sigblk`, `sigcgt` (hex masks as in
//! /proc/self/status), `nofile SOFT HARD`, `fd N TARGET` per open descriptor,
//! `sock N type=T local=A peer=B` for each of fds 0-2 that is a socket,
//! `env NAME=VALUE` per environment variable, `arg S` per argument.
//!
//! The Rust runtime sets SIGPIPE to ignored and installs SIGSEGV/SIGBUS
//! handlers before `main`, so the probe's own `sigign` and `sigcgt` do not
//! show what the core gave it; tests that check signal dispositions read
//! `/proc/PID/status` of a C program (`cat`, `sleep`) instead. `sigblk` is
//! not touched by the runtime and is exact.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{
    getpeername, getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike,
    SockaddrStorage, UnixAddr,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("report");
    let code = match mode {
        "report" => {
            let r = report();
            write_out(&r)
        }
        "echo" => echo(),
        "sleep" => {
            let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
            let _ = write_out(&format!("pid {}\n", std::process::id()));
            std::thread::sleep(Duration::from_secs(secs));
            0
        }
        "udp-echo-once" => udp_echo(true),
        "udp-echo" => udp_echo(false),
        "accept-once" => accept_once(),
        "udp-report" => udp_report(),
        "udp-family" | "udp-member" => udp_family(mode, &args[1..]),
        "canary" => canary(&args[1..]),
        "core-client" => core_client(&args[1..]),
        "fake-core" => fake_core(&args[1..]),
        "hold-unix" => hold_unix(&args[1..]),
        other => {
            eprintln!("inetd-test-probe: unknown mode {other:?}");
            2
        }
    };
    std::process::exit(code);
}

fn write_out(s: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn echo() -> i32 {
    let mut buf = [0u8; 4096];
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    loop {
        match input.read(&mut buf) {
            Ok(0) => return 0,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return 1,
        }
    }
}

/// The `wait` dgram server: fd 0 is the bound datagram socket.
fn udp_echo(once: bool) -> i32 {
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    let sock = UdpSocket::from(fd);
    let pid = std::process::id();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => return 1,
        };
        let payload = &buf[..n];
        let mut reply = format!("pid {pid} ").into_bytes();
        reply.extend_from_slice(payload);
        if sock.send_to(&reply, from).is_err() {
            return 1;
        }
        if once || payload == b"quit" {
            return 0;
        }
    }
}

/// The `wait` dgram server that answers with its report.
fn udp_report() -> i32 {
    let r = report();
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    let sock = UdpSocket::from(fd);
    let mut buf = [0u8; 2048];
    let Ok((_, from)) = sock.recv_from(&mut buf) else {
        return 1;
    };
    match sock.send_to(r.as_bytes(), from) {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// The signals `stubborn` and `canary` block.
fn blockable() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
    ] {
        set.add(s);
    }
    set
}

/// A wait dgram server with a helper in its process group, both serving
/// the socket on fd 0.
fn udp_family(mode: &str, args: &[String]) -> i32 {
    let tag = args.first().map(String::as_str).unwrap_or("-");
    let stubborn = args.get(1).map(String::as_str) == Some("stubborn");
    if stubborn {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        if set.thread_block().is_err() {
            return 1;
        }
    }
    // The helper inherits fds 0-2 (the socket) and the process group;
    // std resets its signal mask, so it blocks SIGTERM itself.
    let _helper = if mode == "udp-family" {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(_) => return 1,
        };
        match std::process::Command::new(exe)
            .arg("udp-member")
            .args(args)
            .spawn()
        {
            Ok(c) => Some(c),
            Err(_) => return 1,
        }
    } else {
        None
    };
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    let sock = UdpSocket::from(fd);
    let pid = std::process::id();
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return 1;
        };
        let mut reply = format!("{tag} pid {pid} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = sock.send_to(&reply, from);
    }
}

/// A process that records every signal it gets (see the module's header).
fn canary(args: &[String]) -> i32 {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let Some(path) = args.first() else {
        eprintln!("usage: inetd-test-probe canary FILE");
        return 2;
    };
    let set = blockable();
    if nix::unistd::setsid().is_err() || set.thread_block().is_err() {
        return 1;
    }
    let Ok(sfd) = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC) else {
        return 1;
    };
    let Ok(mut out) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return 1;
    };
    if out.write_all(b"ready\n").is_err() {
        return 1;
    }
    let stdin = std::io::stdin();
    loop {
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        if fds[0].any() == Some(true) {
            if let Ok(Some(info)) = sfd.read_signal() {
                let _ = writeln!(out, "signal {}", info.ssi_signo);
            }
        }
        if fds[1].any() == Some(true) {
            let mut b = [0u8; 64];
            if !matches!(std::io::stdin().read(&mut b), Ok(n) if n > 0) {
                return 0;
            }
        }
    }
}

/// The `wait` stream server: fd 0 is the listening socket.
fn accept_once() -> i32 {
    let r = report();
    let conn = match nix::sys::socket::accept(0) {
        Ok(fd) => fd,
        Err(_) => return 1,
    };
    // The accepted connection becomes fd 1 so it can be written safely
    // through stdout; fd 1 was only another copy of the listening socket.
    if nix::unistd::dup2(conn, 1).is_err() {
        return 1;
    }
    let _ = nix::unistd::close(conn);
    write_out(&r)
}

fn hold_unix(args: &[String]) -> i32 {
    let (Some(path), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: inetd-test-probe hold-unix SOCKET N");
        return 2;
    };
    let held: Vec<UnixStream> = (0..n)
        .filter_map(|_| UnixStream::connect(path).ok())
        .collect();
    println!("held {}", held.len());
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
    0
}

fn core_client(args: &[String]) -> i32 {
    let Some(target) = args.first() else {
        eprintln!("usage: inetd-test-probe core-client SOCKET [BIND-PATH]");
        return 2;
    };
    let stream = match connect_unix(target, args.get(1).map(String::as_str)) {
        Ok(s) => {
            println!("connect ok");
            s
        }
        Err(e) => {
            println!("connect err {}", e.desc_name());
            return 0;
        }
    };
    let mut stream = stream;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let hello = inetd_protocol::CoreRequest::Hello {
        version: inetd_protocol::PROTOCOL_VERSION,
    };
    // A write may fail if the core already closed the connection.
    let _ = inetd_protocol::write_message(&mut stream, &hello);
    let mut header = [0u8; 4];
    match stream.read(&mut header) {
        Ok(0) => println!("eof"),
        Ok(_) => match inetd_protocol::read_payload(&mut (&header[..]).chain(&mut stream)) {
            Ok(Some(p)) => match inetd_protocol::decode_payload::<inetd_protocol::CoreResponse>(&p)
            {
                Ok(r) => println!("reply {r:?}"),
                Err(e) => println!("reply undecodable {e}"),
            },
            Ok(None) => println!("eof"),
            Err(e) => println!("reply broken {e}"),
        },
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            println!("timeout")
        }
        Err(e) => println!(
            "err {}",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)).desc_name()
        ),
    }
    0
}

fn fake_core(args: &[String]) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = args.first() else {
        eprintln!("usage: inetd-test-probe fake-core SOCKET");
        return 2;
    };
    let listener = match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("inetd-test-probe: bind {path}: {e}");
            return 1;
        }
    };
    let mode = std::fs::Permissions::from_mode(0o666);
    if std::fs::set_permissions(path, mode).is_err() || listener.set_nonblocking(true).is_err() {
        return 1;
    }
    println!("listening");
    let _ = std::io::stdout().flush();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => {
                println!("no connection");
                return 0;
            }
        }
    };
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut b = [0u8; 1];
    match conn.read(&mut b) {
        Ok(0) => println!("eof"),
        Ok(_) => println!("frame"),
        Err(_) => println!("timeout"),
    }
    0
}

trait ErrnoName {
    fn desc_name(&self) -> String;
}

impl ErrnoName for nix::errno::Errno {
    /// The symbolic name (`EACCES`), which tests match on.
    fn desc_name(&self) -> String {
        format!("{self:?}")
    }
}

fn connect_unix(target: &str, bind: Option<&str>) -> Result<UnixStream, nix::errno::Errno> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    use std::os::fd::AsRawFd;
    if let Some(b) = bind {
        nix::sys::socket::bind(fd.as_raw_fd(), &UnixAddr::new(b)?)?;
    }
    nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(target)?)?;
    Ok(UnixStream::from(fd))
}

/// Builds the report. Read-only: it changes nothing in the process.
fn report() -> String {
    let mut r = String::new();
    let mut line = |k: &str, v: &str| {
        r.push_str(k);
        r.push(' ');
        r.push_str(v);
        r.push('\n');
    };
    // Descriptors first, before anything else here opens one.
    let fds = open_fds();
    let pid = std::process::id();
    line("pid", &pid.to_string());
    line("ppid", &nix::unistd::getppid().to_string());
    line(
        "sid",
        &nix::unistd::getsid(None)
            .map(|p| p.to_string())
            .unwrap_or_else(|e| format!("error {e}")),
    );
    line("pgid", &nix::unistd::getpgrp().to_string());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (field, key) in [
        ("Uid", "uid"),
        ("Gid", "gid"),
        ("Groups", "groups"),
        ("Umask", "umask"),
        ("NoNewPrivs", "nonewprivs"),
        ("CapInh", "capinh"),
        ("CapPrm", "capprm"),
        ("CapEff", "capeff"),
        ("CapBnd", "capbnd"),
        ("CapAmb", "capamb"),
        ("SigBlk", "sigblk"),
        ("SigIgn", "sigign"),
        ("SigCgt", "sigcgt"),
    ] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "missing".into());
        line(key, &v);
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .map(|v| v.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "missing".into());
    line("nofile", &nofile);
    line(
        "cwd",
        &std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("error {e}")),
    );
    for (fd, target) in &fds {
        line("fd", &format!("{fd} {target}"));
    }
    for fd in 0..3 {
        if let Some(s) = sock_info(fd) {
            line("sock", &format!("{fd} {s}"));
        }
    }
    for (k, v) in std::env::vars_os() {
        line(
            "env",
            &format!("{}={}", k.to_string_lossy(), v.to_string_lossy()),
        );
    }
    for a in std::env::args_os() {
        line("arg", &a.to_string_lossy());
    }
    r.push_str("end\n");
    r
}

/// Open descriptors with their targets, without the one that reads the
/// directory.
fn open_fds() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    let own = std::fs::canonicalize("/proc/self/fd")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let target = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        if target == own {
            continue;
        }
        out.push((fd, target));
    }
    out.sort();
    out
}

fn sock_info(fd: i32) -> Option<String> {
    let local: SockaddrStorage = getsockname(fd).ok()?;
    let ty = match fd {
        0 => getsockopt(&std::io::stdin().as_fd(), sockopt::SockType),
        1 => getsockopt(&std::io::stdout().as_fd(), sockopt::SockType),
        _ => getsockopt(&std::io::stderr().as_fd(), sockopt::SockType),
    };
    let ty = match ty {
        Ok(SockType::Stream) => "stream",
        Ok(SockType::Datagram) => "dgram",
        Ok(SockType::SeqPacket) => "seqpacket",
        Ok(_) => "other",
        Err(_) => "?",
    };
    let peer = match getpeername::<SockaddrStorage>(fd) {
        Ok(p) => addr_text(&p),
        Err(e) => format!("none({e:?})"),
    };
    Some(format!(
        "type={ty} family={} local={} peer={peer}",
        family_name(&local),
        addr_text(&local)
    ))
}

fn family_name(a: &SockaddrStorage) -> &'static str {
    match a.family() {
        Some(AddressFamily::Inet) => "inet",
        Some(AddressFamily::Inet6) => "inet6",
        Some(AddressFamily::Unix) => "unix",
        _ => "other",
    }
}

fn addr_text(a: &SockaddrStorage) -> String {
    if let Some(v4) = a.as_sockaddr_in() {
        return std::net::SocketAddrV4::from(*v4).to_string();
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return std::net::SocketAddrV6::from(*v6).to_string();
    }
    if let Some(u) = a.as_unix_addr() {
        return match u.path() {
            Some(p) => p.display().to_string(),
            None => "unnamed".into(),
        };
    }
    "?".into()
}
