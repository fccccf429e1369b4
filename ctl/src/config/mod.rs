//! Placeholder with the interface of the configuration parser (CONFIG-API),
//! replaced by the parser's module when it is merged.
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use inetd_protocol::ListenerSpec;

#[derive(Debug, Clone, Default)]
pub struct NameSources {
    pub services: Option<PathBuf>,
    pub passwd: Option<PathBuf>,
    pub group: Option<PathBuf>,
}

pub fn default_paths() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/etc/inetd.conf"),
        PathBuf::from("/etc/inetd.d"),
    ]
}

/// Minimal reader for `ADDR:PORT stream tcp4 nowait USER PATH ARGV...`
/// lines only, until the parser is merged.
pub fn load(paths: &[PathBuf], _names: &NameSources) -> Result<Config, ConfigError> {
    use inetd_protocol::*;
    let mut c = Config::default();
    for p in paths {
        let text =
            std::fs::read_to_string(p).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
        let file = p.display().to_string();
        c.files.push(ConfigFile {
            path: p.clone(),
            mtime: std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        });
        for (n, line) in text.lines().enumerate() {
            let line_no = n as u32 + 1;
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut bad = |msg: String| {
                c.rejected.push(RejectedEntry {
                    source: Source {
                        file: file.clone(),
                        line: line_no,
                    },
                    service: f[0].rsplit(':').next().unwrap_or("").into(),
                    protocol: f.get(2).unwrap_or(&"").to_string(),
                    reason: msg.clone(),
                });
                c.diagnostics.push(Diagnostic {
                    file: file.clone(),
                    line: line_no,
                    severity: Severity::Error,
                    message: msg,
                });
            };
            if f.len() < 6 {
                bad("too few fields".into());
                continue;
            }
            if f[2] != "tcp4" {
                bad(format!(
                    "field 3 (protocol): found \"{}\", expected tcp4",
                    f[2]
                ));
                continue;
            }
            let Some((addr, port)) = f[0].rsplit_once(':') else {
                bad("no address".into());
                continue;
            };
            let (Ok(addr), Ok(port)) = (addr.parse::<std::net::IpAddr>(), port.parse::<u16>())
            else {
                bad("bad address".into());
                continue;
            };
            let Ok(Some(u)) = nix::unistd::User::from_name(f[4]) else {
                bad(format!(
                    "field 5 (user): found \"{}\", expected a user",
                    f[4]
                ));
                continue;
            };
            let argv: Vec<String> = f[6..].iter().map(|s| s.to_string()).collect();
            let label = Label {
                service: port.to_string(),
                file: file.clone(),
                line: line_no,
                protocol: "tcp4".into(),
                user: f[4].into(),
                group: u.gid.to_string(),
            };
            c.entries.push(Entry {
                source: Source {
                    file: file.clone(),
                    line: line_no,
                },
                service: port.to_string(),
                protocol: "tcp4".into(),
                user: f[4].into(),
                group: u.gid.to_string(),
                server: f[5].into(),
                argv: argv.clone(),
                warnings: vec![],
                spec: ListenerSpec {
                    bind: Bind::Inet {
                        addr,
                        port,
                        mode: IpMode::V4,
                    },
                    socket_type: SocketType::Stream,
                    wait: false,
                    action: Action::Exec {
                        path: f[5].into(),
                        argv,
                    },
                    creds: Credentials {
                        uid: u.uid.as_raw(),
                        gid: u.gid.as_raw(),
                        groups: vec![u.gid.as_raw()],
                    },
                    limits: Limits::default(),
                    acl: None,
                    label: label.encode(),
                },
            });
        }
    }
    Ok(c)
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub files: Vec<ConfigFile>,
    pub entries: Vec<Entry>,
    pub rejected: Vec<RejectedEntry>,
    pub diagnostics: Vec<Diagnostic>,
}
impl Config {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    pub line: u32,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub source: Source,
    pub service: String,
    pub protocol: String,
    pub user: String,
    pub group: String,
    pub server: String,
    pub argv: Vec<String>,
    pub warnings: Vec<String>,
    pub spec: ListenerSpec,
}

#[derive(Debug, Clone)]
pub struct RejectedEntry {
    pub source: Source,
    pub service: String,
    pub protocol: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub severity: Severity,
    pub message: String,
}
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {}: {}", self.file, self.line, sev, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub service: String,
    pub file: String,
    pub line: u32,
    pub protocol: String,
    pub user: String,
    pub group: String,
}
impl Label {
    pub fn encode(&self) -> String {
        [
            self.service.as_str(),
            &self.file,
            &self.line.to_string(),
            &self.protocol,
            &self.user,
            &self.group,
        ]
        .join("\t")
    }
    pub fn decode(s: &str) -> Option<Label> {
        let v: Vec<&str> = s.split('\t').collect();
        if v.len() != 6 {
            return None;
        }
        Some(Label {
            service: v[0].into(),
            file: v[1].into(),
            line: v[2].parse().ok()?,
            protocol: v[3].into(),
            user: v[4].into(),
            group: v[5].into(),
        })
    }
}

#[derive(Debug)]
pub struct ConfigError(String);
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}
