//! Module api: see lib.rs.
