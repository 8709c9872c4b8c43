//! Who may call the API: local users (with Argon2id password hashes), local groups, roles
//! with their members, bearer-token sessions, and the identities (`api_identity`) that name
//! role members. All of it lives in `STATE/api/` as three JSON files (`users.json`,
//! `roles.json`, `sessions.json`), each rewritten whole and durably on every change.
//!
//! Never stored: passwords and bearer tokens themselves. A session file holds the SHA-256 of
//! its token; a user holds a salted Argon2id hash in PHC form.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::error::ApiError;
use super::privileges;
use super::store::{api_dir, ensure_private_dir, load_json, save_json};

/// Id of the `admin` user made at format time.
pub const ADMIN_USER_ID: u64 = 500;
/// Id of the local group `Administrators`.
pub const ADMINISTRATORS_GROUP_ID: u64 = 512;
/// Id of the local group `Users`, every new user's default primary group.
pub const USERS_GROUP_ID: u64 = 513;
/// Id of the local group `Guests`.
pub const GUESTS_GROUP_ID: u64 = 514;
/// First id handed to a user added later.
const FIRST_USER_ID: u64 = 1000;

/// auth_id of the WORLD identity `Everyone`.
pub const EVERYONE_AUTH_ID: u64 = 2 << 32;
/// auth_ids of POSIX users are this plus the uid.
const POSIX_USER_BASE: u64 = 3 << 32;
/// auth_ids of POSIX groups are this plus the gid.
const POSIX_GROUP_BASE: u64 = 4 << 32;
/// auth_ids of identities known only by SID are this plus 32 bits of the SID's hash.
const SID_BASE: u64 = 5 << 32;

/// An identity as the REST API spells it (`api_identity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// LOCAL, WORLD, POSIX_USER, POSIX_GROUP or ACTIVE_DIRECTORY.
    pub domain: String,
    /// The identity's number, as a decimal string.
    pub auth_id: String,
    /// POSIX uid, if any.
    pub uid: Option<i64>,
    /// POSIX gid, if any.
    pub gid: Option<i64>,
    /// Windows SID, if any.
    pub sid: Option<String>,
    /// Name, if any.
    pub name: Option<String>,
}

/// A partial identity as a client sends it (role member assignment, identity find).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialIdentity {
    /// Domain to search in.
    pub domain: Option<String>,
    /// Identity number as a string.
    pub auth_id: Option<String>,
    /// POSIX uid.
    pub uid: Option<i64>,
    /// POSIX gid.
    pub gid: Option<i64>,
    /// Windows SID.
    pub sid: Option<String>,
    /// Name.
    pub name: Option<String>,
}

/// A local user as stored. It implements no `Debug`: it holds a password hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id (also its auth_id).
    pub id: u64,
    /// Login name.
    pub name: String,
    /// Argon2id PHC string; `None` means the user cannot log in.
    pub password_hash: Option<String>,
    /// Id of the primary local group.
    pub primary_group: u64,
    /// POSIX uid, if set.
    pub uid: Option<u32>,
    /// Home directory, if set.
    pub home_directory: Option<String>,
}

/// A role as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Name (compared case-insensitively).
    pub name: String,
    /// Free text.
    pub description: String,
    /// The privileges granted.
    pub privileges: BTreeSet<String>,
    /// Whether this is one of the built-in roles (which cannot be deleted).
    pub builtin: bool,
    /// Members, each a resolved identity.
    pub members: Vec<Identity>,
}

