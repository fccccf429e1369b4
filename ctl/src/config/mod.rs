//! inetd.conf: reading, parsing and name resolution.
//!
//! The controller turns the configuration into numeric
//! [`ListenerSpec`]s here; the core never sees a name (trust rule 2,
//! docs/architecture.md). The work happens in four steps, one module each:
//!
//! * [`lexer`] splits a file into records: entries (with their
//!   continuation lines joined), `addr:` default lines, and lines that
//!   cannot be read as text at all;
//! * [`entry`] checks an entry field by field and resolves its names
//!   through [`names`], giving one listener per address;
//! * [`overlap`] checks bind keys across every file, splitting
//!   `tcp`/`tcp6` twins and refusing every other overlap;
//! * [`label`] encodes what a restarted controller shows before it has
//!   read its configuration;
//! * [`access`] compiles `hosts.allow` and `hosts.deny` into each
//!   listener's access list, from outside inetd.conf.
//!
//! Nothing here panics on any input and nothing is skipped silently: every
//! problem is one [`Diagnostic`], and a bad entry is one error and one
//! [`RejectedEntry`].
#![forbid(unsafe_code)]

pub mod access;
mod entry;
mod label;
mod lexer;
mod names;
mod overlap;

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use inetd_protocol::{IdNames, ListenerSpec, MAX_LISTENERS};

pub use access::AccessFiles;
pub use label::Label;

/// Longest physical line accepted, in bytes (without its newline). Classic
/// inetds read lines with a fixed buffer and parse the rest of an overlong
/// line as a new line; here such a line is an error instead.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest configuration file read, in bytes. A larger one (or a device
/// that never ends) makes the whole configuration unreadable.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The default configuration file.
pub const DEFAULT_FILE: &str = "/etc/inetd.conf";
/// The default configuration directory (its `*.conf` files, in name order).
pub const DEFAULT_DIR: &str = "/etc/inetd.d";

/// Where names come from. `None` = the system (NSS for users/groups, /etc/services).
#[derive(Debug, Clone, Default)]
pub struct NameSources {
    /// `--services FILE`, in `/etc/services` format.
    pub services: Option<PathBuf>,
    /// `--passwd FILE`, in `/etc/passwd` format.
    pub passwd: Option<PathBuf>,
    /// `--group FILE`, in `/etc/group` format; also the source of
    /// supplementary groups.
    pub group: Option<PathBuf>,
}

/// What [`load_with`] may do beyond [`NameSources`]: hooks that make a
/// load independent of the host, for tests and for checking a
/// configuration meant for another machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Host names are looked up in this file (`/etc/hosts` format) instead
    /// of the system resolver.
    pub hosts: Option<PathBuf>,
    /// Whether the host has IPv6, instead of probing with a socket.
    pub ipv6: Option<bool>,
    /// Server paths are checked (exists, executable) below this directory
    /// instead of `/`.
    pub server_root: Option<PathBuf>,
}

/// /etc/inetd.conf and /etc/inetd.d (either may be missing).
pub fn default_paths() -> Vec<PathBuf> {
    vec![PathBuf::from(DEFAULT_FILE), PathBuf::from(DEFAULT_DIR)]
}

/// Reads, parses and resolves the configuration. Err only when the
/// configuration cannot be read as a whole (a named file or directory that
/// exists but is unreadable, or a named path that does not exist): the
/// controller exits 1 at start and a reload is refused. Both defaults missing
/// is Ok with a warning and no entries.
///
/// `paths` equal to [`default_paths`] (or empty) means the defaults: a
/// missing one is skipped rather than an error.
pub fn load(paths: &[PathBuf], names: &NameSources) -> Result<Config, ConfigError> {
    load_with(paths, names, &LoadOptions::default())
}

/// [`load`] with [`LoadOptions`].
pub fn load_with(
    paths: &[PathBuf],
    names: &NameSources,
    options: &LoadOptions,
) -> Result<Config, ConfigError> {
    Ok(assemble(gather(paths, names, options)?, options))
}

/// Files to read: (shown name, path); warnings found while listing
/// directories, with the file index they sort under; whether any of the
/// paths exists.
type Listing = (Vec<(String, PathBuf)>, Vec<(usize, Diagnostic)>, bool);

