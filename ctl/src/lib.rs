//! inetd-controller and inetctl: the unprivileged half of inetd.
//!
//! `unsafe` is denied in the whole crate and allowed in exactly one
//! function, [`corelink::adopt_core_fd`], which takes ownership of the
//! descriptor a one-command core passes; every other module forbids it.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod connections;
pub mod corelink;
pub mod ctlserver;
pub mod daemon;
pub mod hosts;
pub mod json;
pub mod local;
pub mod logger;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod plan;
pub mod rows;
pub mod table;
pub mod timefmt;

#[cfg(test)]
mod testutil;
