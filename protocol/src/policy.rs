//! Who services may run as (trust rule 4): the policy a core was started
//! with, as its Hello reply and status report carry it, and [`verdict`],
//! the one function that decides whether a listener's ids are allowed.
//! The core calls it on every listener it is sent; the controller calls it
//! before sending, to show what the core would refuse and why, so the two
//! cannot disagree. Reasons name ids through [`IdNames`]: the controller
//! passes the names it resolved; the core, which resolves no names for a
//! request, passes none and so writes numbers, which its flags take too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Action, Credentials, UnixDirs};
use crate::MAX_REASON;

/// What the core was started to allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The core runs as root (and so can run services as other users).
    pub root: bool,
    /// `--allow-root-services`: listeners may name uid, gid or a group 0.
    pub allow_root_services: bool,
    /// `--allow-setuid-services`: non-root children run without `no_new_privs`.
    pub allow_setuid_services: bool,
    /// The controller user's uid and primary gid: on a root core never a
    /// service's (its server could talk to the core).
    pub controller_uid: u32,
    pub controller_gid: u32,
    /// Who services may run as. On a root core: `nobody` (uid 65534) and
    /// each `--allow-user`, with the groups NSS gave each at start. On any
    /// other: the core itself alone, as it runs everything as itself.
    pub users: Vec<AllowedUser>,
    /// `--allow-group`: groups any allowed user may run with.
    pub groups: Vec<AllowedGroup>,
    /// `--allow-root-command`: exactly these commands may run as root.
    pub root_commands: Vec<RootCommand>,
    /// Where unix listeners may be (`--unix-dir`): [`UnixDirs::check`]
    /// is that rule, as [`verdict`] is this one's.
    pub unix_dirs: UnixDirs,
}

/// A user services may run as, with the groups it brings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedUser {
    /// The name NSS gave at start (the number if it had none).
    pub name: String,
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its supplementary groups, as `getgrouplist` gave them.
    pub groups: Vec<u32>,
}

/// A group any allowed user may run with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedGroup {
    pub name: String,
    pub gid: u32,
}

/// A command allowed to run as root: its program path and whole argv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCommand {
    pub path: String,
    /// argv[0] included.
    pub argv: Vec<String>,
}

impl RootCommand {
    /// `PATH ARG0 ARGS...` split on whitespace, as `--allow-root-command`
    /// takes it: PATH absolute, ARG0 present.
    pub fn parse(text: &str) -> Result<RootCommand, String> {
        let mut words = text.split_whitespace().map(str::to_owned);
        let path = words.next().unwrap_or_default();
        let argv: Vec<String> = words.collect();
        if !path.starts_with('/') {
            return Err(format!(
                "'{text}': the program path must be absolute ('PATH ARG0 ARGS...')"
            ));
        }
        if argv.is_empty() {
            return Err(format!(
                "'{text}': argv[0] is missing after the path ('PATH ARG0 ARGS...')"
            ));
        }
        Ok(RootCommand { path, argv })
    }

    /// Path and argv, one space between each: what `parse` reads back.
    pub fn line(&self) -> String {
        std::iter::once(&self.path)
            .chain(&self.argv)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Names of users and groups for reasons people read: those the controller
/// resolved its configuration with; empty on the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdNames {
    pub users: BTreeMap<u32, String>,
    pub groups: BTreeMap<u32, String>,
}

/// What a flag takes for `id` (its name, or its number where it has none
/// or one a flag would read as a number), and how a reason shows it.
fn named(names: &BTreeMap<u32, String>, id: u32, kind: &str) -> (String, String) {
    match names.get(&id) {
        Some(n) if !n.is_empty() && !n.bytes().all(|b| b.is_ascii_digit()) => {
            (n.clone(), format!("{n} ({kind} {id})"))
        }
        _ => (id.to_string(), format!("{kind} {id}")),
    }
}

/// Why a root listener is refused, with what would allow it.
fn root_refusal(what: &str, action: &Action) -> String {
    let head = format!(
        "{what}, which the core allows only for a command pinned with --allow-root-command \
         or for every entry with --allow-root-services"
    );
    let Action::Exec { path, argv } = action else {
        return format!("{head}; a builtin needs no root");
    };
    let words = || std::iter::once(path).chain(argv);
    if words().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
        return format!(
            "{head}; this command cannot be pinned (an argument is empty or holds whitespace)"
        );
    }
    let line = words().map(String::as_str).collect::<Vec<_>>().join(" ");
    // A reason stays within MAX_REASON, whatever argv the sender made up.
    if line.len() > MAX_REASON / 2 {
        let n = line.len();
        return format!("{head}; this command line ({n} bytes) is too long to repeat here");
    }
    // Quoted for a shell, a ' inside written '\''.
    let quoted = line.replace('\'', r"'\''");
    format!("{head}; to pin this one, start the core with --allow-root-command '{quoted}'")
}