#[derive(Clone, Serialize, Deserialize)]
struct UsersFile {
    machine_sid: String,
    next_id: u64,
    users: Vec<UserRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct RolesFile {
    roles: Vec<RoleRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct SessionRecord {
    token_sha256: String,
    user_id: u64,
    expires_unix: i64,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct SessionsFile {
    sessions: Vec<SessionRecord>,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Root on the node itself, through the local-root backdoor: every privilege.
    LocalRoot,
    /// A local user, by id.
    User(u64),
}

/// Local users, groups, roles and sessions, loaded from and saved to `STATE/api/`.
pub struct Directory {
    dir: PathBuf,
    users: UsersFile,
    roles: RolesFile,
    sessions: SessionsFile,
    session_ttl: Duration,
}

/// The three local groups: id and name.
const LOCAL_GROUPS: &[(u64, &str)] = &[
    (ADMINISTRATORS_GROUP_ID, "Administrators"),
    (USERS_GROUP_ID, "Users"),
    (GUESTS_GROUP_ID, "Guests"),
];

fn random_u32() -> io::Result<u32> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(u32::from_le_bytes(b))
}

/// A random password of 20 letters and digits, from the operating system's random source.
pub fn generate_password() -> io::Result<Zeroizing<String>> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = Zeroizing::new(String::with_capacity(20));
    while out.len() < 20 {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut b[..]).map_err(|e| io::Error::other(e.to_string()))?;
        // Rejection sampling keeps every character equally likely.
        let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
        for &x in b.iter().filter(|&&x| x < limit) {
            if out.len() < 20 {
                out.push(ALPHABET[x as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Hashes a password with Argon2id and a fresh 16-byte salt, in PHC string form.
pub fn hash_password(password: &str) -> io::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| io::Error::other(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| io::Error::other(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Checks a login password against the user's hash. With no hash (unknown user, or a user
/// without a password) it does the same work against a fixed hash and fails, so that timing
/// does not tell which users exist.
pub fn verify_login(password: &str, hash: Option<&str>) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                         q5sBC0HZpX/3mHXGk58s+Cw9EuhXAPs9yTxPFQ4l2ww";
    match hash {
        Some(h) => verify_password(password, h),
        None => {
            verify_password(password, DUMMY);
            false
        }
    }
}

/// Checks `password` against a PHC hash; a malformed hash never matches.
fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Directory {
    /// Loads the directory of `state_dir`, creating the built-in roles and (without a
    /// password) the `admin` user if the state was never initialized.
    pub fn open(state_dir: &Path, session_ttl: Duration) -> io::Result<Self> {
        let dir = api_dir(state_dir);
        ensure_private_dir(&dir)?;
        let users: Option<UsersFile> = load_json(&dir.join("users.json"))?;
        let roles: Option<RolesFile> = load_json(&dir.join("roles.json"))?;
        let sessions: Option<SessionsFile> = load_json(&dir.join("sessions.json"))?;

        let fresh = users.is_none();
        let users = match users {
            Some(u) => u,
            None => Self::initial_users(None)?,
        };
        let roles = roles.unwrap_or_else(|| Self::initial_roles(&users.machine_sid));
        let d = Directory {
            dir,
            users,
            roles,
            sessions: sessions.unwrap_or_default(),
            session_ttl,
        };
        if fresh {
            tracing::warn!("api state was not initialized; admin has no password until one is set");
            d.save_users()?;
            d.save_roles()?;
            d.save_sessions()?;
        }
        Ok(d)
    }

    /// Creates the state of a freshly formatted node: the built-in roles, and `admin` in
    /// Administrators with `password`. Fails if the state already exists.
    pub fn init(state_dir: &Path, password: &str) -> io::Result<()> {
        let dir = api_dir(state_dir);
        ensure_private_dir(&dir)?;
        if dir.join("users.json").exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already holds API users", dir.display()),
            ));
        }
        let users = Self::initial_users(Some(password))?;
        let roles = Self::initial_roles(&users.machine_sid);
        let d = Directory {
            dir,
            users,
            roles,
            sessions: SessionsFile::default(),
            session_ttl: Duration::from_secs(1),
        };
        d.save_roles()?;
        d.save_sessions()?;
        d.save_users()
    }

    fn initial_users(password: Option<&str>) -> io::Result<UsersFile> {
        let machine_sid = format!(
            "S-1-5-21-{}-{}-{}",
            random_u32()?,
            random_u32()?,
            random_u32()?
        );
        let password_hash = password.map(hash_password).transpose()?;
        let admin = UserRecord {
            id: ADMIN_USER_ID,
            name: "admin".to_string(),
            password_hash,
            primary_group: ADMINISTRATORS_GROUP_ID,
            uid: None,
            home_directory: None,
        };
        Ok(UsersFile {
            machine_sid,
            next_id: FIRST_USER_ID,
            users: vec![admin],
        })
    }

    fn initial_roles(machine_sid: &str) -> RolesFile {
        let roles = privileges::builtin_roles()
            .into_iter()
            .map(|(name, description, privs)| RoleRecord {
                name: name.to_string(),
                description: description.to_string(),
                privileges: privs.into_iter().map(String::from).collect(),
                builtin: true,
                members: Vec::new(),
            })
            .collect::<Vec<_>>();
        let mut file = RolesFile { roles };
        let admin = Identity {
            domain: "LOCAL".into(),
            auth_id: ADMIN_USER_ID.to_string(),
            uid: None,
            gid: None,
            sid: Some(format!("{machine_sid}-{ADMIN_USER_ID}")),
            name: Some("admin".into()),
        };
        if let Some(r) = file
            .roles
            .iter_mut()
            .find(|r| r.name == privileges::ADMINISTRATORS)
        {
            r.members.push(admin);
        }
        file
    }

    fn save_users(&self) -> io::Result<()> {
        save_json(&self.dir.join("users.json"), &self.users)
    }

    fn save_roles(&self) -> io::Result<()> {
        save_json(&self.dir.join("roles.json"), &self.roles)
    }

    fn save_sessions(&self) -> io::Result<()> {
        save_json(&self.dir.join("sessions.json"), &self.sessions)
    }

    // ----- users and groups -----

    /// Every local user.
    pub fn users(&self) -> &[UserRecord] {
        &self.users.users
    }

    /// The local user with this id.
    pub fn user(&self, id: u64) -> Option<&UserRecord> {
        self.users.users.iter().find(|u| u.id == id)
    }

    /// The local user with this exact name.
    pub fn user_by_name(&self, name: &str) -> Option<&UserRecord> {
        self.users.users.iter().find(|u| u.name == name)
    }

    /// The SID of a local user or group id.
    pub fn local_sid(&self, id: u64) -> String {
        format!("{}-{id}", self.users.machine_sid)
    }

    /// The local groups: id and name.
    pub fn groups(&self) -> &'static [(u64, &'static str)] {
        LOCAL_GROUPS
    }

    /// Resolves a group given as an id or a name (`"0"` and `""` mean `Users`).
    pub fn resolve_group(&self, text: &str) -> Option<u64> {
        if text.is_empty() || text == "0" {
            return Some(USERS_GROUP_ID);
        }
        LOCAL_GROUPS
            .iter()
            .find(|(id, name)| id.to_string() == text || name.eq_ignore_ascii_case(text))
            .map(|(id, _)| *id)
    }

    /// Adds a local user and returns its id.
    pub fn add_user(
        &mut self,
        name: &str,
        password_hash: Option<String>,
        primary_group: u64,
        uid: Option<u32>,
        home_directory: Option<String>,
    ) -> Result<u64, ApiError> {
        if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(
                "User name must be 1 to 256 printable characters",
            ));
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            return Err(ApiError::bad_request("User name must not be a number"));
        }
        if self.user_by_name(name).is_some() || LOCAL_GROUPS.iter().any(|(_, g)| *g == name) {
            return Err(ApiError::conflict(format!(
                "A user or group named {name} exists"
            )));
        }
        let id = self.users.next_id;
        let mut next = self.users.clone();
        next.next_id += 1;
        next.users.push(UserRecord {
            id,
            name: name.to_string(),
            password_hash,
            primary_group,
            uid,
            home_directory,
        });
        save_json(&self.dir.join("users.json"), &next)?;
        self.users = next;
        Ok(id)
    }

