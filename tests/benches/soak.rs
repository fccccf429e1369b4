//! Benchmark: a soak of our core. One million connections to one service
//! (the tiny static server, as `nobody`), and the core's RSS and
//! descriptor count after the first 10,000 against those at the end: a
//! core that keeps nothing per connection ends where it was.
//!
//! ```text
//! cargo build --release --workspace
//! INETD_BENCH_SOAK=1 cargo bench -p inetd-tests --bench soak     # as root, about 10 min
//! ```
//!
//! Without `INETD_BENCH_SOAK=1` a full run only says how to start it (so
//! that `cargo bench` over every target stays short). The readings are
//! taken with no connection in flight: the clients stop, the bench waits
//! until the core has reaped every child, then reads `/proc/PID/status`
//! (VmRSS) and `/proc/PID/fd`; the same at every 100,000 connections, to
//! show the trend.
//!
//! Environment: `INETD_BENCH_SOAK_CONNECTIONS` (1,000,000),
//! `INETD_BENCH_SOAK_CLIENTS` (8), and `INETD_BENCH_LOG_LEVEL`,
//! `INETD_BENCH_NETNS=host` as in the `spawn` bench.
//!
//! Run by `cargo test --benches`, it is the smoke run: 2,000 connections,
//! read after 500; it fails unless every connection was served and every
//! reading was made.

mod support;

use std::time::{Duration, Instant};

use support::{
    env_flag, env_num, measure, print_load, print_table_named, Amount, Bench, Kind, Row, Server,
    Smoke,
};

fn main() {
    let b = Bench::setup("soak");
    if !b.smoke && !env_flag("INETD_BENCH_SOAK") {
        println!(
            "the soak runs only with INETD_BENCH_SOAK=1 (1,000,000 connections, about 10 min)"
        );
        return;
    }
    let (total, first, step) = if b.smoke {
        (2_000, 500, 500)
    } else {
        (
            env_num("INETD_BENCH_SOAK_CONNECTIONS").unwrap_or(1_000_000),
            10_000,
            100_000,
        )
    };
    let clients = env_num("INETD_BENCH_SOAK_CLIENTS").unwrap_or(8) as usize;
    let mut smoke = Smoke::default();
    print_load("at start");

    let port = inetd_tests::free_port();
    let Some(d) = b.start(Kind::Ours, Server::Hello, &[port]) else {
        smoke.require("the soak", false, "the core did not start");
        smoke.finish();
        std::process::exit(1);
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut read = |label: String, served: u64, rate: Option<f64>, smoke: &mut Smoke| {
        let idle = d.wait_idle(Duration::from_secs(30));
        let rss = d.rss_kib().map(|v| v as f64);
        let fds = d.fd_count() as f64;
        let ctl = d.controller_rss_kib().map(|v| v as f64);
        smoke.require(&label, idle && rss.is_some() && ctl.is_some(), "no reading");
        println!(
            "{label}: {served} served, core RSS {} KiB, {fds} fds, controller RSS {} KiB",
            rss.map_or("-".into(), |v| format!("{v:.0}")),
            ctl.map_or("-".into(), |v| format!("{v:.0}"))
        );
        rows.push((label, vec![Some(served as f64), rss, Some(fds), ctl, rate]));
    };
    read("before".into(), 0, None, &mut smoke);
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut failed = 0u64;
    let mut next: u64 = first;
    while done < total {
        let n = next.min(total) - done;
        let s = measure(&d, port, clients, Amount::Total(n), Server::Hello.reply());
        if b.smoke {
            smoke.check(&format!("{n} connections"), &s, n);
        } else if s.failed > 0 {
            eprintln!(
                "{} connections failed (first: {})",
                s.failed,
                s.first_error.as_deref().unwrap_or("-")
            );
        }
        done += n;
        failed += s.failed;
        let label = if done == first {
            format!("after the first {done}")
        } else if done >= total {
            "at the end".to_string()
        } else {
            format!("after {done}")
        };
        read(label, done - failed, Some(s.rate), &mut smoke);
        // Then at every multiple of `step`.
        next = (done / step + 1) * step;
    }
    let took = t0.elapsed().as_secs_f64();
    print_table_named(
        &format!(
            "soak of {total} connections, {clients} clients: {:.0} s, {:.0} conn/s, {failed} failed",
            took,
            (total - failed) as f64 / took
        ),
        "when",
        &["served", "rss KiB", "fds", "ctl KiB", "c/s"],
        &rows,
        0,
    );
    let pick = |label: &str, col: usize| {
        rows.iter()
            .find(|r| r.0.starts_with(label))
            .and_then(|r| r.1[col])
    };
    if let (Some(r1), Some(r2), Some(f1), Some(f2)) = (
        pick("after the first", 1),
        pick("at the end", 1),
        pick("after the first", 2),
        pick("at the end", 2),
    ) {
        println!();
        println!(
            "core at the end against after the first {first}: RSS {:+.0} KiB, descriptors {:+.0}",
            r2 - r1,
            f2 - f1
        );
    }
    print_load("at end");
    drop(d);
    if b.smoke {
        smoke.finish();
    }
}
