//! Module fs: see lib.rs.
