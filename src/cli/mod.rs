//! The `atrest` command: volume administration (format, mount, rotate-keys, fsck).
//!
//! Exit codes: 0 success; 1 the operation failed (one line on stderr says why); 2 the command
//! line was wrong.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::node::{self, FormatRequest, NewMasterKey, Node, Unlocked};

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
    /// Check every invariant of an unmounted volume: headers, filesystem, copies agree.
    Fsck {
        /// The node's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
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
    init_logging();
    if let Err(e) = crate::sys::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    match run(cli.command) {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("atrest: error: {msg}");
            1
        }
    }
}

fn run(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Format {
            state_dir,
            drives,
            drive_size,
            replicas,
            force,
        } => {
            let s = node::format(&FormatRequest {
                state_dir,
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
            Ok(())
        }
        Command::Mount {
            state_dir,
            mountpoint,
            threads,
            allow_other,
        } => mount(state_dir, mountpoint, threads, allow_other),
        Command::RotateKeys { state_dir } => {
            let mut vol = Unlocked::open(&state_dir).map_err(|e| e.to_string())?;
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
    threads: usize,
    allow_other: bool,
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
    let node = Arc::new(Node::open(&state_dir).map_err(|e| e.to_string())?);
    let opts = crate::fuse::MountOptions {
        fsname: format!("atrest:{}", node.config().volume_id),
        threads,
        allow_other,
    };
    let handle = match crate::fuse::mount(node.fs().clone(), &mountpoint, &opts) {
        Ok(h) => h,
        Err(e) => {
            let _ = node.shutdown();
            return Err(format!("mount {}: {e}", mountpoint.display()));
        }
    };
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    let unmounter = handle.unmounter();
    std::thread::spawn(move || {
        if let Ok(sig) = stop.wait() {
            tracing::info!(signal = ?sig, "unmounting");
            unmounter.unmount();
        }
    });
    let joined = handle.join();
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
