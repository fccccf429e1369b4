//! Trust rule 4: who services may run as. A root core runs services only as
//! identities its own command line allows (`nobody` and its groups by
//! default, `--allow-user`, `--allow-group`), never with the controller's
//! ids, and as root only with `--allow-root-services` or for a command
//! pinned whole with `--allow-root-command`. Each refusal names the flag
//! that would allow it. Spoken to with raw `Apply`s, as a compromised
//! controller would.

use std::collections::BTreeSet;

use inetd_protocol::{Credentials, Outcome, RootCommand};
use inetd_tests::*;

fn ids(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
    Credentials {
        uid,
        gid,
        groups: groups.to_vec(),
    }
}

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Rejected { reason } => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

/// Nothing is bound at `port`: a connection is refused.
fn not_bound(port: u16) {
    let e = connect4(port).expect_err("a refused listener is bound");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

fn shadow_gid() -> u32 {
    group_gid("shadow").expect("group shadow (Debian's base-passwd)")
}

/// The entry: `nobody:shadow /bin/cat cat /etc/shadow`.
fn cat_shadow(port: u16) -> inetd_protocol::ListenerSpec {
    let g = shadow_gid();
    tcp4(port)
        .exec("/bin/cat", &["cat", "/etc/shadow"])
        .creds(ids(65534, g, &[g]))
}

#[test]
fn nobody_with_group_shadow_is_refused_naming_the_flag_and_serves_nothing() {
    require_root!("a root core decides which identities services get");
    let core = Core::start();
    let mut c = core.client();
    // The Hello reply carries the policy: nobody and its groups only.
    let p = &c.hello.policy;
    assert!(p.root && !p.allow_root_services && p.root_commands.is_empty());
    assert_eq!(p.users.len(), 1, "{p:?}");
    assert_eq!((p.users[0].uid, p.users[0].gid), (65534, 65534));
    assert!(p.groups.is_empty());
    let ctl = user("inetd").expect("user inetd");
    assert_eq!((p.controller_uid, p.controller_gid), (ctl.uid, ctl.gid));

    let (ok, bad) = (free_port(), free_port());
    let r = c.apply(vec![tcp4(ok), cat_shadow(bad)]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    let why = reason(&r.outcomes[1]);
    // The core resolves no names for a request: the gid, which the flag
    // takes as well.
    assert!(
        why.ends_with(&format!(
            "start the core with --allow-group {}",
            shadow_gid()
        )),
        "{why}"
    );
    assert!(why.contains("for uid 65534"), "{why}");
    not_bound(bad);
    assert_eq!(c.status().listeners.len(), 1);
    // The same from the status report's policy.
    assert_eq!(c.status().policy, c.hello.policy);
}

#[test]
fn allowed_with_allow_group_shadow_the_same_entry_runs() {
    require_root!("a root core decides which identities services get");
    let core = Core::start_args(&["--allow-group", "shadow"]);
    let mut c = core.client();
    let g = &c.hello.policy.groups;
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].name.as_str(), g[0].gid), ("shadow", shadow_gid()));
    let port = free_port();
    assert_eq!(
        c.apply(vec![cat_shadow(port)]).outcomes,
        vec![Outcome::Added]
    );
    // /etc/shadow is root:shadow 0640: only the group lets nobody read it.
    let want = std::fs::read("/etc/shadow").unwrap();
    let mut s = connect4(port).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut got).unwrap();
    assert!(got == want, "nobody:shadow did not read /etc/shadow");
}

