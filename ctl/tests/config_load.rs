//! Reading a configuration as a whole: files, directories, defaults, and
//! what makes a load fail (ConfigError) rather than give diagnostics.

mod config_support;

use std::path::PathBuf;

use config_support::*;
use inetd_ctl::config::{default_paths, load, load_with, ConfigError, NameSources, Severity};

const ECHO: &str = "echo stream tcp4 nowait nobody internal\n";

#[test]
fn a_directory_means_its_conf_files_in_name_order() {
    let dir = temp_dir("dir");
    std::fs::write(
        dir.join("20-b.conf"),
        "discard stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    std::fs::write(dir.join("10-a.conf"), ECHO).unwrap();
    std::fs::write(dir.join("30-c.conf.dpkg-old"), "bad\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "bad\n").unwrap();
    std::fs::write(dir.join(".hidden.conf"), "bad\n").unwrap();
    std::fs::create_dir(dir.join("40-sub.conf")).unwrap();
    let single = temp_dir("single").join("inetd.conf");
    std::fs::write(&single, "daytime stream tcp4 nowait nobody internal\n").unwrap();

    let c = load_with(&[single.clone(), dir.clone()], &names(), &options()).unwrap();
    let files: Vec<PathBuf> = c.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        files,
        vec![single.clone(), dir.join("10-a.conf"), dir.join("20-b.conf")]
    );
    assert!(c.files.iter().all(|f| f.mtime.is_some()));
    let sources: Vec<String> = c.entries.iter().map(|e| e.source.file.clone()).collect();
    assert_eq!(
        sources,
        vec![
            single.display().to_string(),
            dir.join("10-a.conf").display().to_string(),
            dir.join("20-b.conf").display().to_string(),
        ]
    );
    // A directory named *.conf is said, not silently skipped.
    let w = warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        c.diagnostics[0].file,
        dir.join("40-sub.conf").display().to_string()
    );
    assert_eq!(c.diagnostics[0].line, 0);
    assert!(!c.has_errors());
}

#[test]
fn the_file_is_shown_as_given() {
    let dir = temp_dir("given");
    std::fs::write(dir.join("x.conf"), "bad\n").unwrap();
    let given = dir.join(".").join("x.conf");
    let c = load_with(std::slice::from_ref(&given), &names(), &options()).unwrap();
    assert_eq!(c.diagnostics[0].file, given.display().to_string());
    assert_eq!(c.rejected[0].source.file, given.display().to_string());
}

#[test]
fn named_paths_that_cannot_be_read_fail_the_load() {
    let dir = temp_dir("missing");
    let missing = dir.join("nope.conf");
    let err = load_with(std::slice::from_ref(&missing), &names(), &options()).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        format!("{}: No such file or directory", missing.display())
    );

    // A path through a regular file: ENOTDIR, whoever we are (root too).
    std::fs::write(dir.join("file"), ECHO).unwrap();
    let through = dir.join("file").join("x.conf");
    let err = load_with(std::slice::from_ref(&through), &names(), &options()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&through.display().to_string()));

    // Name sources named on the command line must exist too.
    let sources = NameSources {
        services: Some(dir.join("no-services")),
        ..names()
    };
    let err = load_with(&[dir.join("file")], &sources, &options()).unwrap_err();
    assert!(err.to_string().contains("no-services"), "{err}");
}

#[test]
fn unreadable_file_fails_the_load() {
    use std::os::unix::fs::PermissionsExt;
    // Under /tmp, which nobody can reach (the target directory may not be).
    let dir = inetd_tests::TempDir::new("unreadable");
    let f = dir.join("x.conf");
    std::fs::write(&f, ECHO).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).unwrap();
    if inetd_tests::is_root() {
        // Root reads any file whatever its mode: load it as nobody, through
        // inetctl check, which loads as this library does.
        let out = inetd_tests::command_as(65534, 65534, env!("CARGO_BIN_EXE_inetctl"))
            .arg("check")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("Permission denied"), "{err}");
        assert!(err.contains(&f.display().to_string()), "{err}");
    } else {
        let err = load_with(&[dir.path().to_owned()], &names(), &options()).unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }
}

#[test]
fn huge_files_fail_the_load() {
    let dir = temp_dir("huge");
    let f = dir.join("x.conf");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(inetd_ctl::config::MAX_FILE + 1).unwrap();
    let err = load_with(std::slice::from_ref(&f), &names(), &options()).unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
}

#[test]
fn empty_and_comment_only_files_are_fine() {
    let c = load_text("");
    assert!(c.diagnostics.is_empty() && c.entries.is_empty());
    let dir = temp_dir("emptydir");
    let c = load_with(std::slice::from_ref(&dir), &names(), &options()).unwrap();
    assert!(c.diagnostics.is_empty() && c.files.is_empty());
}

/// The defaults: a missing one is skipped; both missing is a warning and
/// no entries. This depends on the host's /etc, so it checks whichever
/// case the host is in.
#[test]
fn defaults() {
    assert_eq!(
        default_paths(),
        vec![
            PathBuf::from("/etc/inetd.conf"),
            PathBuf::from("/etc/inetd.d")
        ]
    );
    let file = std::path::Path::new("/etc/inetd.conf").exists();
    let dir = std::path::Path::new("/etc/inetd.d").exists();
    match load(&default_paths(), &NameSources::default()) {
        Ok(c) if !file && !dir => {
            assert!(c.entries.is_empty());
            assert_eq!(c.diagnostics.len(), 1);
            let d = &c.diagnostics[0];
            assert_eq!(d.severity, Severity::Warning);
            assert_eq!(
                d.to_string(),
                "warning: neither /etc/inetd.conf nor /etc/inetd.d exists: no services are configured"
            );
            // An empty list means the defaults too.
            let c = load(&[], &NameSources::default()).unwrap();
            assert_eq!(c.diagnostics.len(), 1);
        }
        Ok(c) => inetd_tests::skip(&format!(
            "the host has its own defaults ({} entries): their absence is not checked",
            c.entries.len()
        )),
        Err(e) => inetd_tests::skip(&format!(
            "the host's defaults are unreadable ({e}): their absence is not checked"
        )),
    }
}
