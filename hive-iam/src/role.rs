//! Roles and their scope presets. [`Role`] lives in `hive-core` (the registry
//! contract's visibility names roles); it is re-exported here, where the
//! policies that use it are.

pub use hive_core::principal::Role;
