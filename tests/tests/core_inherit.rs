//! What a child must not inherit from the core (docs/inetd-core.md,
//! the child path; trust rules 5 and 6): its session keyring and the keys in it, its
//! capabilities through securebits, the resource limits it raised for
//! itself.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use inetd_protocol::{Builtin, Outcome};
use inetd_tests::*;

/// Skips the calling test unless `tool` runs (`tool --version`).
macro_rules! require_tool {
    ($tool:expr, $package:expr) => {
        if !Command::new($tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            skip!("no {} (package {})", $tool, $package);
        }
    };
}

/// The core runs in a session keyring of its own (`keyctl session`, so the
/// test's keyring is not touched) holding a secret; a service as nobody
/// must neither read it nor share the core's keyring, whose serial the
/// wrapper writes down.
#[test]
fn a_service_does_not_possess_the_cores_session_keyring() {
    require_root!("a service as nobody under a root core");
    require_tool!("keyctl", "keyutils");
    let dir = TempDir::new("keyring");
    let key_file = dir.join("key");
    let ses_file = dir.join("session");
    let script = format!(
        "keyctl add user k s3cret @s >{} && keyctl id @s >{} && exec \"$0\" \"$@\"",
        key_file.display(),
        ses_file.display()
    );
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "keyctl".into(),
            "session".into(),
            "-".into(),
            "/bin/sh".into(),
            "-c".into(),
            script,
        ],
        ..CoreOptions::default()
    });
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key.trim();
    let core_ses = std::fs::read_to_string(&ses_file).unwrap();
    let core_ses = core_ses.trim();
    assert!(!key.is_empty() && !core_ses.is_empty());

    let port = free_port();
    let show =
        format!("keyctl print {key} 2>&1; echo session $(keyctl id @s); keyctl show @s 2>&1");
    let r = core.apply(vec![tcp4(port).exec("/bin/sh", &["sh", "-c", &show])]);
    assert_eq!(r.outcomes, vec![Outcome::Added], "log:\n{}", core.log());
    let mut s = connect4(port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let out = read_all(&mut s);
    assert!(
        !out.contains("s3cret"),
        "a service as nobody read the core's key:\n{out}"
    );
    let ses = out
        .lines()
        .find_map(|l| l.strip_prefix("session "))
        .unwrap_or_else(|| panic!("no session keyring in:\n{out}\nlog:\n{}", core.log()));
    assert_ne!(ses, core_ses, "the service shares the core's keyring");
    // `keyctl show @s`: the "Keyring" title, the keyring itself, no key.
    let shown: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Keyring"))
        .collect();
    assert_eq!(shown.len(), 2, "the service's keyring is not empty:\n{out}");
    assert!(
        shown[1].contains(ses) && shown[1].ends_with("keyring: _ses"),
        "{out}"
    );
}

/// A core that is not root joins a fresh session keyring itself: its
/// services, all of its own uid, do not possess the keys of the session
/// that started it (a user key grants only "view" to its owner's other
/// processes; reading it takes possession).
#[test]
fn a_normal_users_services_do_not_possess_the_session_that_started_its_core() {
    require_root!("starting the core as nobody");
    require_tool!("keyctl", "keyutils");
    let dir = TempDir::new("keyring-user");
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let key_file = dir.join("key");
    let script = format!(
        "keyctl add user k s3cret @s >{} && exec \"$0\" \"$@\"",
        key_file.display()
    );
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "setpriv".into(),
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            "keyctl".into(),
            "session".into(),
            "-".into(),
            "/bin/sh".into(),
            "-c".into(),
            script,
        ],
        dir_owner: Some((65534, 65534)),
        ..CoreOptions::default()
    });
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key.trim();
    assert!(!key.is_empty());
    let port = free_port();
    let me = inetd_protocol::Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    };
    let show = format!("keyctl print {key} 2>&1; echo uid $(id -u)");
    let spec = tcp4(port).exec("/bin/sh", &["sh", "-c", &show]).creds(me);
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    let out = read_all(&mut connect4(port).unwrap());
    assert!(out.contains("uid 65534"), "{out}");
    assert!(
        !out.contains("s3cret"),
        "a service read its core's session key:\n{out}"
    );
}

