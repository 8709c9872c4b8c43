//! The real `qq` client (PyPI qumulo-api) against the API server, for every command of
//! `shared/QQ-API.md`.

#[path = "qq/common.rs"]
mod common;

use common::*;

#[test]
fn smoke() {
    let s = TestServer::start();
    for args in [
        vec!["who_am_i"],
        vec!["encryption_get_status"],
        vec!["encryption_get_key_store"],
        vec!["auth_list_roles"],
        vec!["auth_list_users"],
        vec!["auth_list_privileges"],
        vec!["rotate_encryption_keys"],
        vec!["encryption_get_status"],
    ] {
        let o = s.qq(&args);
        println!("== {args:?} rc={:?}\n{}\n-- stderr\n{}", o.status.code(), out(&o), err(&o));
    }
}
