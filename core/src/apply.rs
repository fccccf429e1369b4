//! What the controller asks of the core: `Apply`, `Status`, and the answer
//! to `Hello`.
//!
//! An apply validates every listener, diffs against the table (`plan`,
//! pure), removes what is no longer wanted (before any bind, so a port or
//! path can move between entries), then adds, changes or keeps each
//! requested listener in order. Failing validation or refused at bind (an
//! unsafe unix path): rejected. A bind the system refuses (address in
//! use): `Failed`, retried. The generation rises when anything changed, a
//! label included.
//!
//! A child that holds a listener's socket (a wait server, a dgram builtin)
//! goes with it: when the listener is removed or changed (not relabelled),
//! the child is asked to stop (`children`); the listener waits for it to
//! be reaped before it serves again, with the new spec. Nowait children
//! are left to finish.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use inetd_protocol::{
    check_apply, unix_now, ApplyReport, BindKey, CoreResponse, HelloReply, ListenerSpec,
    ListenerState, ListenerStatus, Outcome, Policy, Removed, StatusReport, PROTOCOL_VERSION,
};
use log::{info, warn};

use crate::children::ChildTable;
use crate::limits::MAX_SOURCE_TABLES;
use crate::listeners::{
    describe_bind, log_label, BindError, Keyed, Listener, ListenerTable, State,
};
use crate::plan::{self, Step};
use crate::sys;
use crate::validate::{validate, Prepared};

/// What the core is, and the generation of what it runs.
pub struct CoreState {
    /// What it allows, as the Hello reply and the status report carry it.
    pub policy: Policy,
    /// The core's own uid.
    pub uid: u32,
    pub generation: u64,
    /// Unix seconds.
    pub started_at: u64,
}

impl CoreState {
    pub fn new(policy: Policy, uid: u32) -> CoreState {
        CoreState {
            policy,
            uid,
            generation: 0,
            started_at: unix_now(),
        }
    }

    /// The answer to `Hello`: who the core is and what it allows.
    pub fn hello_reply(&self) -> HelloReply {
        HelloReply {
            version: PROTOCOL_VERSION,
            software_version: env!("CARGO_PKG_VERSION").into(),
            pid: sys::getpid(),
            uid: self.uid,
            policy: self.policy.clone(),
        }
    }
}

/// Unix seconds of a future monotonic instant.
fn unix_at(at: Instant) -> u64 {
    unix_now() + at.saturating_duration_since(Instant::now()).as_secs()
}