/// A core whose `keyctl` calls all fail with `errno`, as strace injects
/// it (a seccomp filter answers ENOSYS or EPERM the same way).
fn core_with_keyctl_failing(errno: &str) -> Core {
    Core::start_with(CoreOptions {
        wrapper: vec![
            "strace".into(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            "trace=keyctl".into(),
            "-e".into(),
            format!("inject=keyctl:error={errno}"),
            "--".into(),
        ],
        ..CoreOptions::default()
    })
}

#[test]
fn where_keyrings_are_refused_the_core_says_so_once_and_services_run() {
    require_root!("the child joins a keyring under a root core");
    let core = core_with_keyctl_failing("ENOSYS");
    let port = free_port();
    assert_eq!(core.apply(vec![tcp4(port)]).outcomes, vec![Outcome::Added]);
    for _ in 0..3 {
        let rep = Report::read_from(&mut connect4(port).unwrap());
        assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
    }
    let said = core.log().matches("keyrings are refused").count();
    assert_eq!(said, 1, "log:\n{}", core.log());
}

#[test]
fn a_keyring_that_cannot_be_joined_stops_the_server() {
    require_root!("the child joins a keyring under a root core");
    let core = core_with_keyctl_failing("EDQUOT");
    let port = free_port();
    assert_eq!(core.apply(vec![tcp4(port)]).outcomes, vec![Outcome::Added]);
    let got = read_all(&mut connect4(port).unwrap());
    assert_eq!(got, "", "the server ran without its own keyring");
    core.wait_log("step=session keyring", Duration::from_secs(5));
    wait_for("the failure to be counted", Duration::from_secs(5), || {
        core.status().listeners[0].counters.exec_failures == 1
    });
}

/// Each child's keyring is charged to root, whose key quota is large, not
/// to the service's user, whose quota (200 keys by default) would refuse
/// it past about 200 children at once. The kernel lets a process without a
/// session keyring overrun the quota once, so the core runs in one, as it
/// does under systemd or a login session. `cat` holds each connection open.
#[test]
fn two_hundred_and_fifty_children_of_one_user_all_start() {
    require_root!("services as nobody under a root core");
    require_tool!("keyctl", "keyutils");
    let core = Core::start_with(CoreOptions {
        wrapper: vec!["keyctl".into(), "session".into(), "-".into()],
        ..CoreOptions::default()
    });
    let port = free_port();
    let spec = tcp4(port).exec("/bin/cat", &["cat"]).limits(no_limits());
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    let mut conns = Vec::new();
    for i in 0..250 {
        let mut s = connect4(port).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("{i}\n").as_bytes()).unwrap();
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let want = format!("{i}\n");
        let mut got = vec![0u8; want.len()];
        if let Err(e) = s.read_exact(&mut got) {
            panic!("connection {i} got no answer ({e}); log:\n{}", core.log());
        }
        assert_eq!(got, want.as_bytes(), "connection {i}");
    }
    let cats = core
        .children()
        .into_iter()
        .filter(|(p, _)| comm(*p).as_deref() == Some("cat"))
        .count();
    assert_eq!(cats, 250, "children of the core running cat");
    let st = core.status();
    assert_eq!(
        st.listeners[0].counters.exec_failures,
        0,
        "log:\n{}",
        core.log()
    );
}

