//! The `atrest` client subcommands named as in Qumulo's `qq`: `login`, `logout`,
//! `encryption_get_status`, `encryption_get_key_store`, `encryption_set_key_store` and
//! `rotate_encryption_keys`. They take qq's flags (`--host`, `--port`,
//! `--credentials-store`), keep credentials where qq keeps them, and print what qq prints.
//!
//! They speak only the REST API (through [`crate::api::client`]); they know nothing of the
//! node's internals.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::api::client::{Client, ClientError};
use crate::api::json::pretty_like_qq;

/// Which node to talk to and where the login token is kept (qq's "Target Host Options").
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The node's API host name or address.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// The node's API port.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The credentials file to use instead of qq's per-host file.
    #[arg(long = "credentials-store")]
    pub credentials_store: Option<PathBuf>,
}

/// The client subcommands; the `atrest` command flattens them into its own.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Log in to the node's API to get REST credentials.
    #[command(name = "login")]
    Login {
        /// User name.
        #[arg(short = 'u', long)]
        username: String,
        /// Password (insecure, visible via ps); asked for when absent.
        #[arg(short = 'p', long)]
        password: Option<String>,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Remove the stored REST credentials.
    #[command(name = "logout")]
    Logout {
        /// Remove the locally stored credentials of every node.
        #[arg(long)]
        all: bool,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Get the status of at-rest encryption.
    #[command(name = "encryption_get_status")]
    EncryptionGetStatus {
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Get the active at-rest encryption configuration.
    #[command(name = "encryption_get_key_store")]
    EncryptionGetKeyStore {
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Set the active at-rest encryption configuration.
    #[command(name = "encryption_set_key_store")]
    EncryptionSetKeyStore {
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
        /// The key store to use.
        #[command(subcommand)]
        store: KeyStoreArg,
    },
    /// List the drive slots and their states (as `qq cluster_slots`).
    #[command(name = "cluster_slots")]
    ClusterSlots {
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Show the restriper (resync and rebuild) status (as `qq restriper_status`).
    #[command(name = "restriper_status")]
    RestriperStatus {
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Drive operations on a mounted node: pull, insert, replace.
    #[command(name = "drive")]
    Drive {
        /// What to do.
        #[command(subcommand)]
        op: DriveOp,
    },
    /// Rotate the at-rest encryption master keys.
    #[command(name = "rotate_encryption_keys")]
    RotateEncryptionKeys {
        /// The unique ID of the master key for at-rest encryption.
        #[arg(long = "key-id", conflicts_with = "key_name")]
        key_id: Option<String>,
        /// The name of the key that will be created and used for at-rest encryption.
        #[arg(long = "create-key-with-name")]
        key_name: Option<String>,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
}

/// A drive operation.
#[derive(Debug, clap::Subcommand)]
pub enum DriveOp {
    /// Detach the drive in SLOT (from 1) as if it were pulled.
    Pull {
        /// The slot, from 1.
        slot: u32,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Bring a pulled drive back into SLOT; only what changed meanwhile is resynced.
    Insert {
        /// The slot, from 1.
        slot: u32,
        /// The image to insert (default: the slot's own image).
        #[arg(long)]
        image: Option<String>,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
    /// Put a blank image into SLOT with a fresh data key and rebuild it, showing progress.
    Replace {
        /// The slot, from 1.
        slot: u32,
        /// The blank image (created if missing).
        #[arg(long)]
        image: String,
        /// Return at once instead of showing the rebuild's progress until it ends.
        #[arg(long)]
        no_wait: bool,
        /// Which node, and which credentials.
        #[command(flatten)]
        target: Target,
    },
}

/// The key store of `encryption_set_key_store`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyStoreArg {
    /// Use a local master key for at-rest encryption.
    #[command(name = "local")]
    Local,
    /// Use a Key Management Server to store the master key.
    #[command(name = "kms")]
    Kms {
        /// The path to the client certificate file used to authenticate to the KMS.
        #[arg(long = "client-cert")]
        client_cert: PathBuf,
        /// The path to the file holding the client certificate's private key.
        #[arg(long = "client-private-key")]
        client_private_key: PathBuf,
        /// The hostname of the Key Management Server.
        #[arg(long)]
        hostname: String,
        /// The port number of the Key Management Server, 5696 by default.
        #[arg(long = "port", default_value = "5696")]
        kmip_server_port: String,
        /// The unique ID of the master key for at-rest encryption.
        #[arg(
            long = "key-id",
            required_unless_present = "key_name",
            conflicts_with = "key_name"
        )]
        key_id: Option<String>,
        /// The name of the key that will be created and used for at-rest encryption.
        #[arg(long = "create-key-with-name")]
        key_name: Option<String>,
        /// The path to the CA certificate file used to validate the KMS's TLS certificate.
        #[arg(long = "server-ca-cert")]
        server_ca_cert: PathBuf,
    },
}

/// Runs one client subcommand and returns the process exit code (0, or 1 after printing an
/// error on stderr as qq does).
pub fn run(cmd: ClientCommand) -> i32 {
    match execute(cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn execute(cmd: ClientCommand) -> Result<(), ClientError> {
    match cmd {
        ClientCommand::Login {
            username,
            password,
            target,
        } => login(&target, &username, password),
        ClientCommand::Logout { all, target } => logout(&target, all),
        ClientCommand::EncryptionGetStatus { target } => {
            let status = connect(&target)?.send("GET", "/v2/encryption/key-store/status", None)?;
            println!("{}", pretty_like_qq(&status_for_print(status)?));
            Ok(())
        }
        ClientCommand::EncryptionGetKeyStore { target } => {
            let store = connect(&target)?.send("GET", "/v2/encryption/key-store", None)?;
            println!("{}", pretty_like_qq(&key_store_for_print(store)?));
            Ok(())
        }
        ClientCommand::EncryptionSetKeyStore { target, store } => set_key_store(&target, store),
        ClientCommand::ClusterSlots { target } => {
            let v = connect(&target)?.send("GET", "/v1/cluster/slots/", None)?;
            println!("{}", pretty_like_qq(&v.unwrap_or(Value::Null)));
            Ok(())
        }
        ClientCommand::RestriperStatus { target } => {
            let v =
                connect(&target)?.send("GET", "/v1/cluster/protection/restriper/status", None)?;
            println!("{}", pretty_like_qq(&v.unwrap_or(Value::Null)));
            Ok(())
        }
        ClientCommand::Drive { op } => drive_op(op),
        ClientCommand::RotateEncryptionKeys {
            key_id,
            key_name,
            target,
        } => {
            let mut c = connect(&target)?;
            let key_id = match key_name {
                Some(name) => Some(create_key(&mut c, json!({ "key_name": name }))?),
                None => key_id,
            };
            let body = match key_id {
                Some(id) => json!({ "key_id": id }),
                None => json!({}),
            };
            c.send("POST", "/v2/encryption/rotate-keys", Some(&body))?;
            println!("Key rotation complete");
            Ok(())
        }
    }
}

fn drive_op(op: DriveOp) -> Result<(), ClientError> {
    let (target, slot, action, body, wait) = match op {
        DriveOp::Pull { slot, target } => (target, slot, "pull", json!({}), false),
        DriveOp::Insert {
            slot,
            image,
            target,
        } => (target, slot, "insert", json!({ "image": image }), true),
        DriveOp::Replace {
            slot,
            image,
            no_wait,
            target,
        } => (target, slot, "replace", json!({ "image": image }), !no_wait),
    };
    let mut c = connect(&target)?;
    let answer = c.send(
        "POST",
        &format!("/v1/atrest/drives/{slot}/{action}"),
        Some(&body),
    )?;
    println!("{}", pretty_like_qq(&answer.unwrap_or(Value::Null)));
    if !wait {
        return Ok(());
    }
    // Show the restriper's progress until it is idle (bounded: one day).
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(86_400) {
        let st = c.send("GET", "/v1/cluster/protection/restriper/status", None)?;
        let st = st.unwrap_or(Value::Null);
        if st["state"] != "RUNNING" {
            eprintln!("\rrestripe finished{:40}", "");
            return Ok(());
        }
        let pct = st["percent_complete"].as_f64().unwrap_or(0.0);
        let filled = (pct / 5.0) as usize;
        eprint!(
            "\r[{}{}] {pct:5.1}% {} MiB at {} MiB/s, ETA {} s   ",
            "#".repeat(filled.min(20)),
            " ".repeat(20 - filled.min(20)),
            st["bytes_done"].as_u64().unwrap_or(0) >> 20,
            st["rate_bytes_per_sec"].as_u64().unwrap_or(0) >> 20,
            st["eta_seconds"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into()),
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(())
}

/// qq's `KeyStoreStatus.to_dict()`: the six keys required, nulls dropped.
fn status_for_print(answer: Option<Value>) -> Result<Value, ClientError> {
    let missing = |k: &str| ClientError::Command(format!("the status has no {k:?}"));
    let obj = answer
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| missing("object"))?;
    let mut out = Map::new();
    for k in [
        "type",
        "status",
        "ca_cert_expiry",
        "client_cert_expiry",
        "last_key_rotation_time",
        "last_status_update_time",
    ] {
        let v = obj.get(k).ok_or_else(|| missing(k))?;
        if !v.is_null() {
            out.insert(k.to_string(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// qq's `asdict(KeyStoreConfig)`: `{"config_details": {...}, "config_type": ...}`.
fn key_store_for_print(answer: Option<Value>) -> Result<Value, ClientError> {
    let bad = |what: String| ClientError::Command(format!("bad key store answer: {what}"));
    let obj = answer
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| bad("not an object".into()))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no type".into()))?;
    let (section, keys): (&str, &[&str]) = match kind {
        "Local" => ("local_store", &["status"]),
        "KMS" => (
            "kms_store",
            &["hostname", "port", "key_id", "config_creation_time"],
        ),
        other => return Err(bad(format!("Unknown encryption config type: {other}"))),
    };
    let details = obj
        .get(section)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(section.into()))?;
    let mut out = Map::new();
    for k in keys {
        out.insert(
            k.to_string(),
            details.get(*k).cloned().ok_or_else(|| bad(k.to_string()))?,
        );
    }
    Ok(json!({ "config_details": out, "config_type": kind }))
}

fn create_key(c: &mut Client, body: Value) -> Result<String, ClientError> {
    let answer = c.send(
        "POST",
        "/v2/encryption/external-kms/keys/create",
        Some(&body),
    )?;
    let id = answer
        .as_ref()
        .and_then(|v| v.get("key_id"))
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Command("the key creation answer has no key_id".into()))?
        .to_string();
    println!("A new KMS key was created with ID {id}");
    Ok(id)
}

fn read_text(path: &Path) -> Result<Zeroizing<String>, ClientError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| ClientError::Command(format!("{}: {e}", path.display())))
}

fn set_key_store(target: &Target, store: KeyStoreArg) -> Result<(), ClientError> {
    match store {
        KeyStoreArg::Local => {
            connect(target)?.send(
                "PUT",
                "/v2/encryption/key-store",
                Some(&json!({"type": "Local"})),
            )?;
            Ok(())
        }
        KeyStoreArg::Kms {
            client_cert,
            client_private_key,
            hostname,
            kmip_server_port,
            key_id,
            key_name,
            server_ca_cert,
        } => {
            let cert = read_text(&client_cert)?;
            let key = read_text(&client_private_key)?;
            let ca = read_text(&server_ca_cert)?;
            let mut c = connect(target)?;
            let key_id = match (key_id, key_name) {
                (Some(id), _) => id,
                (None, Some(name)) => {
                    let cfg = json!({
                        "client_cert": cert.as_str(),
                        "client_private_key": key.as_str(),
                        "hostname": hostname,
                        "port": kmip_server_port,
                        "server_ca_cert": ca.as_str(),
                    });
                    create_key(&mut c, json!({ "key_name": name, "kms_config": cfg }))?
                }
                (None, None) => {
                    return Err(ClientError::Command(
                        "give --key-id or --create-key-with-name".into(),
                    ));
                }
            };
            let body = json!({
                "type": "KMS",
                "kms_store": {
                    "client_cert": cert.as_str(),
                    "client_private_key": key.as_str(),
                    "hostname": hostname,
                    "key_id": key_id,
                    "port": kmip_server_port,
                    "server_ca_cert": ca.as_str(),
                },
            });
            c.send("PUT", "/v2/encryption/key-store", Some(&body))?;
            Ok(())
        }
    }
}

// ----- credentials, kept exactly where and how qq keeps them -----

fn home() -> Result<PathBuf, ClientError> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            ClientError::Command("Could not find home directory for credentials store".into())
        })
}

/// qq's credentials directory: `$XDG_CONFIG_HOME/qumulo/credentials` (if absolute), else
/// `~/.config/qumulo/credentials`.
fn credentials_dir() -> Result<PathBuf, ClientError> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => home()?.join(".config"),
    };
    Ok(config.join("qumulo").join("credentials"))
}

/// The file qq would use for this target.
pub fn credentials_path(target: &Target) -> Result<PathBuf, ClientError> {
    match &target.credentials_store {
        Some(p) => Ok(p.clone()),
        None => {
            Ok(credentials_dir()?.join(format!("{}_{}", target.host.to_lowercase(), target.port)))
        }
    }
}

fn legacy_credentials_path() -> Result<PathBuf, ClientError> {
    Ok(home()?.join(".qfsd_cred"))
}

fn read_token(path: &Path) -> Result<Option<Zeroizing<String>>, ClientError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || ClientError::Command(format!("{}: not a credentials file", path.display()));
    let v: Value = serde_json::from_str(&text).map_err(|_| bad())?;
    if v.get("version").and_then(Value::as_i64) != Some(1) {
        return Err(ClientError::Command(format!(
            "{}: expected version 1, got {}",
            path.display(),
            v.get("version").unwrap_or(&Value::Null)
        )));
    }
    let token = v
        .get("bearer_token")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    Ok(Some(Zeroizing::new(token.to_string())))
}

fn load_token(target: &Target) -> Result<Option<Zeroizing<String>>, ClientError> {
    let found = read_token(&credentials_path(target)?)?;
    if found.is_none() && target.credentials_store.is_none() {
        return read_token(&legacy_credentials_path()?);
    }
    Ok(found)
}

fn connect(target: &Target) -> Result<Client, ClientError> {
    let token = load_token(target)?.map(|t| t.to_string());
    Ok(Client::new(&target.host, target.port, token))
}

fn write_credentials(path: &Path, token: &str) -> Result<(), ClientError> {
    let io_err = |e: io::Error| ClientError::Command(format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    // qq writes `json.dumps(..., sort_keys=True)` plus a newline.
    let quoted = Value::String(token.to_string()).to_string();
    let text = Zeroizing::new(format!("{{\"bearer_token\": {quoted}, \"version\": 1}}\n"));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(e)
    })
}

fn ask_password() -> Result<Zeroizing<String>, ClientError> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

    eprint!("Password: ");
    let stdin = io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
        eprintln!();
    }
    read.map_err(|e| ClientError::Command(e.to_string()))?;
    let trimmed = line.trim_end_matches(['\n', '\r']).to_string();
    Ok(Zeroizing::new(trimmed))
}

