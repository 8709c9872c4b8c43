//! KMIP 1.2 requests and responses over mutual TLS: Get, Create, Activate, Locate,
//! GetAttributes, Revoke and Destroy, and the master key fetch built from them.
//!
//! Each public call opens one TLS connection, sends its request messages (one batch item
//! each), reads the responses and closes. Connect, read and write are bounded by timeouts.
//! Tag, enumeration and operation numbers are those of the KMIP 1.2 specification, section 9.1.3.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use zeroize::Zeroizing;

use super::ttlv::{self, Ttlv};
use super::{KmipError, KmsConfig};
use crate::crypto::MasterKey;

/// The status the management API reports when the key server answers and the key is usable.
pub const STATUS_AVAILABLE: &str = "KMS Available";

/// KMIP tags (KMIP 1.2 section 9.1.3.1).
mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
    pub const KEY: u32 = 0x42003F;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const KEY_WRAPPING_DATA: u32 = 0x420046;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_HEADER: u32 = 0x42007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const SYMMETRIC_KEY: u32 = 0x42008F;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
}

/// KMIP operations (KMIP 1.2 section 9.1.3.2.27).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Create = 0x01,
    Locate = 0x08,
    Get = 0x0A,
    GetAttributes = 0x0B,
    Activate = 0x12,
    Revoke = 0x13,
    Destroy = 0x14,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Create => "Create",
            Operation::Locate => "Locate",
            Operation::Get => "Get",
            Operation::GetAttributes => "Get Attributes",
            Operation::Activate => "Activate",
            Operation::Revoke => "Revoke",
            Operation::Destroy => "Destroy",
        }
    }
}

/// Enumeration values used here (KMIP 1.2 section 9.1.3.2).
mod value {
    pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 0x02;
    pub const ALGORITHM_AES: u32 = 0x03;
    pub const KEY_FORMAT_RAW: u32 = 0x01;
    pub const KEY_FORMAT_TRANSPARENT_SYMMETRIC: u32 = 0x07;
    pub const NAME_TYPE_TEXT: u32 = 0x01;
    /// Cryptographic Usage Mask: Encrypt (0x4) | Decrypt (0x8).
    pub const USAGE_ENCRYPT_DECRYPT: i32 = 0x04 | 0x08;
    pub const REVOCATION_CESSATION_OF_OPERATION: u32 = 0x06;
    pub const RESULT_SUCCESS: u32 = 0x00;
    pub const REASON_ITEM_NOT_FOUND: u32 = 0x01;
    pub const REASON_AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const REASON_PERMISSION_DENIED: u32 = 0x0C;
}

/// The state of a managed object (KMIP 1.2 section 3.22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Created, not yet usable.
    PreActive,
    /// Usable.
    Active,
    /// Revoked for a reason other than compromise.
    Deactivated,
    /// Revoked because it was compromised.
    Compromised,
    /// Destroyed (its material is gone; the server may still list the object).
    Destroyed,
    /// Destroyed after being compromised.
    DestroyedCompromised,
    /// A state value this client does not know.
    Unknown(u32),
}

impl KeyState {
    fn from_enum(v: u32) -> Self {
        match v {
            1 => KeyState::PreActive,
            2 => KeyState::Active,
            3 => KeyState::Deactivated,
            4 => KeyState::Compromised,
            5 => KeyState::Destroyed,
            6 => KeyState::DestroyedCompromised,
            other => KeyState::Unknown(other),
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyState::PreActive => f.write_str("Pre-Active"),
            KeyState::Active => f.write_str("Active"),
            KeyState::Deactivated => f.write_str("Deactivated"),
            KeyState::Compromised => f.write_str("Compromised"),
            KeyState::Destroyed => f.write_str("Destroyed"),
            KeyState::DestroyedCompromised => f.write_str("Destroyed Compromised"),
            KeyState::Unknown(v) => write!(f, "unknown state {v:#x}"),
        }
    }
}

/// The attributes of a key that tell whether it can be the master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAttributes {
    /// Lifecycle state.
    pub state: KeyState,
    /// Cryptographic Algorithm enumeration value (3 is AES), if the server reported one.
    pub algorithm: Option<u32>,
    /// Cryptographic Length in bits, if the server reported one.
    pub length_bits: Option<i32>,
}

