//! Where packets go after the ESP engine: layer-2 next hops per side.
//!
//! - [`hops`]: the snapshot table the workers read once per batch, and their miss requests.
//! - [`nexthop`]: the resolver that asks the kernel (rtnetlink) for routes and neighbours.

pub mod hops;
pub mod nexthop;
