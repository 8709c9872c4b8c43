//! Module node: see lib.rs.
