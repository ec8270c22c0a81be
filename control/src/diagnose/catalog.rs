//! Every finding `vpnctl diagnose` can report: its stable id (never renamed: scripts match
//! on it), its severity, and which of the common IPsec failures it is. `docs/DIAGNOSE.md`
//! has a section per id; a test checks that the two agree.

/// One kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindingKind {
    pub id: &'static str,
    /// "error", "warning" or "info".
    pub severity: &'static str,
    /// Which of the common IPsec failures this is (the seed's twelve, plus AH and IKEv1).
    pub family: &'static str,
    pub title: &'static str,
}

const fn k(
    id: &'static str,
    severity: &'static str,
    family: &'static str,
    title: &'static str,
) -> FindingKind {
    FindingKind {
        id,
        severity,
        family,
        title,
    }
}

/// The catalog, in the order `docs/DIAGNOSE.md` lists it.
pub const CATALOG: &[FindingKind] = &[
    k(
        "proposal-mismatch",
        "error",
        "algorithms",
        "No proposal in common",
    ),
    k(
        "psk-mismatch",
        "error",
        "credentials",
        "The pre-shared keys differ",
    ),
    k(
        "auth-rejected",
        "error",
        "credentials",
        "The peer rejected our authentication",
    ),
    k(
        "auth-method-mismatch",
        "error",
        "credentials",
        "One side uses a pre-shared key, the other a certificate",
    ),
    k(
        "identity-mismatch",
        "error",
        "credentials",
        "The peer's identity is not the one configured",
    ),
    k(
        "cert-untrusted",
        "error",
        "credentials",
        "The peer's certificate does not chain to a trusted CA",
    ),
    k(
        "cert-revoked",
        "error",
        "credentials",
        "The peer's certificate is revoked",
    ),
    k(
        "cert-expired",
        "error",
        "clock",
        "A certificate has expired",
    ),
    k(
        "cert-not-yet-valid",
        "error",
        "clock",
        "A certificate is not yet valid: a clock is wrong",
    ),
    k(
        "local-cert-expiring",
        "warning",
        "clock",
        "Our certificate expires soon",
    ),
    k(
        "ike-unanswered",
        "error",
        "firewall",
        "The peer does not answer IKE",
    ),
    k(
        "natt-blocked",
        "error",
        "firewall",
        "IKE gets through on UDP 500 but not on UDP 4500",
    ),
    k(
        "esp-blocked",
        "error",
        "firewall",
        "ESP does not get through while IKE does",
    ),
    k(
        "firewall-blocks-ike",
        "error",
        "security-policy",
        "A local firewall rule drops IKE or ESP",
    ),
    k(
        "ts-mismatch",
        "error",
        "traffic-selectors",
        "The traffic selectors do not match",
    ),
    k(
        "no-policy",
        "warning",
        "security-policy",
        "Traffic for a subnet no connection covers",
    ),
    k(
        "lifetime-mismatch",
        "warning",
        "lifetime",
        "The peer rekeys or expires SAs on other lifetimes",
    ),
    k(
        "pfs-mismatch",
        "error",
        "pfs",
        "One side wants PFS on rekeys, the other does not",
    ),
    k(
        "mtu-blackhole",
        "error",
        "mtu",
        "Packets too big for the path are lost",
    ),
    k(
        "config-error",
        "error",
        "config",
        "The configuration file does not load",
    ),
    k(
        "reload-failed",
        "warning",
        "config",
        "The last reload was refused; the old configuration runs",
    ),
    k(
        "unclassified-failure",
        "warning",
        "logging",
        "A failure with no finding of its own: trace it",
    ),
    k("no-route", "error", "routing", "No route to the peer"),
    k(
        "ah-proposed",
        "error",
        "ah",
        "The peer proposes AH, which this product does not do",
    ),
    k("ikev1-peer", "error", "ikev1", "The peer speaks IKEv1"),
    k(
        "peer-dead",
        "error",
        "firewall",
        "The peer stopped answering (DPD)",
    ),
    k("iked-down", "error", "daemon", "iked is not running"),
    k(
        "dataplane-down",
        "error",
        "daemon",
        "The dataplane is not running",
    ),
    k(
        "xdp-not-attached",
        "error",
        "daemon",
        "The XDP program is not attached",
    ),
];

/// The catalog entry of `id`.
pub fn kind(id: &str) -> Option<&'static FindingKind> {
    CATALOG.iter().find(|k| k.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_kebab_case() {
        for (i, a) in CATALOG.iter().enumerate() {
            assert!(
                a.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                a.id
            );
            assert!(
                matches!(a.severity, "error" | "warning" | "info"),
                "{}",
                a.id
            );
            assert!(CATALOG[i + 1..].iter().all(|b| b.id != a.id), "{}", a.id);
        }
    }
}
