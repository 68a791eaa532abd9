//! openraft's storage conformance suite (`openraft::testing::Suite`) run against [`LogStore`]
//! and [`StateMachine`], each test in a fresh temporary directory.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::{LogStore, StateMachine, TypeConfig};

/// Builds a store in a new temporary directory, removed when the guard drops.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log = LogStore::open(dir.path()).map_err(|e| openraft::StorageIOError::read(&e))?;
        let sm = StateMachine::open(dir.path()).map_err(|e| openraft::StorageIOError::read(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    // The suite sleeps about 8 s of its own (openraft's, between steps); our I/O is well under.
    if let Err(e) = Suite::test_all(TempStoreBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