/// The files `paths` name, directories listed.
fn list(paths: &[PathBuf]) -> Result<Listing, ConfigError> {
    let defaults = default_paths();
    let (paths, optional) = if paths.is_empty() || paths == defaults.as_slice() {
        (defaults.as_slice(), true)
    } else {
        (paths, false)
    };

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut listing_warnings: Vec<(usize, Diagnostic)> = Vec::new();
    let mut any_exists = false;
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if optional && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound { path: path.clone() })
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source: e,
                })
            }
        };
        any_exists = true;
        if meta.is_dir() {
            let dir = std::fs::read_dir(path).map_err(|e| ConfigError::Read {
                path: path.clone(),
                source: e,
            })?;
            let mut found = Vec::new();
            for item in dir {
                let item = item.map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    source: e,
                })?;
                let name = item.file_name();
                let bytes = name.as_encoded_bytes();
                // `*.conf` only; dot files are editor and package-manager
                // leftovers (as run-parts skips them).
                if !bytes.ends_with(b".conf") || bytes.starts_with(b".") {
                    continue;
                }
                found.push(name);
            }
            found.sort();
            for name in found {
                let full = path.join(&name);
                let shown = full.to_string_lossy().into_owned();
                match std::fs::metadata(&full) {
                    Ok(m) if m.is_dir() => listing_warnings.push((
                        files.len(),
                        Diagnostic::warning(
                            &shown,
                            0,
                            "a directory, not a configuration file: skipped".into(),
                        ),
                    )),
                    _ => files.push((shown, full)),
                }
            }
        } else {
            files.push((path.to_string_lossy().into_owned(), path.clone()));
        }
    }

    Ok((files, listing_warnings, any_exists))
}

/// A file read: (shown name, path, contents, modification time).
type FileRead = (String, PathBuf, Vec<u8>, Option<SystemTime>);

/// Everything one load reads, before any of it is parsed.
struct Gathered {
    /// In order.
    files: Vec<FileRead>,
    listing_warnings: Vec<(usize, Diagnostic)>,
    any_exists: bool,
    names: names::Names,
}

/// Lists and reads the configuration and opens the name sources, in the
/// order whose first failure is the load's error.
fn gather(
    paths: &[PathBuf],
    sources: &NameSources,
    options: &LoadOptions,
) -> Result<Gathered, ConfigError> {
    let (listed, listing_warnings, any_exists) = list(paths)?;
    let names = names::Names::open(sources, options)?;
    let mut files = Vec::with_capacity(listed.len());
    for (shown, path) in listed {
        let (data, mtime) = read_file(&path)?;
        files.push((shown, path, data, mtime));
    }
    Ok(Gathered {
        files,
        listing_warnings,
        any_exists,
        names,
    })
}

/// Parses one configuration text as if it were the file `name`, with names
/// from `names` and `options` (give them files, or this resolves through
/// the system): what [`load_with`] does to each file, without reading it.
/// For fuzzing and for tools that hold a configuration in memory.
pub fn parse_bytes(
    name: &str,
    data: &[u8],
    names: &NameSources,
    options: &LoadOptions,
) -> Result<Config, ConfigError> {
    let gathered = Gathered {
        files: vec![(name.to_owned(), PathBuf::from(name), data.to_vec(), None)],
        listing_warnings: Vec::new(),
        any_exists: true,
        names: names::Names::open(names, options)?,
    };
    Ok(assemble(gathered, options))
}

type FileData = (Vec<u8>, Option<SystemTime>);

