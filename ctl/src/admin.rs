//! Who may change the running configuration: root, the controller's own
//! uid, and members of the admin group. The caller's uid comes from
//! SO_PEERCRED only; its groups from its passwd entry (getgrouplist), never
//! from anything the client says.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// Group and user lookups, behind a trait so the admin rule is tested with
/// a fake and `--passwd`/`--group` files can replace NSS.
pub trait GroupDb: Send + Sync {
    /// The gid of a group name (or of a numeric gid that exists).
    fn group_gid(&self, name: &str) -> Option<u32>;
    /// Every gid of a user (primary and supplementary), `None` if the uid
    /// has no passwd entry.
    fn user_gids(&self, uid: u32) -> Option<Vec<u32>>;
    /// A user's name, for display.
    fn user_name(&self, uid: u32) -> Option<String>;
    /// A group's name, for display.
    fn group_name(&self, gid: u32) -> Option<String>;
}

/// The system's databases through NSS.
pub struct NssDb;

impl GroupDb for NssDb {
    fn group_gid(&self, name: &str) -> Option<u32> {
        if let Ok(Some(g)) = Group::from_name(name) {
            return Some(g.gid.as_raw());
        }
        let gid: u32 = name.parse().ok()?;
        match Group::from_gid(Gid::from_raw(gid)) {
            Ok(Some(_)) => Some(gid),
            _ => None,
        }
    }

    fn user_gids(&self, uid: u32) -> Option<Vec<u32>> {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten()?;
        let name = CString::new(user.name).ok()?;
        let groups = getgrouplist(&name, user.gid).ok()?;
        Some(groups.into_iter().map(Gid::as_raw).collect())
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    }
}

/// `passwd(5)` and `group(5)` files named by `--passwd` and `--group`; a
/// database not given falls back to NSS. Files are read at each lookup so
/// an edit is seen without a restart, as NSS would see it.
pub struct FilesDb {
    pub passwd: Option<PathBuf>,
    pub group: Option<PathBuf>,
}

fn records(path: &Path) -> Vec<Vec<String>> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

impl FilesDb {
    fn passwd_entry(&self, uid: u32) -> Option<(String, u32)> {
        let path = self.passwd.as_ref()?;
        records(path).into_iter().find_map(|r| {
            let u: u32 = r.get(2)?.parse().ok()?;
            let g: u32 = r.get(3)?.parse().ok()?;
            (u == uid).then(|| (r[0].clone(), g))
        })
    }
}

impl GroupDb for FilesDb {
    fn group_gid(&self, name: &str) -> Option<u32> {
        let Some(path) = &self.group else {
            return NssDb.group_gid(name);
        };
        let recs = records(path);
        let by_name = recs
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .and_then(|r| r.get(2)?.parse().ok());
        by_name.or_else(|| {
            let gid: u32 = name.parse().ok()?;
            recs.iter()
                .any(|r| r.get(2).and_then(|g| g.parse().ok()) == Some(gid))
                .then_some(gid)
        })
    }

    fn user_gids(&self, uid: u32) -> Option<Vec<u32>> {
        if self.passwd.is_none() && self.group.is_none() {
            return NssDb.user_gids(uid);
        }
        let (name, primary) = match &self.passwd {
            Some(_) => self.passwd_entry(uid)?,
            None => {
                let u = User::from_uid(Uid::from_raw(uid)).ok().flatten()?;
                (u.name, u.gid.as_raw())
            }
        };
        let Some(gpath) = &self.group else {
            let cname = CString::new(name).ok()?;
            let groups = getgrouplist(&cname, Gid::from_raw(primary)).ok()?;
            return Some(groups.into_iter().map(Gid::as_raw).collect());
        };
        let mut gids = vec![primary];
        for r in records(gpath) {
            let member = r
                .get(3)
                .is_some_and(|m| m.split(',').any(|m| m.trim() == name));
            if let (true, Some(Ok(g))) = (member, r.get(2).map(|g| g.parse::<u32>())) {
                if !gids.contains(&g) {
                    gids.push(g);
                }
            }
        }
        Some(gids)
    }

