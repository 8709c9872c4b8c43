//! Keystore layer: see lib.rs.
pub mod kmip;