/// Whether a core with `policy` runs a listener with `creds` and `action`;
/// the error is the reason it is refused, ids named through `names`.
pub fn verdict(
    policy: &Policy,
    creds: &Credentials,
    action: &Action,
    names: &IdNames,
) -> Result<(), String> {
    let c = creds;
    let gids = || std::iter::once(c.gid).chain(c.groups.iter().copied());
    // u32::MAX is (uid_t)-1: "no change" to the set*id calls.
    if c.uid == u32::MAX || gids().any(|g| g == u32::MAX) {
        return Err("uid or gid 4294967295 (-1) is not a valid id".into());
    }
    if !policy.root {
        return self_only(policy, c);
    }
    let never = "which a root core never allows: the service could talk to the core";
    if c.uid == policy.controller_uid {
        let who = named(&names.users, c.uid, "uid").1;
        return Err(format!("runs as the controller user ({who}), {never}"));
    }
    if gids().any(|g| g == policy.controller_gid) {
        let group = named(&names.groups, policy.controller_gid, "gid").1;
        return Err(format!(
            "runs with the controller user's group ({group}), {never}"
        ));
    }
    let pinned = matches!(action, Action::Exec { path, argv }
        if policy.root_commands.iter().any(|r| r.path == *path && r.argv == *argv));
    if !(policy.allow_root_services || pinned) {
        if c.uid == 0 {
            return Err(root_refusal("runs as root (uid 0)", action));
        } else if c.gid == 0 {
            return Err(root_refusal("runs with gid 0 (root)", action));
        } else if c.groups.contains(&0) {
            return Err(root_refusal("runs with group 0 (root)", action));
        }
    }
    if c.uid == 0 {
        // Root, allowed: its groups give it nothing more.
        return Ok(());
    }
    let (user_arg, user) = named(&names.users, c.uid, "uid");
    let Some(allowed) = policy.users.iter().find(|u| u.uid == c.uid) else {
        return Err(format!(
            "runs as {user}, which the core does not allow: start the core with --allow-user {user_arg}"
        ));
    };
    let mut missing: Vec<u32> = gids()
        .filter(|&g| {
            g != 0
                && g != allowed.gid
                && !allowed.groups.contains(&g)
                && !policy.groups.iter().any(|a| a.gid == g)
        })
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    // At most SHOWN of them, so the reason stays short whatever was sent.
    const SHOWN: usize = 8;
    let (flags, mut shown): (Vec<String>, Vec<String>) = missing
        .iter()
        .take(SHOWN)
        .map(|&g| named(&names.groups, g, "gid"))
        .map(|(arg, shown)| (format!("--allow-group {arg}"), shown))
        .unzip();
    if missing.len() > SHOWN {
        shown.push(format!("{} more", missing.len() - SHOWN));
    }
    let groups = if missing.len() == 1 {
        "group"
    } else {
        "groups"
    };
    Err(format!(
        "runs with {groups} {}, which the core does not allow for {user}: start the core with {}",
        shown.join(", "),
        flags.join(" ")
    ))
}

