//! Fuzzing builds only (`cargo fuzz` builds with `--cfg fuzzing`; never a product build):
//! results of pure, expensive public-key operations remembered per thread.
//!
//! The fuzz harnesses' daemons draw from seeded random sources and their certificate chains
//! are fixtures, so every input repeats the same key exchanges and signature checks, which
//! under coverage instrumentation and AddressSanitizer cost more than everything else an input
//! does (`perf`: X25519 29 % of `ike_exchange`, certificate signatures 33 % of `ike_cert`).
//! Each value is keyed by every byte that determines it: a fuzzer sees the same results,
//! errors included, and an input it mutated is still computed (then remembered). BoringSSL's
//! and OpenSSL's fuzzing modes go further and stub the crypto out; here the arithmetic stays.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;

/// Entries kept before the memo starts over (a fuzzer's mutated values would grow it).
const MAX: usize = 4096;

thread_local! {
    static MEMO: RefCell<HashMap<Vec<u8>, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// A key for [`remember`]: a tag naming the operation, then each part with its length.
pub(crate) fn key(tag: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    for p in parts {
        k.extend_from_slice(&(p.len() as u64).to_be_bytes());
        k.extend_from_slice(p);
    }
    k
}

/// The value remembered under `key`, or `compute()`'s, remembered.
pub(crate) fn remember<V: Clone + 'static>(key: Vec<u8>, compute: impl FnOnce() -> V) -> V {
    let hit = MEMO.with(|m| {
        m.borrow()
            .get(&key)
            .and_then(|v| v.downcast_ref::<V>())
            .cloned()
    });
    if let Some(v) = hit {
        return v;
    }
    let value = compute();
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= MAX {
            m.clear();
        }
        m.insert(key, Box::new(value.clone()));
    });
    value
}
