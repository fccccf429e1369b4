//! A compromised controller, as a test client authorised as the controller:
//! well-formed but malicious requests. Each is refused with a reason,
//! nothing else changes (the listener in force keeps its socket), and the
//! core keeps serving another listener throughout.
//!
//! Malicious `Apply`s already covered elsewhere are not repeated here:
//! relative and NUL-bearing paths and argv, argv, group and label bounds
//! (`core_apply::invalid_listeners_are_refused_one_by_one`), more than
//! `MAX_LISTENERS` listeners and duplicate bind keys
//! (`core_apply::a_message_malformed_as_a_whole_changes_nothing`), socket
//! takeover and planted nodes (`unixdir::a_hostile_apply_can_neither_take_over_a_socket_nor_plant_one`),
//! two unix listeners on one path (`unixdir::two_unix_listeners_on_one_path_are_refused_as_a_whole`),
//! ids outside the allowlist (`core_identity::*`), control characters in
//! labels (`core_apply::labels_cannot_forge_log_lines`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inetd_protocol::{
    codec::encode_payload, encode_frame, read_message, write_message, Action, CoreRequest,
    CoreResponse, ListenerSpec, MAX_ARGS, MAX_ARG_LEN, MAX_REQUEST, PROTOCOL_VERSION,
};
use inetd_tests::*;

/// A connection after Hello, as the controller.
fn hello(core: &Core) -> UnixStream {
    core.client().stream
}

/// The answer to a request that the core refuses before reading its
/// payload: written as a header alone, the answer read at once.
fn refused_header(s: &mut UnixStream, len: u32) -> String {
    s.write_all(&len.to_be_bytes()).unwrap();
    match read_message::<CoreResponse, _>(s) {
        Ok(CoreResponse::Error { reason }) => reason,
        other => panic!("a {len}-byte request was answered with {other:?}"),
    }
}

/// The probe listener answers, within `within`.
fn serves(port: u16, within: Duration) -> Duration {
    let t0 = Instant::now();
    let mut c = connect4(port).expect("connect to the probe listener");
    Report::read_from(&mut c);
    let took = t0.elapsed();
    assert!(took < within, "a connection took {took:?}");
    took
}

/// Encoded length of an Apply of `l`.
fn apply_len(l: &[ListenerSpec]) -> usize {
    encode_payload(&CoreRequest::Apply {
        listeners: l.to_vec(),
    })
    .unwrap()
    .len()
}

/// A probe listener on 127.0.0.1:`port` followed by `n` more on other
/// ports with long argv, the whole Apply `bytes` long (to within a few
/// bytes).
fn big_apply(port: u16, n: usize, bytes: usize) -> Vec<ListenerSpec> {
    let mut l = vec![tcp4(port)];
    l.extend((0..n).map(|_| tcp4(free_port())));
    let (mut at, mut len) = (1, apply_len(&l));
    loop {
        let left = bytes.saturating_sub(len);
        if left < 16 {
            assert_eq!(len, apply_len(&l));
            return l;
        }
        let Action::Exec { argv, .. } = &mut l[at].action else {
            unreachable!()
        };
        if argv.len() == MAX_ARGS {
            at += 1;
            continue;
        }
        // A string is its length (8 bytes) and its bytes.
        let arg = "a".repeat((left - 8).min(MAX_ARG_LEN));
        len += 8 + arg.len();
        argv.push(arg);
    }
}

#[test]
fn a_request_longer_than_the_core_reads_is_refused_before_its_payload() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let mut s = hello(&core);
    let reason = refused_header(&mut s, MAX_REQUEST + 1);
    assert!(
        reason.contains(&MAX_REQUEST.to_string()) && reason.contains("longer"),
        "{reason}"
    );
    // Then closed: the rest of that frame is never read.
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap_or(0), 0, "still open");
    serves(port, Duration::from_secs(5));
    assert_eq!(core.status().listeners.len(), 1);
    assert!(core.log().contains("longer than the core reads"));
}

