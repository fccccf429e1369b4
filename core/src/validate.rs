//! Field-by-field validation of a listener from the controller, which is
//! treated as hostile (trust rules 1 and 4): what the core will act on is
//! checked here, once, and made a [`Prepared`] value (the ids with the
//! groups sorted, `no_new_privs` decided, argv and the fixed environment
//! as C strings). This module holds its only constructors and the child
//! path (`sys::child`) takes nothing else: nothing unvalidated reaches
//! fork, and nothing is rebuilt or re-sorted per connection.
#![forbid(unsafe_code)]

use std::ffi::{CStr, CString};
use std::net::IpAddr;

use inetd_protocol::{
    verdict, Action, Bind, Builtin, IdNames, IpMode, ListenerSpec, Policy, SocketType,
    MAX_ACL_RULES, MAX_ARGS, MAX_ARG_LEN, MAX_GROUPS, MAX_LABEL, MAX_PATH, MAX_UNIX_PATH,
};

/// The fixed search path every child gets.
pub const PATH_ENV: &CStr = c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The ids a child takes: the listener's on a root core, the core's own on
/// any other (it cannot change them).
#[derive(Debug)]
pub struct Identity {
    uid: u32,
    gid: u32,
    /// Sorted, without duplicates: for `setgroups` and the check after.
    groups: Box<[u32]>,
    /// False on a core that is not root: the child only checks its ids.
    change_ids: bool,
    no_new_privs: bool,
}

impl Identity {
    fn new(uid: u32, gid: u32, groups: &[u32], change_ids: bool, no_new_privs: bool) -> Self {
        let mut g = groups.to_vec();
        g.sort_unstable();
        g.dedup();
        Identity {
            uid,
            gid,
            groups: g.into_boxed_slice(),
            change_ids,
            no_new_privs,
        }
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    pub fn groups(&self) -> &[u32] {
        &self.groups
    }

    pub fn change_ids(&self) -> bool {
        self.change_ids
    }

    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs
    }
}

/// The fixed environment every exec child gets, before its
/// per-connection variables: [`PATH_ENV`], shared by every listener.
const FIXED_ENV: [&CStr; 1] = [PATH_ENV];

/// A program to `execve`. Its path and arguments are held once, in one
/// allocation (`path\0argv0\0argv1\0...`), in the form the child path
/// copies into a spawn slot; the `Exec` action a status reports is
/// rebuilt from them.
#[derive(Debug)]
pub struct ExecImage {
    strings: Box<[u8]>,
    argc: u32,
}

impl ExecImage {
    /// From strings without a NUL byte (checked by the caller), in one
    /// allocation of the exact size.
    fn new<'a>(path: &'a [u8], argv: impl Iterator<Item = &'a [u8]> + Clone) -> Self {
        let len = path.len() + 1 + argv.clone().map(|a| a.len() + 1).sum::<usize>();
        let mut strings = Vec::with_capacity(len);
        let mut argc = 0u32;
        for s in std::iter::once(path).chain(argv) {
            strings.extend_from_slice(s);
            strings.push(0);
            argc += 1;
        }
        ExecImage {
            strings: strings.into_boxed_slice(),
            argc: argc - 1,
        }
    }

    fn strings(&self) -> Strings<'_> {
        Strings {
            rest: &self.strings,
            left: self.argc as usize + 1,
        }
    }

    pub fn path(&self) -> &CStr {
        self.strings().next().unwrap_or_default()
    }

    /// The arguments, argv\[0\] first.
    pub fn argv(&self) -> Strings<'_> {
        let mut all = self.strings();
        all.next();
        all
    }

    /// The fixed environment; the per-connection variables follow it.
    pub fn env(&self) -> &'static [&'static CStr] {
        &FIXED_ENV
    }
}

/// The NUL-terminated strings of an [`ExecImage`], in order.
pub struct Strings<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a CStr;

    fn next(&mut self) -> Option<&'a CStr> {
        if self.left == 0 {
            return None;
        }
        let s = CStr::from_bytes_until_nul(self.rest).ok()?;
        self.rest = self.rest.get(s.to_bytes_with_nul().len()..)?;
        self.left -= 1;
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Strings<'_> {}

#[derive(Debug)]
pub enum Program {
    Exec(ExecImage),
    Builtin(Builtin),
}

/// A listener as validation accepted it, ready for the child path.
#[derive(Debug)]
pub struct Prepared {
    identity: Identity,
    program: Program,
    hands_socket: bool,
}

impl Prepared {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Whether the child gets the socket itself, not one connection.
    pub fn hands_socket(&self) -> bool {
        self.hands_socket
    }
}

