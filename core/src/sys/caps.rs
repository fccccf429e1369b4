//! The capability cut of trust rule 5.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// The four capabilities the core keeps: binding low ports, changing ids
/// for children, and signalling the controller child (another uid).
pub const KEEP: [Capability; 4] = [
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// What the cut did, for the log.
#[derive(Debug, Default)]
pub struct CutReport {
    /// The bounding set could not be cut (no CAP_SETPCAP): the reason.
    pub bounding_not_cut: Option<String>,
    /// The bounding set was left alone on purpose (root services allowed).
    pub bounding_skipped: bool,
    /// The permitted set after the cut.
    pub permitted: Vec<String>,
}

/// Why the cut failed. Fatal: a core that cannot shed its capabilities
/// must not run.
#[derive(Debug)]
pub struct CapError(pub String);

impl std::fmt::Display for CapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(what: &str, e: caps::errors::CapsError) -> CapError {
    CapError(format!("{what}: {e}"))
}

/// Cuts the capabilities in the order of trust rule 5: bounding set first
/// (it needs CAP_SETPCAP, which the next steps remove), then inheritable
/// and ambient cleared, then permitted and effective cut to [`KEEP`], then
/// read back and verified. Only what is present is dropped.
pub fn cut(keep_bounding: bool) -> Result<CutReport, CapError> {
    let keep: HashSet<Capability> = KEEP.into_iter().collect();
    let mut report = CutReport::default();

    if keep_bounding {
        report.bounding_skipped = true;
    } else {
        let bounding =
            caps::read(None, CapSet::Bounding).map_err(|e| err("read the bounding set", e))?;
        let to_drop: Vec<Capability> = bounding
            .iter()
            .filter(|c| !keep.contains(c))
            .copied()
            .collect();
        if !to_drop.is_empty() {
            let can = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)
                .map_err(|e| err("read the effective set", e))?;
            if can {
                for c in &to_drop {
                    caps::drop(None, CapSet::Bounding, *c)
                        .map_err(|e| err(&format!("drop {c} from the bounding set"), e))?;
                }
            } else {
                report.bounding_not_cut = Some("no CAP_SETPCAP".into());
            }
        }
    }

    caps::clear(None, CapSet::Inheritable).map_err(|e| err("clear the inheritable set", e))?;
    // The ambient set may not exist on very old kernels; a failure to clear
    // it is fatal only if it is not empty.
    if let Err(e) = caps::clear(None, CapSet::Ambient) {
        match caps::read(None, CapSet::Ambient) {
            Ok(a) if a.is_empty() => {}
            _ => return Err(err("clear the ambient set", e)),
        }
    }

    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| err("read the permitted set", e))?;
    let new: caps::CapsHashSet = permitted.intersection(&keep).copied().collect();
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &new).map_err(|e| err("set the effective set", e))?;
    caps::set(None, CapSet::Permitted, &new).map_err(|e| err("set the permitted set", e))?;

    // Read everything back.
    let p = caps::read(None, CapSet::Permitted).map_err(|e| err("read the permitted set", e))?;
    let e = caps::read(None, CapSet::Effective).map_err(|e| err("read the effective set", e))?;
    let i =
        caps::read(None, CapSet::Inheritable).map_err(|e| err("read the inheritable set", e))?;
    if p != new || e != new || !i.is_empty() {
        return Err(CapError(format!(
            "capability check failed after the cut: permitted {p:?}, effective {e:?}, inheritable {i:?}"
        )));
    }
    if !keep_bounding && report.bounding_not_cut.is_none() {
        let b = caps::read(None, CapSet::Bounding).map_err(|e| err("read the bounding set", e))?;
        if !b.is_subset(&keep) {
            return Err(CapError(format!(
                "bounding set still holds more than the four: {b:?}"
            )));
        }
    }
    let mut names: Vec<String> = p.iter().map(|c| c.to_string()).collect();
    names.sort();
    report.permitted = names;
    Ok(report)
}
