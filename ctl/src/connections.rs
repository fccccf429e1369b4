//! `inetctl connections`: the core's child table, each child with the
//! service it serves (from its listener's label) and its client (from the
//! peer text the core records: `192.0.2.1:4000`, `[2001:db8::1]:4000`, or
//! `unix:pid=P,uid=U,gid=G`).

use std::net::SocketAddr;

use inetd_protocol::control::{Client, ConnectionRow, ConnectionsReply, SourceRef};
use inetd_protocol::{unix_now, StatusReport};

use crate::config::Label;

/// The client of a child from the core's peer text; `Client::None` for a
/// wait server (no peer) and for text this version does not know.
pub fn client_of(peer: Option<&str>) -> Client {
    let Some(peer) = peer else {
        return Client::None;
    };
    if let Some(cred) = peer.strip_prefix("unix:") {
        let mut pid = None;
        let mut uid = None;
        let mut gid = None;
        for kv in cred.split(',') {
            match kv.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("uid", v)) => uid = v.parse().ok(),
                Some(("gid", v)) => gid = v.parse().ok(),
                _ => {}
            }
        }
        return match (pid, uid, gid) {
            (Some(pid), Some(uid), Some(gid)) => Client::Unix { pid, uid, gid },
            _ => Client::None,
        };
    }
    match peer.parse::<SocketAddr>() {
        Ok(sa) => Client::Inet {
            address: sa.ip().to_string(),
            port: sa.port(),
        },
        Err(_) => Client::None,
    }
}

