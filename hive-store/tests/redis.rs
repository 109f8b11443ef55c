//! The redis backend runs the conformance suite unchanged (being written).
