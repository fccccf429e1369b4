//! inetd.conf: the parser never panics on any bytes, and every listener it
//! gives is one the core's bounds accept.
#![no_main]

use std::path::PathBuf;

use inetd_ctl::config::{parse_bytes, LoadOptions, NameSources};
use libfuzzer_sys::fuzz_target;

/// The tests' fixture name sources: no NSS, no DNS, the same on every host.
fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ctl/tests/data")
        .join(name)
}

fuzz_target!(|bytes: &[u8]| {
    let names = NameSources {
        services: Some(data("services")),
        passwd: Some(data("passwd")),
        group: Some(data("group")),
    };
    let options = LoadOptions {
        hosts: Some(data("hosts")),
        ipv6: Some(true),
        server_root: Some(data("root")),
    };
    let config = parse_bytes("inetd.conf", bytes, &names, &options).expect("fixtures readable");
    for e in &config.entries {
        assert!(e.spec.label.len() <= inetd_protocol::MAX_LABEL);
        assert!(e.source.line >= 1);
    }
    // Every diagnostic is one line.
    for d in &config.diagnostics {
        assert!(!d.to_string().contains('\n'), "{d}");
    }
});