/// The controller of one-command mode, from the core's own command line:
/// prepared the same way, always with `no_new_privs`.
pub fn controller(
    ids: (u32, u32, &[u32]),
    change_ids: bool,
    path: &CStr,
    argv: &[CString],
) -> (Identity, ExecImage) {
    let (uid, gid, groups) = ids;
    let identity = Identity::new(uid, gid, groups, change_ids, true);
    let argv = argv.iter().map(|a| a.as_bytes());
    (identity, ExecImage::new(path.to_bytes(), argv))
}

/// `Err` if `s` has a NUL byte: it could not be a C string.
fn no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

/// `Err` unless `what` is at most `max` bytes long.
fn not_too_long(what: &str, s: &str, max: usize) -> Result<(), String> {
    match s.len() {
        n if n > max => Err(format!("{what} too long: {n} bytes (at most {max})")),
        _ => Ok(()),
    }
}

/// `Err` unless there are at most `max` of `what`.
fn not_too_many(what: &str, n: usize, max: usize) -> Result<(), String> {
    match n {
        n if n > max => Err(format!("too many {what}: {n} (at most {max})")),
        _ => Ok(()),
    }
}

/// Checks that `path` is an absolute, canonical unix socket path.
pub fn check_unix_path(path: &str) -> Result<(), String> {
    not_too_long("unix socket path", path, MAX_UNIX_PATH)?;
    if path.contains('\0') {
        return Err("unix socket path contains a NUL byte".into());
    }
    if !path.starts_with('/') {
        return Err("unix socket path is not absolute".into());
    }
    let rest = &path[1..];
    if rest.is_empty() {
        return Err("unix socket path has no file name".into());
    }
    for comp in rest.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return Err(
                "unix socket path is not canonical (empty, \".\" or \"..\" component)".into(),
            );
        }
    }
    Ok(())
}

fn check_bind(spec: &ListenerSpec, p: &Policy) -> Result<(), String> {
    match &spec.bind {
        Bind::Inet { addr, port, mode } => {
            if *port == 0 {
                return Err("port 0".into());
            }
            match (mode, addr) {
                (IpMode::V4, IpAddr::V4(_)) => {}
                (IpMode::V6Only | IpMode::Dual, IpAddr::V6(a)) => {
                    if *mode == IpMode::V6Only && a.to_ipv4_mapped().is_some() {
                        return Err("an IPv4-mapped address on an IPv6-only socket".into());
                    }
                }
                _ => return Err("address family does not match the IP mode".into()),
            }
            if spec.socket_type == SocketType::Seqpacket {
                return Err("seqpacket is only for unix sockets".into());
            }
            Ok(())
        }
        Bind::Unix { path } => {
            check_unix_path(path)?;
            p.unix_dirs.check(path)
        }
    }
}

/// The ids, by the rules both sides share (trust rule 4); the core names
/// no ids (it resolves no names for a request), so the reason has numbers.
fn check_creds(spec: &ListenerSpec, p: &Policy) -> Result<(), String> {
    not_too_many("groups", spec.creds.groups.len(), MAX_GROUPS)?;
    verdict(p, &spec.creds, &spec.action, &IdNames::default())
}

fn check_action(spec: &ListenerSpec) -> Result<Program, String> {
    match &spec.action {
        Action::Exec { path, argv } => {
            not_too_long("server path", path, MAX_PATH)?;
            if !path.starts_with('/') {
                return Err("server path is not absolute".into());
            }
            no_nul("server path", path)?;
            if argv.is_empty() {
                return Err("empty argv".into());
            }
            not_too_many("arguments", argv.len(), MAX_ARGS)?;
            for a in argv {
                not_too_long("argument", a, MAX_ARG_LEN)?;
                no_nul("an argument", a)?;
            }
            if spec.socket_type == SocketType::Dgram && !spec.wait {
                return Err("a dgram service must be wait".into());
            }
            let argv = argv.iter().map(|a| a.as_bytes());
            Ok(Program::Exec(ExecImage::new(path.as_bytes(), argv)))
        }
        Action::Builtin(b) => {
            if spec.socket_type == SocketType::Seqpacket {
                return Err("builtins serve stream and dgram sockets only".into());
            }
            Ok(Program::Builtin(*b))
        }
    }
}

/// Whether the child gets the listening socket itself rather than one
/// accepted connection: `wait` exec services, every dgram service, and
/// dgram builtins.
fn hands_socket(spec: &ListenerSpec) -> bool {
    match spec.action {
        Action::Builtin(_) => spec.socket_type == SocketType::Dgram,
        Action::Exec { .. } => spec.wait || spec.socket_type == SocketType::Dgram,
    }
}

