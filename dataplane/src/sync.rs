//! The synchronisation primitives of the concurrent SA state, swapped for loom's when the
//! crate is built with the `loom` feature, so the model checker explores every interleaving of
//! the real code (the `loom_` tests, run by `scripts/test.sh`).
//!
//! `swap` is `arc_swap` normally. arc-swap is not loom-instrumented, so under loom it is
//! replaced by a mutex-backed stand-in with the same interface: the model then checks the
//! SA tables' own logic (generations, slot reuse, the overflow map, when an SA is freed),
//! taking arc-swap's atomic publication as given.

#[cfg(feature = "loom")]
pub use loom::sync::{atomic, Mutex, MutexGuard};
#[cfg(not(feature = "loom"))]
pub use std::sync::{atomic, Mutex, MutexGuard};

#[cfg(not(feature = "loom"))]
pub mod swap {
    pub use arc_swap::{ArcSwap, ArcSwapOption, Guard};
}

#[cfg(feature = "loom")]
pub mod swap {
    use std::sync::Arc;

    /// Stand-in for `arc_swap::ArcSwapAny` under loom.
    pub struct ArcSwapAny<T>(loom::sync::Mutex<T>);
    pub type ArcSwapOption<X> = ArcSwapAny<Option<Arc<X>>>;
    pub type ArcSwap<X> = ArcSwapAny<Arc<X>>;

    /// What a load returns: an owned snapshot.
    pub struct Guard<T>(T);

    impl<T> std::ops::Deref for Guard<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T: Clone> ArcSwapAny<T> {
        pub fn load(&self) -> Guard<T> {
            Guard(self.0.lock().unwrap().clone())
        }
        pub fn store(&self, v: T) {
            *self.0.lock().unwrap() = v;
        }
        pub fn swap(&self, v: T) -> T {
            std::mem::replace(&mut *self.0.lock().unwrap(), v)
        }
    }

    impl<X> ArcSwapAny<Option<Arc<X>>> {
        pub fn const_empty() -> Self {
            ArcSwapAny(loom::sync::Mutex::new(None))
        }
    }

    impl<X> ArcSwapAny<Arc<X>> {
        pub fn from_pointee(x: X) -> Self {
            ArcSwapAny(loom::sync::Mutex::new(Arc::new(x)))
        }
    }
}
