//! The HTTPS REST API spoken by the Qumulo `qq` client (see `shared/QQ-API.md` of the
//! project for the contract): users, sessions, roles and privileges, the audit log, and the
//! encryption routes, which call into the node through [`NodeControl`]; and the web dashboard
//! (`web`), static pages embedded in the binary that call the same routes.
//!
//! It owns everything under `STATE/api/`: `users.json`, `roles.json`, `sessions.json`,
//! `audit.log`, `tls-cert.pem` and `tls-key.pem`. It never touches keys, drives or the key
//! store: the node does, behind [`NodeControl`]. It never logs, stores or answers a password,
//! a bearer token or key material; only this module imports the HTTP stack.
//!
//! Start it with [`serve`]; create its state at format time with [`init_state`].

mod app;
mod audit;
pub mod client;
mod control;
mod error;
mod identity;
pub mod json;
pub mod privileges;
mod server;
mod store;
mod tls;
mod web;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use control::{
    ClusterOverview, ControlError, KeyStoreStatus, KeyStoreType, KeyStoreView, KmsConfigRequest,
    NodeControl, SecretPem, SetKeyStore, SlotInfo, SlotState,
};
pub use error::ApiError;

/// The default address of the API: loopback, port 8000 (qq's default port).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8000";

/// How the API server is run.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The node's state directory; the API keeps its files in `STATE/api/`.
    pub state_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long one connection may stay open, whatever it does.
    pub connection_lifetime: Duration,
    /// How long a bearer token stays valid after login.
    pub session_ttl: Duration,
}

impl ApiConfig {
    /// The defaults: 127.0.0.1:8000, 1 MiB bodies, 64 connections, 10 s to send headers,
    /// 5 minutes per connection, 12 hour sessions.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        ApiConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            state_dir: state_dir.into(),
            max_body_bytes: 1 << 20,
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(300),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// A running API server. Dropping it stops the server too.
pub struct ApiHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiHandle {
    /// The address the server listens on (useful when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (up to a few seconds) and joins the server
    /// thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("api server thread panicked");
        }
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the HTTPS API on `cfg.addr` in its own threads. Makes the TLS certificate on first
/// start. Returns once the socket is bound.
pub fn serve(cfg: ApiConfig, node: Arc<dyn NodeControl>) -> io::Result<ApiHandle> {
    let dir = store::api_dir(&cfg.state_dir);
    store::ensure_private_dir(&dir)?;
    let tls = tokio_rustls::TlsAcceptor::from(tls::load_or_create(&dir)?);
    let app = Arc::new(app::App::open(&cfg.state_dir, cfg.session_ttl, node)?);
    let listener = server::bind(cfg.addr)?;
    let local_addr = listener.local_addr()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("atrest-api")
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("atrest-api".into())
        .spawn(move || {
            rt.block_on(server::run(listener, tls, app, cfg, stopped));
            rt.shutdown_timeout(Duration::from_secs(5));
        })?;
    tracing::info!(addr = %local_addr, "api serving");
    Ok(ApiHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Creates the API state of a freshly formatted node under `state_dir`: the built-in roles
/// and the `admin` user in Administrators. With no `admin_password`, a random one is made and
/// returned (the caller prints it once; it is stored only as a hash). Fails if users exist.
pub fn init_state(state_dir: &Path, admin_password: Option<&str>) -> io::Result<Option<String>> {
    let generated = match admin_password {
        Some(_) => None,
        None => Some(identity::generate_password()?),
    };
    let password = admin_password
        .or(generated.as_deref().map(|s| s.as_str()))
        .unwrap_or("");
    identity::Directory::init(state_dir, password)?;
    Ok(generated.map(|s| s.to_string()))
}