/// Securebits survive exec; with SECBIT_NO_SETUID_FIXUP set, the change to
/// nobody would keep the core's four capabilities in a builtin child
/// (which never execs to lose them). The core clears and locks it, and the
/// lock is what every child inherits.
#[test]
fn a_core_started_with_no_setuid_fixup_clears_and_locks_the_securebits() {
    require_root!("securebits of a root core");
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "setpriv".into(),
            "--securebits=+no_setuid_fixup".into(),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    let (echo, bits) = (free_port(), free_port());
    let r = core.apply(vec![
        tcp4(echo).builtin(Builtin::Echo),
        tcp4(bits).exec("/usr/bin/setpriv", &["setpriv", "-d"]),
    ]);
    assert_eq!(r.outcomes, vec![Outcome::Added; 2], "log:\n{}", core.log());

    // A builtin child, alive while its connection is open.
    let mut s = connect4(echo).unwrap();
    s.write_all(b"x\n").unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    let kids = core.children();
    assert_eq!(kids.len(), 1, "children: {kids:?}");
    let st = proc_status(kids[0].0).unwrap();
    assert_eq!(st["Uid"].split_whitespace().next(), Some("65534"));
    for f in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(proc_caps(kids[0].0, f), Some(0), "{f} of the builtin child");
    }

    // What the core's securebits are now, as a child sees them.
    let out = read_all(&mut connect4(bits).unwrap());
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Securebits: "))
        .unwrap_or_else(|| panic!("no securebits in:\n{out}"));
    let mut got: Vec<&str> = line.split(',').collect();
    got.sort_unstable();
    assert_eq!(got, ["keep_caps_locked", "no_setuid_fixup_locked"], "{out}");
    assert!(
        core.log().contains("no-setuid-fixup clear and locked"),
        "log:\n{}",
        core.log()
    );
}

/// A service manager that took CAP_SETPCAP away and left
/// SECBIT_NO_SETUID_FIXUP set: the core cannot clear it, so it must not run.
#[test]
fn a_core_that_cannot_clear_the_securebits_refuses_to_start() {
    require_root!("securebits of a root core");
    let mut core = Core::start_with(CoreOptions {
        wrapper: vec![
            "setpriv".into(),
            "--bounding-set=-setpcap".into(),
            "--securebits=+no_setuid_fixup".into(),
            "--".into(),
        ],
        no_wait: true,
        ..CoreOptions::default()
    });
    let st = core.wait_exit(Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(1), "log:\n{}", core.log());
    let log = core.log();
    assert!(
        log.contains("SECBIT_NO_SETUID_FIXUP") && log.contains("CAP_SETPCAP"),
        "the message does not say why:\n{log}"
    );
}

/// `/proc/PID/limits` as a map: limit name to (soft, hard).
fn limits(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .skip(1)
        .filter(|l| l.len() > 26)
        .map(|l| {
            let mut v = l[26..].split_whitespace();
            let soft = v.next().unwrap_or_default().to_owned();
            let hard = v.next().unwrap_or_default().to_owned();
            (l[..26].trim().to_owned(), (soft, hard))
        })
        .collect()
}

/// The core raises its own descriptor limit; a service gets every limit
/// the core was started with, and its oom_score_adj.
#[test]
fn a_service_gets_the_limits_and_oom_score_adj_the_core_was_started_with() {
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "choom".into(),
            "-n".into(),
            "300".into(),
            "--".into(),
            "prlimit".into(),
            "--nofile=1024:4096".into(),
            "--nproc=3000:4000".into(),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    // A Hello answered: start-up, and so the raise, is done.
    core.client();
    let core_limits =
        limits(&std::fs::read_to_string(format!("/proc/{}/limits", core.pid())).unwrap());
    assert_eq!(
        core_limits["Max open files"],
        ("4096".into(), "4096".into()),
        "the core did not raise its descriptor limit"
    );
    let port = free_port();
    let show = "cat /proc/self/limits; echo oom $(cat /proc/self/oom_score_adj)";
    core.apply(vec![tcp4(port).exec("/bin/sh", &["sh", "-c", show])]);
    let out = read_all(&mut connect4(port).unwrap());

    let mut want = limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
    want.insert("Max open files".into(), ("1024".into(), "4096".into()));
    want.insert("Max processes".into(), ("3000".into(), "4000".into()));
    assert_eq!(limits(&out), want, "the service's limits:\n{out}");
    assert!(out.lines().any(|l| l == "oom 300"), "oom_score_adj:\n{out}");
}
