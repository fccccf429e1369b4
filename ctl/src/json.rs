//! The JSON of `inetctl list --json` and `inetctl status --json`: a stable
//! interface (docs/inetctl.md). The structs below are the
//! documents, field for field in the documented key order (serde_json keeps
//! declaration order); times are RFC 3339 UTC, states lowercase words.
#![forbid(unsafe_code)]

use serde::Serialize;

use inetd_protocol::control::{ListReply, ServiceRow, StatusReply};
use inetd_protocol::UnixDirs;

use crate::timefmt::rfc3339;

#[derive(Serialize)]
pub struct JsonList<'a> {
    pub generation: u64,
    pub services: Vec<JsonService<'a>>,
}

#[derive(Serialize)]
pub struct JsonSource<'a> {
    pub file: &'a str,
    pub line: u32,
}

#[derive(Serialize)]
pub struct JsonRefused {
    pub acl: u64,
    pub rate: u64,
    pub per_source: u64,
}

/// The limits in force; `null` is unlimited.
#[derive(Serialize)]
pub struct JsonLimits {
    pub max_children: Option<u32>,
    pub per_minute: Option<u32>,
    pub per_source_per_minute: Option<u32>,
    pub per_source_children: Option<u32>,
}

#[derive(Serialize)]
pub struct JsonService<'a> {
    pub source: JsonSource<'a>,
    pub service: &'a str,
    pub address: Option<&'a str>,
    pub port: Option<u16>,
    pub path: Option<&'a str>,
    pub socket_type: &'a str,
    pub protocol: &'a str,
    pub wait: bool,
    pub user: &'a str,
    pub group: &'a str,
    pub server: &'a str,
    pub argv: &'a [String],
    pub state: &'static str,
    pub reason: Option<&'a str>,
    pub until: Option<String>,
    pub children: u32,
    pub accepted: u64,
    pub exec_failures: u64,
    pub refused: JsonRefused,
    pub at_max_children: u64,
    /// `null` for an entry that did not parse.
    pub limits: Option<JsonLimits>,
    pub last_error: Option<&'a str>,
    pub warnings: &'a [String],
}

impl<'a> From<&'a ServiceRow> for JsonService<'a> {
    fn from(r: &'a ServiceRow) -> Self {
        JsonService {
            source: JsonSource {
                file: &r.source.file,
                line: r.source.line,
            },
            service: &r.service,
            address: r.address.as_deref(),
            port: r.port,
            path: r.path.as_deref(),
            socket_type: &r.socket_type,
            protocol: &r.protocol,
            wait: r.wait,
            user: &r.user,
            group: &r.group,
            server: &r.server,
            argv: &r.argv,
            state: r.state.as_str(),
            reason: r.reason.as_deref(),
            until: r.until.map(rfc3339),
            children: r.children,
            accepted: r.accepted,
            exec_failures: r.exec_failures,
            refused: JsonRefused {
                acl: r.refused.acl,
                rate: r.refused.rate,
                per_source: r.refused.per_source,
            },
            at_max_children: r.at_max_children,
            limits: r.limits.map(|l| JsonLimits {
                max_children: l.max_children,
                per_minute: l.per_minute,
                per_source_per_minute: l.per_source_per_minute,
                per_source_children: l.per_source_children,
            }),
            last_error: r.last_error.as_deref(),
            warnings: &r.warnings,
        }
    }
}

pub fn list_json(reply: &ListReply) -> String {
    let doc = JsonList {
        generation: reply.generation,
        services: reply.services.iter().map(JsonService::from).collect(),
    };
    serde_json::to_string_pretty(&doc).expect("plain structs serialize")
}

#[derive(Serialize)]
pub struct JsonStatus<'a> {
    pub controller: JsonController<'a>,
    pub core: JsonCore<'a>,
}

#[derive(Serialize)]
pub struct JsonConfigFile<'a> {
    pub path: &'a str,
    pub mtime: Option<String>,
}

#[derive(Serialize)]
pub struct JsonLastReload<'a> {
    pub at: String,
    pub result: &'static str,
    pub errors: &'a [String],
}

#[derive(Serialize)]
pub struct JsonController<'a> {
    pub version: &'a str,
    pub pid: u32,
    pub uptime_s: u64,
    pub admin_group: &'a str,
    pub config: Vec<JsonConfigFile<'a>>,
    pub last_reload: Option<JsonLastReload<'a>>,
}