    /// Sets a user's password hash (made by [`hash_password`] outside the lock).
    pub fn set_password_hash(&mut self, id: u64, hash: String) -> Result<(), ApiError> {
        let mut next = self.users.clone();
        let user = next
            .users
            .iter_mut()
            .find(|u| u.id == id)
            .ok_or_else(|| ApiError::not_found(format!("No local user with id {id}")))?;
        user.password_hash = Some(hash);
        save_json(&self.dir.join("users.json"), &next)?;
        self.users = next;
        Ok(())
    }

    /// Deletes a user, its sessions and its role memberships. `admin` cannot be deleted.
    pub fn delete_user(&mut self, id: u64) -> Result<(), ApiError> {
        if id == ADMIN_USER_ID {
            return Err(ApiError::bad_request("The admin user cannot be deleted"));
        }
        if self.user(id).is_none() {
            return Err(ApiError::not_found(format!("No local user with id {id}")));
        }
        let mut users = self.users.clone();
        users.users.retain(|u| u.id != id);
        let mut roles = self.roles.clone();
        for r in &mut roles.roles {
            r.members
                .retain(|m| !(m.domain == "LOCAL" && m.auth_id == id.to_string()));
        }
        let mut sessions = self.sessions.clone();
        sessions.sessions.retain(|s| s.user_id != id);

        save_json(&self.dir.join("users.json"), &users)?;
        self.users = users;
        save_json(&self.dir.join("roles.json"), &roles)?;
        self.roles = roles;
        save_json(&self.dir.join("sessions.json"), &sessions)?;
        self.sessions = sessions;
        Ok(())
    }

