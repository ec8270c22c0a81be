//! Our sans-IO `Random` as the `rand_core` 0.10 RNG the `rsa` crate draws from.

use std::convert::Infallible;

use crate::ike::sa::Random;

/// Our `Random` as the `rand_core` 0.10 RNG the RSA-PSS salt and the RSA blinding factor
/// are drawn from (deterministic in tests, as `test_rng::Seq` is).
pub(super) struct RngAdapter<'a>(pub(super) &'a mut dyn Random);

impl rand_core::TryRng for RngAdapter<'_> {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for RngAdapter<'_> {}
