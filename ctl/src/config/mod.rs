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

pub fn load(paths: &[PathBuf], _names: &NameSources) -> Result<Config, ConfigError> {
    Err(ConfigError(format!("{}: no parser", paths.len())))
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
