//! Where packets go after the ESP engine: layer-2 next hops per side.
//!
//! - [`hops`]: the snapshot table the workers read once per batch, and their miss requests.
//! - [`nexthop`]: the resolver that asks the kernel (rtnetlink) for routes and neighbours.
//! - [`refresh`]: the slow-path loop between the two, run by the control thread.

pub mod hops;
pub mod nexthop;
pub mod refresh;