#[test]
fn an_apply_near_the_limit_is_applied_and_a_new_connection_reads_its_status() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let inode = listen_inode(port);
    // Just over the limit: refused as a whole, the listener in force stays.
    let over = big_apply(port, 9, MAX_REQUEST as usize + 1);
    let len = apply_len(&over);
    assert!(len > MAX_REQUEST as usize, "{len}");
    let mut s = hello(&core);
    let mut w = s.try_clone().unwrap();
    // The core answers after the header and closes; our write may fail.
    let writer = std::thread::spawn(move || {
        let _ = write_message(&mut w, &CoreRequest::Apply { listeners: over });
    });
    match read_message::<CoreResponse, _>(&mut s) {
        Ok(CoreResponse::Error { reason }) => assert!(reason.contains("longer"), "{reason}"),
        other => panic!("an Apply of {len} bytes was answered with {other:?}"),
    }
    writer.join().unwrap();
    assert_eq!(
        listen_inode(port),
        inode,
        "the socket in force was replaced"
    );
    assert_eq!(core.status().listeners.len(), 1);

    // Just under: applied, and its status fits in one frame.
    let under = big_apply(port, 9, MAX_REQUEST as usize - 16);
    let len = apply_len(&under);
    assert!(
        len > MAX_REQUEST as usize - 64 && len <= MAX_REQUEST as usize,
        "{len}"
    );
    let r = core.apply(under.clone());
    assert_all_applied(&r);
    // A restarted controller: a new connection, Hello, Status.
    let st = core.status();
    assert_eq!(st.listeners.len(), under.len());
    assert!(st.listeners.iter().zip(&under).all(|(l, s)| l.spec == *s));
    assert_eq!(listen_inode(port), inode);
    serves(port, Duration::from_secs(5));
}

#[test]
fn large_requests_read_at_once_are_bounded_in_total() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rss0 = rss_kib(core.pid()).unwrap();
    // Two connections each hold all but the last byte of a largest
    // request: the core buffers both.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = hello(&core);
        let mut frame = MAX_REQUEST.to_be_bytes().to_vec();
        frame.resize(4 + MAX_REQUEST as usize - 1, 0);
        s.write_all(&frame).unwrap();
        held.push(s);
    }
    // Every other connection that starts a large request is refused with
    // the reason, at once; a small request is still served.
    let mut refused = 0;
    for _ in 0..14 {
        let mut s = hello(&core);
        let reason = refused_header(&mut s, 1024 * 1024);
        assert!(reason.contains("at once"), "{reason}");
        refused += 1;
    }
    assert_eq!(refused, 14);
    let st = core.status();
    assert_eq!(st.listeners.len(), 1);
    serves(port, Duration::from_secs(5));
    let grown = rss_kib(core.pid()).unwrap().saturating_sub(rss0);
    // Two requests of 8 MiB (with the slack of a growing buffer), not
    // sixteen of 16 MiB.
    assert!(grown < 48 * 1024, "the core grew by {grown} KiB");
    // Once one of them goes, a large request is read again.
    drop(held.pop());
    wait_for("the budget freed", Duration::from_secs(10), || {
        let mut s = hello(&core);
        let mut frame = (1024u32 * 1024).to_be_bytes().to_vec();
        frame.resize(4 + 1024, 0);
        s.write_all(&frame).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // Still reading (no answer yet) means it was taken.
        read_message::<CoreResponse, _>(&mut s).is_err()
    });
}

#[test]
fn a_controller_streaming_requests_does_not_starve_the_listeners() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port).limits(no_limits())]);
    // Eight connections stream Hello (the cheapest request) as fast as
    // they can, their answers drained unread.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let batch = encode_frame(&CoreRequest::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap()
    .repeat(512);
    let mut threads = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..8 {
        let s = hello(&core);
        let (mut w, mut r) = (s.try_clone().unwrap(), s.try_clone().unwrap());
        let (stop_w, batch) = (stop.clone(), batch.clone());
        threads.push(std::thread::spawn(move || {
            while !stop_w.load(Ordering::Relaxed) && w.write_all(&batch).is_ok() {}
        }));
        let answered = answered.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                answered.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
        conns.push(s);
    }
    wait_for("streamed answers", Duration::from_secs(10), || {
        answered.load(Ordering::Relaxed) > 100_000
    });
    // Serving every request that waits before the next turn took up to
    // 2 s per connection here (about 10 s for the 20); one request per
    // connection per turn, milliseconds.
    let (t0, mut worst) = (Instant::now(), Duration::ZERO);
    for _ in 0..20 {
        worst = worst.max(serves(port, Duration::from_secs(3)));
    }
    let all = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for s in &conns {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    for t in threads {
        t.join().unwrap();
    }
    eprintln!(
        "{} bytes of answers streamed; 20 connections in {all:?}, the slowest {worst:?}",
        answered.load(Ordering::Relaxed)
    );
    assert!(all < Duration::from_secs(5), "20 connections took {all:?}");
    assert!(core.is_alive());
}