impl KeyAttributes {
    /// Whether the attributes are those of an AES-256 key.
    pub fn is_aes_256(&self) -> bool {
        self.algorithm == Some(value::ALGORITHM_AES) && self.length_bits == Some(256)
    }
}

/// A KMIP client for one server, with its TLS configuration built once.
#[derive(Clone)]
pub struct KmipClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmipClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl KmipClient {
    /// Default bound on establishing the TCP connection.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default bound on each read or write, the TLS handshake included.
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);

    /// Builds a client from a configuration (its `key_id` is not used here: each call takes
    /// the key id). Fails with [`KmipError::ConfigCorrupted`] if the certificates, key or host
    /// name cannot be used. Does not connect.
    pub fn new(config: &KmsConfig) -> Result<Self, KmipError> {
        Ok(KmipClient {
            host: config.hostname.clone(),
            port: config.port,
            server_name: config.server_name()?,
            tls: config.tls_config()?,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            io_timeout: Self::DEFAULT_IO_TIMEOUT,
        })
    }

    /// Replaces the connect and read/write timeouts.
    pub fn with_timeouts(mut self, connect: Duration, io: Duration) -> Self {
        self.connect_timeout = connect;
        self.io_timeout = io;
        self
    }

    /// Fetches the master key: checks that `key_id` is an Active AES-256 key, then gets its
    /// material. Errors: [`KmipError::KeyNotFound`] (no such object, not visible to this
    /// client, or not AES-256), [`KmipError::KeyInactive`], and connection or TLS failures.
    pub fn fetch_master_key(&self, key_id: &str) -> Result<MasterKey, KmipError> {
        let mut session = self.open()?;
        let attrs = session.get_attributes(key_id)?;
        if attrs.state != KeyState::Active {
            return Err(KmipError::KeyInactive {
                host: self.host.clone(),
                port: self.port,
                key_id: key_id.to_owned(),
                state: attrs.state,
            });
        }
        let key = session.get_symmetric_key(key_id)?;
        tracing::info!(host = %self.host, port = self.port, key_id, "fetched master key from KMS");
        Ok(key)
    }

    /// Gets a symmetric key's material without looking at its state; it must be AES, 256 bits,
    /// in Raw or Transparent Symmetric Key format.
    pub fn get_key(&self, key_id: &str) -> Result<MasterKey, KmipError> {
        self.open()?.get_symmetric_key(key_id)
    }

    /// Reads the State, Cryptographic Algorithm and Cryptographic Length of an object.
    pub fn get_attributes(&self, key_id: &str) -> Result<KeyAttributes, KmipError> {
        self.open()?.get_attributes(key_id)
    }

    /// Checks that the server is reachable and `key_id` is an Active AES-256 key, without
    /// transferring the key material. Returns [`STATUS_AVAILABLE`] on success.
    pub fn check_key(&self, key_id: &str) -> Result<&'static str, KmipError> {
        let attrs = self.get_attributes(key_id)?;
        if attrs.state != KeyState::Active {
            return Err(KmipError::KeyInactive {
                host: self.host.clone(),
                port: self.port,
                key_id: key_id.to_owned(),
                state: attrs.state,
            });
        }
        if !attrs.is_aes_256() {
            return Err(self.not_aes_256(key_id, &attrs));
        }
        Ok(STATUS_AVAILABLE)
    }

    /// Creates an AES-256 key named `name` (usage: encrypt, decrypt), activates it, and returns
    /// its unique identifier.
    pub fn create_key(&self, name: &str) -> Result<String, KmipError> {
        let mut session = self.open()?;
        let attribute = |attr_name: &str, value: Ttlv| {
            Ttlv::structure(
                tag::ATTRIBUTE,
                vec![Ttlv::text(tag::ATTRIBUTE_NAME, attr_name), value],
            )
        };
        let name_value = Ttlv::structure(
            tag::ATTRIBUTE_VALUE,
            vec![
                Ttlv::text(tag::NAME_VALUE, name),
                Ttlv::enumeration(tag::NAME_TYPE, value::NAME_TYPE_TEXT),
            ],
        );
        let payload = vec![
            Ttlv::enumeration(tag::OBJECT_TYPE, value::OBJECT_TYPE_SYMMETRIC_KEY),
            Ttlv::structure(
                tag::TEMPLATE_ATTRIBUTE,
                vec![
                    attribute(
                        "Cryptographic Algorithm",
                        Ttlv::enumeration(tag::ATTRIBUTE_VALUE, value::ALGORITHM_AES),
                    ),
                    attribute(
                        "Cryptographic Length",
                        Ttlv::integer(tag::ATTRIBUTE_VALUE, 256),
                    ),
                    attribute(
                        "Cryptographic Usage Mask",
                        Ttlv::integer(tag::ATTRIBUTE_VALUE, value::USAGE_ENCRYPT_DECRYPT),
                    ),
                    attribute("Name", name_value),
                ],
            ),
        ];
        let response = session.call(Operation::Create, payload, None)?;
        let key_id = session.unique_identifier(&response, Operation::Create)?;
        session.call(Operation::Activate, vec![uid(&key_id)], Some(&key_id))?;
        tracing::info!(host = %self.host, port = self.port, key_id, "created and activated KMS key");
        Ok(key_id)
    }

    /// The unique identifiers of the objects whose Name is `name`.
    pub fn locate(&self, name: &str) -> Result<Vec<String>, KmipError> {
        let mut session = self.open()?;
        let payload = vec![Ttlv::structure(
            tag::ATTRIBUTE,
            vec![
                Ttlv::text(tag::ATTRIBUTE_NAME, "Name"),
                Ttlv::structure(
                    tag::ATTRIBUTE_VALUE,
                    vec![
                        Ttlv::text(tag::NAME_VALUE, name),
                        Ttlv::enumeration(tag::NAME_TYPE, value::NAME_TYPE_TEXT),
                    ],
                ),
            ],
        )];
        let response = session.call(Operation::Locate, payload, None)?;
        response
            .children(tag::UNIQUE_IDENTIFIER)
            .map(|item| {
                item.as_text().map(str::to_owned).ok_or_else(|| {
                    session.protocol("Locate response has a non-text Unique Identifier")
                })
            })
            .collect()
    }

    /// Revokes an Active key with reason "cessation of operation" (it becomes Deactivated).
    pub fn revoke(&self, key_id: &str) -> Result<(), KmipError> {
        let reason = Ttlv::structure(
            tag::REVOCATION_REASON,
            vec![Ttlv::enumeration(
                tag::REVOCATION_REASON_CODE,
                value::REVOCATION_CESSATION_OF_OPERATION,
            )],
        );
        self.open()?
            .call(Operation::Revoke, vec![uid(key_id), reason], Some(key_id))?;
        Ok(())
    }

    /// Destroys a key that is not Active (revoke it first).
    pub fn destroy(&self, key_id: &str) -> Result<(), KmipError> {
        self.open()?
            .call(Operation::Destroy, vec![uid(key_id)], Some(key_id))?;
        Ok(())
    }

    fn not_aes_256(&self, key_id: &str, attrs: &KeyAttributes) -> KmipError {
        KmipError::KeyNotFound {
            host: self.host.clone(),
            port: self.port,
            key_id: key_id.to_owned(),
            reason: format!(
                "object is not an AES-256 key (algorithm {:?}, length {:?})",
                attrs.algorithm, attrs.length_bits
            ),
        }
    }

    /// Connects over TCP and completes the TLS handshake.
    fn open(&self) -> Result<Session<'_>, KmipError> {
        let cannot_connect = |reason: String| KmipError::CannotConnect {
            host: self.host.clone(),
            port: self.port,
            reason,
        };
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| cannot_connect(format!("cannot resolve host: {e}")))?;
        let mut last = cannot_connect("host has no address".to_owned());
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = cannot_connect(format!("{addr}: {e}")),
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_read_timeout(Some(self.io_timeout))
            .and_then(|()| tcp.set_write_timeout(Some(self.io_timeout)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(|e| cannot_connect(format!("socket setup: {e}")))?;

        let conn =
            ClientConnection::new(self.tls.clone(), self.server_name.clone()).map_err(|e| {
                KmipError::ConfigCorrupted {
                    reason: format!("TLS setup: {e}"),
                }
            })?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(self.handshake_error(e));
            }
        }
        tracing::debug!(
            host = %self.host,
            port = self.port,
            version = ?stream.conn.protocol_version(),
            suite = ?stream.conn.negotiated_cipher_suite().map(|s| s.suite()),
            "KMS TLS session established"
        );
        Ok(Session {
            client: self,
            stream,
        })
    }

    /// Classifies a handshake failure: a timeout is a connection failure; a TLS error, an alert
    /// or the server dropping the connection mid-handshake is an authentication failure.
    fn handshake_error(&self, e: io::Error) -> KmipError {
        let reason = match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => format!("TLS handshake failed: {tls}"),
            None if is_timeout(&e) => {
                return KmipError::CannotConnect {
                    host: self.host.clone(),
                    port: self.port,
                    reason: format!("no TLS handshake answer within {:?}", self.io_timeout),
                };
            }
            None => format!("connection closed during TLS handshake: {e}"),
        };
        KmipError::Authentication {
            host: self.host.clone(),
            port: self.port,
            reason,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn uid(key_id: &str) -> Ttlv {
    Ttlv::text(tag::UNIQUE_IDENTIFIER, key_id)
}

/// One TLS connection to the server.
struct Session<'a> {
    client: &'a KmipClient,
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl Session<'_> {
    fn protocol(&self, reason: impl Into<String>) -> KmipError {
        KmipError::Protocol {
            host: self.client.host.clone(),
            port: self.client.port,
            reason: reason.into(),
        }
    }

    fn io_error(&self, what: &str, e: io::Error) -> KmipError {
        let (host, port) = (self.client.host.clone(), self.client.port);
        if e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some()
        {
            return KmipError::Authentication {
                host,
                port,
                reason: format!("{what}: {e}"),
            };
        }
        KmipError::CannotConnect {
            host,
            port,
            reason: format!("{what}: {e}"),
        }
    }

    /// Sends one request with one batch item and returns the response payload (an empty
    /// structure if the server sent none). `key_id` names the object the operation targets,
    /// so that "not found" answers become [`KmipError::KeyNotFound`].
    fn call(
        &mut self,
        op: Operation,
        payload: Vec<Ttlv>,
        key_id: Option<&str>,
    ) -> Result<Ttlv, KmipError> {
        let request = Ttlv::structure(
            tag::REQUEST_MESSAGE,
            vec![
                Ttlv::structure(
                    tag::REQUEST_HEADER,
                    vec![protocol_version(), Ttlv::integer(tag::BATCH_COUNT, 1)],
                ),
                Ttlv::structure(
                    tag::BATCH_ITEM,
                    vec![
                        Ttlv::enumeration(tag::OPERATION, op as u32),
                        Ttlv::structure(tag::REQUEST_PAYLOAD, payload),
                    ],
                ),
            ],
        );
        let bytes = request
            .encode()
            .map_err(|e| self.protocol(format!("encoding request: {e}")))?;
        self.stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.io_error("sending request", e))?;

        let response = self.read_message()?;
        self.batch_item_payload(&response, op, key_id)
    }

    /// Reads one whole response message, its length checked before the body is read.
    fn read_message(&mut self) -> Result<Ttlv, KmipError> {
        let mut header = [0u8; ttlv::HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(|e| self.io_error("reading response", e))?;
        let total = ttlv::message_len(&header)
            .map_err(|e| self.protocol(format!("response header: {e}")))?;
        // The body may hold key material.
        let mut buf = Zeroizing::new(vec![0u8; total]);
        buf[..ttlv::HEADER_LEN].copy_from_slice(&header);
        self.stream
            .read_exact(&mut buf[ttlv::HEADER_LEN..])
            .map_err(|e| self.io_error("reading response", e))?;
        ttlv::decode(&buf).map_err(|e| self.protocol(format!("response: {e}")))
    }

    /// Checks the response message and its single batch item; returns the payload or the
    /// error the result status and reason call for.
    fn batch_item_payload(
        &self,
        response: &Ttlv,
        op: Operation,
        key_id: Option<&str>,
    ) -> Result<Ttlv, KmipError> {
        if response.tag != tag::RESPONSE_MESSAGE || response.child(tag::RESPONSE_HEADER).is_none() {
            return Err(self.protocol(format!("{} response is not a Response Message", op.name())));
        }
        let item = response
            .child(tag::BATCH_ITEM)
            .ok_or_else(|| self.protocol(format!("{} response has no Batch Item", op.name())))?;
        let status = item
            .child(tag::RESULT_STATUS)
            .and_then(Ttlv::as_enumeration)
            .ok_or_else(|| self.protocol(format!("{} response has no Result Status", op.name())))?;

        if status != value::RESULT_SUCCESS {
            let reason = item
                .child(tag::RESULT_REASON)
                .and_then(Ttlv::as_enumeration)
                .unwrap_or(0);
            let message = item
                .child(tag::RESULT_MESSAGE)
                .and_then(Ttlv::as_text)
                .unwrap_or("")
                .to_owned();
            return Err(self.failure(op, key_id, status, reason, message));
        }
        // An error answer may carry no Operation; a success must echo ours.
        if let Some(echoed) = item.child(tag::OPERATION).and_then(Ttlv::as_enumeration)
            && echoed != op as u32
        {
            return Err(self.protocol(format!(
                "{} response answers operation {echoed:#x}",
                op.name()
            )));
        }
        Ok(item
            .child(tag::RESPONSE_PAYLOAD)
            .cloned()
            .unwrap_or_else(|| Ttlv::structure(tag::RESPONSE_PAYLOAD, Vec::new())))
    }

    /// Maps a failed result to an error. PyKMIP answers Permission Denied for an object owned
    /// by another client identity ("feigning ignorance"), so on reads that counts as not found.
    fn failure(
        &self,
        op: Operation,
        key_id: Option<&str>,
        status: u32,
        reason: u32,
        message: String,
    ) -> KmipError {
        let (host, port) = (self.client.host.clone(), self.client.port);
        let is_read = matches!(op, Operation::Get | Operation::GetAttributes);
        match (reason, key_id) {
            (value::REASON_AUTHENTICATION_NOT_SUCCESSFUL, _) => KmipError::Authentication {
                host,
                port,
                reason: format!("server refused the client identity: {message}"),
            },
            (value::REASON_ITEM_NOT_FOUND, Some(key_id)) => KmipError::KeyNotFound {
                host,
                port,
                key_id: key_id.to_owned(),
                reason: message,
            },
            (value::REASON_PERMISSION_DENIED, Some(key_id)) if is_read => KmipError::KeyNotFound {
                host,
                port,
                key_id: key_id.to_owned(),
                reason: message,
            },
            _ => KmipError::OperationFailed {
                host,
                port,
                operation: op.name(),
                reason,
                message: format!("result status {status:#x}: {message}"),
            },
        }
    }

    fn unique_identifier(&self, payload: &Ttlv, op: Operation) -> Result<String, KmipError> {
        payload
            .child(tag::UNIQUE_IDENTIFIER)
            .and_then(Ttlv::as_text)
            .map(str::to_owned)
            .ok_or_else(|| {
                self.protocol(format!("{} response has no Unique Identifier", op.name()))
            })
    }

    fn get_attributes(&mut self, key_id: &str) -> Result<KeyAttributes, KmipError> {
        let payload = vec![
            uid(key_id),
            Ttlv::text(tag::ATTRIBUTE_NAME, "State"),
            Ttlv::text(tag::ATTRIBUTE_NAME, "Cryptographic Algorithm"),
            Ttlv::text(tag::ATTRIBUTE_NAME, "Cryptographic Length"),
        ];
        let response = self.call(Operation::GetAttributes, payload, Some(key_id))?;
        let mut state = None;
        let mut algorithm = None;
        let mut length_bits = None;
        for attr in response.children(tag::ATTRIBUTE) {
            let name = attr.child(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text);
            let value = attr.child(tag::ATTRIBUTE_VALUE);
            match (name, value) {
                (Some("State"), Some(v)) => state = v.as_enumeration().map(KeyState::from_enum),
                (Some("Cryptographic Algorithm"), Some(v)) => algorithm = v.as_enumeration(),
                (Some("Cryptographic Length"), Some(v)) => length_bits = v.as_integer(),
                _ => {}
            }
        }
        let state = state.ok_or_else(|| {
            self.protocol(format!("Get Attributes of {key_id:?} returned no State"))
        })?;
        Ok(KeyAttributes {
            state,
            algorithm,
            length_bits,
        })
    }

    fn get_symmetric_key(&mut self, key_id: &str) -> Result<MasterKey, KmipError> {
        let response = self.call(Operation::Get, vec![uid(key_id)], Some(key_id))?;
        let wrong = |reason: String| KmipError::KeyNotFound {
            host: self.client.host.clone(),
            port: self.client.port,
            key_id: key_id.to_owned(),
            reason,
        };

        let object_type = response
            .child(tag::OBJECT_TYPE)
            .and_then(Ttlv::as_enumeration);
        if object_type != Some(value::OBJECT_TYPE_SYMMETRIC_KEY) {
            return Err(wrong(format!(
                "object type is {object_type:?}, not Symmetric Key"
            )));
        }
        let block = response
            .child(tag::SYMMETRIC_KEY)
            .and_then(|key| key.child(tag::KEY_BLOCK))
            .ok_or_else(|| self.protocol("Get response has no Symmetric Key / Key Block"))?;
        if block.child(tag::KEY_WRAPPING_DATA).is_some() {
            return Err(wrong(
                "key is wrapped; only unwrapped keys are supported".to_owned(),
            ));
        }
        let algorithm = block
            .child(tag::CRYPTOGRAPHIC_ALGORITHM)
            .and_then(Ttlv::as_enumeration);
        let length = block
            .child(tag::CRYPTOGRAPHIC_LENGTH)
            .and_then(Ttlv::as_integer);
        if algorithm != Some(value::ALGORITHM_AES) || length != Some(256) {
            return Err(wrong(format!(
                "key is not AES-256 (algorithm {algorithm:?}, length {length:?})"
            )));
        }

        let format = block
            .child(tag::KEY_FORMAT_TYPE)
            .and_then(Ttlv::as_enumeration);
        let material = block
            .child(tag::KEY_VALUE)
            .and_then(|v| v.child(tag::KEY_MATERIAL))
            .ok_or_else(|| self.protocol("Get response has no Key Material"))?;
        let bytes = match format {
            Some(value::KEY_FORMAT_RAW) => material.as_bytes(),
            Some(value::KEY_FORMAT_TRANSPARENT_SYMMETRIC) => {
                material.child(tag::KEY).and_then(Ttlv::as_bytes)
            }
            other => return Err(wrong(format!("unsupported key format type {other:?}"))),
        }
        .ok_or_else(|| self.protocol("Key Material is not a byte string"))?;
        MasterKey::from_bytes(bytes)
            .map_err(|_| wrong(format!("key material has {} bytes, not 32", bytes.len())))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Best effort: tell the server we are done; errors do not matter any more.
        self.stream.conn.send_close_notify();
        let _ = self.stream.conn.complete_io(&mut self.stream.sock);
    }
}

