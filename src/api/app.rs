//! The request handler: authentication (bearer token or local-root backdoor), routing,
//! privilege checks and every route's logic. It is synchronous and runs on a blocking thread;
//! the transport (`server`) hands it a complete [`Request`] and sends back its [`Response`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::audit::{AuditEvent, AuditLog};
use super::control::{KeyStoreView, KmsConfigRequest, NodeControl, SecretPem, SetKeyStore};
use super::error::ApiError;
use super::identity::{
    Directory, Identity, PartialIdentity, Principal, UserRecord, hash_password, verify_login,
};
use super::privileges::{self as privs};
use super::store::api_dir;

/// One complete request, as the transport read it.
pub struct Request {
    /// Upper-case method.
    pub method: String,
    /// The path without its query string, still percent-encoded.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `If-Match` header, if any.
    pub if_match: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The body (zeroized when dropped: it may hold a password or a private key).
    pub body: Zeroizing<Vec<u8>>,
}

/// One answer: status, JSON body, optional ETag.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// ETag header to send, if any.
    pub etag: Option<String>,
}

impl Response {
    fn ok(body: Value) -> Self {
        Response {
            status: 200,
            body,
            etag: None,
        }
    }

    /// The answer for an error.
    pub fn error(e: &ApiError) -> Self {
        let body = serde_json::to_value(e.body()).unwrap_or(Value::Null);
        Response {
            status: e.status,
            body,
            etag: None,
        }
    }
}

type Result<T> = std::result::Result<T, ApiError>;

/// The API's state and its link to the node.
pub struct App {
    node: Arc<dyn NodeControl>,
    dir: Mutex<Directory>,
    audit: AuditLog,
}

/// Whether a peer qualifies for the local-root backdoor: loopback, source port 900-1023.
fn is_backdoor_peer(peer: &SocketAddr) -> bool {
    let loopback = match peer {
        SocketAddr::V4(a) => a.ip().is_loopback(),
        SocketAddr::V6(a) => {
            a.ip().is_loopback() || a.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    loopback && (900..=1023).contains(&peer.port())
}

/// Splits a path into percent-decoded segments, dropping a trailing empty segment.
fn segments(path: &str) -> Result<Vec<String>> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    trimmed.split('/').map(percent_decode).collect()
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            match v {
                Some(v) => out.push(v),
                None => return Err(ApiError::bad_request("Malformed percent escape in path")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("Path is not UTF-8"))
}

/// Parses a JSON body; an empty body reads as `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Bad request body: {e}")))
}

/// A port given as a number or as a decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum PortWire {
    Number(i64),
    Text(String),
}

impl PortWire {
    fn port(&self) -> Result<u16> {
        let n = match self {
            PortWire::Number(n) => *n,
            PortWire::Text(t) => t.trim().parse::<i64>().unwrap_or(-1),
        };
        u16::try_from(n)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ApiError::bad_request("port must be a number from 1 to 65535"))
    }
}

/// KMS settings as they arrive. No `Debug`: it holds a private key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsWire {
    client_cert: String,
    client_private_key: String,
    server_ca_cert: String,
    hostname: String,
    port: PortWire,
    key_id: Option<String>,
}

