//! A reload's load (`load_all_again`): what it reads and asks again, and
//! that every change a full load would see gives a new configuration,
//! while unchanged inputs give back the one in effect.

mod config_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use config_support::*;
use inetd_ctl::config::{
    load_all, load_all_again, AccessFiles, Config, NameSources, Reloaded, SourcePrefix,
};

/// Name sources and access files copied into a directory of their own, so
/// the test can change them, and a server that exists.
struct Setup {
    dir: PathBuf,
    conf: PathBuf,
    names: NameSources,
    access: AccessFiles,
    server: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = temp_dir(tag);
        for f in ["passwd", "group", "services"] {
            std::fs::copy(data(f), dir.join(f)).unwrap();
        }
        let server = dir.join("server");
        std::fs::write(&server, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Setup {
            conf: dir.join("inetd.conf"),
            names: NameSources {
                services: Some(dir.join("services")),
                passwd: Some(dir.join("passwd")),
                group: Some(dir.join("group")),
            },
            access: AccessFiles {
                allow: dir.join("hosts.allow"),
                deny: dir.join("hosts.deny"),
            },
            server,
            dir,
        };
        s.write_conf("");
        s
    }

    fn write_conf(&self, extra: &str) {
        let text = format!(
            "echo stream tcp4 nowait nobody internal\n\
             9000 stream tcp4 nowait nobody {} srv\n{extra}",
            self.server.display()
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    fn load(&self) -> Config {
        load_all(
            std::slice::from_ref(&self.conf),
            &self.names,
            &self.access,
            SourcePrefix::default(),
        )
        .expect("load")
    }

    fn again(&self, previous: &Config) -> Reloaded {
        self.again_with(previous, SourcePrefix::default())
    }

    fn again_with(&self, previous: &Config, prefix: SourcePrefix) -> Reloaded {
        load_all_again(
            previous,
            std::slice::from_ref(&self.conf),
            &self.names,
            &self.access,
            prefix,
        )
        .expect("load again")
    }

    /// Replaces `from` by `to` in one of the setup's files.
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
}

fn new(r: Reloaded) -> Config {
    match r {
        Reloaded::New(c) => c,
        Reloaded::Same(_) => panic!("expected a new configuration, got the same"),
    }
}

fn same(r: Reloaded) -> Vec<inetd_ctl::config::ConfigFile> {
    match r {
        Reloaded::Same(files) => files,
        Reloaded::New(_) => panic!("expected the same configuration, got a new one"),
    }
}

fn spec_of(c: &Config, port: u16) -> &inetd_protocol::ListenerSpec {
    &c.entries
        .iter()
        .find(|e| matches!(e.spec.bind, inetd_protocol::Bind::Inet { port: p, .. } if p == port))
        .unwrap_or_else(|| panic!("no entry on port {port}"))
        .spec
}

#[test]
fn unchanged_inputs_give_back_the_configuration_with_its_files_now() {
    let s = Setup::new("same");
    let c = s.load();
    assert_eq!(c.entries.len(), 2);
    let files = same(s.again(&c));
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, s.conf);
    // Rewritten with the same text: the same, with the new time.
    let before = std::fs::metadata(&s.conf).unwrap().modified().unwrap();
    let later = before + std::time::Duration::from_secs(60);
    let f = std::fs::File::options().write(true).open(&s.conf).unwrap();
    f.set_modified(later).unwrap();
    let files = same(s.again(&c));
    assert_eq!(files[0].mtime, Some(later));
}

#[test]
fn a_changed_configuration_file_is_parsed_again() {
    let s = Setup::new("text");
    let c = s.load();
    s.write_conf("9001 stream tcp4 nowait nobody internal echo\n");
    let n = new(s.again(&c));
    assert_eq!(n.entries.len(), 3);
    // And the new one is the base of the next comparison.
    same(s.again(&n));
}

#[test]
fn a_file_added_to_a_directory_is_seen() {
    let s = Setup::new("dir");
    let dir = s.dir.join("inetd.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.conf"),
        "echo stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    let load = || {
        load_all(
            std::slice::from_ref(&dir),
            &s.names,
            &s.access,
            SourcePrefix::default(),
        )
        .unwrap()
    };
    let again = |c: &Config| {
        load_all_again(
            c,
            std::slice::from_ref(&dir),
            &s.names,
            &s.access,
            SourcePrefix::default(),
        )
        .unwrap()
    };
    let c = load();
    same(again(&c));
    std::fs::write(
        dir.join("b.conf"),
        "discard stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    assert_eq!(new(again(&c)).entries.len(), 2);
}

#[test]
fn a_changed_user_group_or_service_is_resolved_again() {
    let s = Setup::new("names");
    let c = s.load();
    assert_eq!(spec_of(&c, 9000).creds.uid, 65534);

    // nobody's uid in the passwd file.
    s.edit("passwd", "nobody:*:65534:", "nobody:*:65000:");
    let c2 = new(s.again(&c));
    assert_eq!(spec_of(&c2, 9000).creds.uid, 65000);

    // nobody joins a group: its supplementary groups change.
    s.edit(
        "group",
        "nogroup:*:65534:",
        "nogroup:*:65534:\nextra:*:4242:nobody",
    );
    let c3 = new(s.again(&c2));
    assert!(spec_of(&c3, 9000).creds.groups.contains(&4242));

    // echo moves to another port in the services file.
    s.edit("services", "echo\t\t7/tcp", "echo\t\t1007/tcp");
    let c4 = new(s.again(&c3));
    spec_of(&c4, 1007);
    same(s.again(&c4));
}

#[test]
fn a_server_that_changed_is_checked_again() {
    let s = Setup::new("server");
    let c = s.load();
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    std::fs::set_permissions(&s.server, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c2 = new(s.again(&c));
    let text: Vec<String> = c2.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|d| d.contains("is not executable")),
        "{text:?}"
    );
    std::fs::remove_file(&s.server).unwrap();
    let c3 = new(s.again(&c2));
    let text: Vec<String> = c3.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|d| d.contains("does not exist")),
        "{text:?}"
    );
}

#[test]
fn changed_access_files_or_source_grouping_are_compiled_again() {
    let s = Setup::new("access");
    let c = s.load();
    assert!(spec_of(&c, 9000).acl.is_none());
    std::fs::write(&s.access.deny, "srv: 192.0.2.0/24\n").unwrap();
    let c2 = new(s.again(&c));
    assert!(spec_of(&c2, 9000).acl.is_some());
    same(s.again(&c2));
    let wider = "24,64".parse().unwrap();
    let c3 = new(s.again_with(&c2, wider));
    assert_eq!(spec_of(&c3, 9000).limits.source_prefix_v4, 24);
}

#[test]
fn an_unreadable_file_is_an_error_as_in_a_full_load() {
    let s = Setup::new("gone");
    let c = s.load();
    std::fs::remove_file(&s.conf).unwrap();
    let e = load_all_again(
        &c,
        std::slice::from_ref(&s.conf),
        &s.names,
        &s.access,
        SourcePrefix::default(),
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with(&s.conf.display().to_string()),
        "{e}"
    );
    assert!(Path::new(&s.dir).exists());
}
