//! Packet sizes for the pipeline: a fixed size or the simple IMIX.
//!
//! The IMIX is the classic "simple IMIX" 7:4:1 of 64, 576 and 1500-byte IP packets (sizes
//! are inner IP packet lengths, Ethernet excluded), average 354.33 bytes. The generator is
//! deterministic: the 12-slot pattern below, repeated, interleaves the sizes so that every
//! window of 12 consecutive packets holds exactly 7, 4 and 1 of them (a batch never holds
//! only large packets, as a real mix would not).

/// The IMIX as (size, weight), in the order stated.
pub const IMIX: [(usize, u32); 3] = [(64, 7), (576, 4), (1500, 1)];

/// How the IMIX is stated in results.
pub const IMIX_NAME: &str = "7:4:1 of 64/576/1500";

/// One period of the IMIX sequence: 7 × 64, 4 × 576 and 1 × 1500, interleaved.
const IMIX_PATTERN: [usize; 12] = [64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 576, 64];

/// A size specification on the command line: a byte count or "imix".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    Fixed(usize),
    Imix,
}

/// Why a size on the command line is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("packet size {0:?}: a byte count from {MIN_SIZE} to {MAX_SIZE} or \"imix\"")]
    Invalid(String),
}

/// An IPv4 + UDP header is 28 bytes; a 64-byte packet is the usual small size.
pub const MIN_SIZE: usize = 28;
/// What fits in the pipeline's buffers with the ESP overhead.
pub const MAX_SIZE: usize = 1500;

impl SizeSpec {
    pub fn parse(s: &str) -> Result<SizeSpec, SizeError> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeSpec::Imix);
        }
        match s.parse::<usize>() {
            Ok(n) if (MIN_SIZE..=MAX_SIZE).contains(&n) => Ok(SizeSpec::Fixed(n)),
            _ => Err(SizeError::Invalid(s.to_string())),
        }
    }
    /// The name in [`crate::vpnbench::schema::PipelineRow::size`].
    pub fn label(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => n.to_string(),
            SizeSpec::Imix => "imix".into(),
        }
    }
    /// The mix in words ([`crate::vpnbench::schema::PipelineRow::size_mix`]).
    pub fn mix(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => format!("{n} B"),
            SizeSpec::Imix => IMIX_NAME.into(),
        }
    }
    /// The sequence of sizes, one period; packet k has size `pattern()[k % len]`.
    pub fn pattern(&self) -> Vec<usize> {
        match self {
            SizeSpec::Fixed(n) => vec![*n],
            SizeSpec::Imix => IMIX_PATTERN.to_vec(),
        }
    }
    /// The distinct sizes.
    pub fn distinct(&self) -> Vec<usize> {
        match self {
            SizeSpec::Fixed(n) => vec![*n],
            SizeSpec::Imix => IMIX.iter().map(|&(s, _)| s).collect(),
        }
    }
}

/// An endless, deterministic sequence of packet sizes.
#[derive(Debug, Clone)]
pub struct SizeGen {
    pattern: Vec<usize>,
    at: usize,
}

impl SizeGen {
    pub fn new(spec: SizeSpec) -> SizeGen {
        SizeGen {
            pattern: spec.pattern(),
            at: 0,
        }
    }
    /// Start `offset` packets into the sequence (workers start at different places).
    pub fn starting_at(spec: SizeSpec, offset: usize) -> SizeGen {
        let mut g = SizeGen::new(spec);
        g.at = offset % g.pattern.len();
        g
    }
    /// The period of the sequence.
    pub fn period(&self) -> usize {
        self.pattern.len()
    }
    /// Index of the next size in the period (templates are kept per index).
    pub fn next_index(&mut self) -> usize {
        let i = self.at;
        self.at += 1;
        if self.at == self.pattern.len() {
            self.at = 0;
        }
        i
    }
    pub fn size_at(&self, i: usize) -> usize {
        self.pattern[i]
    }
}

impl Iterator for SizeGen {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let i = self.next_index();
        Some(self.pattern[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imix_pattern_has_the_stated_proportions() {
        let p = SizeSpec::Imix.pattern();
        for &(size, weight) in &IMIX {
            assert_eq!(
                p.iter().filter(|&&s| s == size).count(),
                weight as usize,
                "{size}"
            );
        }
        assert_eq!(p.len() as u32, IMIX.iter().map(|w| w.1).sum::<u32>());
    }

    #[test]
    fn every_window_of_one_period_holds_the_proportions() {
        // Start anywhere: 12 consecutive packets are always 7:4:1.
        for start in 0..12 {
            let w: Vec<usize> = SizeGen::starting_at(SizeSpec::Imix, start)
                .take(12)
                .collect();
            assert_eq!(w.iter().filter(|&&s| s == 64).count(), 7, "start {start}");
            assert_eq!(w.iter().filter(|&&s| s == 576).count(), 4, "start {start}");
            assert_eq!(w.iter().filter(|&&s| s == 1500).count(), 1, "start {start}");
        }
    }

    #[test]
    fn long_run_average_and_determinism() {
        let a: Vec<usize> = SizeGen::new(SizeSpec::Imix).take(12_000).collect();
        let b: Vec<usize> = SizeGen::new(SizeSpec::Imix).take(12_000).collect();
        assert_eq!(a, b);
        let avg = a.iter().sum::<usize>() as f64 / a.len() as f64;
        assert!((avg - (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0).abs() < 1e-9);
        // No two 1500-byte packets are closer than a period apart.
        let big: Vec<usize> = a
            .iter()
            .enumerate()
            .filter(|(_, &s)| s == 1500)
            .map(|(i, _)| i)
            .collect();
        assert!(big.windows(2).all(|w| w[1] - w[0] == 12));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(SizeSpec::parse("64"), Ok(SizeSpec::Fixed(64)));
        assert_eq!(SizeSpec::parse("IMIX"), Ok(SizeSpec::Imix));
        assert!(SizeSpec::parse("20").is_err());
        assert!(SizeSpec::parse("9000").is_err());
        assert!(SizeSpec::parse("big").is_err());
        assert_eq!(SizeSpec::Fixed(1420).pattern(), vec![1420]);
        assert_eq!(SizeSpec::Imix.label(), "imix");
        assert_eq!(SizeSpec::Imix.mix(), IMIX_NAME);
    }
}
