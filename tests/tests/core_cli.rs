//! The core's command line and start-up refusals (docs/inetd-core.md,
//! options): exit codes and messages.

use std::process::Command;

use inetd_tests::*;

fn run_core(args: &[&str]) -> (Option<i32>, String) {
    let dir = TempDir::new("cli");
    let out = Command::new(bin_path("inetd-core"))
        .arg("--core-socket")
        .arg(dir.join("core.sock"))
        .args(args)
        .output()
        .expect("run inetd-core");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_flag_value_exits_2() {
    let (code, err) = run_core(&["--log-level", "loud"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.is_empty());
    let (code, err) = run_core(&["--no-such-flag"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_missing_controller_user_exits_2_and_says_what_to_do() {
    require_root!("the controller user is resolved by a root core");
    let (code, err) = run_core(&["--controller-user", "inetd-test-no-such-user"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("useradd"), "no advice in: {err}");
}

#[test]
fn a_normal_users_core_refuses_another_controller_user() {
    require_root!("starting the core as nobody");
    require_probe_for_others!();
    let dir = TempDir::new("cli-user");
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let out = command_as(65534, 65534, bin_path("inetd-core"))
        .arg("--core-socket")
        .arg(dir.join("core.sock"))
        .args(["--controller-user", "inetd"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot name another"), "{err}");
}

#[test]
fn a_root_command_pin_without_an_absolute_path_and_argv0_exits_2() {
    for pin in ["", "   ", "id id -u", "./id id", "/usr/bin/id"] {
        let (code, err) = run_core(&["--allow-root-command", pin]);
        assert_eq!(code, Some(2), "{pin:?}: {err}");
        assert!(err.contains("--allow-root-command"), "{pin:?}: {err}");
    }
}

#[test]
fn an_allowed_user_or_group_that_does_not_exist_exits_2() {
    require_root!("a root core resolves the users and groups it allows");
    for args in [
        ["--allow-user", "inetd-test-no-such-user"],
        ["--allow-group", "inetd-test-no-such-group"],
    ] {
        let (code, err) = run_core(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{} {}: no such", args[0], args[1])),
            "{err}"
        );
    }
}
