//! The node's drives as an operator sees them: overview, slots, warnings, the restriper, and
//! the pull, insert and replace operations.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Node, NodeError, io_err, prepare_image};
use crate::BLOCK_SIZE;
use crate::api::{ClusterOverview, ControlError, SlotInfo, SlotState as ApiSlotState};
use crate::drive::header::DATA_OFFSET;
use crate::drive::{Drive, DriveError, NewDrive, SealedDrive};
use crate::pool::{RestriperState, SlotState};

fn api_state(s: SlotState) -> ApiSlotState {
    match s {
        SlotState::Healthy => ApiSlotState::Healthy,
        SlotState::Missing => ApiSlotState::Missing,
        SlotState::Dead => ApiSlotState::Dead,
        SlotState::WrongCluster => ApiSlotState::WrongCluster,
        SlotState::Empty => ApiSlotState::Empty,
    }
}

/// A slot number from the API (1-based) as a pool index, checked.
fn slot_index(node: &Node, slot: u32) -> Result<usize, ControlError> {
    let n = node.config().drives.len() as u32;
    if slot == 0 || slot > n {
        return Err(ControlError::BadRequest(format!(
            "slot {slot} does not exist: slots are 1..={n}"
        )));
    }
    Ok(slot as usize - 1)
}

fn failed(e: impl std::fmt::Display) -> ControlError {
    ControlError::BadRequest(e.to_string())
}

impl Node {
    /// Capacity and drive health.
    pub fn overview(&self) -> ClusterOverview {
        let slots = self.pool.slots();
        let (total, free) = match self.fs.statfs() {
            Ok(st) => (st.blocks * st.bsize as u64, st.bfree * st.bsize as u64),
            Err(_) => (0, 0),
        };
        ClusterOverview {
            total_bytes: total,
            used_bytes: total.saturating_sub(free),
            free_bytes: free,
            drives_total: slots.len() as u32,
            drives_healthy: slots
                .iter()
                .filter(|s| s.state == SlotState::Healthy)
                .count() as u32,
        }
    }

    /// Every slot, numbered from 1.
    pub fn slot_infos(&self) -> Vec<SlotInfo> {
        let capacity = self.pool.layout().drive_blocks * BLOCK_SIZE as u64;
        let restriper = self.pool.restriper_status();
        self.pool
            .slots()
            .into_iter()
            .map(|s| {
                let busy = restriper.state != RestriperState::Idle && restriper.slot == Some(s.id);
                let percent = busy.then(|| {
                    100.0 * restriper.blocks_done as f64 / restriper.blocks_total.max(1) as f64
                });
                SlotInfo {
                    slot: s.id as u32 + 1,
                    state: api_state(s.state),
                    path: s.path.map(|p| p.display().to_string()).unwrap_or_default(),
                    capacity_bytes: capacity,
                    rebuild_percent: percent,
                }
            })
            .collect()
    }

