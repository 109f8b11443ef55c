//! Identifiers. Task, node and lease ids are UUIDv7, so they sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                $name(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// The id as a 128-bit integer (for stable hashing, e.g. jitter).
            pub const fn as_u128(&self) -> u128 {
                self.0.as_u128()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name).map_err(|e| crate::Error::InvalidArgument {
                    message: format!("invalid {} {s:?}: {e}", stringify!($name)),
                })
            }
        }
    };
}

uuid_id!(
    /// Identifies a task.
    TaskId
);
uuid_id!(
    /// Identifies a worker node.
    NodeId
);
uuid_id!(
    /// Identifies one lease (one placement of one attempt) of a task; part of the
    /// fencing token.
    LeaseId
);
