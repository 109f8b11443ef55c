//! The memory backend runs the conformance suite unchanged.

use std::sync::Arc;

use hive_store::MemoryStore;

hive_store::conformance_tests!(|| async {
    Arc::new(MemoryStore::default()) as Arc<dyn hive_core::store::TaskStore>
});
