//! Drive layer: see lib.rs.