/// Parses the files read, in order, and checks their entries together.
fn assemble(gathered: Gathered, options: &LoadOptions) -> Config {
    let Gathered {
        files,
        listing_warnings,
        any_exists,
        mut names,
    } = gathered;
    let mut config = Config {
        files: Vec::new(),
        entries: Vec::new(),
        rejected: Vec::new(),
        diagnostics: Vec::new(),
        names: IdNames::default(),
        inputs: None,
    };
    if !any_exists {
        // About no file in particular: shown without a FILE:LINE.
        config.diagnostics.push(Diagnostic::warning(
            "",
            0,
            format!("neither {DEFAULT_FILE} nor {DEFAULT_DIR} exists: no services are configured"),
        ));
        return config;
    }

    let mut parsed = Vec::new();
    let mut pool = entry::Pool::default();
    let mut diags: Vec<(usize, Diagnostic)> = listing_warnings.clone();
    for (index, (shown, path, data, mtime)) in files.iter().enumerate() {
        config.files.push(ConfigFile {
            path: path.clone(),
            mtime: *mtime,
        });
        let mut state = entry::FileState::default();
        lexer::each_record(data, |record| {
            let out = entry::parse_record(
                shown, index, record, &mut state, &mut names, options, &mut pool,
            );
            match out {
                entry::Outcome::None => {}
                entry::Outcome::Error(d) => diags.push((index, d)),
                entry::Outcome::Parsed(p) => parsed.push(p),
            }
        });
    }

    overlap::resolve(&mut parsed, &mut pool);
    limit_listeners(&mut parsed, &pool);

    read_fields_again(&mut parsed, &files);
    for p in &mut parsed {
        let file = &files[p.file_index].0;
        match &p.result {
            Err(reason) => {
                let (service, protocol) = p.written.take().map(|w| *w).unwrap_or_default();
                diags.push((
                    p.file_index,
                    Diagnostic::error(file, p.line, reason.clone()),
                ));
                config.rejected.push(RejectedEntry {
                    source: Source {
                        file: file.clone(),
                        line: p.line,
                    },
                    service,
                    protocol,
                    reason: reason.clone(),
                    entry: None,
                });
            }
            Ok(_) => {
                for w in &p.warnings {
                    diags.push((p.file_index, Diagnostic::warning(file, p.line, w.clone())));
                }
            }
        }
    }
    config.entries = pool.into_entries(&parsed);
    drop(parsed);

    // The names of every id the entries run with, for the core's reasons.
    for e in &config.entries {
        let c = &e.spec.creds;
        config.names.users.insert(c.uid, e.user.clone());
        for g in std::iter::once(c.gid).chain(c.groups.iter().copied()) {
            if let Some(n) = names.group_name(g) {
                config.names.groups.insert(g, n);
            }
        }
    }

    // Stable: problems of one line keep the order they were found in.
    diags.sort_by_key(|(index, d)| (*index, d.line));
    config.diagnostics = diags.into_iter().map(|(_, d)| d).collect();
    config.inputs = Some(Box::new(Inputs {
        files: files.into_iter().map(|(s, p, d, _)| (s, p, d)).collect(),
        listing_warnings,
        names,
        options: options.clone(),
        access: None,
    }));
    config
}

/// What a load read and what its name sources answered, kept with the
/// configuration made from them, so that a reload can tell without
/// parsing whether it would make the same one (see [`load_all_again`]).
#[derive(Clone)]
pub(crate) struct Inputs {
    /// (shown name, path, contents), in order.
    files: Vec<(String, PathBuf, Vec<u8>)>,
    listing_warnings: Vec<(usize, Diagnostic)>,
    /// After the load: its caches hold every question the parse asked.
    names: names::Names,
    options: LoadOptions,
    /// hosts.allow and hosts.deny as read, and the source grouping, when
    /// [`load_all`] compiled them in.
    access: Option<AccessRead>,
}

impl fmt::Debug for Inputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl Gathered {
    /// Whether these, with `access`, are the inputs `before` was made
    /// from: the same files with the same contents, the same access files
    /// and options, and every name answering as it did. The names come
    /// last: they are asked again only when everything else is the same.
    fn same_as(&mut self, before: &Inputs, options: &LoadOptions, access: &AccessRead) -> bool {
        self.any_exists
            && before.options == *options
            && before.access.as_ref() == Some(access)
            && self.listing_warnings == before.listing_warnings
            && self.files.len() == before.files.len()
            && (self.files.iter().zip(&before.files))
                .all(|((s, p, d, _), (bs, bp, bd))| s == bs && p == bp && d == bd)
            && self.names.answers_as(&before.names)
    }
}

/// `--source-prefix V4,V6`: per-source limits group clients by these
/// prefix lengths, so one client cannot dodge them by rotating addresses
/// within its own network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePrefix {
    pub v4: u8,
    pub v6: u8,
}

impl Default for SourcePrefix {
    fn default() -> Self {
        SourcePrefix { v4: 32, v6: 128 }
    }
}

impl std::str::FromStr for SourcePrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?}: expected V4,V6 prefix lengths, such as 24,64 (V4 1 to 32, V6 1 to 128)")
        };
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        let len = |t: &str, max: u8| -> Option<u8> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse::<u8>().ok().filter(|n| (1..=max).contains(n))
        };
        match (len(a, 32), len(b, 128)) {
            (Some(v4), Some(v6)) => Ok(SourcePrefix { v4, v6 }),
            _ => Err(bad()),
        }
    }
}

impl Config {
    /// Sets every listener's source grouping.
    pub fn set_source_prefix(&mut self, p: SourcePrefix) {
        for e in &mut self.entries {
            e.spec.limits.source_prefix_v4 = p.v4;
            e.spec.limits.source_prefix_v6 = p.v6;
        }
    }
}

