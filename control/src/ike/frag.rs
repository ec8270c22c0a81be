//! IKE fragmentation (RFC 7383): splitting an SK-protected message into Encrypted Fragment
//! payloads that each fit a datagram, and reassembling them with limits on count, size and
//! time.

/// swanctl `fragmentation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FragMode {
    /// Announce support and fragment when the peer supports it (the default).
    #[default]
    Yes,
    /// Announce support (and reassemble) but never send fragments.
    Accept,
    /// Do not announce support; never send fragments (fragments received are still
    /// reassembled, as strongSwan does).
    No,
}

/// Default maximum IP datagram size for fragments (strongSwan's default since 5.5.1).
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280;

/// The fragmentation half of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    pub mode: FragMode,
    /// The largest IP datagram a fragment may make (IP and UDP headers included).
    pub size: usize,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            mode: FragMode::Yes,
            size: DEFAULT_FRAGMENT_SIZE,
        }
    }
}
