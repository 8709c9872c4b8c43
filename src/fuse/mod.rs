//! Module fuse: see lib.rs.
