//! The postgres backend runs the conformance suite unchanged (being written).