/// Everything the controller reads: the configuration ([`load`]), the
/// access files compiled into it ([`access::apply`]), and the source
/// grouping. Err when any of them cannot be read.
pub fn load_all(
    paths: &[PathBuf],
    names: &NameSources,
    access_files: &AccessFiles,
    prefix: SourcePrefix,
) -> Result<Config, ConfigError> {
    let (gathered, access) = gather_all(paths, names, access_files, prefix)?;
    Ok(finish(gathered, &LoadOptions::default(), access))
}

/// hosts.allow and hosts.deny as read, with the source grouping.
type AccessRead = (AccessFiles, [Vec<u8>; 2], SourcePrefix);

/// Everything [`load_all`] reads, before any of it is parsed.
fn gather_all(
    paths: &[PathBuf],
    names: &NameSources,
    access_files: &AccessFiles,
    prefix: SourcePrefix,
) -> Result<(Gathered, AccessRead), ConfigError> {
    let gathered = gather(paths, names, &LoadOptions::default())?;
    let access = (
        access_files.clone(),
        access::read_bytes(access_files)?,
        prefix,
    );
    Ok((gathered, access))
}

/// The configuration from what [`load_all`] read.
fn finish(gathered: Gathered, options: &LoadOptions, access: AccessRead) -> Config {
    let mut config = assemble(gathered, options);
    let hosts = access::parse(&access.0, &access.1);
    access::apply(&mut config, &hosts);
    config.set_source_prefix(access.2);
    if let Some(inputs) = &mut config.inputs {
        inputs.access = Some(access);
    }
    config
}

/// What [`load_all_again`] found.
#[derive(Debug)]
pub enum Reloaded {
    /// The configuration would be the one given: the same files with the
    /// same contents, every name answering as it did. Here are the files
    /// with their modification times now.
    Same(Vec<ConfigFile>),
    /// A configuration that may differ.
    New(Config),
}

/// [`load_all`] for a reload of `previous`: reads everything again and asks
/// every name again, as a load does, but parses only when something read
/// or answered differs from what `previous` was made from. An unchanged
/// configuration of 10,000 entries is then read and compared, not parsed,
/// resolved, labelled and built a second time beside the running one.
pub fn load_all_again(
    previous: &Config,
    paths: &[PathBuf],
    names: &NameSources,
    access_files: &AccessFiles,
    prefix: SourcePrefix,
) -> Result<Reloaded, ConfigError> {
    let options = LoadOptions::default();
    let (mut gathered, access) = gather_all(paths, names, access_files, prefix)?;
    if let Some(before) = &previous.inputs {
        if gathered.same_as(before, &options, &access) {
            let files = (gathered.files.into_iter())
                .map(|(_, path, _, mtime)| ConfigFile { path, mtime })
                .collect();
            return Ok(Reloaded::Same(files));
        }
    }
    Ok(Reloaded::New(finish(gathered, &options, access)))
}

/// Fills in the fields as written of the entries rejected after their
/// parse, from the text, one pass over each file that has any.
fn read_fields_again(parsed: &mut [entry::Parsed], files: &[FileRead]) {
    let mut i = 0;
    while i < parsed.len() {
        let index = parsed[i].file_index;
        let end = i
            + (parsed[i..].iter())
                .take_while(|p| p.file_index == index)
                .count();
        let group = &mut parsed[i..end];
        i = end;
        if !group
            .iter()
            .any(|p| p.result.is_err() && p.written.is_none())
        {
            continue;
        }
        // A file's entries are in line order, one per line at most.
        let mut k = 0;
        lexer::each_record(&files[index].2, |record| {
            let lexer::Record::Entry { line, fields } = record else {
                return;
            };
            while k < group.len() && group[k].line < line {
                k += 1;
            }
            if let Some(p) = (group.get_mut(k)).filter(|p| p.line == line && p.written.is_none()) {
                let mut fields = fields.into_iter();
                let service = fields.next().unwrap_or_default();
                p.written = Some(Box::new((service, fields.nth(1).unwrap_or_default())));
            }
        });
    }
}

/// The core refuses an `Apply` of more than [`MAX_LISTENERS`] listeners as
/// a whole; the entries that would go past it are rejected here instead,
/// so the others can run.
fn limit_listeners(parsed: &mut [entry::Parsed], pool: &entry::Pool) {
    let mut count = 0usize;
    for p in parsed.iter_mut() {
        let Ok(listeners) = &p.result else { continue };
        let n = pool.live_in(listeners);
        if count + n > MAX_LISTENERS {
            p.result = Err(format!(
                "too many listeners: at most {MAX_LISTENERS} in one configuration"
            ));
            p.warnings.clear();
        } else {
            count += n;
        }
    }
}