/// A core that is not root runs everything as itself: the one user of
/// its policy, with its own gid and groups.
fn self_only(policy: &Policy, c: &Credentials) -> Result<(), String> {
    let Some(me) = policy.users.first() else {
        return Err("the core allows no user".into());
    };
    if c.uid != me.uid {
        return Err(format!(
            "runs as uid {}, but a core that is not root runs everything as itself (uid {})",
            c.uid, me.uid
        ));
    }
    if c.gid != me.gid {
        return Err(format!(
            "runs with gid {}, but a core that is not root keeps its own gid {}",
            c.gid, me.gid
        ));
    }
    match c
        .groups
        .iter()
        .find(|g| **g != me.gid && !me.groups.contains(g))
    {
        Some(g) => Err(format!("group {g} is not one of the core's own groups")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nobody() -> AllowedUser {
        AllowedUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }
    }

    /// A root core as it starts by default: nobody and its groups; the
    /// controller is uid 999, gid 995.
    fn root_core() -> Policy {
        Policy {
            root: true,
            allow_root_services: false,
            allow_setuid_services: false,
            controller_uid: 999,
            controller_gid: 995,
            users: vec![nobody()],
            groups: vec![],
            root_commands: vec![],
            unix_dirs: UnixDirs::Only(vec!["/run/inetd/sockets".into()]),
        }
    }

    fn ids(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn exec(path: &str, argv: &[&str]) -> Action {
        Action::Exec {
            path: path.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cat() -> Action {
        exec("/bin/cat", &["cat"])
    }

    fn names() -> IdNames {
        IdNames {
            users: [(65534, "nobody"), (109, "postgres"), (1000, "alice")]
                .into_iter()
                .map(|(i, n)| (i, n.to_owned()))
                .collect(),
            groups: [(42, "shadow"), (6, "disk"), (995, "inetd"), (4242, "1234")]
                .into_iter()
                .map(|(i, n)| (i, n.to_owned()))
                .collect(),
        }
    }

    fn refused(p: &Policy, c: Credentials, a: &Action, n: &IdNames) -> String {
        verdict(p, &c, a, n).expect_err("should be refused")
    }

    #[test]
    fn nobody_and_its_groups_by_default() {
        let p = root_core();
        assert!(verdict(&p, &ids(65534, 65534, &[65534]), &cat(), &names()).is_ok());
        assert!(verdict(&p, &ids(65534, 65534, &[]), &cat(), &IdNames::default()).is_ok());
    }

    #[test]
    fn another_group_names_the_flag_to_add() {
        let p = root_core();
        let shadow = ids(65534, 42, &[42]);
        let r = refused(&p, shadow.clone(), &cat(), &names());
        assert_eq!(
            r,
            "runs with group shadow (gid 42), which the core does not allow for nobody (uid 65534): start the core with --allow-group shadow"
        );
        // The core knows no names: the same reason with numbers, which the
        // flag takes too.
        let r = refused(&p, shadow.clone(), &cat(), &IdNames::default());
        assert!(r.ends_with("start the core with --allow-group 42"), "{r}");
        // Every group that is missing, in one reason.
        let r = refused(&p, ids(65534, 65534, &[65534, 42, 6]), &cat(), &names());
        assert!(
            r.contains("groups disk (gid 6), shadow (gid 42)")
                && r.ends_with("--allow-group disk --allow-group shadow"),
            "{r}"
        );
        // A name that a flag would read as a number is written as the gid.
        let r = refused(&p, ids(65534, 4242, &[]), &cat(), &names());
        assert!(r.ends_with("--allow-group 4242"), "{r}");
        let allowed = Policy {
            groups: vec![AllowedGroup {
                name: "shadow".into(),
                gid: 42,
            }],
            ..root_core()
        };
        assert!(verdict(&allowed, &shadow, &cat(), &names()).is_ok());
    }

    #[test]
    fn another_user_names_the_flag_to_add() {
        let p = root_core();
        let pg = ids(109, 116, &[116, 110]);
        let r = refused(&p, pg.clone(), &cat(), &names());
        assert_eq!(
            r,
            "runs as postgres (uid 109), which the core does not allow: start the core with --allow-user postgres"
        );
        assert!(refused(&p, pg.clone(), &cat(), &IdNames::default()).ends_with("--allow-user 109"));
        let mut allowed = root_core();
        allowed.users.push(AllowedUser {
            name: "postgres".into(),
            uid: 109,
            gid: 116,
            groups: vec![116, 110],
        });
        assert!(verdict(&allowed, &pg, &cat(), &names()).is_ok());
    }

    #[test]
    fn a_users_groups_are_not_lent_to_another() {
        let mut p = root_core();
        p.users.push(AllowedUser {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 998],
        });
        assert!(verdict(&p, &ids(1000, 1000, &[1000, 998]), &cat(), &names()).is_ok());
        let r = refused(&p, ids(65534, 65534, &[65534, 998]), &cat(), &names());
        assert!(
            r.contains("for nobody") && r.ends_with("--allow-group 998"),
            "{r}"
        );
        let r = refused(&p, ids(65534, 1000, &[]), &cat(), &names());
        assert!(r.ends_with("--allow-group 1000"), "{r}");
        // And nobody's are not lent to alice.
        let r = refused(&p, ids(1000, 65534, &[]), &cat(), &names());
        assert!(r.contains("for alice (uid 1000)"), "{r}");
    }

    #[test]
    fn the_controllers_ids_are_never_allowed() {
        let mut p = root_core();
        p.users.push(AllowedUser {
            name: "inetd".into(),
            uid: 999,
            gid: 995,
            groups: vec![995],
        });
        p.groups.push(AllowedGroup {
            name: "inetd".into(),
            gid: 995,
        });
        p.allow_root_services = true;
        let r = refused(&p, ids(999, 995, &[995]), &cat(), &names());
        assert!(r.contains("controller user") && r.contains("never"), "{r}");
        for c in [
            ids(65534, 995, &[]),
            ids(65534, 65534, &[995]),
            ids(0, 995, &[0]),
        ] {
            let r = refused(&p, c, &cat(), &names());
            assert!(
                r.contains("controller user's group (inetd (gid 995))"),
                "{r}"
            );
        }
    }

    #[test]
    fn root_only_where_a_flag_or_a_pin_allows_it() {
        let tftpd = exec(
            "/usr/sbin/in.tftpd",
            &["in.tftpd", "-s", "/srv/tftp", "-u", "tftp"],
        );
        let p = root_core();
        for (c, what) in [
            (ids(0, 0, &[0]), "runs as root (uid 0)"),
            (ids(65534, 0, &[]), "runs with gid 0"),
            (ids(65534, 65534, &[65534, 0]), "runs with group 0"),
        ] {
            let r = refused(&p, c, &tftpd, &names());
            assert!(r.starts_with(what), "{r}");
            assert!(
                r.contains("--allow-root-services")
                    && r.ends_with(
                        "start the core with --allow-root-command '/usr/sbin/in.tftpd in.tftpd -s /srv/tftp -u tftp'"
                    ),
                "{r}"
            );
        }
        let pinned = Policy {
            root_commands: vec![RootCommand::parse(
                "/usr/sbin/in.tftpd  in.tftpd -s /srv/tftp\t-u tftp",
            )
            .unwrap()],
            ..root_core()
        };
        let root = ids(0, 0, &[0]);
        assert!(verdict(&pinned, &root, &tftpd, &names()).is_ok());
        // The whole argv, not a prefix, and the same path.
        let more = exec(
            "/usr/sbin/in.tftpd",
            &["in.tftpd", "-c", "-s", "/srv/tftp", "-u", "tftp"],
        );
        let r = refused(&pinned, root.clone(), &more, &names());
        assert!(
            r.ends_with(
                "--allow-root-command '/usr/sbin/in.tftpd in.tftpd -c -s /srv/tftp -u tftp'"
            ),
            "{r}"
        );
        let fewer = exec("/usr/sbin/in.tftpd", &["in.tftpd", "-s", "/srv/tftp"]);
        assert!(verdict(&pinned, &root, &fewer, &names()).is_err());
        let elsewhere = exec(
            "/tmp/in.tftpd",
            &["in.tftpd", "-s", "/srv/tftp", "-u", "tftp"],
        );
        assert!(verdict(&pinned, &root, &elsewhere, &names()).is_err());
        // A pin lifts the refusal of group 0, not the allowlist.
        assert!(verdict(&pinned, &ids(65534, 0, &[0]), &tftpd, &names()).is_ok());
        let r = refused(&pinned, ids(109, 0, &[]), &tftpd, &names());
        assert!(r.contains("--allow-user postgres"), "{r}");
        // --allow-root-services: root for every entry.
        let all = Policy {
            allow_root_services: true,
            ..root_core()
        };
        assert!(verdict(&all, &root, &cat(), &names()).is_ok());
        assert!(verdict(&all, &ids(0, 42, &[42, 6]), &cat(), &names()).is_ok());
    }

    #[test]
    fn what_cannot_be_pinned_says_so() {
        let p = root_core();
        let root = ids(0, 0, &[0]);
        for a in [
            exec("/bin/sh", &["sh", "-c", "echo hi"]),
            exec("/bin/echo", &["echo", ""]),
        ] {
            let r = refused(&p, root.clone(), &a, &names());
            assert!(r.contains("cannot be pinned"), "{r}");
        }
        let r = refused(
            &p,
            root.clone(),
            &exec("/bin/echo", &["echo", "it's"]),
            &names(),
        );
        assert!(
            r.ends_with(r"--allow-root-command '/bin/echo echo it'\''s'"),
            "{r}"
        );
        let r = refused(
            &p,
            root,
            &Action::Builtin(crate::types::Builtin::Echo),
            &names(),
        );
        assert!(r.contains("a builtin needs no root"), "{r}");
    }

    #[test]
    fn reasons_stay_short_whatever_was_sent() {
        let p = root_core();
        let many: Vec<u32> = (100_000..160_000).collect();
        let r = refused(&p, ids(65534, 65534, &many), &cat(), &names());
        assert!(r.len() < crate::MAX_REASON, "{} bytes", r.len());
        assert!(r.contains("59992 more"), "{r}");
        let long = "x".repeat(4000);
        let r = refused(
            &p,
            ids(0, 0, &[]),
            &exec("/bin/echo", &["echo", &long]),
            &names(),
        );
        assert!(r.len() < crate::MAX_REASON && r.contains("too long"), "{r}");
    }

    #[test]
    fn minus_one_is_never_an_id() {
        let p = Policy {
            allow_root_services: true,
            ..root_core()
        };
        for c in [
            ids(u32::MAX, 0, &[]),
            ids(0, u32::MAX, &[]),
            ids(0, 0, &[u32::MAX]),
        ] {
            assert!(refused(&p, c, &cat(), &names()).contains("4294967295"));
        }
    }

    #[test]
    fn a_core_that_is_not_root_runs_only_itself() {
        let p = Policy {
            root: false,
            controller_uid: 1000,
            controller_gid: 1000,
            users: vec![AllowedUser {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 24],
            }],
            ..root_core()
        };
        assert!(verdict(&p, &ids(1000, 1000, &[24]), &cat(), &names()).is_ok());
        assert!(refused(&p, ids(1001, 1000, &[]), &cat(), &names()).contains("itself"));
        assert!(refused(&p, ids(1000, 24, &[]), &cat(), &names()).contains("gid"));
        assert!(refused(&p, ids(1000, 1000, &[27]), &cat(), &names()).contains("group 27"));
        assert!(refused(&p, ids(0, 0, &[]), &cat(), &names()).contains("itself"));
    }

    #[test]
    fn root_commands_parse_and_read_back() {
        let c = RootCommand::parse("  /usr/bin/id   id -u ").unwrap();
        assert_eq!(c.path, "/usr/bin/id");
        assert_eq!(c.argv, ["id", "-u"]);
        assert_eq!(c.line(), "/usr/bin/id id -u");
        assert_eq!(RootCommand::parse(&c.line()).unwrap(), c);
        for bad in ["", "   ", "id id -u", "./id id", "/usr/bin/id"] {
            assert!(RootCommand::parse(bad).is_err(), "{bad:?}");
        }
    }
}
