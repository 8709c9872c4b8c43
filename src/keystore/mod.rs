//! Keystore layer: see lib.rs.
