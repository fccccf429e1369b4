//! inetd-controller and inetctl.

pub mod config;