pub fn apply(
    core: &mut CoreState,
    table: &mut ListenerTable,
    children: &mut ChildTable,
    requested: Vec<ListenerSpec>,
) -> CoreResponse {
    if let Err(e) = check_apply(&requested) {
        warn!("apply refused as a whole: {e}");
        return CoreResponse::Error {
            reason: e.to_string(),
        };
    }
    let mut tables = 0usize;
    let prepared: Vec<Result<Prepared, String>> = requested
        .iter()
        .map(|s| {
            let p = validate(s, &core.policy)?;
            let l = &s.limits;
            if l.max_per_source_per_minute != 0 || l.max_children_per_source != 0 {
                tables += 1;
                if tables > MAX_SOURCE_TABLES {
                    return Err(format!(
                        "more than {MAX_SOURCE_TABLES} listeners with a per-source limit: the core bounds their tables together (about 40 KiB each)"
                    ));
                }
            }
            Ok(p)
        })
        .collect();
    let verdicts: Vec<Result<(), String>> = prepared
        .iter()
        .map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
        .collect();
    let mut keyed = table.keyed();
    let the_plan = plan::plan(&keyed, &requested, &verdicts);
    let changed = !the_plan.removals.is_empty()
        || the_plan
            .steps
            .iter()
            .any(|s| matches!(s, Step::Add | Step::Change | Step::Relabel));
    let named: HashSet<BindKey> = requested.iter().map(ListenerSpec::key).collect();
    let removed = remove(&mut keyed, children, the_plan.removals, &named);
    let core_uid = core.uid;
    let outcomes: Vec<Outcome> = requested
        .into_iter()
        .zip(prepared)
        .zip(the_plan.steps)
        .map(|((spec, prep), step)| match prep {
            Ok(prep) => carry_out(&mut keyed, children, core_uid, spec, prep, step),
            Err(reason) => rejected(&spec, reason),
        })
        .collect();
    if changed {
        core.generation += 1;
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    info!(
        "apply: generation {}: {} added, {} changed, {} unchanged, {} removed, {} rejected, {} failed",
        core.generation,
        count(|o| matches!(o, Outcome::Added)),
        count(|o| matches!(o, Outcome::Changed)),
        count(|o| matches!(o, Outcome::Unchanged)),
        removed.len(),
        count(|o| matches!(o, Outcome::Rejected { .. })),
        count(|o| matches!(o, Outcome::Failed { .. })),
    );
    CoreResponse::Applied(ApplyReport {
        generation: core.generation,
        outcomes,
        removed,
    })
}

/// Stops the child that holds `l`'s socket, if one does; its pid.
fn stop_holder(children: &mut ChildTable, l: &Listener) -> Option<i32> {
    let State::Waiting { pid } = *l.state() else {
        return None;
    };
    children.stop(pid).then_some(pid)
}

/// Closes the listeners at `keys` (their wait children go with them);
/// reported as removed are those the request does not name (a rejected new
/// spec's outcome says why).
fn remove(
    table: &mut Keyed<'_>,
    children: &mut ChildTable,
    keys: Vec<BindKey>,
    named: &HashSet<BindKey>,
) -> Vec<Removed> {
    let mut removed = Vec::new();
    for key in keys {
        let Some(id) = table.id_of(&key) else {
            continue;
        };
        let Some(l) = table.remove(&key) else {
            continue;
        };
        let holder = stop_holder(children, &l);
        let others = children.count_for(id) - u32::from(holder.is_some());
        info!(
            "{}: removed ({}); {others} nowait children left to finish",
            l.label(),
            describe_bind(&key.bind, key.socket_type),
        );
        if !named.contains(&key) {
            removed.push(Removed {
                key,
                label: l.spec().label().to_owned(),
            });
        }
    }
    removed
}

fn rejected(spec: &ListenerSpec, reason: String) -> Outcome {
    warn!("{}: rejected: {reason}", log_label(&spec.label));
    Outcome::Rejected { reason }
}

/// A step planned against this very table that it cannot carry out: not
/// expected, reported rather than trusted.
fn inconsistent(spec: &ListenerSpec) -> Outcome {
    rejected(
        spec,
        "internal error: the listener table does not match the plan".into(),
    )
}

fn carry_out(
    table: &mut Keyed<'_>,
    children: &mut ChildTable,
    core_uid: u32,
    spec: ListenerSpec,
    prep: Prepared,
    step: Step,
) -> Outcome {
    let key = spec.key();
    match step {
        Step::Reject(reason) => rejected(&spec, reason),
        Step::Add => {
            let Some(id) = table.insert(&spec, prep) else {
                return inconsistent(&spec);
            };
            let Some(l) = table.get_mut(id) else {
                return inconsistent(&spec);
            };
            match l.bind(core_uid, 0) {
                Ok(()) => {
                    let bind = describe_bind(&key.bind, key.socket_type);
                    info!("{}: added ({bind})", l.label());
                    Outcome::Added
                }
                Err(BindError::Refused(reason)) => {
                    table.remove(&key);
                    rejected(&spec, reason)
                }
                Err(BindError::Io(reason)) => failed(l, reason),
            }
        }
        Step::Change | Step::Relabel | Step::Unchanged => {
            let Some(id) = table.id_of(&key) else {
                return inconsistent(&spec);
            };
            let is_change = step == Step::Change;
            if step != Step::Unchanged && !table.change(id, &spec, prep) {
                return inconsistent(&spec);
            }
            let Some(l) = table.get_mut(id) else {
                return inconsistent(&spec);
            };
            if is_change {
                info!("{}: changed: new connections get the new spec", l.label());
                stop_holder(children, l);
                l.fresh_start();
            }
            // A listener that could not bind tries again now.
            if matches!(l.state(), State::Failed { .. }) {
                if let Err(e) = l.bind(core_uid, 0) {
                    return failed(l, e.reason().to_owned());
                }
            }
            if is_change {
                Outcome::Changed
            } else {
                Outcome::Unchanged
            }
        }
    }
}

/// The outcome of a listener whose bind failed and is retried.
fn failed(l: &Listener, reason: String) -> Outcome {
    let retry_at = match l.state() {
        State::Failed { retry_at, .. } => *retry_at,
        _ => Instant::now(),
    };
    let secs = retry_at.saturating_duration_since(Instant::now()).as_secs();
    warn!("{}: bind failed: {reason}; retrying in {secs} s", l.label());
    Outcome::Failed {
        reason,
        retry_at: unix_at(retry_at),
    }
}

/// What the core runs; `paused_until`, the accept pause, shows listening
/// listeners as paused.
pub fn status(
    core: &CoreState,
    table: &ListenerTable,
    children: &ChildTable,
    paused_until: Option<Instant>,
) -> StatusReport {
    let mut index = HashMap::new();
    let mut listeners = Vec::with_capacity(table.len());
    for (i, (id, l)) in table.iter().enumerate() {
        index.insert(id, u32::try_from(i).unwrap_or(u32::MAX));
        let state = match (l.state(), paused_until) {
            (State::Listening, Some(until)) => ListenerState::Paused {
                reason: "out of descriptors or memory".into(),
                until: unix_at(until),
            },
            (State::Listening, None) => ListenerState::Listening,
            (State::Waiting { .. }, _) => ListenerState::Waiting,
            (State::Paused { until }, _) => ListenerState::Paused {
                reason: l.pause_reason(),
                until: unix_at(*until),
            },
            (State::Resting { until, window_s }, _) => ListenerState::Failed {
                reason: State::resting_reason(*window_s),
                retry_at: unix_at(*until),
            },
            (
                State::Failed {
                    reason, retry_at, ..
                },
                _,
            ) => ListenerState::Failed {
                reason: reason.to_string(),
                retry_at: unix_at(*retry_at),
            },
        };
        let mut counters = l.counters;
        counters.children = children.count_for(id);
        listeners.push(ListenerStatus {
            spec: l.to_spec(),
            state,
            counters,
            last_error: l.last_error.clone(),
        });
    }
    StatusReport {
        generation: core.generation,
        software_version: env!("CARGO_PKG_VERSION").into(),
        pid: sys::getpid(),
        uid: core.uid,
        started_at: core.started_at,
        policy: core.policy.clone(),
        listeners,
        children: children.servers(|id| index.get(&id).copied()),
    }
}