/// Every live child of the core's listeners, oldest first.
pub fn connections(status: &StatusReport) -> ConnectionsReply {
    let mut rows: Vec<ConnectionRow> = status
        .children
        .iter()
        .map(|c| {
            let listener = c
                .listener
                .and_then(|i| status.listeners.get(usize::try_from(i).ok()?));
            let label = listener.and_then(|l| Label::decode(&l.spec.label));
            let user = match (listener, &label) {
                (Some(l), Some(label)) if l.spec.creds.uid == c.uid => Some(label.user.clone()),
                _ => None,
            };
            ConnectionRow {
                pid: c.pid,
                service: label
                    .as_ref()
                    .map(|l| l.service.clone())
                    .unwrap_or_default(),
                protocol: label
                    .as_ref()
                    .map(|l| l.protocol.clone())
                    .unwrap_or_default(),
                source: SourceRef {
                    file: label.as_ref().map(|l| l.file.clone()).unwrap_or_default(),
                    line: label.as_ref().map_or(0, |l| l.line),
                },
                wait: listener.is_some_and(|l| l.spec.wait) && c.peer.is_none(),
                client: client_of(c.peer.as_deref()),
                uid: c.uid,
                user,
                started_at: c.started_at,
            }
        })
        .collect();
    rows.sort_by_key(|r| (r.started_at, r.pid));
    ConnectionsReply {
        generation: status.generation,
        now: unix_now(),
        connections: rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_as_the_core_writes_them() {
        assert_eq!(
            client_of(Some("192.0.2.1:4000")),
            Client::Inet {
                address: "192.0.2.1".into(),
                port: 4000
            }
        );
        assert_eq!(
            client_of(Some("[2001:db8::1]:4000")),
            Client::Inet {
                address: "2001:db8::1".into(),
                port: 4000
            }
        );
        assert_eq!(
            client_of(Some("unix:pid=7,uid=1000,gid=100")),
            Client::Unix {
                pid: 7,
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(client_of(None), Client::None);
        assert_eq!(client_of(Some("unix:pid=x")), Client::None);
        assert_eq!(client_of(Some("garbage")), Client::None);
    }
}

/// The client as the table shows it.
fn client_text(c: &Client, wait: bool) -> String {
    match c {
        Client::Inet { address, port } if address.contains(':') => format!("[{address}]:{port}"),
        Client::Inet { address, port } => format!("{address}:{port}"),
        Client::Unix { pid, uid, gid } => format!("uid {uid} gid {gid} (pid {pid})"),
        Client::None if wait => "(wait server)".into(),
        Client::None => "-".into(),
    }
}

/// `12s`, `5m03s`, `2h07m`, `3d04h`.
pub fn age_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

const HEADERS: [&str; 8] = [
    "PID", "SERVICE", "PROTO", "CLIENT", "USER", "STARTED", "AGE", "SOURCE",
];

/// `inetctl connections`: one line per live child, columns aligned.
pub fn connections_table(reply: &ConnectionsReply) -> String {
    let rows: Vec<Vec<String>> = reply
        .connections
        .iter()
        .map(|c| {
            let source = if c.source.file.is_empty() {
                "-".to_owned()
            } else {
                format!("{}:{}", c.source.file, c.source.line)
            };
            let or_dash = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            vec![
                c.pid.to_string(),
                or_dash(&c.service),
                or_dash(&c.protocol),
                client_text(&c.client, c.wait),
                c.user.clone().unwrap_or_else(|| c.uid.to_string()),
                crate::timefmt::rfc3339(c.started_at),
                age_text(reply.now.saturating_sub(c.started_at)),
                source,
            ]
        })
        .collect();
    crate::table::aligned(&HEADERS, &rows)
}

#[derive(serde::Serialize)]
struct JsonConnections<'a> {
    generation: u64,
    connections: Vec<JsonConnection<'a>>,
}

#[derive(serde::Serialize)]
struct JsonSource<'a> {
    file: &'a str,
    line: u32,
}

#[derive(serde::Serialize)]
struct JsonPeer {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// One child, keys in the documented order (docs/inetctl.md).
#[derive(serde::Serialize)]
struct JsonConnection<'a> {
    pid: u32,
    service: &'a str,
    protocol: &'a str,
    source: JsonSource<'a>,
    wait: bool,
    address: Option<&'a str>,
    port: Option<u16>,
    peer: Option<JsonPeer>,
    uid: u32,
    user: Option<&'a str>,
    started: String,
    age_s: u64,
}

/// `inetctl connections --json`: a stable interface.
pub fn connections_json(reply: &ConnectionsReply) -> String {
    let doc = JsonConnections {
        generation: reply.generation,
        connections: reply
            .connections
            .iter()
            .map(|c| {
                let (address, port) = match &c.client {
                    Client::Inet { address, port } => (Some(address.as_str()), Some(*port)),
                    _ => (None, None),
                };
                let peer = match c.client {
                    Client::Unix { pid, uid, gid } => Some(JsonPeer { pid, uid, gid }),
                    _ => None,
                };
                JsonConnection {
                    pid: c.pid,
                    service: &c.service,
                    protocol: &c.protocol,
                    source: JsonSource {
                        file: &c.source.file,
                        line: c.source.line,
                    },
                    wait: c.wait,
                    address,
                    port,
                    peer,
                    uid: c.uid,
                    user: c.user.as_deref(),
                    started: crate::timefmt::rfc3339(c.started_at),
                    age_s: reply.now.saturating_sub(c.started_at),
                }
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).expect("plain structs serialize")
}

#[cfg(test)]
mod output_tests {
    use super::*;

    fn reply() -> ConnectionsReply {
        let row = |pid: u32, client: Client, wait: bool| ConnectionRow {
            pid,
            service: "echo".into(),
            protocol: "tcp4".into(),
            source: SourceRef {
                file: "/etc/inetd.conf".into(),
                line: 12,
            },
            wait,
            client,
            uid: 65534,
            user: Some("nobody".into()),
            started_at: 1_700_000_000,
        };
        ConnectionsReply {
            generation: 7,
            now: 1_700_000_075,
            connections: vec![
                row(
                    41,
                    Client::Inet {
                        address: "127.0.0.1".into(),
                        port: 5000,
                    },
                    false,
                ),
                row(
                    42,
                    Client::Unix {
                        pid: 9,
                        uid: 1000,
                        gid: 100,
                    },
                    false,
                ),
                row(43, Client::None, true),
            ],
        }
    }

    #[test]
    fn table_columns_align() {
        let t = connections_table(&reply());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "PID  SERVICE  PROTO  CLIENT                    USER    STARTED               AGE    SOURCE"
        );
        assert_eq!(
            lines[1],
            "41   echo     tcp4   127.0.0.1:5000            nobody  2023-11-14T22:13:20Z  1m15s  /etc/inetd.conf:12"
        );
        assert!(lines[2].contains("uid 1000 gid 100 (pid 9)"), "{t}");
        assert!(lines[3].contains("(wait server)"), "{t}");
        assert_eq!(age_text(7200 + 420), "2h07m");
        assert_eq!(age_text(86_400 * 3 + 3600 * 4), "3d04h");
    }

    #[test]
    fn json_has_the_documented_shape_and_key_order() {
        let text = connections_json(&reply());
        // Keys in the documented order (serde_json keeps declaration order
        // when writing; a Value would sort them).
        let first = &text[..text.find("\n    },").unwrap()];
        let keys = [
            "generation",
            "connections",
            "pid",
            "service",
            "protocol",
            "source",
            "file",
            "line",
            "wait",
            "address",
            "port",
            "peer",
            "uid",
            "user",
            "started",
            "age_s",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| first.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let c = &v["connections"][0];
        assert_eq!(c.as_object().unwrap().len(), 12);
        assert_eq!(c["address"], "127.0.0.1");
        assert_eq!(c["port"], 5000);
        assert_eq!(c["peer"], serde_json::Value::Null);
        assert_eq!(c["started"], "2023-11-14T22:13:20Z");
        assert_eq!(c["age_s"], 75);
        let u = &v["connections"][1];
        assert_eq!(u["address"], serde_json::Value::Null);
        assert_eq!(u["peer"]["uid"], 1000);
        assert_eq!(v["connections"][2]["wait"], true);
    }
}
