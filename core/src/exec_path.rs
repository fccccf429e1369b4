//! Tests only: the exec path, from a readable listener to the reaped child,
//! allocates nothing per connection once warm.
#![forbid(unsafe_code)]

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use inetd_protocol::{Action, Bind};
    use log::info;

    use crate::accept::Acceptor;
    use crate::children::{BuiltinIdle, ChildTable, Kind};
    use crate::limits::Knobs;
    use crate::listeners::ListenerTable;
    use crate::sys::child::SingleThreaded;
    use crate::sys::counting::allocations;
    use crate::validate::{self, tests as vt};

    /// Runs `f`; its result and the allocations it made on this thread.
    fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = allocations();
        let out = f();
        (out, allocations() - before)
    }

    const ALONE: &str = "INETD_TEST_EXEC_PATH_ALONE";
    const NAME: &str = "exec_path::tests::the_exec_path_allocates_nothing_per_connection";

    /// Reaps children (as the core does on SIGCHLD) until none is left.
    fn reap_all(children: &mut ChildTable, reaped: &mut Vec<crate::children::Reaped>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while children.live() > 0 {
            assert!(Instant::now() < deadline, "a child was not reaped");
            let ((), allocs) = counting(|| {
                children.reap(reaped);
                for r in reaped.drain(..) {
                    assert!(r.failure.is_none(), "{:?}", r.failure);
                    if let Kind::Server(_) = r.kind {
                        info!("{}: pid {} ended: {}", r.label, r.pid, r.status);
                    }
                }
            });
            n += allocs;
            std::thread::yield_now();
        }
        n
    }

    #[test]
    fn the_exec_path_allocates_nothing_per_connection() {
        if std::env::var_os(ALONE).is_none() {
            // Reaping waits for any child: alone in a process of its own, so no
            // other test's children are taken.
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        if crate::sys::geteuid() != 0 {
            eprintln!("skipped: the child changes to nobody, which needs root");
            return;
        }
        crate::logger::init(log::LevelFilter::Info, false);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut spec = vt::spec(port);
        spec.action = Action::Exec {
            path: "/bin/echo".into(),
            argv: vec!["echo".into(), "hi".into()],
        };
        let prep = validate::validate(&spec, &vt::root_policy()).unwrap();
        let Bind::Inet { .. } = spec.bind else {
            unreachable!()
        };
        let mut table = ListenerTable::default();
        let id = table.insert(&spec, prep).unwrap();
        table.get_mut(id).unwrap().bind(0, 0).unwrap();
        let single = SingleThreaded::for_tests();
        let idle = BuiltinIdle {
            dgram: Duration::from_secs(1),
            stream: Duration::from_secs(1),
        };
        let mut children = ChildTable::new(single, idle, Duration::from_secs(1));
        let knobs = Knobs::default();
        let mut acceptor = Acceptor::default();
        let mut reaped = Vec::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut per_round = Vec::new();
        for round in 0..300 {
            let mut c = TcpStream::connect(addr).unwrap();
            let ((), mut allocs) = counting(|| {
                let (l, ports) = table.get_mut_with_ports(id).unwrap();
                acceptor.serve(id, l, ports, &mut children, &knobs);
            });
            let mut got = String::new();
            c.read_to_string(&mut got).unwrap();
            assert_eq!(got, "hi\n", "round {round}");
            allocs += reap_all(&mut children, &mut reaped);
            crate::logger::flush();
            per_round.push(allocs);
        }
        // The first connections size the tables and buffers that are kept.
        let warm = &per_round[50..];
        assert!(
            warm.iter().all(|&n| n == 0),
            "allocations per connection after 50: {warm:?}"
        );
        println!(
            "allocations per connection: first {:?}, then none in {}",
            &per_round[..5],
            warm.len()
        );
    }
}
