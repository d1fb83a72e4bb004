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
    /// Every unit billed: the items' and the indexes'.
    pub units: u64,
    /// Of `units`, those billed for global secondary indexes.
    pub index_units: u64,
}

/// One item a write request writes: its size, and how many of its table's
/// global secondary indexes carry it (the item has the index's key).
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub size: u64,
    pub indexes: u64,
}

impl Written {
    pub fn item(size: u64) -> Self {
        Self { size, indexes: 0 }
    }
}

/// Write requests sent and the write units they consumed, as DynamoDB's
/// on-demand pricing bills them: 1 unit per started KB of the item written
/// (its largest image), doubled inside a transaction, plus 1 unit for each
/// global secondary index whose key the item carries (an index entry of
/// keys only is under 1 KB); a write whose condition fails consumes the
/// same.
#[derive(Debug, Default)]
pub struct WriteMeter {
    #[cfg(feature = "test-support")]
    requests: AtomicU64,
    #[cfg(feature = "test-support")]
    units: AtomicU64,
    #[cfg(feature = "test-support")]
    index_units: AtomicU64,
}

impl WriteMeter {
    /// Counts one write request of the items `sizes` gives (computed only
    /// with the feature).
    #[cfg(feature = "test-support")]
    pub(crate) fn count(&self, transactional: bool, items: impl FnOnce() -> Vec<Written>) {
        let items = items();
        let index_units: u64 = items.iter().map(|w| w.indexes).sum();
        let units: u64 = items
            .iter()
            .map(|w| w.size.div_ceil(1024).max(1) * if transactional { 2 } else { 1 })
            .sum::<u64>()
            + index_units;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.units.fetch_add(units, Ordering::Relaxed);
        self.index_units.fetch_add(index_units, Ordering::Relaxed);
    }

    #[cfg(not(feature = "test-support"))]
    #[inline(always)]
    pub(crate) fn count(&self, _transactional: bool, _items: impl FnOnce() -> Vec<Written>) {}

    #[cfg(feature = "test-support")]
    pub(crate) fn read(&self) -> WriteUnits {
        WriteUnits {
            requests: self.requests.load(Ordering::Relaxed),
            units: self.units.load(Ordering::Relaxed),
            index_units: self.index_units.load(Ordering::Relaxed),
        }
    }
}
