//! A small blocking HTTPS client for the `atrest` client subcommands: one keep-alive
//! connection per run, JSON in and out, errors shaped like qq's.
//!
//! Like qq, it accepts any server certificate (the node's is self-signed) and, when run as
//! root against a loopback host name, binds its local end to a port in 900-1023 and sends no
//! `Authorization` header unless a credentials file exists: the local-root backdoor.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde_json::Value;
use zeroize::Zeroizing;

use super::tls::provider;

/// Host names for which qq (and this client) use the local-root backdoor when run as root.
pub const LOCALHOSTS: &[&str] = &["localhost", "ip6-localhost", "127.0.0.1", "::1"];
const PRIV_PORT_BEG: u16 = 900;
const PRIV_PORT_END: u16 = 1024;
const TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer body read.
const MAX_ANSWER: usize = 16 << 20;

/// Why a call failed, printed the way qq prints it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("Error {status}: {class}: {description}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `error_class`, or `unknown`.
        class: String,
        /// `description`, or qq's stand-in text.
        description: String,
    },
    /// The connection failed or the answer was not HTTP.
    #[error("Connection error: {0}")]
    Connection(String),
    /// The answer was not the JSON expected.
    #[error("Command error: {0}")]
    Command(String),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Connection(e.to_string())
    }
}

/// Accepts any server certificate, as qq does, but still checks the handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One HTTPS connection to the node's API.
pub struct Client {
    host: String,
    port: u16,
    token: Option<Zeroizing<String>>,
    stream: Option<BufReader<StreamOwned<ClientConnection, TcpStream>>>,
}

/// Whether this process would use the local-root backdoor for `host`.
pub fn is_local_root(host: &str) -> bool {
    LOCALHOSTS.contains(&host) && nix::unistd::geteuid().is_root()
}

fn connect_tcp(addr: SocketAddr, backdoor: bool) -> io::Result<TcpStream> {
    if !backdoor {
        return TcpStream::connect_timeout(&addr, TIMEOUT);
    }
    // Start at a random privileged port and move on while ports are taken.
    let mut r = [0u8; 2];
    getrandom::fill(&mut r).map_err(|e| io::Error::other(e.to_string()))?;
    let span = PRIV_PORT_END - PRIV_PORT_BEG;
    let start = u16::from_le_bytes(r) % span;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for i in 0..span {
        let port = PRIV_PORT_BEG + (start + i) % span;
        match connect_from_port(addr, port) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Connects to `addr` from local port `port` on the loopback address of the same family,
/// with SO_LINGER (1, 0) so that closing resets the connection and leaves no TIME_WAIT on the
/// few privileged ports (as qq does).
fn connect_from_port(addr: SocketAddr, port: u16) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, connect, setsockopt,
        socket, sockopt,
    };

    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(&fd, sockopt::Linger, &linger)?;
    match addr {
        SocketAddr::V4(a) => {
            let local = std::net::SocketAddrV4::new(*a.ip(), port);
            bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
            connect(fd.as_raw_fd(), &SockaddrIn::from(a))?;
        }
        SocketAddr::V6(a) => {
            let local = std::net::SocketAddrV6::new(*a.ip(), port, 0, 0);
            bind(fd.as_raw_fd(), &SockaddrIn6::from(local))?;
            connect(fd.as_raw_fd(), &SockaddrIn6::from(a))?;
        }
    }
    Ok(TcpStream::from(fd))
}

impl Client {
    /// A client for `host:port` that sends `token` as a bearer token, if given. The
    /// connection is made on the first request.
    pub fn new(host: &str, port: u16, token: Option<String>) -> Self {
        Client {
            host: host.to_string(),
            port,
            token: token.map(Zeroizing::new),
            stream: None,
        }
    }

    fn connect(&mut self) -> Result<(), ClientError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ClientError::Connection(format!("{}: no address", self.host)))?;
        let tcp = connect_tcp(addr, is_local_root(&self.host))?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let _ = tcp.set_nodelay(true);

        let provider = provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Connection(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| ClientError::Connection(format!("{}: {e}", self.host)))?;
        let conn = ClientConnection::new(Arc::new(config), name)
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        self.stream = Some(BufReader::new(StreamOwned::new(conn, tcp)));
        Ok(())
    }

    /// Sends one request with a JSON body (or none) and returns the parsed JSON answer
    /// (`None` for an empty body). A non-2xx answer is a [`ClientError::Api`].
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ClientError> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let result = self.exchange(method, path, body);
        if !matches!(result, Ok((200..=299, _, false))) {
            // After any error or a server's close the connection is not reused.
            self.stream = None;
        }
        let (status, bytes, _) = result?;
        let json: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(ClientError::Command(format!(
                        "the server's answer ({status}) is not JSON"
                    )));
                }
            }
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let field = |k: &str| json.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str);
        let class = field("error_class").unwrap_or("unknown").to_string();
        let description = match field("description") {
            Some(d) => d.to_string(),
            None if status == 401 => "Need to log in first to establish credentials.".into(),
            None => "Dev error: No json error response.".into(),
        };
        Err(ClientError::Api {
            status,
            class,
            description,
        })
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>, bool), ClientError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| ClientError::Connection("closed".into()))?;
        let payload = Zeroizing::new(match body {
            Some(v) => serde_json::to_vec(v).map_err(|e| ClientError::Command(e.to_string()))?,
            None => Vec::new(),
        });
        // Sized up front so that adding the token never moves it to a new allocation.
        let token_len = self.token.as_ref().map_or(0, |t| t.len());
        let mut head = Zeroizing::new(String::with_capacity(512 + path.len() + token_len));
        head.push_str(&format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: atrest\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            self.port,
            payload.len()
        ));
        if let Some(t) = &self.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(t);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let w = stream.get_mut();
        w.write_all(head.as_bytes())?;
        w.write_all(&payload)?;
        w.flush()?;

        read_answer(stream)
    }
}

/// Reads one HTTP/1.1 answer: status, body, and whether the server will close.
fn read_answer<R: BufRead>(r: &mut R) -> Result<(u16, Vec<u8>, bool), ClientError> {
    let bad = |what: &str| ClientError::Connection(format!("malformed answer: {what}"));
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(ClientError::Connection(
            "Remote end closed connection without response".into(),
        ));
    }
    let mut parts = line.split_whitespace();
    let _version = parts.next().ok_or_else(|| bad("no version"))?;
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status"))?;

    let mut length: Option<usize> = None;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(bad("header line"));
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse().map_err(|_| bad("content-length"))?);
        } else if k == "connection" && v.eq_ignore_ascii_case("close") {
            close = true;
        } else if k == "transfer-encoding" {
            return Err(bad("chunked answers are not supported"));
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) if n > MAX_ANSWER => return Err(bad("answer too large")),
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.take(MAX_ANSWER as u64).read_to_end(&mut body)?;
            close = true;
        }
    }
    Ok((status, body, close))
}
