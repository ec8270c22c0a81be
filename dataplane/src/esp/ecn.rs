//! ECN at tunnel endpoints (RFC 6040).

use crate::wire::Ecn;

/// RFC 6040 §4.1, normal mode: the outer header copies the inner ECN field.
pub fn encap_ecn(inner: Ecn) -> Ecn {
    inner
}

/// RFC 6040 §4.2, Figure 4: the inner ECN field after decapsulation, or `None` when the
/// packet must be dropped (outer CE on a not-ECT inner packet: the congestion signal
/// cannot be passed on, so the drop *is* the signal).
pub fn decap_ecn(outer: Ecn, inner: Ecn) -> Option<Ecn> {
    match (inner, outer) {
        (Ecn::NotEct, Ecn::Ce) => None,
        (Ecn::NotEct, _) => Some(Ecn::NotEct),
        (_, Ecn::Ce) => Some(Ecn::Ce),
        (Ecn::Ect0, Ecn::Ect1) => Some(Ecn::Ect1),
        (inner, _) => Some(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ecn::*;

    #[test]
    fn rfc6040_figure_4() {
        // Rows: inner; columns: outer Not-ECT, ECT(0), ECT(1), CE.
        let table = [
            (NotEct, [Some(NotEct), Some(NotEct), Some(NotEct), None]),
            (Ect0, [Some(Ect0), Some(Ect0), Some(Ect1), Some(Ce)]),
            (Ect1, [Some(Ect1), Some(Ect1), Some(Ect1), Some(Ce)]),
            (Ce, [Some(Ce), Some(Ce), Some(Ce), Some(Ce)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NotEct, Ect0, Ect1, Ce].into_iter().zip(row) {
                assert_eq!(
                    decap_ecn(outer, inner),
                    want,
                    "inner {inner:?} outer {outer:?}"
                );
            }
        }
    }
}