/// The core as the controller sees it; every field but `reachable` is
/// null when the core is not reachable.
#[derive(Serialize)]
pub struct JsonCore<'a> {
    pub reachable: bool,
    pub version: Option<&'a str>,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub uptime_s: Option<u64>,
    pub generation: Option<u64>,
    pub allow_root_services: Option<bool>,
    pub allow_setuid_services: Option<bool>,
    pub listeners: Option<u32>,
    pub children: Option<u32>,
    /// What the core allows services to run as (trust rule 4).
    pub root: Option<bool>,
    pub allowed_users: Option<Vec<JsonUser<'a>>>,
    pub allowed_groups: Option<Vec<JsonGroup<'a>>>,
    /// `PATH ARG0 ARGS...`, as `--allow-root-command` takes it.
    pub root_commands: Option<Vec<String>>,
    /// The only directories unix listeners may be made in (directly);
    /// null where the core restricts them otherwise.
    pub unix_dirs: Option<&'a [String]>,
    /// A core that is not root, given no `--unix-dir`: unix listeners
    /// anywhere but in this directory (its runtime directory) or below.
    pub unix_dirs_except: Option<&'a str>,
}

#[derive(Serialize)]
pub struct JsonUser<'a> {
    pub user: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

#[derive(Serialize)]
pub struct JsonGroup<'a> {
    pub group: &'a str,
    pub gid: u32,
}

