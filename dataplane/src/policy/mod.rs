//! The security policy database (RFC 4301 §4.4.1): which traffic is protected, bypassed or
//! discarded, looked up per packet on the inside by the workers ([`spd`]).

pub mod spd;
