//! The sqlite backend runs the conformance suite unchanged (being written).