pub fn status_json(reply: &StatusReply) -> String {
    let c = &reply.controller;
    let core = reply.core.as_ref();
    let doc = JsonStatus {
        controller: JsonController {
            version: &c.version,
            pid: c.pid,
            uptime_s: c.uptime_s,
            admin_group: &c.admin_group,
            config: c
                .config
                .iter()
                .map(|f| JsonConfigFile {
                    path: &f.path,
                    mtime: f.mtime.map(rfc3339),
                })
                .collect(),
            last_reload: c.last_reload.as_ref().map(|l| JsonLastReload {
                at: rfc3339(l.at),
                result: l.result.as_str(),
                errors: &l.errors,
            }),
        },
        core: JsonCore {
            reachable: core.is_some(),
            version: core.map(|k| k.version.as_str()),
            pid: core.map(|k| k.pid),
            uid: core.map(|k| k.uid),
            uptime_s: core.map(|k| k.uptime_s),
            generation: core.map(|k| k.generation),
            allow_root_services: core.map(|k| k.policy.allow_root_services),
            allow_setuid_services: core.map(|k| k.policy.allow_setuid_services),
            listeners: core.map(|k| k.listeners),
            children: core.map(|k| k.children),
            root: core.map(|k| k.policy.root),
            allowed_users: core.map(|k| {
                let users = k.policy.users.iter();
                users
                    .map(|u| JsonUser {
                        user: &u.name,
                        uid: u.uid,
                        gid: u.gid,
                        groups: &u.groups,
                    })
                    .collect()
            }),
            allowed_groups: core.map(|k| {
                let groups = k.policy.groups.iter();
                groups
                    .map(|g| JsonGroup {
                        group: &g.name,
                        gid: g.gid,
                    })
                    .collect()
            }),
            root_commands: core.map(|k| k.policy.root_commands.iter().map(|c| c.line()).collect()),
            unix_dirs: core.and_then(|k| match &k.policy.unix_dirs {
                UnixDirs::Only(dirs) => Some(&dirs[..]),
                UnixDirs::AnyBut(_) => None,
            }),
            unix_dirs_except: core.and_then(|k| match &k.policy.unix_dirs {
                UnixDirs::Only(_) => None,
                UnixDirs::AnyBut(run) => Some(run.as_str()),
            }),
        },
    };
    serde_json::to_string_pretty(&doc).expect("plain structs serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::control::*;

    fn row() -> ServiceRow {
        ServiceRow {
            accepted: 12,
            limits: Some(RowLimits {
                max_children: Some(256),
                ..RowLimits::default()
            }),
            ..crate::testutil::echo_row()
        }
    }

    #[test]
    fn list_json_has_the_documented_shape_and_key_order() {
        let mut failed = row();
        failed.state = RowState::Failed;
        failed.reason = Some("Address already in use".into());
        failed.until = Some(1_700_000_000);
        failed.warnings = vec!["w".into()];
        let got = list_json(&ListReply {
            generation: 7,
            services: vec![row(), failed],
        });
        let one = |state: &str, reason: &str, until: &str, warnings: &str| {
            format!(
                r#"    {{
      "source": {{
        "file": "/etc/inetd.conf",
        "line": 12
      }},
      "service": "echo",
      "address": "127.0.0.1",
      "port": 7,
      "path": null,
      "socket_type": "stream",
      "protocol": "tcp4",
      "wait": false,
      "user": "nobody",
      "group": "nogroup",
      "server": "internal",
      "argv": [
        "echo"
      ],
      "state": "{state}",
      "reason": {reason},
      "until": {until},
      "children": 0,
      "accepted": 12,
      "exec_failures": 0,
      "refused": {{
        "acl": 0,
        "rate": 0,
        "per_source": 0
      }},
      "at_max_children": 0,
      "limits": {{
        "max_children": 256,
        "per_minute": null,
        "per_source_per_minute": null,
        "per_source_children": null
      }},
      "last_error": null,
      "warnings": {warnings}
    }}"#
            )
        };
        let want = format!(
            "{{\n  \"generation\": 7,\n  \"services\": [\n{},\n{}\n  ]\n}}",
            one("listening", "null", "null", "[]"),
            one(
                "failed",
                "\"Address already in use\"",
                "\"2023-11-14T22:13:20Z\"",
                "[\n        \"w\"\n      ]"
            )
        );
        assert_eq!(got, want);
    }

    #[test]
    fn status_json_has_the_documented_shape_and_nulls_when_the_core_is_down() {
        let s = StatusReply {
            controller: ControllerInfo {
                version: "0.1.0".into(),
                pid: 42,
                uptime_s: 3,
                admin_group: "inetd-admin".into(),
                config: vec![ConfigFileInfo {
                    path: "/etc/inetd.conf".into(),
                    mtime: Some(0),
                }],
                last_reload: Some(LastReload {
                    at: 60,
                    result: ReloadResult::Rejected,
                    errors: vec!["e".into()],
                }),
                config_paths: vec![],
                reloads: Default::default(),
            },
            core: None,
        };
        // No value here has a space, so dropping whitespace compacts it
        // while keeping the key order exactly as printed.
        let compact: String = status_json(&s)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        assert_eq!(
            compact,
            concat!(
                r#"{"controller":{"version":"0.1.0","pid":42,"uptime_s":3,"admin_group":"inetd-admin","#,
                r#""config":[{"path":"/etc/inetd.conf","mtime":"1970-01-01T00:00:00Z"}],"#,
                r#""last_reload":{"at":"1970-01-01T00:01:00Z","result":"rejected","errors":["e"]}},"#,
                r#""core":{"reachable":false,"version":null,"pid":null,"uid":null,"uptime_s":null,"#,
                r#""generation":null,"allow_root_services":null,"allow_setuid_services":null,"#,
                r#""listeners":null,"children":null,"root":null,"allowed_users":null,"#,
                r#""allowed_groups":null,"root_commands":null,"unix_dirs":null,"#,
                r#""unix_dirs_except":null}}"#
            )
        );
        let mut up = s;
        up.core = Some(CoreInfo {
            version: "0.1.0".into(),
            pid: 7,
            uid: 0,
            uptime_s: 5,
            generation: 2,
            policy: inetd_protocol::Policy {
                root: true,
                users: vec![inetd_protocol::AllowedUser {
                    name: "nobody".into(),
                    uid: 65534,
                    gid: 65534,
                    groups: vec![65534],
                }],
                groups: vec![inetd_protocol::AllowedGroup {
                    name: "shadow".into(),
                    gid: 42,
                }],
                root_commands: vec![
                    inetd_protocol::RootCommand::parse("/usr/bin/id id -u").unwrap()
                ],
                ..inetd_protocol::Policy::default()
            },
            listeners: 1,
            children: 0,
        });
        let v: serde_json::Value = serde_json::from_str(&status_json(&up)).unwrap();
        let core = &v["core"];
        assert_eq!(core["root"], true);
        assert_eq!(core["allow_root_services"], false);
        assert_eq!(
            core["allowed_users"],
            serde_json::json!([{"user": "nobody", "uid": 65534, "gid": 65534, "groups": [65534]}])
        );
        assert_eq!(
            core["allowed_groups"],
            serde_json::json!([{"group": "shadow", "gid": 42}])
        );
        assert_eq!(
            core["root_commands"],
            serde_json::json!(["/usr/bin/id id -u"])
        );
        assert_eq!(core["unix_dirs"], serde_json::json!([]));
        assert_eq!(core["unix_dirs_except"], serde_json::Value::Null);
        let mut user = up.clone();
        if let Some(k) = user.core.as_mut() {
            k.policy.unix_dirs = UnixDirs::AnyBut("/run/user/7/inetd".into());
        }
        let v: serde_json::Value = serde_json::from_str(&status_json(&user)).unwrap();
        assert_eq!(v["core"]["unix_dirs"], serde_json::Value::Null);
        assert_eq!(v["core"]["unix_dirs_except"], "/run/user/7/inetd");
        let mut root = up;
        if let Some(k) = root.core.as_mut() {
            k.policy.unix_dirs = UnixDirs::Only(vec!["/run/inetd/sockets".into()]);
        }
        let v: serde_json::Value = serde_json::from_str(&status_json(&root)).unwrap();
        assert_eq!(
            v["core"]["unix_dirs"],
            serde_json::json!(["/run/inetd/sockets"])
        );
    }
}
