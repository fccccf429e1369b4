//! inetd-controller and inetctl.
