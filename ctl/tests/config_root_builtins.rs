//! Builtins need no privilege: an `internal` entry whose user is root (as
//! Debian's update-inetd writes them, `discard stream tcp nowait root
//! internal`) runs as nobody, with its ids, and carries a note saying so,
//! instead of being refused by a root core. Exec entries are left alone.

mod config_support;

use config_support::*;
use inetd_protocol::Credentials;

const NOTE: &str = "runs as nobody:nogroup, not root:root: builtins need no privilege";

#[test]
fn a_root_builtin_runs_as_nobody_with_a_note() {
    let c = load_text(
        "127.0.0.1:discard stream tcp4 nowait root internal\n\
         127.0.0.1:daytime dgram udp4 wait root:staff internal\n",
    );
    assert!(errors(&c).is_empty(), "{:#?}", c.diagnostics);
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 discard tcp4 127.0.0.1:9 nobody:nogroup",
            "inetd.conf:2 daytime udp4 127.0.0.1:13 nobody:nogroup",
        ]
    );
    // nobody's own ids and groups from the fixture (users includes nobody).
    let nobody = Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 100],
    };
    assert_eq!(c.entries[0].spec.creds, nobody);
    assert_eq!(c.entries[1].spec.creds, nobody);
    assert_eq!(c.entries[0].warnings, vec![NOTE]);
    assert_eq!(
        c.entries[1].warnings,
        vec!["runs as nobody:nogroup, not root:staff: builtins need no privilege"]
    );
    // The label the core logs names who it really runs as.
    let label = &c.entries[0].spec.label;
    assert!(label.ends_with(" nobody:nogroup"), "{label}");
    // The note is a warning of `inetctl check`, never an error.
    assert_eq!(warnings(&c).len(), 2);
}

#[test]
fn exec_entries_and_unprivileged_builtins_keep_their_users() {
    let c = load_text(
        "127.0.0.1:8001 stream tcp4 nowait root /usr/sbin/present\n\
         127.0.0.1:8002 stream tcp4 nowait nobody:tty internal echo\n\
         127.0.0.1:8003 stream tcp4 nowait nobody:root internal echo\n",
    );
    assert!(errors(&c).is_empty(), "{:#?}", c.diagnostics);
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 8001 tcp4 127.0.0.1:8001 root:root",
            "inetd.conf:2 8002 tcp4 127.0.0.1:8002 nobody:tty",
            // Only a root user is replaced: a root group stays what it is,
            // and a root core without --allow-root-services refuses it.
            "inetd.conf:3 8003 tcp4 127.0.0.1:8003 nobody:root",
        ]
    );
    assert_eq!(c.entries[0].spec.creds.uid, 0);
    assert_eq!(c.entries[2].spec.creds.gid, 0);
    assert!(c.entries.iter().all(|e| !e
        .warnings
        .iter()
        .any(|w| w.contains("builtins need no privilege"))));
}
