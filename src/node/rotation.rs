//! Master key rotation, following DESIGN.md section 3 step by step, and its roll-forward.
//!
//! Every step ends with a sync, so a cut at any instant leaves either the old state, or a
//! journal from which [`finish`] completes the rotation at the next start. The data area is
//! never touched: only the header slots are rewritten.

use std::path::Path;
use std::sync::Arc;

use super::{KeyRef, NodeError, VolumeConfig, now_rfc3339};
use crate::crypto::MasterKey;
use crate::drive::{Drive, KeyKind};
use crate::keystore::{Journal, LocalStore, RotationRecord};

/// Where the next master key comes from.
pub enum NewMasterKey {
    /// A fresh random key in the local store.
    Local,
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
/// key and the rotation time, destroy the old local key, close the journal. Safe to run again
/// after a cut at any point.
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
/// from a rotation cut off before its journal was written: nothing is wrapped under it.
pub(super) fn remove_orphan_keys(dir: &Path, cfg: &VolumeConfig) -> Result<(), NodeError> {
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
