//! The DynamoDB write meter, for the benchmarks and the tests (feature
//! `test-support`): write requests sent and the write units they consumed.
//! Without the feature it is an empty type whose count is never computed,
//! so the service binaries carry none of it.

#[cfg(feature = "test-support")]
use std::sync::atomic::{AtomicU64, Ordering};

/// What `DynamoStore::write_units` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteUnits {
    pub requests: u64,
    pub units: u64,
}

/// Write requests sent and the write units they consumed, by DynamoDB's
/// on-demand rule: 1 unit per started KB of the item written (its largest
/// image), doubled inside a transaction; a write whose condition fails
/// consumes the same.
#[derive(Debug, Default)]
pub struct WriteMeter {
    #[cfg(feature = "test-support")]
    requests: AtomicU64,
    #[cfg(feature = "test-support")]
    units: AtomicU64,
}

impl WriteMeter {
    /// Counts one write request of the items `sizes` gives (computed only
    /// with the feature).
    #[cfg(feature = "test-support")]
    pub(crate) fn count(&self, transactional: bool, sizes: impl FnOnce() -> Vec<u64>) {
        let units: u64 = sizes()
            .iter()
            .map(|size| size.div_ceil(1024).max(1) * if transactional { 2 } else { 1 })
            .sum();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.units.fetch_add(units, Ordering::Relaxed);
    }

    #[cfg(not(feature = "test-support"))]
    #[inline(always)]
    pub(crate) fn count(&self, _transactional: bool, _sizes: impl FnOnce() -> Vec<u64>) {}

    #[cfg(feature = "test-support")]
    pub(crate) fn read(&self) -> WriteUnits {
        WriteUnits {
            requests: self.requests.load(Ordering::Relaxed),
            units: self.units.load(Ordering::Relaxed),
        }
    }
}