    fn user_name(&self, uid: u32) -> Option<String> {
        match &self.passwd {
            Some(_) => self.passwd_entry(uid).map(|(n, _)| n),
            None => NssDb.user_name(uid),
        }
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        let Some(path) = &self.group else {
            return NssDb.group_name(gid);
        };
        records(path).into_iter().find_map(|r| {
            let g: u32 = r.get(2)?.parse().ok()?;
            (g == gid).then(|| r[0].clone())
        })
    }
}

/// The admin rule, fixed at start: the controller's uid and the admin
/// group's gid (`None` when the group does not exist: it admits no one).
#[derive(Debug, Clone)]
pub struct Admins {
    pub own_uid: u32,
    pub group_name: String,
    pub group_gid: Option<u32>,
}

impl Admins {
    pub fn new(own_uid: u32, group_name: &str, db: &dyn GroupDb) -> Admins {
        Admins {
            own_uid,
            group_name: group_name.to_owned(),
            group_gid: db.group_gid(group_name),
        }
    }

    /// Whether the peer with this (SO_PEERCRED) uid may reload.
    pub fn is_admin(&self, peer_uid: u32, db: &dyn GroupDb) -> bool {
        if peer_uid == 0 || peer_uid == self.own_uid {
            return true;
        }
        let Some(gid) = self.group_gid else {
            return false;
        };
        db.user_gids(peer_uid)
            .is_some_and(|gids| gids.contains(&gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        groups: HashMap<&'static str, u32>,
        users: HashMap<u32, Vec<u32>>,
    }

    impl GroupDb for Fake {
        fn group_gid(&self, name: &str) -> Option<u32> {
            self.groups.get(name).copied()
        }
        fn user_gids(&self, uid: u32) -> Option<Vec<u32>> {
            self.users.get(&uid).cloned()
        }
        fn user_name(&self, _: u32) -> Option<String> {
            None
        }
        fn group_name(&self, _: u32) -> Option<String> {
            None
        }
    }

    fn fake() -> Fake {
        Fake {
            groups: HashMap::from([("inetd-admin", 900)]),
            users: HashMap::from([
                (1000, vec![1000, 900]),
                (1001, vec![1001, 27]),
                (1002, vec![900]),
            ]),
        }
    }

    #[test]
    fn root_self_and_group_members_are_admins() {
        let db = fake();
        let a = Admins::new(500, "inetd-admin", &db);
        assert!(a.is_admin(0, &db));
        assert!(a.is_admin(500, &db));
        assert!(a.is_admin(1000, &db), "supplementary member");
        assert!(a.is_admin(1002, &db), "primary group");
        assert!(!a.is_admin(1001, &db));
        assert!(!a.is_admin(65534, &db), "no passwd entry");
    }

    #[test]
    fn a_missing_group_admits_no_one_but_root_and_self() {
        let db = fake();
        let a = Admins::new(500, "wheel-nonexistent", &db);
        assert_eq!(a.group_gid, None);
        assert!(!a.is_admin(1000, &db));
        assert!(a.is_admin(0, &db));
        assert!(a.is_admin(500, &db));
    }

    #[test]
    fn files_db_reads_passwd_and_group_files() {
        let dir = std::env::temp_dir().join(format!("inetd-admin-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        let group = dir.join("group");
        fs::write(
            &passwd,
            "alice:x:2000:2000::/home/alice:/bin/sh\nbob:x:2001:2001::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            &group,
            "alice:x:2000:\nbob:x:2001:\nops:x:2500:carol,alice\n",
        )
        .unwrap();
        let db = FilesDb {
            passwd: Some(passwd),
            group: Some(group),
        };
        assert_eq!(db.group_gid("ops"), Some(2500));
        assert_eq!(db.group_gid("2500"), Some(2500));
        assert_eq!(db.group_gid("nope"), None);
        assert_eq!(db.user_gids(2000), Some(vec![2000, 2500]));
        assert_eq!(db.user_gids(2001), Some(vec![2001]));
        assert_eq!(db.user_name(2001).as_deref(), Some("bob"));
        assert_eq!(db.group_name(2500).as_deref(), Some("ops"));
        let a = Admins::new(1, "ops", &db);
        assert!(a.is_admin(2000, &db));
        assert!(!a.is_admin(2001, &db));
        fs::remove_dir_all(&dir).unwrap();
    }
}
