//! The diff of an `Apply` against what runs, by bind key (pure).
//!
//! Rules: a listener whose key and spec are unchanged is left alone (same
//! socket, same children); one whose label alone differs (its line moved
//! in the file) is relabelled, which is no change; same key with another
//! spec is changed in place (new connections get the new spec, a wait
//! child holding the socket is stopped); keys no longer wanted are removed,
//! and removals happen before any new bind so a port or path can move
//! between entries in one apply. A key whose new spec is rejected is
//! removed too: the controller no longer wants what ran there.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use inetd_protocol::{BindKey, ListenerSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Add,
    Change,
    /// Only the label differs: the new one is taken, nothing else moves.
    Relabel,
    Unchanged,
    Reject(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One step per requested listener, in the request's order.
    pub steps: Vec<Step>,
    /// Running keys to close, before any bind.
    pub removals: Vec<BindKey>,
}

/// How a running listener compares with a requested spec of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    Same,
    /// Only the label differs.
    LabelOnly,
    Different,
}

/// What runs, by key, as the plan sees it.
pub trait Current {
    /// How what runs under `key` compares with `new`; `None` when nothing
    /// runs there.
    fn compare(&self, key: &BindKey, new: &ListenerSpec) -> Option<Sameness>;
    /// Every key that runs.
    fn keys(&self) -> Vec<&BindKey>;
}

/// Plans an apply. `current` is what runs, by key; `verdicts` holds, per
/// requested listener, `Ok` or the reason it was rejected.
pub fn plan<C: Current>(
    current: &C,
    requested: &[ListenerSpec],
    verdicts: &[Result<(), String>],
) -> Plan {
    let mut wanted = HashSet::with_capacity(requested.len());
    let mut steps = Vec::with_capacity(requested.len());
    for (spec, verdict) in requested.iter().zip(verdicts) {
        let key = spec.key();
        let step = match verdict {
            Err(reason) => Step::Reject(reason.clone()),
            Ok(()) => {
                let step = match current.compare(&key, spec) {
                    None => Step::Add,
                    Some(Sameness::Same) => Step::Unchanged,
                    Some(Sameness::LabelOnly) => Step::Relabel,
                    Some(Sameness::Different) => Step::Change,
                };
                wanted.insert(key);
                step
            }
        };
        steps.push(step);
    }
    let mut removals: Vec<BindKey> = current
        .keys()
        .into_iter()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    removals.sort();
    Plan { steps, removals }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::spec;
    use std::collections::HashMap;

    /// Specs as sent, compared field by field: what runs, for the plan's
    /// own tests (the core compares its kept listeners, see `listeners`).
    impl Current for HashMap<BindKey, &ListenerSpec> {
        fn compare(&self, key: &BindKey, new: &ListenerSpec) -> Option<Sameness> {
            let old = *self.get(key)?;
            Some(if *old == *new {
                Sameness::Same
            } else if label_only(old, new) {
                Sameness::LabelOnly
            } else {
                Sameness::Different
            })
        }

        fn keys(&self) -> Vec<&BindKey> {
            HashMap::keys(self).collect()
        }
    }

    /// True when `old` and `new` differ in their label and nothing else.
    fn label_only(old: &ListenerSpec, new: &ListenerSpec) -> bool {
        let relabelled = ListenerSpec {
            label: new.label.clone(),
            ..old.clone()
        };
        relabelled == *new
    }

    #[test]
    fn diff_by_bind_key() {
        let a = spec(7001);
        let b = spec(7002);
        let c = spec(7003);
        let mut b2 = b.clone();
        b2.wait = !b.wait;
        let e = spec(7005);
        let mut e2 = e.clone();
        e2.label = "moved to another line".into();
        let current: HashMap<BindKey, &ListenerSpec> =
            [(a.key(), &a), (b.key(), &b), (c.key(), &c), (e.key(), &e)]
                .into_iter()
                .collect();
        let d = spec(7004);
        let mut e3 = e2.clone();
        e3.creds.uid += 1;
        let requested = vec![a.clone(), b2, d, e2];
        let p = plan(&current, &requested, &[Ok(()), Ok(()), Ok(()), Ok(())]);
        assert_eq!(
            p.steps,
            vec![Step::Unchanged, Step::Change, Step::Add, Step::Relabel]
        );
        assert_eq!(p.removals, vec![c.key()]);
        // A new label with anything else: a change.
        let p = plan(&current, &[e3], &[Ok(())]);
        assert_eq!(p.steps, vec![Step::Change]);
    }

    #[test]
    fn a_rejected_replacement_removes_the_old_listener() {
        let a = spec(7001);
        let current: HashMap<BindKey, &ListenerSpec> = [(a.key(), &a)].into_iter().collect();
        let p = plan(&current, std::slice::from_ref(&a), &[Err("no".into())]);
        assert_eq!(p.steps, vec![Step::Reject("no".into())]);
        assert_eq!(p.removals, vec![a.key()]);
    }

    #[test]
    fn empty_apply_removes_everything() {
        let a = spec(7001);
        let b = spec(7002);
        let current: HashMap<BindKey, &ListenerSpec> =
            [(a.key(), &a), (b.key(), &b)].into_iter().collect();
        let p = plan(&current, &[], &[]);
        assert!(p.steps.is_empty());
        assert_eq!(p.removals.len(), 2);
    }
}
