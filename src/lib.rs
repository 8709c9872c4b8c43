//! atrest: encryption at rest for a storage node.
//!
//! Layers, each a module that depends only on the ones above it in this list (see
//! `docs/DESIGN.md` of the project and `docs/FORMAT.md` for the on-disk formats):
//!
//! - [`crypto`]: XTS-AES-256 of one 4 KiB data unit, key wrapping, secret key types.
//! - [`drive`]: one raw drive image: header slots, data area, encrypted block I/O.
//! - [`keystore`]: where the master key lives (local file, KMIP server), rotation journal.
//! - [`pool`]: the volume's logical block space, replicated over drives.
//! - [`fs`]: inodes, directories, extents, allocation, transactional metadata.
//! - [`fuse`]: the adapter from FUSE requests to [`fs`] calls.
//! - [`node`]: start-up, rotation orchestration, health checks, shutdown.
//! - [`api`]: the HTTPS REST API spoken by the `qq` client.
//! - [`cli`]: the `atrest` command.
//!
//! Logging promise: log lines name drives, slots, blocks and key ids, never key bytes.
//! Secret types in [`crypto`] implement neither `Debug` nor `Display`.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod crypto;
pub mod drive;
pub mod fs;
pub mod fuse;
pub mod keystore;
pub mod node;
pub mod pool;
pub mod sys;

/// Size of one block, which is also one XTS data unit.
pub const BLOCK_SIZE: usize = 4096;