/// Reads one file whole, bounded by [`MAX_FILE`].
fn read_file(path: &Path) -> Result<FileData, ConfigError> {
    let read_err = |e| ConfigError::Read {
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata();
    let mtime = meta.as_ref().ok().and_then(|m| m.modified().ok());
    // Sized from the file's length (`take` hides it from `read_to_end`),
    // so the text, which the configuration keeps, is held without a
    // doubling vector's spare room.
    let size = meta.map_or(0, |m| m.len()).min(MAX_FILE + 1);
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    file.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE,
        });
    }
    Ok((data, mtime))
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Every file read, in order.
    pub files: Vec<ConfigFile>,
    /// Good entries, one per listener, file order.
    pub entries: Vec<Entry>,
    /// Bad entries; each also has an error [`Diagnostic`].
    pub rejected: Vec<RejectedEntry>,
    /// Errors and warnings, in file/line order.
    pub diagnostics: Vec<Diagnostic>,
    /// The names of the uids and gids the entries run with, as resolved.
    pub names: IdNames,
    /// What it was made from, when it was loaded.
    pub(crate) inputs: Option<Box<Inputs>>,
}

impl Config {
    /// Whether any diagnostic is an error. Some errors belong to no entry
    /// (an `addr:` default line that does not resolve), so this, not
    /// `rejected.is_empty()`, is what `check` and an all-or-nothing reload
    /// should test.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The listeners to send to the core, in entry order.
    pub fn specs(&self) -> Vec<ListenerSpec> {
        self.entries.iter().map(|e| e.spec.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As given on the command line, or `DIR/NAME` for a file found in a
    /// directory (lossy UTF-8).
    pub file: String,
    /// Where the entry starts, from 1.
    pub line: u32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", escape_for_display(&self.file), self.line)
    }
}

/// One listener of a good entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub source: Source,
    /// The service field without addr prefix: "echo", "8007", "/run/x.sock".
    pub service: String,
    /// The row's own: tcp4|tcp6|tcp46|udp4|udp6|udp46|unix.
    pub protocol: String,
    /// User name as resolved.
    pub user: String,
    /// Primary group name (its number when the group has no name).
    pub group: String,
    /// Absolute path, or "internal".
    pub server: String,
    pub argv: Vec<String>,
    /// The entry's warnings (also in [`Config::diagnostics`], once per entry).
    pub warnings: Vec<String>,
    /// Numeric; `spec.label` = `Label{..}.encode()`.
    pub spec: ListenerSpec,
}

#[derive(Debug, Clone)]
pub struct RejectedEntry {
    pub source: Source,
    /// Field 1 as written ("" when the entry has none).
    pub service: String,
    /// Field 3 as written ("" when the entry has none).
    pub protocol: String,
    /// The error's message (without FILE:LINE).
    pub reason: String,
    /// The listener as parsed, when the entry was rejected for something
    /// other than its own text (an access list that cannot be checked).
    pub entry: Option<Box<Entry>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// Where the entry starts; 0 for a problem of a whole file or directory.
    pub line: u32,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    fn error(file: &str, line: u32, message: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            severity: Severity::Error,
            message,
        }
    }

    fn warning(file: &str, line: u32, message: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            severity: Severity::Warning,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE: error: MESSAGE` / `FILE:LINE: warning: MESSAGE`. A file
    /// name with control characters is escaped so one diagnostic is one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Line 0 is about the file as a whole, and no file about none.
        match (self.file.is_empty(), self.line) {
            (true, _) => write!(f, "{severity}: "),
            (false, 0) => write!(f, "{}: {severity}: ", escape_for_display(&self.file)),
            (false, line) => write!(f, "{}:{line}: {severity}: ", escape_for_display(&self.file)),
        }?;
        f.write_str(&escape_for_display(&self.message))
    }
}

/// Control characters as `\xNN`, everything else as is.
fn escape_for_display(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The configuration cannot be read as a whole.
#[derive(Debug)]
pub enum ConfigError {
    /// A path named explicitly does not exist.
    NotFound { path: PathBuf },
    /// A file or directory exists but cannot be read.
    Read { path: PathBuf, source: io::Error },
    /// A file is larger than [`MAX_FILE`].
    TooLarge { path: PathBuf, limit: u64 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotFound { path } => {
                write!(f, "{}: No such file or directory", path.display())
            }
            ConfigError::Read { path, source } => write!(f, "{}: {}", path.display(), source),
            ConfigError::TooLarge { path, limit } => {
                write!(f, "{}: larger than {} bytes", path.display(), limit)
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