fn login(target: &Target, username: &str, password: Option<String>) -> Result<(), ClientError> {
    let password = match password {
        Some(p) => Zeroizing::new(p),
        None => ask_password()?,
    };
    // Login carries any stored token, as qq does; the server ignores it.
    let mut c = connect(target)?;
    let body = json!({ "username": username, "password": password.as_str() });
    let answer = match c.send("POST", "/v1/session/login", Some(&body)) {
        Err(ClientError::Api { class, .. }) if class == "auth_sso_required_error" => {
            return Err(ClientError::Command("Use qq sso_login".into()));
        }
        other => other?,
    };
    let token = answer
        .as_ref()
        .and_then(|v| v.get("bearer_token"))
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Command("the login answer has no bearer_token".into()))?;
    write_credentials(&credentials_path(target)?, token)
}

fn logout(target: &Target, all: bool) -> Result<(), ClientError> {
    let remove = |p: &Path| -> Result<bool, ClientError> {
        match fs::remove_file(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ClientError::Command(format!("{}: {e}", p.display()))),
        }
    };
    if all {
        if let Ok(entries) = fs::read_dir(credentials_dir()?) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    remove(&e.path())?;
                }
            }
        }
        remove(&legacy_credentials_path()?)?;
        return Ok(());
    }
    let removed = remove(&credentials_path(target)?)?;
    if !removed && target.credentials_store.is_none() {
        remove(&legacy_credentials_path()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_drops_nulls_and_needs_all_keys() {
        let v = json!({"type": "Local", "status": "Encrypted", "ca_cert_expiry": null,
            "client_cert_expiry": null, "last_key_rotation_time": "2026-01-01T00:00:00.000000000Z",
            "last_status_update_time": null});
        let out = status_for_print(Some(v)).unwrap();
        assert_eq!(
            pretty_like_qq(&out),
            "{\n    \"last_key_rotation_time\": \"2026-01-01T00:00:00.000000000Z\",\n    \
             \"status\": \"Encrypted\",\n    \"type\": \"Local\"\n}"
        );
        assert!(status_for_print(Some(json!({"type": "Local"}))).is_err());
    }

    #[test]
    fn key_store_prints_like_qq() {
        let v = json!({"type": "Local", "local_store": {"status": "Encrypted"}});
        let out = key_store_for_print(Some(v)).unwrap();
        assert_eq!(
            out,
            json!({"config_details": {"status": "Encrypted"}, "config_type": "Local"})
        );
        assert!(key_store_for_print(Some(json!({"type": "Other"}))).is_err());
    }

    #[test]
    fn credentials_file_matches_qq() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("localhost_8000");
        write_credentials(&p, "tok").unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text, "{\"bearer_token\": \"tok\", \"version\": 1}\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let t = Target {
            host: "x".into(),
            port: 1,
            credentials_store: Some(p.clone()),
        };
        assert_eq!(load_token(&t).unwrap().unwrap().as_str(), "tok");
    }
}