fn protocol_version() -> Ttlv {
    Ttlv::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, 1),
            Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, 2),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_kmip_1_2() {
        // A Get request for id "1", checked field by field against the layout of KMIP 1.2
        // section 7.1 (Request Message: Request Header, Batch Item).
        let request = Ttlv::structure(
            tag::REQUEST_MESSAGE,
            vec![
                Ttlv::structure(
                    tag::REQUEST_HEADER,
                    vec![protocol_version(), Ttlv::integer(tag::BATCH_COUNT, 1)],
                ),
                Ttlv::structure(
                    tag::BATCH_ITEM,
                    vec![
                        Ttlv::enumeration(tag::OPERATION, Operation::Get as u32),
                        Ttlv::structure(tag::REQUEST_PAYLOAD, vec![uid("1")]),
                    ],
                ),
            ],
        );
        let bytes = request.encode().expect("encodes");
        let hex = hex::encode(&bytes);
        assert!(hex.starts_with("42007801"), "{hex}");
        assert!(
            hex.contains("42006a02000000040000000100000000"),
            "major 1: {hex}"
        );
        assert!(
            hex.contains("42006b02000000040000000200000000"),
            "minor 2: {hex}"
        );
        assert!(
            hex.contains("42005c05000000040000000a00000000"),
            "operation Get: {hex}"
        );
        assert!(
            hex.contains("4200940700000001310000000000000"),
            "uid: {hex}"
        );
        assert_eq!(ttlv::decode(&bytes).expect("decodes"), request);
    }

    #[test]
    fn key_state_names() {
        assert_eq!(KeyState::from_enum(1).to_string(), "Pre-Active");
        assert_eq!(KeyState::from_enum(3), KeyState::Deactivated);
        assert_eq!(KeyState::from_enum(99), KeyState::Unknown(99));
    }
}