    /// Warnings of the node itself (the API adds certificate, KMS and slot warnings).
    pub fn node_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.config().rotation_recommended {
            out.push(format!("Key rotation recommended: {why}"));
        }
        let r = self.pool.restriper_status();
        if r.unrecoverable > 0 {
            out.push(format!(
                "{} blocks had no good copy to restore from",
                r.unrecoverable
            ));
        }
        out
    }

    /// The restriper in the shape of Qumulo's `/v1/cluster/protection/restriper/status`, with
    /// atrest's own figures beside it.
    pub fn restriper_json(&self) -> Value {
        let r = self.pool.restriper_status();
        let running = r.state != RestriperState::Idle;
        let percent = if running {
            100.0 * r.blocks_done as f64 / r.blocks_total.max(1) as f64
        } else {
            100.0
        };
        let degraded = self
            .pool
            .slots()
            .iter()
            .any(|s| s.state != SlotState::Healthy);
        json!({
            "state": if running { "RUNNING" } else { "NOT_RUNNING" },
            "phase": match r.state {
                RestriperState::Idle => "FINISHED",
                RestriperState::Resyncing => "RESYNCING",
                RestriperState::Rebuilding => "REBUILDING",
            },
            "percent_complete": percent,
            "elapsed_seconds": r.bytes_done.checked_div(r.rate_bytes_per_sec).unwrap_or(0),
            "data_at_risk": running || degraded,
            "slot": r.slot.map(|s| s + 1),
            "blocks_done": r.blocks_done,
            "blocks_total": r.blocks_total,
            "bytes_done": r.bytes_done,
            "rate_bytes_per_sec": r.rate_bytes_per_sec,
            "eta_seconds": r.eta_seconds,
            "unrecoverable_blocks": r.unrecoverable,
        })
    }

    /// Protection in the shape of Qumulo's `/v1/cluster/protection/status`: each block has
    /// `replicas` copies (a stripe of one data block and r-1 mirrors).
    pub fn protection_json(&self) -> Value {
        let r = self.config().replicas as u64;
        let down = self
            .pool
            .slots()
            .iter()
            .filter(|s| s.state != SlotState::Healthy)
            .count();
        json!({
            "protection_system_type": "PROTECTION_SYSTEM_TYPE_EC",
            "blocks_per_stripe": r,
            "data_blocks_per_stripe": 1,
            "max_drive_failures": r - 1,
            "max_node_failures": 0,
            "remaining_drive_failures": (r - 1).saturating_sub(down as u64),
            "remaining_node_failures": 0,
        })
    }

    /// Detaches the drive in `slot` (1-based) as if it were pulled.
    pub fn drive_pull(&self, slot: u32) -> Result<Value, ControlError> {
        let i = slot_index(self, slot)?;
        self.pool.pull(i).map_err(failed)?;
        tracing::warn!(slot, "drive pulled");
        Ok(json!({"slot": slot, "state": "missing"}))
    }

    /// Brings a drive back into `slot`: its own image (or `image`). The header must name this
    /// volume and slot; a drive whose key wrap no longer opens (a rotation happened while it
    /// was out and the old key is gone) is rebuilt as a blank drive.
    pub fn drive_insert(&self, slot: u32, image: Option<String>) -> Result<Value, ControlError> {
        let i = slot_index(self, slot)?;
        let path = match image {
            Some(p) => PathBuf::from(p),
            None => self.config().drives[i].path.clone(),
        };
        let sealed = SealedDrive::open(&path).map_err(failed)?;
        let cfg = self.config();
        let h = sealed.header();
        if hex::encode(h.volume_id) != cfg.volume_id {
            return Err(ControlError::BadRequest(format!(
                "drive {} belongs to volume {} (wrong_cluster); it was left untouched",
                path.display(),
                hex::encode(h.volume_id)
            )));
        }
        let master = self.master.lock().duplicate();
        match sealed.unlock(&master) {
            Ok(drive) => {
                let blocks = self.pool.insert(i, Arc::new(drive)).map_err(failed)?;
                tracing::info!(slot, blocks, "drive reinserted; resyncing its stale blocks");
                Ok(json!({"slot": slot, "state": "resyncing", "blocks_to_resync": blocks}))
            }
            Err(DriveError::Unwrap { key_id, .. }) => {
                tracing::warn!(
                    slot,
                    key_id,
                    "reinserted drive's key has aged out; rebuilding it"
                );
                let mut v = self.drive_replace(slot, path.display().to_string())?;
                v["unlockable"] = json!(false);
                v["reason"] = json!(format!(
                    "its data key was wrapped under master key {key_id}, which no longer exists"
                ));
                Ok(v)
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Puts a blank image into `slot` with a fresh data key under the current master key, and
    /// rebuilds it from the other copies in the background.
    pub fn drive_replace(&self, slot: u32, image: String) -> Result<Value, ControlError> {
        let i = slot_index(self, slot)?;
        let path = PathBuf::from(&image);
        let data_blocks = match self.pool.members().first() {
            Some(m) => m.drive().header().data_blocks,
            None => {
                return Err(ControlError::Internal(
                    "no drive left to rebuild from".into(),
                ));
            }
        };
        let size = DATA_OFFSET + data_blocks * BLOCK_SIZE as u64;
        let result: Result<(Drive, u64), NodeError> = (|| {
            prepare_image(&path, Some(size))?;
            let cfg = self.config();
            let mut volume_id = [0u8; 16];
            hex::decode_to_slice(&cfg.volume_id, &mut volume_id)
                .map_err(|_| NodeError::Usage("volume id in volume.json is not hex".into()))?;
            let master = self.master.lock().duplicate();
            let backend = crate::drive::FileBackend::open(&path).map_err(io_err("open image"))?;
            let drive = Drive::create(
                &path,
                Arc::new(backend),
                &NewDrive {
                    volume_id,
                    slot: i as u32,
                    drive_count: cfg.drives.len() as u32,
                    replicas: cfg.replicas,
                    data_blocks,
                    master: &master,
                    key_kind: cfg.key.kind,
                    key_id: &cfg.key.key_id,
                },
            )?;
            Ok((drive, data_blocks))
        })();
        let (drive, _) = result.map_err(failed)?;
        let drive_id = hex::encode(drive.header().drive_id);
        let blocks = self.pool.replace(i, Arc::new(drive)).map_err(failed)?;
        {
            let mut cfg = self.config.lock();
            cfg.drives[i].path = path.canonicalize().unwrap_or(path.clone());
            cfg.drives[i].drive_id = drive_id.clone();
            cfg.rotation_recommended = Some(format!(
                "the drive in slot {slot} was replaced; rotate the master key so that the old \
                 drive's data key ages out"
            ));
            cfg.store(&self.state_dir)
                .map_err(|e| ControlError::Internal(e.to_string()))?;
        }
        tracing::warn!(slot, drive_id, blocks, "drive replaced; rebuilding");
        Ok(
            json!({"slot": slot, "state": "rebuilding", "blocks_to_rebuild": blocks,
            "drive_id": drive_id}),
        )
    }
}
