//! The API's audit log, `STATE/api/audit.log`: one JSON object per line with the time, the
//! user, the peer, the action, the key ids involved and the outcome.
//!
//! It records logins (good and failed), privilege denials, key rotations and key store
//! changes. It never records a password, a bearer token or key material: callers pass only
//! names, ids and outcomes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;
use time::OffsetDateTime;

use super::json::rfc3339_nanos;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    /// Who acted: a user name, `local-root`, or the name tried in a failed login.
    pub user: &'a str,
    /// The peer's address.
    pub peer: String,
    /// What was done, e.g. `login`, `rotate_keys`, `set_key_store`, `privilege_denied`.
    pub action: &'a str,
    /// Key ids involved (never key bytes).
    pub key_ids: Vec<String>,
    /// `success`, `denied`, or `failure: <reason>`.
    pub outcome: String,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent<'a>,
}

/// The append-only audit log file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating with mode 0600) the audit log in `api_dir`.
    pub fn open(api_dir: &Path) -> io::Result<Self> {
        let path = api_dir.join("audit.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends one record and syncs it. A failure to write is logged, never fatal.
    pub fn record(&self, event: &AuditEvent<'_>) {
        let line = Line {
            time: rfc3339_nanos(OffsetDateTime::now_utc()),
            event,
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "audit record could not be encoded");
                return;
            }
        };
        text.push('\n');
        let mut f = self.file.lock();
        if let Err(e) = f.write_all(text.as_bytes()).and_then(|_| f.sync_data()) {
            tracing::error!(error = %e, path = %self.path.display(), "audit log write failed");
        }
    }
}
