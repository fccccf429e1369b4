//! Name resolution: services, users, groups, host names, IPv6.
//!
//! Each source is either a file named by [`NameSources`] / [`LoadOptions`]
//! (tests, chroots, checking another host's configuration) or the system:
//! NSS through nix for users and groups, `/etc/services` read directly (as
//! every libc's `files` backend does), `getaddrinfo` through std for host
//! names. Results are cached for one load, so ten thousand entries for one
//! user cost one lookup.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, User};

use super::{ConfigError, LoadOptions, NameSources};

const SYSTEM_SERVICES: &str = "/etc/services";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub name: String,
    pub gid: u32,
    /// Member user names (from a group file; empty for NSS lookups, which
    /// use getgrouplist instead).
    pub members: Vec<String>,
}

/// A service from a services file: its port and official name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    pub port: u16,
    pub official: String,
}

#[derive(Default, Clone, PartialEq, Eq)]
struct ServicesDb {
    /// (protocol, name or alias) → service; the first line wins, as in libc.
    by_name: HashMap<(String, String), Service>,
}

impl ServicesDb {
    fn parse(text: &str) -> ServicesDb {
        let mut db = ServicesDb::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let service = Service {
                port,
                official: name.to_owned(),
            };
            for n in std::iter::once(name).chain(fields) {
                db.by_name
                    .entry((proto.to_owned(), n.to_owned()))
                    .or_insert_with(|| service.clone());
            }
        }
        db
    }
}

#[derive(Clone, PartialEq, Eq)]
struct PasswdDb {
    users: Vec<UserInfo>,
}

#[derive(Clone, PartialEq, Eq)]
struct GroupDb {
    groups: Vec<GroupInfo>,
}

