//! The privileges the API enforces and the built-in roles that group them.
//!
//! `GET /v1/auth/privileges/` lists exactly [`ALL`]; a route that needs a privilege names one
//! of these constants. New routes add their privileges here.

/// Read the encryption status and key store configuration.
pub const ENCRYPTION_READ: &str = "PRIVILEGE_ENCRYPTION_READ";
/// Change the key store and rotate keys.
pub const ENCRYPTION_WRITE: &str = "PRIVILEGE_ENCRYPTION_WRITE";
/// Read roles, their members and the privilege list.
pub const ROLE_READ: &str = "PRIVILEGE_ROLE_READ";
/// Create, modify and delete roles and their members.
pub const ROLE_WRITE: &str = "PRIVILEGE_ROLE_WRITE";
/// Read local users.
pub const LOCAL_USER_READ: &str = "PRIVILEGE_LOCAL_USER_READ";
/// Add and delete local users and set their passwords.
pub const LOCAL_USER_WRITE: &str = "PRIVILEGE_LOCAL_USER_WRITE";
/// Read local groups.
pub const LOCAL_GROUP_READ: &str = "PRIVILEGE_LOCAL_GROUP_READ";
/// Find and expand identities.
pub const IDENTITY_READ: &str = "PRIVILEGE_IDENTITY_READ";

/// Every privilege with its description, in the order they are listed.
pub const ALL: &[(&str, &str)] = &[
    (
        ENCRYPTION_READ,
        "Read the status and configuration of encryption at rest",
    ),
    (
        ENCRYPTION_WRITE,
        "Change the encryption key store and rotate the master key",
    ),
    (
        ROLE_READ,
        "Read roles, their members and the privileges they grant",
    ),
    (
        ROLE_WRITE,
        "Create, modify and delete roles and assign their members",
    ),
    (LOCAL_USER_READ, "Read local users"),
    (
        LOCAL_USER_WRITE,
        "Add and delete local users and set their passwords",
    ),
    (LOCAL_GROUP_READ, "Read local groups"),
    (IDENTITY_READ, "Find and expand identities"),
];

/// Whether `name` is a privilege this server knows.
pub fn is_known(name: &str) -> bool {
    ALL.iter().any(|(p, _)| *p == name)
}

/// The privileges whose name ends in `_READ`.
pub fn read_only() -> Vec<&'static str> {
    ALL.iter()
        .map(|(p, _)| *p)
        .filter(|p| p.ends_with("_READ"))
        .collect()
}

/// Name of the built-in role holding every privilege.
pub const ADMINISTRATORS: &str = "Administrators";
/// Name of the built-in role for data administrators.
pub const DATA_ADMINISTRATORS: &str = "Data-Administrators";
/// Name of the built-in read-only role.
pub const OBSERVERS: &str = "Observers";

/// The built-in roles: name, description, privileges.
pub fn builtin_roles() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            ADMINISTRATORS,
            "Complete access to the node's configuration, users, roles and encryption",
            ALL.iter().map(|(p, _)| *p).collect(),
        ),
        (
            DATA_ADMINISTRATORS,
            "Read access to the node's configuration, users and encryption status",
            read_only(),
        ),
        (
            OBSERVERS,
            "Read-only access to the node's configuration and status",
            read_only(),
        ),
    ]
}
