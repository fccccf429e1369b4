//! Shared by the config_*.rs tests: fixture name sources (Debian netbase
//! services, base-passwd users plus a few test users, a hosts file with
//! documentation addresses) and helpers to load a configuration text.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use inetd_ctl::config::{load_with, Config, Entry, LoadOptions, NameSources, Severity};
use inetd_protocol::{Action, Bind, IpMode, SocketType};

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn names() -> NameSources {
    NameSources {
        services: Some(data("services")),
        passwd: Some(data("passwd")),
        group: Some(data("group")),
    }
}

/// Host-independent: fixture hosts, IPv6 present, servers checked below
/// tests/data/root (where only usr/sbin/present is an executable).
pub fn options() -> LoadOptions {
    LoadOptions {
        hosts: Some(data("hosts")),
        ipv6: Some(true),
        server_root: Some(data("root")),
    }
}

/// A fresh directory under the cargo test tmpdir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "config-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `text` to a file and loads it with the fixtures.
pub fn load_bytes_with(text: &[u8], opts: &LoadOptions) -> Config {
    let dir = temp_dir("text");
    let path = dir.join("inetd.conf");
    std::fs::write(&path, text).expect("write config");
    load_with(&[path], &names(), opts).expect("load")
}

pub fn load_text(text: &str) -> Config {
    load_bytes_with(text.as_bytes(), &options())
}

/// (line, message) of each error.
pub fn errors(c: &Config) -> Vec<(u32, String)> {
    c.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

/// (line, message) of each warning.
pub fn warnings(c: &Config) -> Vec<(u32, String)> {
    c.diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| (d.line, d.message.clone()))
        .collect()
}

/// The one error of a one-entry config: its line and message.
pub fn only_error(text: &str) -> (u32, String) {
    let c = load_text(text);
    let e = errors(&c);
    assert_eq!(
        e.len(),
        1,
        "expected one error for {text:?}, got {:#?}",
        c.diagnostics
    );
    assert_eq!(c.rejected.len(), 1, "{text:?}");
    assert!(c.entries.is_empty(), "{text:?}: {:?}", c.entries);
    e.into_iter().next().unwrap()
}

/// A compact view of an entry: "service proto addr:port user:group".
pub fn row(e: &Entry) -> String {
    let place = match &e.spec.bind {
        Bind::Inet { addr, port, .. } => match addr {
            std::net::IpAddr::V4(a) => format!("{a}:{port}"),
            std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
        },
        Bind::Unix { path } => path.clone(),
    };
    format!(
        "{}:{} {} {} {} {}:{}",
        e.source.file.rsplit('/').next().unwrap_or(""),
        e.source.line,
        e.service,
        e.protocol,
        place,
        e.user,
        e.group
    )
}

pub fn rows(c: &Config) -> Vec<String> {
    c.entries.iter().map(row).collect()
}

/// Checks what the spec says matches the row's protocol, for every entry.
pub fn check_consistency(c: &Config) {
    for e in &c.entries {
        let (st, mode) = match &e.spec.bind {
            Bind::Inet { mode, addr, .. } => {
                assert_eq!(addr.is_ipv4(), *mode == IpMode::V4, "{}", row(e));
                (e.spec.socket_type, Some(*mode))
            }
            Bind::Unix { .. } => (e.spec.socket_type, None),
        };
        let expected = match (e.protocol.as_str(), mode) {
            ("tcp4", Some(IpMode::V4))
            | ("tcp6", Some(IpMode::V6Only))
            | ("tcp46", Some(IpMode::Dual)) => st == SocketType::Stream,
            ("udp4", Some(IpMode::V4))
            | ("udp6", Some(IpMode::V6Only))
            | ("udp46", Some(IpMode::Dual)) => st == SocketType::Dgram,
            ("unix", None) => true,
            _ => false,
        };
        assert!(expected, "row protocol and spec disagree: {}", row(e));
        match &e.spec.action {
            Action::Exec { path, argv } => {
                assert_eq!(path, &e.server);
                assert_eq!(argv, &e.argv);
                assert!(!argv.is_empty());
            }
            Action::Builtin(_) => assert_eq!(e.server, "internal"),
        }
        assert!(e.spec.label.len() <= inetd_protocol::MAX_LABEL);
        let label = inetd_ctl::config::Label::decode(&e.spec.label).expect("label decodes");
        assert_eq!(label.line, e.source.line);
        assert_eq!(label.protocol, e.protocol);
        assert_eq!(label.user, e.user);
    }
    // The core refuses duplicate keys in one Apply: never send any.
    inetd_protocol::check_apply(&c.entries.iter().map(|e| e.spec.clone()).collect::<Vec<_>>())
        .expect("no duplicate bind keys");
}
