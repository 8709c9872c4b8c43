//! Master key rotation, following DESIGN.md section 3 step by step, and its roll-forward.
//!
//! Every step ends with a sync, so a cut at any instant leaves either the old state, or a
//! journal from which [`finish`] completes the rotation at the next start. The data area is
//! never touched: only the header slots are rewritten.
//!
//! A rotation to a KMS key persists that key's KMS configuration (`kms-pending.json`) in
//! step 1, before the journal, so that a roll-forward can fetch the key again; step 4 makes it
//! the active configuration (`kms.json`). The KMS key itself is never written to disk.

use std::path::Path;
use std::sync::Arc;

use super::kms::{self, KMS_FILE, KMS_PENDING_FILE, KmsRecord};
use super::{KeyRef, NodeError, VolumeConfig, now_rfc3339};
use crate::crypto::MasterKey;
use crate::drive::{Drive, KeyKind};
use crate::keystore::kmip::{KmipClient, KmsConfig};
use crate::keystore::{Journal, LocalStore, RotationRecord};

/// Where the next master key comes from.
pub enum NewMasterKey {
    /// A fresh random key in the local store.
    Local,
    /// The key `key_id` of a KMIP server (an active AES-256 key), reached with `config` (whose
    /// own `key_id` is replaced by `key_id`).
    Kms {
        /// Server, certificates and client private key.
        config: KmsConfig,
        /// KMIP unique identifier of the new master key.
        key_id: String,
        /// Creation time (RFC 3339) recorded with the configuration.
        config_creation_time: String,
    },
}

/// Test hook: when the environment names this point in `ATREST_TEST_CRASH_POINT`, the process
/// ends at once, without cleanup, as if the power had been cut there. Every step before it
/// has been synced.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("ATREST_TEST_CRASH_POINT").is_ok_and(|p| p == name) {
        eprintln!("atrest: test crash point {name} reached; exiting");
        std::process::exit(99);
    }
}

/// Runs a whole rotation of the drives to a new master key.
pub(super) fn rotate(
    dir: &Path,
    cfg: &mut VolumeConfig,
    drives: &[Arc<Drive>],
    new: NewMasterKey,
) -> Result<(KeyRef, MasterKey), NodeError> {
    // Step 1: make the new key available, durably.
    let (new_ref, new_key) = match new {
        NewMasterKey::Local => {
            let (id, key) = LocalStore::open(dir)?.create_key()?;
            (
                KeyRef {
                    kind: KeyKind::Local,
                    key_id: id,
                },
                key,
            )
        }
        NewMasterKey::Kms {
            mut config,
            key_id,
            config_creation_time,
        } => {
            config.key_id = key_id.clone();
            let what = || {
                format!(
                    "new master key {key_id} from KMS {}:{}",
                    config.hostname, config.port
                )
            };
            let key = KmipClient::new(&config)
                .and_then(|c| c.fetch_master_key(&key_id))
                .map_err(|source| NodeError::Kms {
                    what: what(),
                    source,
                })?;
            // Durable before the journal names the key: a roll-forward must find its server.
            kms::write_record(
                &dir.join(KMS_PENDING_FILE),
                &KmsRecord {
                    config,
                    config_creation_time,
                },
            )?;
            (
                KeyRef {
                    kind: KeyKind::Kms,
                    key_id,
                },
                key,
            )
        }
    };
    crash_point("after-new-key");

    // Step 2: journal the rotation.
    let rec = RotationRecord {
        old_kind: cfg.key.kind,
        old_key_id: cfg.key.key_id.clone(),
        new_kind: new_ref.kind,
        new_key_id: new_ref.key_id.clone(),
        started: now_rfc3339(),
    };
    Journal::new(dir).begin(&rec)?;
    crash_point("after-journal");
    tracing::info!(
        old = rec.old_key_id,
        new = rec.new_key_id,
        "rotation started"
    );

    // Steps 3 and 4.
    finish(dir, cfg, drives, &rec, &new_ref, &new_key)?;
    Ok((new_ref, new_key))
}

/// Steps 3 and 4: re-wrap every drive under the new key (older slot first), record the new
/// key and the rotation time, make the new KMS configuration active (or remove the KMS
/// configuration when the new key is local), destroy the old local key, close the journal.
/// Safe to run again after a cut at any point.
pub(super) fn finish(
    dir: &Path,
    cfg: &mut VolumeConfig,
    drives: &[Arc<Drive>],
    rec: &RotationRecord,
    new_ref: &KeyRef,
    new_key: &MasterKey,
) -> Result<(), NodeError> {
    for (i, drive) in drives.iter().enumerate() {
        drive.rewrap(new_key, new_ref.kind, &new_ref.key_id, &mut |slot| {
            crash_point(&format!("drive{i}-slot{slot}"));
        })?;
    }
    crash_point("after-rewrap");

    cfg.key = new_ref.clone();
    cfg.last_key_rotation_time = Some(now_rfc3339());
    cfg.store(dir)?;
    crash_point("after-config");

    match new_ref.kind {
        KeyKind::Kms => kms::promote_pending(dir)?,
        KeyKind::Local => {
            kms::destroy_record(dir, KMS_PENDING_FILE)?;
            kms::destroy_record(dir, KMS_FILE)?;
        }
    }
    crash_point("after-kms-config");

    if rec.old_kind == KeyKind::Local && rec.old_key_id != new_ref.key_id {
        LocalStore::open(dir)?.destroy_key(&rec.old_key_id)?;
    }
    crash_point("after-destroy");
    Journal::new(dir).finish()?;
    tracing::info!(
        old = rec.old_key_id,
        new = new_ref.key_id,
        drives = drives.len(),
        "rotation complete"
    );
    Ok(())
}

/// With no rotation pending, any local key file other than the volume's key is left over
/// from a rotation cut off before its journal was written: nothing is wrapped under it. So is
/// a pending KMS configuration, and an active one when the volume's key is local.
pub(super) fn remove_orphan_keys(dir: &Path, cfg: &VolumeConfig) -> Result<(), NodeError> {
    if dir.join(KMS_PENDING_FILE).exists() {
        tracing::warn!("removing a KMS configuration no drive is wrapped under");
        kms::destroy_record(dir, KMS_PENDING_FILE)?;
    }
    if cfg.key.kind == KeyKind::Local {
        kms::destroy_record(dir, KMS_FILE)?;
    }
    let store = LocalStore::open(dir)?;
    for id in store.key_ids()? {
        if cfg.key.kind != KeyKind::Local || id != cfg.key.key_id {
            tracing::warn!(
                key_id = id,
                "removing a local key no drive is wrapped under"
            );
            store.destroy_key(&id)?;
        }
    }
    Ok(())
}
