//! The `atrest` command: volume administration (format, mount, rotate-keys, fsck).
//!
//! Exit codes: 0 success; 1 the operation failed (one line on stderr says why); 2 the command
//! line was wrong.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::node::{self, FormatRequest, NewMasterKey, Node, Unlocked};

pub mod client;

/// Encryption at rest for a storage node.
#[derive(Parser)]
#[command(name = "atrest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a volume: drive images, a local master key, an empty filesystem.
    Format {
        /// The node's state directory (created with mode 0700).
        #[arg(long)]
        state_dir: PathBuf,
        /// A drive image or block device; repeat for each drive, in slot order.
        #[arg(long = "drive", required = true)]
        drives: Vec<PathBuf>,
        /// Size of each drive image to create, e.g. 2G, 512M.
        #[arg(long, value_parser = parse_size)]
        drive_size: Option<u64>,
        /// Copies of each block on distinct drives (default 2 with two drives or more).
        #[arg(long)]
        replicas: Option<u32>,
        /// Destroy an existing atrest volume on these drives or in this state directory.
        #[arg(long)]
        force: bool,
        /// File holding the password of the API's `admin` user (default: generate one and
        /// print it once).
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
    /// Unlock the volume and mount it; serve until SIGINT/SIGTERM or `fusermount3 -u`.
    Mount {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// Where to mount.
        mountpoint: PathBuf,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Let users other than root use the mount.
        #[arg(long)]
        allow_other: bool,
        /// Gather buffered writes in the kernel's page cache (FUSE writeback cache) and send
        /// them at writeback, `fsync` or `close`: much faster small buffered writes, but a
        /// full volume fails the later `fsync`/`close` rather than the `write()`, and every
        /// unlink of a file costs one more round trip.
        #[arg(long)]
        writeback_cache: bool,
        /// Keep file data in the kernel's page cache (implied by --writeback-cache). Without
        /// it every read and write goes to the daemon as it comes (FUSE direct_io): faster
        /// streams and random I/O, no plaintext in the page cache, but data read again is
        /// decrypted again.
        #[arg(long)]
        page_cache: bool,
        /// Have the kernel check permissions even when only root can use the mount (always
        /// on with --allow-other); costs an attribute refresh of a directory per create and
        /// unlink in it.
        #[arg(long)]
        default_permissions: bool,
        /// Read-ahead of the mount in KiB: the kernel's window for sequential buffered reads
        /// (0 keeps the kernel's 128 KiB).
        #[arg(long, default_value_t = crate::fuse::READ_AHEAD_KB)]
        read_ahead_kb: u32,
        /// Seconds the kernel may cache names and attributes (every change goes through the
        /// mount, so a long time is safe).
        #[arg(long, default_value_t = crate::fuse::CACHE_TIMEOUT.as_secs())]
        cache_timeout: u64,
        /// Address of the HTTPS management API.
        #[arg(long, default_value = "127.0.0.1:8000")]
        api: std::net::SocketAddr,
        /// Do not serve the management API.
        #[arg(long, conflicts_with = "api")]
        no_api: bool,
        /// With a KMS key store: how long to keep trying an unreachable KMS at start before
        /// giving up (kms branch).
        #[arg(long, default_value_t = 60)]
        kms_retry_seconds: u64,
        /// With a KMS key store: seconds between two health checks of the KMS (kms branch).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        kms_health_interval: u64,
    },
    /// Rotate the master key of an unmounted volume (re-wraps the drive headers only).
    RotateKeys {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Unlock an unmounted volume and show its drives and keys (finishes a cut-off rotation).
    Status {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Read every copy of every block in use, verify checksums, compare copies and repair a
    /// bad copy from a good one (unmounted volume).
    Scrub {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Check every invariant of an unmounted volume: headers, filesystem, copies agree.
    Fsck {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// The REST client subcommands named as in qq (login, encryption_get_status, ...).
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Parses a size like `2G`, `512M`, `4096`, `1T` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("atrest=info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    // Client subcommands print exactly what qq prints, so no log lines and no extra error line.
    let command = match cli.command {
        Command::Client(c) => {
            let _ = crate::sys::disable_core_dumps();
            return client::run(c);
        }
        other => other,
    };
    init_logging();
    if let Err(e) = crate::sys::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    match run(command) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("atrest: error: {msg}");
            1
        }
    }
}

fn run(cmd: Command) -> Result<(), String> {
    crate::crypto::ensure_cipher_allowed().map_err(|e| e.to_string())?;
    match cmd {
        // Normally handled in `main`, before logging starts.
        Command::Client(c) => match client::run(c) {
            0 => Ok(()),
            code => Err(format!("client command failed with exit code {code}")),
        },
        Command::Format {
            state_dir,
            drives,
            drive_size,
            replicas,
            force,
            admin_password_file,
        } => {
            let password = match &admin_password_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| format!("admin password file {}: {e}", p.display()))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ),
                None => None,
            };
            if password.as_deref() == Some("") {
                return Err("the admin password file is empty".into());
            }
            let s = node::format(&FormatRequest {
                state_dir: state_dir.clone(),
                drives,
                drive_size,
                replicas,
                force,
                metadata_blocks: None,
            })
            .map_err(|e| e.to_string())?;
            println!(
                "formatted volume {} ({} MiB usable, {} replicas), master key {}",
                s.volume_id,
                (s.logical_blocks * crate::BLOCK_SIZE as u64) >> 20,
                s.replicas,
                s.key_id
            );
            let generated = crate::api::init_state(&state_dir, password.as_deref())
                .map_err(|e| format!("API users in {}: {e}", state_dir.display()))?;
            if let Some(pw) = generated {
                println!("API user admin, password (shown once): {pw}");
            }
            Ok(())
        }
        Command::Mount {
            state_dir,
            mountpoint,
            threads,
            allow_other,
            writeback_cache,
            page_cache,
            default_permissions,
            read_ahead_kb,
            cache_timeout,
            api,
            no_api,
            kms_retry_seconds,
            kms_health_interval,
        } => mount(
            state_dir,
            mountpoint,
            crate::fuse::MountOptions {
                threads,
                allow_other,
                writeback_cache,
                page_cache,
                default_permissions,
                read_ahead_kb,
                attr_ttl: std::time::Duration::from_secs(cache_timeout),
                ..Default::default()
            },
            (!no_api).then_some(api),
            // kms branch: KMS start-up retry and health interval.
            &node::KmsOptions {
                retry: std::time::Duration::from_secs(kms_retry_seconds),
                health_interval: std::time::Duration::from_secs(kms_health_interval),
            },
        ),
        Command::RotateKeys { state_dir } => {
            let mut vol = Unlocked::open(&state_dir).map_err(|e| e.to_string())?;
            if vol.config().key.kind == crate::drive::KeyKind::Kms {
                return Err(format!(
                    "the master key {} is held by a KMS: rotate it on the mounted node with \
                     `rotate_encryption_keys --key-id ID` or `--create-key-with-name NAME`",
                    vol.config().key.key_id
                ));
            }
            let r = vol.rotate(NewMasterKey::Local).map_err(|e| e.to_string())?;
            println!("Key rotation complete: master key is now {}", r.key_id);
            Ok(())
        }
        Command::Status { state_dir } => {
            let vol = Unlocked::open(&state_dir).map_err(|e| e.to_string())?;
            let cfg = vol.config();
            println!("volume {} ({} replicas)", cfg.volume_id, cfg.replicas);
            println!("master key {:?} {}", cfg.key.kind, cfg.key.key_id);
            println!(
                "last key rotation {}",
                cfg.last_key_rotation_time.as_deref().unwrap_or("never")
            );
            for d in vol.drives() {
                let h = d.header();
                println!(
                    "slot {} {} drive {} generation {} key {} ({} MiB)",
                    h.slot,
                    d.path().display(),
                    hex::encode(h.drive_id),
                    h.generation,
                    h.key_id,
                    (h.data_blocks * crate::BLOCK_SIZE as u64) >> 20
                );
            }
            Ok(())
        }
        Command::Scrub { state_dir } => {
            let node = Node::open(&state_dir).map_err(|e| e.to_string())?;
            let report = node.scrub().map_err(|e| e.to_string())?;
            node.shutdown().map_err(|e| e.to_string())?;
            println!(
                "scrub: {} blocks checked, {} copies repaired, {} unrecoverable",
                report.checked, report.repaired, report.unrecoverable
            );
            if report.unrecoverable > 0 {
                return Err(format!("{} blocks have no good copy", report.unrecoverable));
            }
            Ok(())
        }
        Command::Fsck { state_dir } => {
            let node = Node::open(&state_dir).map_err(|e| e.to_string())?;
            let problems = node.check().map_err(|e| e.to_string())?;
            node.shutdown().map_err(|e| e.to_string())?;
            if problems.is_empty() {
                println!("clean");
                Ok(())
            } else {
                for p in &problems {
                    println!("{p}");
                }
                Err(format!("{} problem(s) found", problems.len()))
            }
        }
    }
}

