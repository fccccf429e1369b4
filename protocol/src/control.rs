//! Messages of the control link (`control.sock`), between `inetctl` and
//! `inetd-controller`. Same framing and codec as the core link.