fn read_source(path: &Path) -> Result<String, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn parse_passwd(text: &str) -> PasswdDb {
    let users = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(UserInfo {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect();
    PasswdDb { users }
}

fn parse_group(text: &str) -> GroupDb {
    let groups = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupInfo {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect();
    GroupDb { groups }
}

/// Host name → addresses, from a hosts file.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(addr)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            let list = map.entry(name.to_ascii_lowercase()).or_default();
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
    }
    map
}

/// The name sources of one load, and every answer they gave it.
#[derive(Clone)]
pub(crate) struct Names {
    services: ServicesDb,
    /// Where services come from, for messages.
    pub services_path: PathBuf,
    /// Why the system services file could not be read, for messages.
    pub services_problem: Option<String>,
    /// `--passwd` and `--group`, for messages.
    pub passwd_path: Option<PathBuf>,
    pub group_path: Option<PathBuf>,
    passwd: Option<PasswdDb>,
    group: Option<GroupDb>,
    hosts: Option<HashMap<String, Vec<IpAddr>>>,
    ipv6: Option<bool>,
    users: HashMap<String, Result<Option<UserInfo>, String>>,
    groups: HashMap<String, Result<Option<GroupInfo>, String>>,
    group_names: HashMap<u32, Option<String>>,
    group_lists: HashMap<(String, u32), Result<Vec<u32>, String>>,
    /// The resolver can be slow (DNS): each name is asked once per load.
    host_cache: HashMap<String, Result<Vec<IpAddr>, String>>,
    /// What is wrong with each server path checked in this load (`None`:
    /// nothing): one `stat` per path, not per entry.
    server_checks: HashMap<PathBuf, Option<String>>,
}

impl Names {
    /// Reads the named files now: a named file that cannot be read makes the
    /// whole load fail, like a configuration file. The system services file
    /// may be missing (containers without netbase): names then do not
    /// resolve, and the errors say why.
    pub fn open(sources: &NameSources, options: &LoadOptions) -> Result<Names, ConfigError> {
        let (services, services_path, services_problem) = match &sources.services {
            Some(p) => (ServicesDb::parse(&read_source(p)?), p.clone(), None),
            None => match std::fs::read(SYSTEM_SERVICES) {
                Ok(b) => (
                    ServicesDb::parse(&String::from_utf8_lossy(&b)),
                    PathBuf::from(SYSTEM_SERVICES),
                    None,
                ),
                Err(e) => (
                    ServicesDb::default(),
                    PathBuf::from(SYSTEM_SERVICES),
                    Some(e.to_string()),
                ),
            },
        };
        let passwd = match &sources.passwd {
            Some(p) => Some(parse_passwd(&read_source(p)?)),
            None => None,
        };
        let group = match &sources.group {
            Some(p) => Some(parse_group(&read_source(p)?)),
            None => None,
        };
        let hosts = match &options.hosts {
            Some(p) => Some(parse_hosts(&read_source(p)?)),
            None => None,
        };
        Ok(Names {
            services,
            services_path,
            services_problem,
            passwd_path: sources.passwd.clone(),
            group_path: sources.group.clone(),
            passwd,
            group,
            hosts,
            ipv6: options.ipv6,
            users: HashMap::new(),
            groups: HashMap::new(),
            group_names: HashMap::new(),
            host_cache: HashMap::new(),
            group_lists: HashMap::new(),
            server_checks: HashMap::new(),
        })
    }

    /// What is wrong with the server at `path` (not a regular executable
    /// file, or not there), checked once per load.
    pub fn server_problem(&mut self, path: &Path) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(p) = self.server_checks.get(path) {
            return p.clone();
        }
        let problem = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => Some("is not a regular file".to_owned()),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("is not executable".to_owned()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist".to_owned()),
            Err(e) => Some(format!("cannot be checked: {}", super::entry::io_text(&e))),
        };
        self.server_checks
            .insert(path.to_path_buf(), problem.clone());
        problem
    }

    /// A service by name or alias for `proto` ("tcp" or "udp").
    pub fn service(&self, name: &str, proto: &str) -> Option<&Service> {
        self.services
            .by_name
            .get(&(proto.to_owned(), name.to_owned()))
    }

    /// A user by name. Err is a lookup failure (NSS unreachable), not
    /// "no such user".
    pub fn user(&mut self, name: &str) -> Result<Option<UserInfo>, String> {
        if let Some(r) = self.users.get(name) {
            return r.clone();
        }
        let r = match &self.passwd {
            Some(db) => Ok(db.users.iter().find(|u| u.name == name).cloned()),
            None => match User::from_name(name) {
                Ok(u) => Ok(u.map(|u| UserInfo {
                    name: u.name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                })),
                Err(e) => Err(e.desc().to_owned()),
            },
        };
        self.users.insert(name.to_owned(), r.clone());
        r
    }

    /// A group by name.
    pub fn group(&mut self, name: &str) -> Result<Option<GroupInfo>, String> {
        if let Some(r) = self.groups.get(name) {
            return r.clone();
        }
        let r = match &self.group {
            Some(db) => Ok(db.groups.iter().find(|g| g.name == name).cloned()),
            None => match Group::from_name(name) {
                Ok(g) => Ok(g.map(|g| GroupInfo {
                    name: g.name,
                    gid: g.gid.as_raw(),
                    members: Vec::new(),
                })),
                Err(e) => Err(e.desc().to_owned()),
            },
        };
        self.groups.insert(name.to_owned(), r.clone());
        r
    }

    /// The name of a gid, if it has one.
    pub fn group_name(&mut self, gid: u32) -> Option<String> {
        if let Some(r) = self.group_names.get(&gid) {
            return r.clone();
        }
        let r = match &self.group {
            Some(db) => db
                .groups
                .iter()
                .find(|g| g.gid == gid)
                .map(|g| g.name.clone()),
            None => Group::from_gid(Gid::from_raw(gid))
                .ok()
                .flatten()
                .map(|g| g.name),
        };
        self.group_names.insert(gid, r.clone());
        r
    }

    /// The groups `initgroups(user, gid)` would set: `gid` first, then
    /// every other group that lists the user as a member, each once.
    pub fn group_list(&mut self, user: &str, gid: u32) -> Result<Vec<u32>, String> {
        let key = (user.to_owned(), gid);
        if let Some(r) = self.group_lists.get(&key) {
            return r.clone();
        }
        let r = self.group_list_uncached(user, gid);
        self.group_lists.insert(key, r.clone());
        r
    }

    fn group_list_uncached(&self, user: &str, gid: u32) -> Result<Vec<u32>, String> {
        let mut list = vec![gid];
        match &self.group {
            Some(db) => {
                for g in &db.groups {
                    if g.members.iter().any(|m| m == user) && !list.contains(&g.gid) {
                        list.push(g.gid);
                    }
                }
            }
            None => {
                let name = CString::new(user).map_err(|_| "a NUL byte in the user name")?;
                let found = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
                    .map_err(|e| format!("getgrouplist: {}", e.desc()))?;
                for g in found {
                    if !list.contains(&g.as_raw()) {
                        list.push(g.as_raw());
                    }
                }
            }
        }
        Ok(list)
    }

    /// The addresses of a host name, in the resolver's order, each once.
    pub fn host(&mut self, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(hosts) = &self.hosts {
            return hosts
                .get(&name.to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| "not found in the hosts file".to_owned());
        }
        if let Some(r) = self.host_cache.get(name) {
            return r.clone();
        }
        let r = match (name, 0u16).to_socket_addrs() {
            Err(e) => Err(e.to_string()),
            Ok(found) => {
                let mut out = Vec::new();
                for a in found {
                    if !out.contains(&a.ip()) {
                        out.push(a.ip());
                    }
                }
                if out.is_empty() {
                    Err("no addresses".to_owned())
                } else {
                    Ok(out)
                }
            }
        };
        self.host_cache.insert(name.to_owned(), r.clone());
        r
    }

    /// Whether `self`, freshly opened, answers as `before` did: the same
    /// files read, and the system giving again the answer to every
    /// question `before` was asked (each user, group, group list, host
    /// name, server path and the IPv6 probe, asked again now). Since an
    /// entry's parse reads nothing but its text and these answers, a load
    /// of the same text with such names gives the same configuration.
    pub fn answers_as(&mut self, before: &Names) -> bool {
        let same_files = self.services == before.services
            && self.services_path == before.services_path
            && self.services_problem == before.services_problem
            && self.passwd_path == before.passwd_path
            && self.group_path == before.group_path
            && self.passwd == before.passwd
            && self.group == before.group
            && self.hosts == before.hosts;
        if !same_files {
            return false;
        }
        if let Some(had) = before.ipv6 {
            if self.has_ipv6() != had {
                return false;
            }
        }
        before.users.iter().all(|(n, r)| self.user(n) == *r)
            && before.groups.iter().all(|(n, r)| self.group(n) == *r)
            && before
                .group_names
                .iter()
                .all(|(g, r)| self.group_name(*g) == *r)
            && before
                .group_lists
                .iter()
                .all(|((u, g), r)| self.group_list(u, *g) == *r)
            && before.host_cache.iter().all(|(n, r)| self.host(n) == *r)
            && before
                .server_checks
                .iter()
                .all(|(p, r)| self.server_problem(p) == *r)
    }

    /// Whether the host can make IPv6 sockets (probed once).
    pub fn has_ipv6(&mut self) -> bool {
        *self.ipv6.get_or_insert_with(|| {
            use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
            socket(
                AddressFamily::Inet6,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_aliases_and_first_wins() {
        let db = ServicesDb::parse(
            "# c\nchargen 19/tcp ttytst source\nchargen 19/udp ttytst\necho 7/tcp # x\necho 77/tcp\nbad\nbad x/tcp\n",
        );
        let get = |n: &str, p: &str| db.by_name.get(&(p.to_owned(), n.to_owned())).cloned();
        assert_eq!(
            get("source", "tcp"),
            Some(Service {
                port: 19,
                official: "chargen".into()
            })
        );
        assert_eq!(get("source", "udp"), None);
        assert_eq!(get("echo", "tcp").unwrap().port, 7);
        assert_eq!(get("bad", "tcp"), None);
    }

    #[test]
    fn a_system_answer_that_changed_since_is_seen() {
        let open = || Names::open(&NameSources::default(), &LoadOptions::default()).unwrap();
        let mut before = open();
        let root = before.user("root").unwrap().expect("root exists");
        assert_eq!(before.server_problem(Path::new("/bin/sh")), None);
        before.group_name(0);
        before.group_list("root", 0).unwrap();
        before.has_ipv6();
        assert!(open().answers_as(&before));
        // As if the system had answered otherwise when `before` asked.
        let mut stale = before.clone();
        let moved = UserInfo { uid: 4321, ..root };
        stale.users.insert("root".into(), Ok(Some(moved)));
        assert!(!open().answers_as(&stale));
        let mut stale = before.clone();
        stale
            .server_checks
            .insert("/bin/sh".into(), Some("does not exist".into()));
        assert!(!open().answers_as(&stale));
        let mut stale = before.clone();
        stale.group_names.insert(0, Some("renamed".into()));
        assert!(!open().answers_as(&stale));
        let mut stale = before.clone();
        stale
            .group_lists
            .insert(("root".into(), 0), Ok(vec![0, 4242]));
        assert!(!open().answers_as(&stale));
        let mut stale = before.clone();
        stale.ipv6 = stale.ipv6.map(|v| !v);
        assert!(!open().answers_as(&stale));
    }

    #[test]
    fn passwd_group_and_hosts_files() {
        let p = parse_passwd("root:x:0:0::/:/bin/sh\nbroken\nx:x:nan:1\n#c:x:1:1\n");
        assert_eq!(p.users.len(), 1);
        let g = parse_group("staff:x:50:a,b\nempty:x:51:\nshort:x:52\n");
        assert_eq!(g.groups[0].members, vec!["a", "b"]);
        assert!(g.groups[1].members.is_empty());
        assert_eq!(g.groups.len(), 3);
        let h = parse_hosts("127.0.0.1 localhost lo\n::1 localhost\nnot-an-ip x\n");
        assert_eq!(h["localhost"].len(), 2);
        assert!(!h.contains_key("x"));
    }
}