fn mount(
    state_dir: PathBuf,
    mountpoint: PathBuf,
    opts: crate::fuse::MountOptions,
    api: Option<std::net::SocketAddr>,
    kms: &node::KmsOptions,
) -> Result<(), String> {
    use nix::sys::signal::{SigSet, Signal};

    // Block the stop signals in every thread; one thread waits for them and unmounts.
    let mut stop = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(s);
    }
    stop.thread_block()
        .map_err(|e| format!("block signals: {e}"))?;

    if !mountpoint.is_dir() {
        return Err(format!(
            "mountpoint {} is not a directory",
            mountpoint.display()
        ));
    }
    let node = Arc::new(Node::open_with(&state_dir, kms).map_err(|e| e.to_string())?);
    let opts = crate::fuse::MountOptions {
        fsname: format!("atrest:{}", node.config().volume_id),
        ..opts
    };
    let api_handle = match api {
        Some(addr) => {
            let mut cfg = crate::api::ApiConfig::new(&state_dir);
            cfg.addr = addr;
            match crate::api::serve(cfg, Arc::new(node::NodeService::new(node.clone()))) {
                Ok(h) => {
                    tracing::info!(%addr, "management API listening");
                    Some(h)
                }
                Err(e) => {
                    let _ = node.shutdown();
                    return Err(format!("management API on {addr}: {e}"));
                }
            }
        }
        None => None,
    };
    let handle = match crate::fuse::mount(node.fs().clone(), &mountpoint, &opts) {
        Ok(h) => h,
        Err(e) => {
            if let Some(h) = api_handle {
                h.shutdown();
            }
            let _ = node.shutdown();
            return Err(format!("mount {}: {e}", mountpoint.display()));
        }
    };
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    let unmounter = handle.unmounter();
    std::thread::spawn(move || {
        if let Ok(sig) = stop.wait() {
            tracing::info!(signal = ?sig, "unmounting");
            if let Err(e) = unmounter.unmount() {
                tracing::error!(error = %e, "unmount failed");
            }
        }
    });
    let joined = handle.join();
    if let Some(h) = api_handle {
        h.shutdown();
    }
    node.shutdown().map_err(|e| e.to_string())?;
    joined.map_err(|e| format!("FUSE session: {e}"))?;
    tracing::info!("unmounted");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("2G"), Ok(2 << 30));
        assert_eq!(super::parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("3X").is_err());
        assert!(super::parse_size("G").is_err());
    }
}