fn check_limits(spec: &ListenerSpec) -> Result<(), String> {
    let l = &spec.limits;
    if l.source_prefix_v4 > 32 || l.source_prefix_v6 > 128 {
        return Err("source prefix length out of range".into());
    }
    if let Some(acl) = &spec.acl {
        // An access list is checked per accepted connection, or on the
        // datagram that would wake a dgram server; a wait stream service
        // (its server accepts) or a unix socket has no peer the core could
        // check, and must not run silently unfiltered.
        let unix = matches!(spec.bind, Bind::Unix { .. });
        if unix || (hands_socket(spec) && spec.socket_type != SocketType::Dgram) {
            return Err(
                "an access list needs a nowait stream service or a dgram service on an internet socket; this one cannot be filtered by the core"
                    .into(),
            );
        }
        not_too_many("access rules", acl.rules.len(), MAX_ACL_RULES)?;
        for r in &acl.rules {
            let max = if r.addr.is_ipv4() { 32 } else { 128 };
            if r.prefix > max {
                return Err(format!("access rule prefix /{} out of range", r.prefix));
            }
        }
    }
    Ok(())
}

/// The ids of a listener's children (its credentials already checked).
fn identity(spec: &ListenerSpec, p: &Policy) -> Identity {
    let c = &spec.creds;
    // A core that is not root cannot change ids: the child keeps the
    // core's, which the verdict made sure are the ones asked for.
    let (groups, change) = if p.root {
        (&c.groups[..], true)
    } else {
        (&[][..], false)
    };
    // Root services take their capabilities back at exec from the bounding
    // set; no_new_privs would not stop that, but it would stop setuid
    // programs they are meant to run, so they go without.
    let no_new_privs = !(p.allow_setuid_services || c.uid == 0);
    Identity::new(c.uid, c.gid, groups, change, no_new_privs)
}