    // ----- sessions -----

    /// The id and password hash of the user `name`, for [`verify_login`] to check outside
    /// the directory's lock (hashing is slow on purpose).
    pub fn login_candidate(&self, name: &str) -> (Option<u64>, Option<String>) {
        match self.user_by_name(name) {
            Some(u) => (Some(u.id), u.password_hash.clone()),
            None => (None, None),
        }
    }

    /// Starts a session for a user and returns its bearer token (shown once, never stored).
    pub fn create_session(&mut self, user_id: u64) -> Result<String, ApiError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut raw[..]).map_err(|e| ApiError::internal(e.to_string()))?;
        let token = format!("atrest-{}", hex::encode(&raw[..]));
        let now = now_unix();
        let ttl = i64::try_from(self.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);

        let mut next = self.sessions.clone();
        next.sessions.retain(|s| s.expires_unix > now);
        next.sessions.push(SessionRecord {
            token_sha256: token_digest(&token),
            user_id,
            expires_unix: now.saturating_add(ttl),
        });
        save_json(&self.dir.join("sessions.json"), &next)?;
        self.sessions = next;
        Ok(token)
    }

    /// The user a bearer token belongs to, if the session exists and has not expired.
    pub fn session_user(&self, token: &str) -> Option<u64> {
        let digest = token_digest(token);
        let now = now_unix();
        let found = self
            .sessions
            .sessions
            .iter()
            .find(|s| bool::from(s.token_sha256.as_bytes().ct_eq(digest.as_bytes())))?;
        (found.expires_unix > now && self.user(found.user_id).is_some()).then_some(found.user_id)
    }

    // ----- identities -----

    /// The identity of a local user.
    pub fn user_identity(&self, u: &UserRecord) -> Identity {
        Identity {
            domain: "LOCAL".into(),
            auth_id: u.id.to_string(),
            uid: u.uid.map(i64::from),
            gid: None,
            sid: Some(self.local_sid(u.id)),
            name: Some(u.name.clone()),
        }
    }

    fn group_identity(&self, id: u64, name: &str) -> Identity {
        Identity {
            domain: "LOCAL".into(),
            auth_id: id.to_string(),
            uid: None,
            gid: None,
            sid: Some(self.local_sid(id)),
            name: Some(name.to_string()),
        }
    }

    fn everyone() -> Identity {
        Identity {
            domain: "WORLD".into(),
            auth_id: EVERYONE_AUTH_ID.to_string(),
            uid: None,
            gid: None,
            sid: Some("S-1-1-0".into()),
            name: Some("Everyone".into()),
        }
    }

    fn posix_user(uid: i64) -> Result<Identity, ApiError> {
        let n = u32::try_from(uid).map_err(|_| ApiError::bad_request(format!("Bad uid {uid}")))?;
        Ok(Identity {
            domain: "POSIX_USER".into(),
            auth_id: (POSIX_USER_BASE + u64::from(n)).to_string(),
            uid: Some(uid),
            gid: None,
            sid: None,
            name: None,
        })
    }

    fn posix_group(gid: i64) -> Result<Identity, ApiError> {
        let n = u32::try_from(gid).map_err(|_| ApiError::bad_request(format!("Bad gid {gid}")))?;
        Ok(Identity {
            domain: "POSIX_GROUP".into(),
            auth_id: (POSIX_GROUP_BASE + u64::from(n)).to_string(),
            uid: None,
            gid: Some(gid),
            sid: None,
            name: None,
        })
    }

    fn sid_identity(sid: &str) -> Identity {
        let h = Sha256::digest(sid.as_bytes());
        let low = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        Identity {
            domain: "ACTIVE_DIRECTORY".into(),
            auth_id: (SID_BASE + low).to_string(),
            uid: None,
            gid: None,
            sid: Some(sid.to_string()),
            name: None,
        }
    }

    fn local_by_id(&self, id: u64) -> Option<Identity> {
        if let Some(u) = self.user(id) {
            return Some(self.user_identity(u));
        }
        LOCAL_GROUPS
            .iter()
            .find(|(g, _)| *g == id)
            .map(|(g, n)| self.group_identity(*g, n))
    }

    fn local_by_name(&self, name: &str) -> Option<Identity> {
        if let Some(u) = self.user_by_name(name) {
            return Some(self.user_identity(u));
        }
        LOCAL_GROUPS
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(g, n)| self.group_identity(*g, n))
    }

    /// Resolves a partial identity to a full one, or 404 if nothing matches.
    pub fn find(&self, p: &PartialIdentity) -> Result<Identity, ApiError> {
        let missing = || ApiError::not_found("No identity matches the request");
        let domain = p.domain.as_deref().map(str::to_ascii_uppercase);
        if let Some(a) = &p.auth_id {
            let id: u64 = a
                .parse()
                .map_err(|_| ApiError::bad_request(format!("auth_id {a:?} is not a number")))?;
            return match id {
                EVERYONE_AUTH_ID => Ok(Self::everyone()),
                _ if id < (1 << 32) => self.local_by_id(id).ok_or_else(missing),
                _ if (POSIX_USER_BASE..POSIX_GROUP_BASE).contains(&id) => {
                    Self::posix_user(i64::try_from(id - POSIX_USER_BASE).unwrap_or(-1))
                }
                _ if (POSIX_GROUP_BASE..SID_BASE).contains(&id) => {
                    Self::posix_group(i64::try_from(id - POSIX_GROUP_BASE).unwrap_or(-1))
                }
                _ => self.known_member(a).ok_or_else(missing),
            };
        }
        if let Some(uid) = p.uid {
            return Self::posix_user(uid);
        }
        if let Some(gid) = p.gid {
            return Self::posix_group(gid);
        }
        if let Some(sid) = &p.sid {
            if sid == "S-1-1-0" {
                return Ok(Self::everyone());
            }
            let local = sid
                .strip_prefix(&format!("{}-", self.users.machine_sid))
                .and_then(|rid| rid.parse::<u64>().ok())
                .and_then(|id| self.local_by_id(id));
            return Ok(local.unwrap_or_else(|| Self::sid_identity(sid)));
        }
        if let Some(name) = &p.name {
            return match domain.as_deref() {
                None | Some("LOCAL") => {
                    if domain.is_none() && name.eq_ignore_ascii_case("Everyone") {
                        return Ok(Self::everyone());
                    }
                    self.local_by_name(name).ok_or_else(missing)
                }
                Some("WORLD") if name.eq_ignore_ascii_case("Everyone") => Ok(Self::everyone()),
                _ => Err(missing()),
            };
        }
        Err(ApiError::bad_request(
            "The identity names no auth_id, uid, gid, sid or name",
        ))
    }

    fn known_member(&self, auth_id: &str) -> Option<Identity> {
        self.roles
            .roles
            .iter()
            .flat_map(|r| r.members.iter())
            .find(|m| m.auth_id == auth_id)
            .cloned()
    }

    /// The identities a principal acts as: itself, its primary group, Everyone and its POSIX
    /// uid. Used to decide role membership.
    fn principal_auth_ids(&self, user: &UserRecord) -> Vec<String> {
        let mut ids = vec![
            user.id.to_string(),
            user.primary_group.to_string(),
            EVERYONE_AUTH_ID.to_string(),
        ];
        if let Some(uid) = user.uid {
            ids.push((POSIX_USER_BASE + u64::from(uid)).to_string());
        }
        ids
    }

    // ----- roles -----

    /// Every role.
    pub fn roles(&self) -> &[RoleRecord] {
        &self.roles.roles
    }

    /// The role with this name (case-insensitive).
    pub fn role(&self, name: &str) -> Option<&RoleRecord> {
        self.roles
            .roles
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The roles a principal holds.
    pub fn roles_of(&self, who: &Principal) -> Vec<&RoleRecord> {
        match who {
            Principal::LocalRoot => self.role(privileges::ADMINISTRATORS).into_iter().collect(),
            Principal::User(id) => match self.user(*id) {
                Some(u) => {
                    let ids = self.principal_auth_ids(u);
                    self.roles
                        .roles
                        .iter()
                        .filter(|r| r.members.iter().any(|m| ids.contains(&m.auth_id)))
                        .collect()
                }
                None => Vec::new(),
            },
        }
    }

    /// Every privilege a principal holds.
    pub fn privileges_of(&self, who: &Principal) -> BTreeSet<String> {
        match who {
            Principal::LocalRoot => privileges::ALL.iter().map(|(p, _)| p.to_string()).collect(),
            Principal::User(_) => self
                .roles_of(who)
                .into_iter()
                .flat_map(|r| r.privileges.iter().cloned())
                .collect(),
        }
    }

    /// The ETag of a role: a digest of its name, description and privileges.
    pub fn role_etag(role: &RoleRecord) -> String {
        let v = serde_json::json!([role.name, role.description, role.privileges]);
        let h = Sha256::digest(v.to_string().as_bytes());
        format!("\"{}\"", hex::encode(&h[..8]))
    }

    fn check_privileges(privs: &BTreeSet<String>) -> Result<(), ApiError> {
        match privs.iter().find(|p| !privileges::is_known(p)) {
            Some(p) => Err(ApiError::bad_request(format!("Unknown privilege {p}"))),
            None => Ok(()),
        }
    }

    /// Creates a custom role.
    pub fn create_role(
        &mut self,
        name: &str,
        description: &str,
        privs: BTreeSet<String>,
    ) -> Result<(), ApiError> {
        if name.is_empty() || name.len() > 256 || name.contains('/') {
            return Err(ApiError::bad_request(
                "Role name must be 1 to 256 characters, no '/'",
            ));
        }
        if self.role(name).is_some() {
            return Err(ApiError::conflict(format!("Role {name} already exists")));
        }
        Self::check_privileges(&privs)?;
        let mut next = self.roles.clone();
        next.roles.push(RoleRecord {
            name: name.to_string(),
            description: description.to_string(),
            privileges: privs,
            builtin: false,
            members: Vec::new(),
        });
        save_json(&self.dir.join("roles.json"), &next)?;
        self.roles = next;
        Ok(())
    }

    fn role_index(&self, name: &str) -> Result<usize, ApiError> {
        self.roles
            .roles
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| ApiError::not_found(format!("No role named {name}")))
    }

    /// Changes a role's description and/or privileges. `if_match`, when given, must equal the
    /// role's current ETag (412 otherwise). The Administrators role cannot lose privileges.
    pub fn modify_role(
        &mut self,
        name: &str,
        if_match: Option<&str>,
        description: Option<String>,
        privs: Option<BTreeSet<String>>,
    ) -> Result<(), ApiError> {
        let i = self.role_index(name)?;
        let current = &self.roles.roles[i];
        let stale = if_match.is_some_and(|tag| tag != "*" && tag != Self::role_etag(current));
        if stale {
            return Err(ApiError::precondition_failed(format!(
                "Role {} changed since it was read",
                current.name
            )));
        }
        if let Some(p) = &privs {
            Self::check_privileges(p)?;
            if current.name == privileges::ADMINISTRATORS && *p != current.privileges {
                return Err(ApiError::conflict(
                    "The privileges of Administrators cannot change",
                ));
            }
        }
        let mut next = self.roles.clone();
        if let Some(d) = description {
            next.roles[i].description = d;
        }
        if let Some(p) = privs {
            next.roles[i].privileges = p;
        }
        save_json(&self.dir.join("roles.json"), &next)?;
        self.roles = next;
        Ok(())
    }

    /// Deletes a custom role.
    pub fn delete_role(&mut self, name: &str) -> Result<(), ApiError> {
        let i = self.role_index(name)?;
        if self.roles.roles[i].builtin {
            return Err(ApiError::conflict(format!(
                "Built-in role {} cannot be deleted",
                self.roles.roles[i].name
            )));
        }
        let mut next = self.roles.clone();
        next.roles.remove(i);
        save_json(&self.dir.join("roles.json"), &next)?;
        self.roles = next;
        Ok(())
    }

    /// Adds a member to a role; adding an existing member changes nothing.
    pub fn assign(&mut self, role: &str, member: Identity) -> Result<(), ApiError> {
        let i = self.role_index(role)?;
        if self.roles.roles[i]
            .members
            .iter()
            .any(|m| m.auth_id == member.auth_id)
        {
            return Ok(());
        }
        let mut next = self.roles.clone();
        next.roles[i].members.push(member);
        save_json(&self.dir.join("roles.json"), &next)?;
        self.roles = next;
        Ok(())
    }

    /// Removes the member `auth_id` from a role (404 if it is not a member).
    pub fn unassign(&mut self, role: &str, auth_id: &str) -> Result<(), ApiError> {
        let i = self.role_index(role)?;
        let r = &self.roles.roles[i];
        if !r.members.iter().any(|m| m.auth_id == auth_id) {
            return Err(ApiError::not_found(format!(
                "{auth_id} is not a member of {}",
                r.name
            )));
        }
        let mut next = self.roles.clone();
        next.roles[i].members.retain(|m| m.auth_id != auth_id);
        save_json(&self.dir.join("roles.json"), &next)?;
        self.roles = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_and_hashes() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a.as_str(), b.as_str());
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("pw", &h));
        assert!(!verify_password("pw2", &h));
        assert!(!verify_password("pw", "not a hash"));
    }

    #[test]
    fn init_refuses_existing_state_and_stores_no_password() {
        let dir = tempfile::tempdir().unwrap();
        Directory::init(dir.path(), "s3cret-pass").unwrap();
        assert!(Directory::init(dir.path(), "x").is_err());
        let users = std::fs::read_to_string(dir.path().join("api/users.json")).unwrap();
        assert!(!users.contains("s3cret-pass"));
        let d = Directory::open(dir.path(), Duration::from_secs(60)).unwrap();
        let (id, hash) = d.login_candidate("admin");
        assert_eq!(id, Some(ADMIN_USER_ID));
        assert!(verify_login("s3cret-pass", hash.as_deref()));
        assert!(!verify_login("nope", hash.as_deref()));
        let (id, hash) = d.login_candidate("nobody");
        assert_eq!((id, hash.as_deref()), (None, None));
        assert!(!verify_login("s3cret-pass", None));
        let admin = Principal::User(ADMIN_USER_ID);
        assert_eq!(d.privileges_of(&admin).len(), privileges::ALL.len());
    }

    #[test]
    fn find_resolves_trustees() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open(dir.path(), Duration::from_secs(60)).unwrap();
        let by = |p: PartialIdentity| d.find(&p);
        let name = |n: &str| PartialIdentity {
            name: Some(n.into()),
            ..Default::default()
        };
        assert_eq!(by(name("admin")).unwrap().auth_id, "500");
        assert_eq!(
            by(name("Everyone")).unwrap().auth_id,
            EVERYONE_AUTH_ID.to_string()
        );
        assert_eq!(by(name("users")).unwrap().auth_id, "513");
        assert!(by(name("ghost")).is_err());
        let uid = PartialIdentity {
            uid: Some(7),
            ..Default::default()
        };
        assert_eq!(by(uid).unwrap().domain, "POSIX_USER");
        let bad = PartialIdentity {
            auth_id: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(by(bad).unwrap_err().status, 400);
        assert_eq!(by(PartialIdentity::default()).unwrap_err().status, 400);
    }
}