impl KmsWire {
    fn into_request(self) -> Result<KmsConfigRequest> {
        let port = self.port.port()?;
        if self.hostname.trim().is_empty() {
            return Err(ApiError::bad_request("hostname must not be empty"));
        }
        Ok(KmsConfigRequest {
            client_cert: self.client_cert,
            client_private_key: SecretPem::new(self.client_private_key),
            server_ca_cert: self.server_ca_cert,
            hostname: self.hostname,
            port,
            key_id: self.key_id,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyStorePut {
    #[serde(rename = "type")]
    store_type: String,
    kms_store: Option<KmsWire>,
    /// Accepted (as the GET answer carries it) and ignored: a local store has no settings.
    #[serde(rename = "local_store")]
    _local_store: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCreate {
    key_name: String,
    kms_config: Option<KmsWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    key_id: Option<String>,
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleCreate {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    privileges: Vec<String>,
}

#[derive(Deserialize)]
struct RolePatch {
    description: Option<String>,
    privileges: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct UserCreate {
    name: String,
    #[serde(default)]
    primary_group: Option<Value>,
    #[serde(default)]
    uid: Option<Value>,
    password: Option<String>,
    home_directory: Option<String>,
}

#[derive(Deserialize)]
struct SetPassword {
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expand {
    id: PartialIdentity,
}

/// Text of a JSON value that may be a string or a number (ids and uids).
fn loose_text(v: &Option<Value>) -> Result<String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(ApiError::bad_request(format!(
            "Expected a string, found {other}"
        ))),
    }
}

impl App {
    /// Opens the API state of `state_dir`.
    pub fn open(
        state_dir: &Path,
        session_ttl: Duration,
        node: Arc<dyn NodeControl>,
    ) -> std::io::Result<Self> {
        let dir = Directory::open(state_dir, session_ttl)?;
        let audit = AuditLog::open(&api_dir(state_dir))?;
        Ok(App {
            node,
            dir: Mutex::new(dir),
            audit,
        })
    }

    fn audit(&self, who: &str, req: &Request, action: &str, key_ids: Vec<String>, out: String) {
        let event = AuditEvent {
            user: who,
            peer: req.peer.to_string(),
            action,
            key_ids,
            outcome: out,
        };
        self.audit.record(&event);
    }

    fn principal_name(&self, who: &Principal) -> String {
        match who {
            Principal::LocalRoot => "local-root".to_string(),
            Principal::User(id) => match self.dir.lock().user(*id) {
                Some(u) => u.name.clone(),
                None => format!("user {id}"),
            },
        }
    }

    /// Handles one request completely.
    pub fn handle(&self, req: &Request) -> Response {
        let resp = match self.route(req) {
            Ok(r) => r,
            Err(e) => Response::error(&e),
        };
        // Changes to users and roles are audited here; login, denials and encryption routes
        // record their own, more detailed, events.
        let identity_change = req.method != "GET"
            && (req.path.starts_with("/v1/auth/roles") || req.path.starts_with("/v1/users"));
        if identity_change && resp.status != 403 && resp.status != 401 {
            let who = self.authenticate(req).map(|p| self.principal_name(&p));
            let who = who.unwrap_or_else(|_| "unknown".into());
            let action = format!("{} {}", req.method, req.path);
            let outcome = match resp.status {
                200..=299 => "success".to_string(),
                s => format!("failure: {s}"),
            };
            self.audit(&who, req, &action, Vec::new(), outcome);
        }
        resp
    }

    fn authenticate(&self, req: &Request) -> Result<Principal> {
        let Some(header) = &req.authorization else {
            if is_backdoor_peer(&req.peer) {
                return Ok(Principal::LocalRoot);
            }
            return Err(ApiError::unauthorized(
                "Need to log in first to establish credentials.",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be a bearer token"))?;
        match self.dir.lock().session_user(token.trim()) {
            Some(id) => Ok(Principal::User(id)),
            None => Err(ApiError::unauthorized(
                "The session is unknown or has expired",
            )),
        }
    }

    /// Fails with 403 (and an audit record) unless `who` holds `privilege`.
    fn require(&self, who: &Principal, req: &Request, privilege: &str) -> Result<()> {
        if self.dir.lock().privileges_of(who).contains(privilege) {
            return Ok(());
        }
        let name = self.principal_name(who);
        let outcome = format!(
            "denied: missing {privilege} for {} {}",
            req.method, req.path
        );
        self.audit(&name, req, "privilege_denied", Vec::new(), outcome);
        Err(ApiError::forbidden(privilege))
    }

    fn route(&self, req: &Request) -> Result<Response> {
        let segs = segments(&req.path)?;
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = req.method.as_str();

        // Login is the one route that ignores Authorization.
        if s == ["v1", "session", "login"] {
            return match m {
                "POST" => self.login(req),
                _ => Err(ApiError::method_not_allowed(m, &req.path)),
            };
        }
        if !self.is_known_path(&s) {
            return Err(ApiError::not_found(format!("No route for {}", req.path)));
        }
        let who = self.authenticate(req)?;
        let not_allowed = || Err(ApiError::method_not_allowed(m, &req.path));

        match (m, s.as_slice()) {
            // ----- encryption -----
            (
                "GET",
                ["v2", "encryption", "key-store", "status"] | ["v1", "encryption", "status"],
            ) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                let status = self.node.key_store_status();
                Ok(Response::ok(
                    serde_json::to_value(status).unwrap_or(Value::Null),
                ))
            }
            ("GET", ["v2", "encryption", "key-store"]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                let view = self.node.key_store();
                Ok(Response::ok(
                    serde_json::to_value(view).unwrap_or(Value::Null),
                ))
            }
            ("PUT", ["v2", "encryption", "key-store"]) => self.set_key_store(&who, req),
            ("POST", ["v2", "encryption", "external-kms", "keys", "create"]) => {
                self.create_key(&who, req)
            }
            ("POST", ["v2" | "v1", "encryption", "rotate-keys"]) => self.rotate(&who, req),

            // ----- cluster state (web dashboard; no cluster privilege exists, so these
            // read-only figures go with the encryption read privilege) -----
            ("GET", ["v1", "cluster", "slots"]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                Ok(Response::ok(json!(self.node.slots())))
            }
            ("GET", ["v1", "cluster", "slots", id]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                let slot = self
                    .node
                    .slots()
                    .into_iter()
                    .find(|s| *id == format!("1.{}", s.slot) || *id == s.slot.to_string());
                match slot {
                    Some(s) => Ok(Response::ok(json!(s))),
                    None => Err(ApiError::not_found(format!("No drive slot {id}"))),
                }
            }
            ("GET", ["v1", "atrest", "overview"]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                Ok(Response::ok(self.overview()))
            }
            ("GET", ["v1", "cluster", "protection", "status"]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                Ok(Response::ok(self.node.protection_status()))
            }
            ("GET", ["v1", "cluster", "protection", "restriper", "status"]) => {
                self.require(&who, req, privs::ENCRYPTION_READ)?;
                Ok(Response::ok(self.node.restriper_status()))
            }
            ("POST", ["v1", "atrest", "drives", slot, op]) => {
                // Drive operations change what holds the encrypted data: they need the
                // encryption write privilege.
                self.require(&who, req, privs::ENCRYPTION_WRITE)?;
                let slot: u32 = slot
                    .trim_start_matches("1.")
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("{slot:?} is not a slot number")))?;
                let body: Value = if req.body.is_empty() {
                    json!({})
                } else {
                    parse(&req.body)?
                };
                let image = body
                    .get("image")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let result = match *op {
                    "pull" => self.node.drive_pull(slot),
                    "insert" => self.node.drive_insert(slot, image),
                    _ => match image {
                        Some(image) => self.node.drive_replace(slot, image),
                        None => {
                            return Err(ApiError::bad_request(
                                "replace needs {\"image\": PATH}".to_string(),
                            ));
                        }
                    },
                };
                let outcome = match &result {
                    Ok(_) => "success".to_string(),
                    Err(e) => format!("failure: {e}"),
                };
                let name = self.principal_name(&who);
                self.audit(
                    &name,
                    req,
                    &format!("drive_{op} slot {slot}"),
                    Vec::new(),
                    outcome,
                );
                result.map(Response::ok).map_err(ApiError::from)
            }

            // ----- session and identity -----
            ("GET", ["v1", "session", "who-am-i"]) => self.who_am_i(&who),
            ("GET", ["v1", "session", "roles"]) => {
                let d = self.dir.lock();
                let names: Vec<&str> = d.roles_of(&who).iter().map(|r| r.name.as_str()).collect();
                Ok(Response::ok(json!(names)))
            }
            ("POST", ["v1", "identity", "find"]) => {
                self.require(&who, req, privs::IDENTITY_READ)?;
                let p: PartialIdentity = parse(&req.body)?;
                Ok(Response::ok(json!(self.dir.lock().find(&p)?)))
            }
            ("POST", ["v1", "identity", "expand"]) => {
                self.require(&who, req, privs::IDENTITY_READ)?;
                let e: Expand = parse(&req.body)?;
                let d = self.dir.lock();
                let id = d.find(&e.id)?;
                let groups = self.groups_of_identity(&d, &id);
                Ok(Response::ok(json!({
                    "id": id,
                    "equivalent_ids": [],
                    "group_ids": groups,
                })))
            }

            // ----- roles -----
            ("GET", ["v1", "auth", "privileges"]) => {
                self.require(&who, req, privs::ROLE_READ)?;
                let map: serde_json::Map<String, Value> = privs::ALL
                    .iter()
                    .map(|(p, d)| (p.to_string(), json!(d)))
                    .collect();
                Ok(Response::ok(Value::Object(map)))
            }
            ("GET", ["v1", "auth", "roles"]) => {
                self.require(&who, req, privs::ROLE_READ)?;
                let d = self.dir.lock();
                let map: serde_json::Map<String, Value> = d
                    .roles()
                    .iter()
                    .map(|r| (r.name.clone(), role_json(r)))
                    .collect();
                Ok(Response::ok(Value::Object(map)))
            }
            ("POST", ["v1", "auth", "roles"]) => {
                self.require(&who, req, privs::ROLE_WRITE)?;
                let c: RoleCreate = parse(&req.body)?;
                let mut d = self.dir.lock();
                d.create_role(&c.name, &c.description, c.privileges.into_iter().collect())?;
                let r = d
                    .role(&c.name)
                    .ok_or_else(|| ApiError::internal("role vanished"))?;
                Ok(Response {
                    etag: Some(Directory::role_etag(r)),
                    ..Response::ok(role_json(r))
                })
            }
            ("GET", ["v1", "auth", "roles", name]) => {
                self.require(&who, req, privs::ROLE_READ)?;
                let d = self.dir.lock();
                let r = d
                    .role(name)
                    .ok_or_else(|| ApiError::not_found(format!("No role {name}")))?;
                Ok(Response {
                    etag: Some(Directory::role_etag(r)),
                    ..Response::ok(role_json(r))
                })
            }
            ("PATCH" | "PUT", ["v1", "auth", "roles", name]) => {
                self.require(&who, req, privs::ROLE_WRITE)?;
                let p: RolePatch = parse(&req.body)?;
                let mut d = self.dir.lock();
                let set = p.privileges.map(|v| v.into_iter().collect::<BTreeSet<_>>());
                d.modify_role(name, req.if_match.as_deref(), p.description, set)?;
                let r = d
                    .role(name)
                    .ok_or_else(|| ApiError::internal("role vanished"))?;
                Ok(Response {
                    etag: Some(Directory::role_etag(r)),
                    ..Response::ok(role_json(r))
                })
            }
            ("DELETE", ["v1", "auth", "roles", name]) => {
                self.require(&who, req, privs::ROLE_WRITE)?;
                self.dir.lock().delete_role(name)?;
                Ok(Response::ok(Value::Null))
            }
            ("GET", ["v1", "auth", "roles", name, "members"]) => {
                self.require(&who, req, privs::ROLE_READ)?;
                let d = self.dir.lock();
                let r = d
                    .role(name)
                    .ok_or_else(|| ApiError::not_found(format!("No role {name}")))?;
                let members: serde_json::Map<String, Value> = r
                    .members
                    .iter()
                    .map(|m| (m.auth_id.clone(), json!(m)))
                    .collect();
                Ok(Response::ok(json!({
                    "members": members,
                    "paging": {"next": null, "prev": null},
                })))
            }
            ("POST", ["v1", "auth", "roles", name, "members"]) => {
                self.require(&who, req, privs::ROLE_WRITE)?;
                let p: PartialIdentity = parse(&req.body)?;
                let mut d = self.dir.lock();
                let id = d.find(&p)?;
                d.assign(name, id.clone())?;
                Ok(Response::ok(json!(id)))
            }
            ("DELETE", ["v1", "auth", "roles", name, "members", auth_id]) => {
                self.require(&who, req, privs::ROLE_WRITE)?;
                self.dir.lock().unassign(name, auth_id)?;
                Ok(Response::ok(Value::Null))
            }

            // ----- local users and groups -----
            ("GET", ["v1", "users"]) => {
                self.require(&who, req, privs::LOCAL_USER_READ)?;
                let d = self.dir.lock();
                let list: Vec<Value> = d.users().iter().map(|u| user_json(&d, u)).collect();
                Ok(Response::ok(json!(list)))
            }
            ("POST", ["v1", "users"]) => self.add_user(&who, req),
            ("GET", ["v1", "users", id]) => {
                let id = self.user_id(id)?;
                self.require_self_or(&who, req, id, privs::LOCAL_USER_READ)?;
                let d = self.dir.lock();
                let u = d.user(id).ok_or_else(|| no_user(id))?;
                Ok(Response::ok(user_json(&d, u)))
            }
            ("DELETE", ["v1", "users", id]) => {
                let id = self.user_id(id)?;
                self.require(&who, req, privs::LOCAL_USER_WRITE)?;
                self.dir.lock().delete_user(id)?;
                Ok(Response::ok(Value::Null))
            }
            ("POST", ["v1", "users", id, "setpassword"]) => {
                let id = self.user_id(id)?;
                self.require(&who, req, privs::LOCAL_USER_WRITE)?;
                let p: SetPassword = parse(&req.body)?;
                let pw = Zeroizing::new(p.new_password);
                let hash = hash_password(&pw)?;
                self.dir.lock().set_password_hash(id, hash)?;
                let d = self.dir.lock();
                let u = d.user(id).ok_or_else(|| no_user(id))?;
                Ok(Response::ok(user_json(&d, u)))
            }
            ("GET", ["v1", "users", id, "groups"]) => {
                let id = self.user_id(id)?;
                self.require_self_or(&who, req, id, privs::LOCAL_USER_READ)?;
                let d = self.dir.lock();
                let u = d.user(id).ok_or_else(|| no_user(id))?;
                let groups: Vec<Value> = d
                    .groups()
                    .iter()
                    .filter(|(g, _)| *g == u.primary_group)
                    .map(|(g, n)| group_json(&d, *g, n))
                    .collect();
                Ok(Response::ok(json!(groups)))
            }
            ("GET", ["v1", "groups"]) => {
                self.require(&who, req, privs::LOCAL_GROUP_READ)?;
                let d = self.dir.lock();
                let list: Vec<Value> = d
                    .groups()
                    .iter()
                    .map(|(g, n)| group_json(&d, *g, n))
                    .collect();
                Ok(Response::ok(json!(list)))
            }
            _ => not_allowed(),
        }
    }

    /// Whether any method is routed at this path (unknown paths are 404, known paths with
    /// the wrong method 405).
    fn is_known_path(&self, s: &[&str]) -> bool {
        matches!(
            s,
            ["v2", "encryption", "key-store"]
                | ["v2", "encryption", "key-store", "status"]
                | ["v1", "encryption", "status"]
                | ["v2", "encryption", "external-kms", "keys", "create"]
                | ["v2" | "v1", "encryption", "rotate-keys"]
                | ["v1", "session", "who-am-i" | "roles"]
                | ["v1", "identity", "find" | "expand"]
                | ["v1", "auth", "privileges"]
                | ["v1", "auth", "roles"]
                | ["v1", "auth", "roles", _]
                | ["v1", "auth", "roles", _, "members"]
                | ["v1", "auth", "roles", _, "members", _]
                | ["v1", "users"]
                | ["v1", "users", _]
                | ["v1", "users", _, "setpassword" | "groups"]
                | ["v1", "groups"]
                | ["v1", "cluster", "slots"]
                | ["v1", "cluster", "slots", _]
                | ["v1", "atrest", "overview"]
                | ["v1", "cluster", "protection", "restriper", "status"]
                | ["v1", "cluster", "protection", "status"]
                | ["v1", "atrest", "drives", _, "pull" | "insert" | "replace"]
        )
    }

    /// The body of `GET /v1/atrest/overview`: capacity, drive counts, the encryption state and
    /// every warning the web pages show in their banner.
    fn overview(&self) -> Value {
        let status = self.node.key_store_status();
        let slots = self.node.slots();
        let warnings = super::web::warnings(
            &status,
            &slots,
            self.node.warnings(),
            time::OffsetDateTime::now_utc(),
        );
        let mut body = serde_json::to_value(self.node.cluster_overview()).unwrap_or(json!({}));
        body["encryption"] = json!({
            "type": status.store_type.as_str(),
            "status": status.status,
        });
        body["warnings"] = json!(warnings);
        body
    }

    fn user_id(&self, text: &str) -> Result<u64> {
        text.parse()
            .map_err(|_| ApiError::not_found(format!("No local user with id {text}")))
    }

    fn require_self_or(&self, who: &Principal, req: &Request, id: u64, p: &str) -> Result<()> {
        if *who == Principal::User(id) {
            Ok(())
        } else {
            self.require(who, req, p)
        }
    }

    fn groups_of_identity(&self, d: &Directory, id: &Identity) -> Vec<Value> {
        let user = id
            .auth_id
            .parse::<u64>()
            .ok()
            .and_then(|n| d.user(n))
            .filter(|_| id.domain == "LOCAL");
        match user {
            Some(u) => d
                .groups()
                .iter()
                .filter(|(g, _)| *g == u.primary_group)
                .map(|(g, n)| {
                    json!({"domain": "LOCAL", "auth_id": g.to_string(), "uid": null, "gid": null,
                           "sid": d.local_sid(*g), "name": n})
                })
                .collect(),
            None => Vec::new(),
        }
    }

    fn login(&self, req: &Request) -> Result<Response> {
        let l: Login = parse(&req.body)?;
        let password = Zeroizing::new(l.password);
        let (id, hash) = self.dir.lock().login_candidate(&l.username);
        // The slow hash check runs without the directory's lock.
        let found = id.filter(|_| verify_login(&password, hash.as_deref()));
        if id.is_none() {
            verify_login(&password, None);
        }
        let Some(id) = found else {
            self.audit(
                &l.username,
                req,
                "login",
                Vec::new(),
                "failure: bad credentials".into(),
            );
            return Err(ApiError::login_failed());
        };
        let token = self.dir.lock().create_session(id)?;
        self.audit(&l.username, req, "login", Vec::new(), "success".into());
        Ok(Response::ok(json!({ "bearer_token": token })))
    }

    fn who_am_i(&self, who: &Principal) -> Result<Response> {
        let d = self.dir.lock();
        let privileges: Vec<String> = d.privileges_of(who).into_iter().collect();
        let body = match who {
            Principal::LocalRoot => json!({
                "id": "0",
                "name": "root",
                "primary_group": "0",
                "sid": null,
                "uid": "0",
                "home_directory": null,
                "can_change_password": false,
                "privileges": privileges,
            }),
            Principal::User(id) => {
                let u = d.user(*id).ok_or_else(|| no_user(*id))?;
                let mut v = user_json(&d, u);
                v["privileges"] = json!(privileges);
                v
            }
        };
        Ok(Response::ok(body))
    }

    fn add_user(&self, who: &Principal, req: &Request) -> Result<Response> {
        self.require(who, req, privs::LOCAL_USER_WRITE)?;
        let c: UserCreate = parse(&req.body)?;
        let password = c.password.map(Zeroizing::new);
        let hash = password.as_deref().map(|p| hash_password(p)).transpose()?;
        let group_text = loose_text(&c.primary_group)?;
        let mut d = self.dir.lock();
        let group = d
            .resolve_group(&group_text)
            .ok_or_else(|| ApiError::bad_request(format!("No local group {group_text}")))?;
        let uid_text = loose_text(&c.uid)?;
        let uid = match uid_text.trim() {
            "" => None,
            t => Some(
                t.parse::<u32>()
                    .map_err(|_| ApiError::bad_request(format!("Bad uid {t}")))?,
            ),
        };
        let id = d.add_user(&c.name, hash, group, uid, c.home_directory)?;
        let u = d.user(id).ok_or_else(|| no_user(id))?;
        Ok(Response::ok(user_json(&d, u)))
    }

    fn set_key_store(&self, who: &Principal, req: &Request) -> Result<Response> {
        self.require(who, req, privs::ENCRYPTION_WRITE)?;
        let put: KeyStorePut = parse(&req.body)?;
        let target = match (put.store_type.as_str(), put.kms_store) {
            ("Local", None) => SetKeyStore::Local,
            ("Local", Some(_)) => {
                return Err(ApiError::bad_request(
                    "A Local key store takes no kms_store",
                ));
            }
            ("KMS", Some(k)) => {
                let k = k.into_request()?;
                if k.key_id.as_deref().is_none_or(|id| id.trim().is_empty()) {
                    return Err(ApiError::bad_request("kms_store.key_id is required"));
                }
                SetKeyStore::Kms(k)
            }
            ("KMS", None) => return Err(ApiError::bad_request("A KMS key store needs kms_store")),
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "Unknown key store type {other:?}: expected \"Local\" or \"KMS\""
                )));
            }
        };
        let key_ids = match &target {
            SetKeyStore::Kms(k) => k.key_id.iter().cloned().collect(),
            SetKeyStore::Local => Vec::new(),
        };
        let kind = target.store_type().as_str();
        let name = self.principal_name(who);
        let result = self.node.set_key_store(target);
        let outcome = match &result {
            Ok(()) => format!("success: key store is now {kind}"),
            Err(e) => format!("failure: {e}"),
        };
        self.audit(&name, req, "set_key_store", key_ids, outcome);
        result?;
        Ok(Response::ok(Value::Null))
    }

    fn create_key(&self, who: &Principal, req: &Request) -> Result<Response> {
        self.require(who, req, privs::ENCRYPTION_WRITE)?;
        let c: KeyCreate = parse(&req.body)?;
        if c.key_name.trim().is_empty() {
            return Err(ApiError::bad_request("key_name must not be empty"));
        }
        let cfg = c.kms_config.map(KmsWire::into_request).transpose()?;
        let name = self.principal_name(who);
        let result = self.node.create_kms_key(&c.key_name, cfg);
        match &result {
            Ok(id) => self.audit(
                &name,
                req,
                "create_kms_key",
                vec![id.clone()],
                "success".into(),
            ),
            Err(e) => self.audit(
                &name,
                req,
                "create_kms_key",
                Vec::new(),
                format!("failure: {e}"),
            ),
        }
        Ok(Response::ok(json!({ "key_id": result? })))
    }

    fn rotate(&self, who: &Principal, req: &Request) -> Result<Response> {
        self.require(who, req, privs::ENCRYPTION_WRITE)?;
        let r: Rotate = parse(&req.body)?;
        let before = kms_key_id(&self.node.key_store());
        let name = self.principal_name(who);
        let result = self.node.rotate_keys(r.key_id.clone());
        let after = kms_key_id(&self.node.key_store());
        let key_ids: Vec<String> = [before, r.key_id, after].into_iter().flatten().collect();
        let outcome = match &result {
            Ok(()) => "success".to_string(),
            Err(e) => format!("failure: {e}"),
        };
        self.audit(&name, req, "rotate_keys", key_ids, outcome);
        result?;
        Ok(Response::ok(Value::Null))
    }
}

fn kms_key_id(view: &KeyStoreView) -> Option<String> {
    match view {
        KeyStoreView::Kms { key_id, .. } => Some(key_id.clone()),
        KeyStoreView::Local { .. } => None,
    }
}

fn no_user(id: u64) -> ApiError {
    ApiError::not_found(format!("No local user with id {id}"))
}

fn role_json(r: &super::identity::RoleRecord) -> Value {
    json!({ "name": r.name, "description": r.description, "privileges": r.privileges })
}

fn user_json(d: &Directory, u: &UserRecord) -> Value {
    json!({
        "id": u.id.to_string(),
        "name": u.name,
        "primary_group": u.primary_group.to_string(),
        "sid": d.local_sid(u.id),
        "uid": u.uid.map(|n| n.to_string()).unwrap_or_default(),
        "home_directory": u.home_directory,
        "can_change_password": true,
    })
}

fn group_json(d: &Directory, id: u64, name: &str) -> Value {
    json!({ "id": id.to_string(), "name": name, "sid": d.local_sid(id), "gid": "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::control::{ControlError, KeyStoreStatus, KeyStoreType};

    /// A node that answers reads and counts rotations.
    #[derive(Default)]
    struct Node {
        rotations: Mutex<u32>,
    }

    impl NodeControl for Node {
        fn key_store_status(&self) -> KeyStoreStatus {
            KeyStoreStatus {
                store_type: KeyStoreType::Local,
                status: "Encrypted".into(),
                ca_cert_expiry: None,
                client_cert_expiry: None,
                last_key_rotation_time: None,
                last_status_update_time: None,
            }
        }
        fn key_store(&self) -> KeyStoreView {
            KeyStoreView::Local {
                status: "Encrypted".into(),
            }
        }
        fn set_key_store(&self, _req: SetKeyStore) -> std::result::Result<(), ControlError> {
            Err(ControlError::Unavailable(
                "Cannot connect to KMS server.".into(),
            ))
        }
        fn create_kms_key(
            &self,
            _name: &str,
            _cfg: Option<KmsConfigRequest>,
        ) -> std::result::Result<String, ControlError> {
            Err(ControlError::Conflict("busy".into()))
        }
        fn rotate_keys(&self, _key_id: Option<String>) -> std::result::Result<(), ControlError> {
            *self.rotations.lock() += 1;
            Ok(())
        }
    }

    fn req(method: &str, path: &str, peer: &str, auth: Option<&str>, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            authorization: auth.map(String::from),
            if_match: None,
            peer: peer.parse().unwrap(),
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    fn app() -> (tempfile::TempDir, Arc<Node>, App) {
        let dir = tempfile::tempdir().unwrap();
        crate::api::init_state(dir.path(), Some("pw")).unwrap();
        let node = Arc::new(Node::default());
        let app = App::open(dir.path(), Duration::from_secs(60), node.clone()).unwrap();
        (dir, node, app)
    }

    #[test]
    fn backdoor_needs_loopback_and_privileged_port() {
        assert!(is_backdoor_peer(&"127.0.0.1:900".parse().unwrap()));
        assert!(is_backdoor_peer(&"[::1]:1023".parse().unwrap()));
        assert!(is_backdoor_peer(
            &"[::ffff:127.0.0.1]:1000".parse().unwrap()
        ));
        assert!(!is_backdoor_peer(&"127.0.0.1:899".parse().unwrap()));
        assert!(!is_backdoor_peer(&"127.0.0.1:1024".parse().unwrap()));
        assert!(!is_backdoor_peer(&"10.0.0.1:1000".parse().unwrap()));
    }

    #[test]
    fn paths_are_split_and_decoded() {
        assert_eq!(
            segments("/v1/auth/roles/").unwrap(),
            ["v1", "auth", "roles"]
        );
        assert_eq!(
            segments("/v1/auth/roles/a%20b").unwrap(),
            ["v1", "auth", "roles", "a b"]
        );
        assert!(segments("/v1/%zz").is_err());
        assert!(segments("/v1/%ff").is_err());
    }

    #[test]
    fn dashboard_routes_answer_with_node_defaults() {
        let (_d, _node, app) = app();
        let root = "127.0.0.1:950";
        let r = app.handle(&req("GET", "/v1/atrest/overview", root, None, ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.body["drives_total"], json!(0));
        assert_eq!(r.body["total_bytes"], json!(0));
        assert_eq!(
            r.body["encryption"],
            json!({"type": "Local", "status": "Encrypted"})
        );
        assert_eq!(r.body["warnings"], json!([]));
        let r = app.handle(&req("GET", "/v1/cluster/slots/", root, None, ""));
        assert_eq!((r.status, r.body), (200, json!([])));
        let r = app.handle(&req("GET", "/v1/cluster/slots/1.1", root, None, ""));
        assert_eq!(r.status, 404);
        // Without a login (not a backdoor port) the figures are refused.
        let r = app.handle(&req(
            "GET",
            "/v1/atrest/overview",
            "127.0.0.1:40000",
            None,
            "",
        ));
        assert_eq!(r.status, 401);
    }

    #[test]
    fn backdoor_header_and_errors() {
        let (_d, node, app) = app();
        // Backdoor peer, no header: local root may rotate.
        let r = app.handle(&req(
            "POST",
            "/v2/encryption/rotate-keys",
            "127.0.0.1:901",
            None,
            "",
        ));
        assert_eq!(r.status, 200);
        assert_eq!(*node.rotations.lock(), 1);
        // Same peer with a bad header: the header is checked, not ignored.
        let bad = Some("Bearer nope");
        let r = app.handle(&req(
            "POST",
            "/v2/encryption/rotate-keys",
            "127.0.0.1:901",
            bad,
            "",
        ));
        assert_eq!(r.status, 401);
        assert_eq!(*node.rotations.lock(), 1);
        // Node errors map to their statuses.
        let put = "{\"type\": \"KMS\", \"kms_store\": {\"client_cert\": \"c\", \
                   \"client_private_key\": \"SECRET\", \"server_ca_cert\": \"a\", \
                   \"hostname\": \"h\", \"port\": \"5696\", \"key_id\": \"k\"}}";
        let r = app.handle(&req(
            "PUT",
            "/v2/encryption/key-store",
            "127.0.0.1:901",
            None,
            put,
        ));
        assert_eq!(r.status, 503);
        assert_eq!(r.body["error_class"], "http_service_unavailable_error");
        let create = "{\"key_name\": \"n\"}";
        let path = "/v2/encryption/external-kms/keys/create";
        let r = app.handle(&req("POST", path, "127.0.0.1:901", None, create));
        assert_eq!(r.status, 409);
        // The private key never reaches the audit log.
        let audit = std::fs::read_to_string(_d.path().join("api/audit.log")).unwrap();
        assert!(audit.contains("set_key_store") && !audit.contains("SECRET"));
    }

    #[test]
    fn tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        crate::api::init_state(dir.path(), Some("pw")).unwrap();
        let app = App::open(
            dir.path(),
            Duration::from_secs(0),
            Arc::new(Node::default()),
        )
        .unwrap();
        let login = "{\"username\": \"admin\", \"password\": \"pw\"}";
        let r = app.handle(&req(
            "POST",
            "/v1/session/login",
            "127.0.0.1:40000",
            None,
            login,
        ));
        assert_eq!(r.status, 200);
        let header = format!("Bearer {}", r.body["bearer_token"].as_str().unwrap());
        let who = req(
            "GET",
            "/v1/session/who-am-i",
            "127.0.0.1:40000",
            Some(&header),
            "",
        );
        assert_eq!(app.handle(&who).status, 401);
        // Sessions are stored as digests only.
        let sessions = std::fs::read_to_string(dir.path().join("api/sessions.json")).unwrap();
        assert!(!sessions.contains(&header[7..]));
    }

    #[test]
    fn stale_if_match_is_refused() {
        let (_d, _n, app) = app();
        let root = "127.0.0.1:950";
        let body = "{\"name\": \"R\", \"privileges\": []}";
        assert_eq!(
            app.handle(&req("POST", "/v1/auth/roles/", root, None, body))
                .status,
            200
        );
        let got = app.handle(&req("GET", "/v1/auth/roles/r", root, None, ""));
        let tag = got.etag.clone().unwrap();
        let mut patch = req(
            "PATCH",
            "/v1/auth/roles/R",
            root,
            None,
            "{\"privileges\": [\"PRIVILEGE_ROLE_READ\"]}",
        );
        patch.if_match = Some(tag.clone());
        assert_eq!(app.handle(&patch).status, 200);
        let again = app.handle(&patch);
        assert_eq!(again.status, 412);
        assert_eq!(again.body["error_class"], "http_precondition_failed_error");
    }

    #[test]
    fn random_requests_never_panic_and_errors_are_json() {
        use rand::{Rng, SeedableRng};
        let (_d, _n, app) = app();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let paths = [
            "/v2/encryption/key-store",
            "/v2/encryption/key-store/status",
            "/v2/encryption/external-kms/keys/create",
            "/v2/encryption/rotate-keys",
            "/v1/auth/roles/",
            "/v1/auth/roles/Observers",
            "/v1/auth/roles/Observers/members",
            "/v1/auth/roles/x/members/1",
            "/v1/users/",
            "/v1/users/500/setpassword",
            "/v1/identity/find",
            "/v1/identity/expand",
            "/v1/%",
            "/v1/%e9",
        ];
        let seeds = [
            "{\"type\": \"KMS\", \"kms_store\": {\"port\": \"5696\"}}",
            "{\"key_name\": \"k\", \"kms_config\": null}",
            "{\"name\": \"R\", \"privileges\": [\"PRIVILEGE_ROLE_READ\"]}",
            "{\"id\": {\"auth_id\": \"99999999999999999999\"}}",
            "{\"uid\": -5}",
            "{\"name\": \"u\", \"uid\": \"x\", \"primary_group\": [1]}",
        ];
        for _ in 0..3000 {
            let method = ["GET", "PUT", "POST", "PATCH", "DELETE"][rng.random_range(0..5)];
            let path = paths[rng.random_range(0..paths.len())];
            let mut body = seeds[rng.random_range(0..seeds.len())].as_bytes().to_vec();
            for _ in 0..rng.random_range(0..4) {
                let i = rng.random_range(0..body.len());
                body[i] = rng.random();
            }
            let r = app.handle(&req(
                method,
                path,
                "127.0.0.1:999",
                None,
                &String::from_utf8_lossy(&body),
            ));
            assert!((200..600).contains(&r.status));
            if r.status >= 400 {
                assert!(
                    r.body["error_class"].is_string(),
                    "{method} {path}: {:?}",
                    r.body
                );
            }
        }
    }
}