/// Validates one listener; the error is the reason it is rejected with.
pub fn validate(spec: &ListenerSpec, p: &Policy) -> Result<Prepared, String> {
    not_too_long("label", &spec.label, MAX_LABEL)?;
    check_bind(spec, p)?;
    check_creds(spec, p)?;
    check_limits(spec)?;
    Ok(Prepared {
        program: check_action(spec)?,
        identity: identity(spec, p),
        hands_socket: hands_socket(spec),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use inetd_protocol::{Credentials, Limits, UnixDirs};

    pub fn spec(port: u16) -> ListenerSpec {
        ListenerSpec {
            bind: Bind::Inet {
                addr: "127.0.0.1".parse().unwrap(),
                port,
                mode: IpMode::V4,
            },
            socket_type: SocketType::Stream,
            wait: false,
            action: Action::Exec {
                path: "/bin/cat".into(),
                argv: vec!["cat".into()],
            },
            creds: Credentials {
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            },
            limits: Limits::default(),
            acl: None,
            label: "echo /etc/inetd.conf:1".into(),
        }
    }

    /// A root core as it starts by default (nobody and its groups), the
    /// controller being uid 998, gid 997.
    pub fn root_policy() -> Policy {
        Policy {
            root: true,
            allow_root_services: false,
            allow_setuid_services: false,
            controller_uid: 998,
            controller_gid: 997,
            users: vec![inetd_protocol::AllowedUser {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                groups: vec![65534],
            }],
            groups: vec![],
            root_commands: vec![],
            unix_dirs: UnixDirs::Only(vec!["/run/inetd/sockets".into()]),
        }
    }

    fn rejected(s: &ListenerSpec, p: &Policy) -> String {
        validate(s, p).expect_err("should be rejected")
    }

    #[test]
    fn accepts_a_plain_service() {
        let p = validate(&spec(7000), &root_policy()).unwrap();
        match p.program() {
            Program::Exec(x) => {
                assert_eq!(x.path().to_str().unwrap(), "/bin/cat");
                let argv: Vec<&str> = x.argv().map(|a| a.to_str().unwrap()).collect();
                assert_eq!(argv, ["cat"]);
                assert_eq!(x.env()[0].to_bytes(), PATH_ENV.to_bytes());
            }
            Program::Builtin(_) => panic!("wrong kind"),
        }
        assert!(!p.hands_socket());
    }

    #[test]
    fn the_identity_is_decided_once() {
        let mut s = spec(7000);
        s.creds.groups = vec![30, 10, 30, 20];
        let mut allowed = root_policy();
        allowed.groups = [10, 20, 30]
            .map(|gid| inetd_protocol::AllowedGroup {
                name: gid.to_string(),
                gid,
            })
            .to_vec();
        let p = validate(&s, &allowed).unwrap();
        let id = p.identity();
        assert_eq!((id.uid(), id.gid()), (65534, 65534));
        assert_eq!(id.groups(), &[10, 20, 30], "sorted, without duplicates");
        assert!(id.change_ids() && id.no_new_privs());

        // setuid programs may lift a service only when the core allows it.
        let allow = Policy {
            allow_setuid_services: true,
            ..allowed.clone()
        };
        assert!(!validate(&s, &allow).unwrap().identity().no_new_privs());
        // Root services run without no_new_privs (they take their
        // capabilities back at exec).
        let root = Policy {
            allow_root_services: true,
            ..allowed
        };
        s.creds.uid = 0;
        assert!(!validate(&s, &root).unwrap().identity().no_new_privs());

        // A core that is not root keeps its own ids.
        let user = Policy {
            root: false,
            controller_uid: 1000,
            controller_gid: 1000,
            users: vec![inetd_protocol::AllowedUser {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
            }],
            ..root_policy()
        };
        let mut s = spec(7000);
        s.creds = inetd_protocol::Credentials {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
        };
        let p = validate(&s, &user).unwrap();
        let id = p.identity();
        assert_eq!((id.uid(), id.gid(), id.groups()), (1000, 1000, &[][..]));
        assert!(!id.change_ids() && id.no_new_privs());
    }

    #[test]
    fn what_gets_the_socket() {
        let mut s = spec(7000);
        s.wait = true;
        assert!(validate(&s, &root_policy()).unwrap().hands_socket());
        s.action = Action::Builtin(Builtin::Echo);
        assert!(!validate(&s, &root_policy()).unwrap().hands_socket());
        s.socket_type = SocketType::Dgram;
        assert!(validate(&s, &root_policy()).unwrap().hands_socket());
    }

    #[test]
    fn the_controller_always_gets_no_new_privs() {
        let (id, image) = controller(
            (999, 998, &[998, 4, 998]),
            true,
            c"/usr/sbin/inetd-controller",
            &[CString::new("inetd-controller").unwrap()],
        );
        assert!(id.no_new_privs() && id.change_ids());
        assert_eq!(id.groups(), &[4, 998]);
        assert_eq!(image.env()[0].to_bytes(), PATH_ENV.to_bytes());
        assert_eq!(image.path().to_str().unwrap(), "/usr/sbin/inetd-controller");
        assert_eq!(image.argv().len(), 1);
    }

    #[test]
    fn the_ids_are_judged_by_the_shared_verdict_with_numbers() {
        let p = root_policy();
        let mut s = spec(7000);
        s.creds.gid = 42;
        assert!(rejected(&s, &p).ends_with("--allow-group 42"));
        s.creds.gid = 65534;
        s.creds.uid = 0;
        assert!(rejected(&s, &p).contains("--allow-root-command '/bin/cat cat'"));
        s.creds.uid = 998;
        assert!(rejected(&s, &p).contains("controller"));
        s.creds.uid = 65534;
        s.creds.groups = vec![65534; MAX_GROUPS + 1];
        assert!(rejected(&s, &p).contains("too many groups"));
    }

    #[test]
    fn checks_exec_fields() {
        let p = root_policy();
        let cases: Vec<(Action, &str)> = vec![
            (
                Action::Exec {
                    path: "bin/cat".into(),
                    argv: vec!["cat".into()],
                },
                "absolute",
            ),
            (
                Action::Exec {
                    path: "/bin/c\0t".into(),
                    argv: vec!["cat".into()],
                },
                "NUL",
            ),
            (
                Action::Exec {
                    path: "/bin/cat".into(),
                    argv: vec![],
                },
                "empty argv",
            ),
            (
                Action::Exec {
                    path: "/bin/cat".into(),
                    argv: vec!["a\0b".into()],
                },
                "NUL",
            ),
            (
                Action::Exec {
                    path: format!("/{}", "x".repeat(MAX_PATH)),
                    argv: vec!["x".into()],
                },
                "too long",
            ),
            (
                Action::Exec {
                    path: "/bin/cat".into(),
                    argv: vec!["x".into(); MAX_ARGS + 1],
                },
                "too many",
            ),
            (
                Action::Exec {
                    path: "/bin/cat".into(),
                    argv: vec!["x".repeat(MAX_ARG_LEN + 1)],
                },
                "too long",
            ),
        ];
        for (a, why) in cases {
            let mut s = spec(7000);
            s.action = a;
            let r = rejected(&s, &p);
            assert!(r.contains(why), "{r} should say {why}");
        }
        let mut s = spec(7000);
        s.label = "l".repeat(MAX_LABEL + 1);
        assert!(rejected(&s, &p).contains("label"));
    }

    #[test]
    fn checks_bind_fields() {
        let p = root_policy();
        let mut s = spec(0);
        assert!(rejected(&s, &p).contains("port 0"));
        s = spec(7000);
        s.bind = Bind::Inet {
            addr: "::1".parse().unwrap(),
            port: 7000,
            mode: IpMode::V4,
        };
        assert!(rejected(&s, &p).contains("family"));
        s.bind = Bind::Inet {
            addr: "127.0.0.1".parse().unwrap(),
            port: 7000,
            mode: IpMode::Dual,
        };
        assert!(rejected(&s, &p).contains("family"));
        s.bind = Bind::Inet {
            addr: "::1".parse().unwrap(),
            port: 7000,
            mode: IpMode::V6Only,
        };
        assert!(validate(&s, &p).is_ok());
        s.socket_type = SocketType::Seqpacket;
        assert!(rejected(&s, &p).contains("seqpacket"));
        s = spec(7000);
        s.socket_type = SocketType::Dgram;
        assert!(rejected(&s, &p).contains("wait"));
        s.wait = true;
        assert!(validate(&s, &p).is_ok());
    }

    #[test]
    fn checks_unix_paths() {
        assert!(check_unix_path("/run/x.sock").is_ok());
        for (bad, why) in [
            ("run/x", "absolute"),
            ("/run//x", "canonical"),
            ("/run/./x", "canonical"),
            ("/run/../x", "canonical"),
            ("/run/x/", "canonical"),
            ("/", "no file name"),
            ("/r\0x", "NUL"),
        ] {
            let e = check_unix_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_UNIX_PATH));
        assert!(check_unix_path(&long).unwrap_err().contains("too long"));
        assert!(check_unix_path(&long[..MAX_UNIX_PATH]).is_ok());
    }

    #[test]
    fn access_lists_only_where_the_core_can_filter() {
        use inetd_protocol::{Acl, AclRule};
        let acl = Acl {
            rules: vec![
                AclRule {
                    addr: "10.1.0.0".parse().unwrap(),
                    prefix: 16,
                    allow: false,
                },
                AclRule {
                    addr: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    allow: true,
                },
                AclRule {
                    addr: "2001:db8::".parse().unwrap(),
                    prefix: 32,
                    allow: true,
                },
            ],
            default_allow: false,
        };
        // Not on services the core cannot filter.
        let mut s = spec(7000);
        s.acl = Some(acl.clone());
        assert!(validate(&s, &root_policy()).is_ok());
        s.wait = true;
        assert!(rejected(&s, &root_policy()).contains("access list"));
        // A dgram service is checked on its waking datagram.
        s.socket_type = SocketType::Dgram;
        assert!(validate(&s, &root_policy()).is_ok());
        s.bind = Bind::Unix {
            path: "/run/inetd/sockets/x.sock".into(),
        };
        assert!(rejected(&s, &root_policy()).contains("access list"));
        let mut s = spec(7000);
        s.acl = Some(Acl {
            rules: vec![AclRule {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 33,
                allow: true,
            }],
            default_allow: true,
        });
        assert!(rejected(&s, &root_policy()).contains("prefix"));
    }

    #[test]
    fn dgram_builtins_need_not_say_wait() {
        let mut s = spec(7000);
        s.action = Action::Builtin(Builtin::Echo);
        s.socket_type = SocketType::Dgram;
        assert!(validate(&s, &root_policy()).is_ok());
        s.socket_type = SocketType::Seqpacket;
        s.bind = Bind::Unix {
            path: "/run/inetd/sockets/x.sock".into(),
        };
        assert!(rejected(&s, &root_policy()).contains("stream and dgram"));
    }

    #[test]
    fn unix_listeners_only_in_the_unix_dirs() {
        let mut s = spec(7000);
        s.bind = Bind::Unix {
            path: "/run/inetd/sockets/x.sock".into(),
        };
        assert!(validate(&s, &root_policy()).is_ok());
        for path in ["/run/dbus/system_bus_socket", "/run/inetd/core.sock"] {
            s.bind = Bind::Unix { path: path.into() };
            assert!(
                rejected(&s, &root_policy()).contains("--unix-dir"),
                "{path}"
            );
        }
    }
}
