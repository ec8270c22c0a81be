//! Why a packet was dropped: one list, from which the enum, its names and the counter
//! array are all generated (the VPP "error counters declared as data" pattern).

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:literal, )*) => {
        /// Why the ESP engine dropped a packet. Each has a counter and a metric name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $( $(#[doc = $doc])* $variant, )* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];
            /// Number of reasons (length of a counter array).
            pub const COUNT: usize = [ $( DropReason::$variant, )* ].len();

            /// Stable snake_case name, used in metrics and logs.
            pub fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// What it means, in one line: the variant's doc comment (`vpnctl stats`,
            /// metrics HELP).
            pub fn meaning(self) -> &'static str {
                match self { $( DropReason::$variant => concat!($($doc),*).trim(), )* }
            }
        }
    };
}

drop_reasons! {
    /// Too short for its headers, or a length field disagrees with the buffer.
    Malformed => "malformed",
    /// An outer or inner IPv4 header checksum does not verify.
    BadIpChecksum => "bad_ip_checksum",
    /// Not ESP: another IP protocol, UDP/4500 with the non-ESP marker (IKE), or an inner
    /// packet that is not IP.
    NotEsp => "not_esp",
    /// An IP fragment; ESP over fragments needs reassembly first (RFC 4303 §3.4.1).
    Fragment => "fragment",
    /// No inbound SA has this SPI.
    UnknownSpi => "unknown_spi",
    /// RFC 4303 §3.4.3: the sequence number was already received.
    ReplayDuplicate => "replay_duplicate",
    /// RFC 4303 §3.4.3: the sequence number is left of the anti-replay window.
    ReplayTooOld => "replay_too_old",
    /// The integrity check value does not verify.
    IcvFailed => "icv_failed",
    /// RFC 4303 §2.4: the pad length overruns the payload or the padding bytes are not 1, 2, 3...
    BadPadding => "bad_padding",
    /// RFC 4303 §2.6: next header 59, a dummy packet for traffic-flow confidentiality.
    DummyPacket => "dummy_packet",
    /// RFC 4301 §5.2: the decrypted packet does not match the SA's traffic selectors.
    SelectorMismatch => "selector_mismatch",
    /// RFC 6040 §4.2: outer CE on a not-ECT inner packet must be dropped.
    EcnDrop => "ecn_drop",
    /// RFC 4303 §3.3.3: the outbound sequence number would cycle; the SA must be rekeyed.
    SeqExhausted => "seq_exhausted",
    /// The buffer lacks the headroom or tailroom for ESP's headers, padding and ICV.
    NoRoom => "no_room",
    /// The encapsulated packet would exceed 65535 bytes.
    TooBig => "too_big",
    /// RFC 4301 §4.4.2.1: the SA reached its hard lifetime (packets or bytes) and must no
    /// longer be used.
    SaExpired => "sa_expired",
    /// The SA's persisted sequence-number lease is used up and the control thread has not
    /// extended it yet (only under a burst faster than the control thread; see
    /// `shm::counters`).
    SeqLeaseWait => "seq_lease_wait",
}

/// Per-reason drop counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    /// Counters from raw values in [`DropReason::ALL`] order (e.g. read from shared memory).
    pub fn from_array(a: [u64; DropReason::COUNT]) -> Self {
        DropCounters(a)
    }
    pub fn as_array(&self) -> &[u64; DropReason::COUNT] {
        &self.0
    }
    pub fn add(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The non-zero counters, for reports.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n != 0)
    }
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_one_line_meaning_from_its_doc_comment() {
        for r in DropReason::ALL {
            let m = r.meaning();
            assert!(
                !m.is_empty() && !m.starts_with(' ') && !m.contains('\n'),
                "{r:?}: {m:?}"
            );
        }
        // Two doc lines join with one space.
        assert_eq!(
            DropReason::SaExpired.meaning(),
            "RFC 4301 §4.4.2.1: the SA reached its hard lifetime (packets or bytes) and must no longer be used."
        );
    }

    #[test]
    fn names_are_unique_and_counters_index() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let mut c = DropCounters::default();
        c.add(DropReason::IcvFailed);
        c.add(DropReason::IcvFailed);
        c.add(DropReason::TooBig);
        assert_eq!(c.get(DropReason::IcvFailed), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.nonzero().count(), 2);
    }
}