#[test]
fn an_allowed_user_runs_with_its_own_groups_which_are_not_lent_to_nobody() {
    require_root!("services as another user");
    require_probe_for_others!();
    // inetd-test-admin: its own group and inetd-admin.
    let admin = require_user!("inetd-test-admin");
    let admin_group = group_gid("inetd-admin").expect("group inetd-admin");
    let core = Core::start_args(&["--allow-user", "inetd-test-admin"]);
    let mut c = core.client();
    let allowed = c
        .hello
        .policy
        .users
        .iter()
        .find(|u| u.uid == admin.uid)
        .expect("the allowed user in the Hello reply")
        .clone();
    assert_eq!(allowed.name, "inetd-test-admin");
    assert_eq!(allowed.gid, admin.gid);
    assert!(allowed.groups.contains(&admin_group), "{allowed:?}");
    assert!(c.hello.policy.users.iter().any(|u| u.uid == 65534));

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let r = c.apply(vec![
        tcp4(ports[0]).creds(ids(admin.uid, admin.gid, &[admin.gid, admin_group])),
        tcp4(ports[1]).creds(ids(65534, 65534, &[65534, admin_group])),
        tcp4(ports[2]).creds(ids(65534, admin.gid, &[admin.gid])),
        // Nor are nobody's lent to the admin.
        tcp4(ports[3]).creds(ids(admin.uid, 65534, &[65534])),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    let why = reason(&r.outcomes[1]);
    assert!(
        why.ends_with(&format!("--allow-group {admin_group}")),
        "{why}"
    );
    assert!(reason(&r.outcomes[2]).ends_with(&format!("--allow-group {}", admin.gid)));
    let why = reason(&r.outcomes[3]);
    assert!(why.contains(&format!("for uid {}", admin.uid)), "{why}");
    for p in &ports[1..] {
        not_bound(*p);
    }
    let rep = Report::read_from(&mut connect4(ports[0]).unwrap());
    assert_eq!(rep.value("uid"), format!("{0} {0} {0} {0}", admin.uid));
    let groups: BTreeSet<String> = rep.value("groups").split(' ').map(str::to_owned).collect();
    assert_eq!(
        groups,
        BTreeSet::from([admin.gid.to_string(), admin_group.to_string()])
    );

    // A user not allowed is refused naming the flag (by uid: no names).
    let peer = require_user!("inetd-test-peer");
    let p = free_port();
    let r = c.apply(vec![
        tcp4(ports[0]).creds(ids(admin.uid, admin.gid, &[admin.gid, admin_group])),
        tcp4(p).creds(ids(peer.uid, peer.gid, &[peer.gid])),
    ]);
    let why = reason(&r.outcomes[1]);
    assert!(
        why.ends_with(&format!("--allow-user {}", peer.uid)),
        "{why}"
    );
    not_bound(p);
}

#[test]
fn the_controller_users_uid_and_gid_are_refused_even_when_allowed() {
    require_root!("the controller user only matters to a root core");
    let ctl = require_user!("inetd");
    // Naming them is refused at start.
    for args in [
        &["--allow-user", "inetd"][..],
        &["--allow-group", "inetd"][..],
        &["--allow-user", "root"][..],
        &["--allow-group", "0"][..],
    ] {
        let mut core = Core::start_with(CoreOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            no_wait: true,
            ..CoreOptions::default()
        });
        let st = core.wait_exit(std::time::Duration::from_secs(10));
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(2),
            "{args:?}: {}",
            core.log()
        );
        assert!(core.log().contains(args[0]), "{args:?}: {}", core.log());
    }
    // inetd-test-peer is in the controller's group: allowing that user
    // does not allow the group, whatever the flags say.
    let peer = require_user!("inetd-test-peer");
    let core = Core::start_args(&[
        "--allow-user",
        "inetd-test-peer",
        "--allow-root-services",
        "--allow-setuid-services",
    ]);
    let mut c = core.client();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let r = c.apply(vec![
        tcp4(ports[0]).creds(ids(peer.uid, peer.gid, &[peer.gid])),
        tcp4(ports[1]).creds(ids(peer.uid, peer.gid, &[peer.gid, ctl.gid])),
        tcp4(ports[2]).creds(ids(ctl.uid, ctl.gid, &[ctl.gid])),
        tcp4(ports[3]).creds(ids(0, ctl.gid, &[0])),
        tcp4(ports[4]).creds(ids(65534, 65534, &[65534, ctl.gid])),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    assert!(reason(&r.outcomes[2]).contains("the controller user"));
    for o in [&r.outcomes[1], &r.outcomes[3], &r.outcomes[4]] {
        let why = reason(o);
        assert!(
            why.contains(&format!("the controller user's group (gid {})", ctl.gid)),
            "{why}"
        );
    }
    for p in &ports[1..] {
        not_bound(*p);
    }
}

/// The probe's `report` as a root command line.
fn probe_report_line() -> String {
    format!("{} inetd-test-probe report", probe_path().display())
}

#[test]
fn root_only_for_exactly_the_pinned_argv_and_then_the_bounding_set_is_left_alone() {
    require_root!("root services");
    let pin_id = "/usr/bin/id id -u";
    let pin_probe = probe_report_line();
    let core = Core::start_args(&[
        "--allow-root-command",
        pin_id,
        "--allow-root-command",
        &pin_probe,
    ]);
    let mut c = core.client();
    let pins: Vec<String> = c
        .hello
        .policy
        .root_commands
        .iter()
        .map(RootCommand::line)
        .collect();
    assert_eq!(pins, [pin_id.to_owned(), pin_probe.clone()]);
    let root = ids(0, 0, &[0]);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let r = c.apply(vec![
        tcp4(ports[0])
            .exec("/usr/bin/id", &["id", "-u"])
            .creds(root.clone()),
        tcp4(ports[1])
            .exec("/usr/bin/id", &["id", "-u", "-n"])
            .creds(root.clone()),
        tcp4(ports[2])
            .exec("/bin/cat", &["cat"])
            .creds(root.clone()),
        tcp4(ports[3]).probe(&["report"]).creds(root.clone()),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    assert_eq!(r.outcomes[3], Outcome::Added);
    let why = reason(&r.outcomes[1]);
    assert!(
        why.contains("--allow-root-command '/usr/bin/id id -u -n'")
            && why.contains("--allow-root-services"),
        "{why}"
    );
    assert!(reason(&r.outcomes[2]).contains("--allow-root-command '/bin/cat cat'"));
    not_bound(ports[1]);
    not_bound(ports[2]);
    assert_eq!(read_all(&mut connect4(ports[0]).unwrap()), "0\n");

    // The core keeps its four; its bounding set is the one it was given,
    // which the pinned command gets back at exec (no no_new_privs).
    let four = cap::mask(&[cap::NET_BIND_SERVICE, cap::SETUID, cap::SETGID, cap::KILL]);
    assert_eq!(proc_caps(core.pid(), "CapPrm"), Some(four));
    assert_eq!(proc_caps(core.pid(), "CapEff"), Some(four));
    let ours = proc_caps(std::process::id() as i32, "CapBnd").unwrap();
    assert_eq!(
        proc_caps(core.pid(), "CapBnd"),
        Some(ours),
        "bounding set cut"
    );
    let rep = Report::read_from(&mut connect4(ports[3]).unwrap());
    assert_eq!(rep.value("uid"), "0 0 0 0");
    assert_eq!(rep.value("nonewprivs"), "0");
    assert_eq!(rep.value("capbnd"), format!("{ours:016x}"));

    // Without a pin (or --allow-root-services) the bounding set is cut,
    // and root is refused.
    let plain = Core::start();
    let mut c = plain.client();
    assert_eq!(proc_caps(plain.pid(), "CapBnd"), Some(four));
    let p = free_port();
    let r = c.apply(vec![tcp4(p).exec("/usr/bin/id", &["id", "-u"]).creds(root)]);
    assert!(reason(&r.outcomes[0]).contains("--allow-root-command '/usr/bin/id id -u'"));
    not_bound(p);
}

/// The names are resolved in a child forked for each lookup: the NSS
/// modules a lookup loads stay out of the core (their pages would be
/// resident for its whole life), and the answers are the same.
#[test]
fn users_and_groups_are_resolved_without_loading_nss_modules_into_the_core() {
    require_root!("a root core resolves its controller user and the allowed identities");
    let admin = require_user!("inetd-test-admin");
    let shadow = shadow_gid();
    let core = Core::start_args(&[
        "--allow-user",
        "inetd-test-admin",
        "--allow-group",
        "shadow",
    ]);
    let c = core.client();
    let p = &c.hello.policy;
    let u = p
        .users
        .iter()
        .find(|u| u.uid == admin.uid)
        .expect("the allowed user in the Hello reply");
    assert_eq!((u.name.as_str(), u.gid), ("inetd-test-admin", admin.gid));
    assert!(
        p.groups
            .iter()
            .any(|g| g.gid == shadow && g.name == "shadow"),
        "{p:?}"
    );
    let ctl = user("inetd").expect("user inetd");
    assert_eq!((p.controller_uid, p.controller_gid), (ctl.uid, ctl.gid));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", core.pid())).expect("maps");
    let nss: Vec<&str> = maps.lines().filter(|l| l.contains("libnss_")).collect();
    assert!(nss.is_empty(), "NSS modules mapped in the core: {nss:?}");
}
