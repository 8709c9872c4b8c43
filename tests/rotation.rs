//! Offline master key rotation (DESIGN.md section 3): the data area is untouched, no header
//! slot opens with the old key afterwards, and a cut after any step of the protocol is rolled
//! forward at the next start.

mod common;

use std::path::Path;

use atrest::crypto::{MasterKey, unwrap_data_key};
use atrest::drive::{FileBackend, SlotState, read_slots};
use common::*;

/// For every slot of every drive: (opens with `key`, key id named in the slot).
fn slot_report(drives: &[std::path::PathBuf], key: &[u8]) -> Vec<(bool, String)> {
    let master = MasterKey::from_bytes(key).unwrap();
    let mut out = Vec::new();
    for d in drives {
        let be = FileBackend::open_read_only(d).unwrap();
        for s in read_slots(d, &be).unwrap() {
            match s {
                SlotState::Valid(h) => {
                    let opens = unwrap_data_key(&master, &h.associated_data(), &h.wrapped).is_ok();
                    out.push((opens, h.key_id.clone()));
                }
                SlotState::Invalid(e) => {
                    panic!("{}: invalid slot after rotation: {e}", d.display())
                }
            }
        }
    }
    out
}

fn key_id_of(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    name.trim_start_matches("master-")
        .trim_end_matches(".key")
        .to_string()
}

#[test]
fn rotation_rewraps_headers_only_and_kills_the_old_key() {
    let v = TestVolume::format(3, "48M", 2);
    let old_file = v.key_file();
    let old = std::fs::read(&old_file).unwrap();
    let data_before = v.data_area_hashes();

    let out = ok(&atrest(&["rotate-keys", "--state-dir", &v.state_str()]));
    assert!(out.contains("Key rotation complete"), "{out}");

    assert!(!old_file.exists(), "old key file still present");
    let new_file = v.key_file();
    let new = std::fs::read(&new_file).unwrap();
    assert_ne!(old, new);
    assert_eq!(
        v.data_area_hashes(),
        data_before,
        "rotation touched the data area"
    );

    let with_old = slot_report(&v.drives, &old);
    assert!(
        with_old.iter().all(|(opens, _)| !opens),
        "a slot still opens with the old key"
    );
    let with_new = slot_report(&v.drives, &new);
    assert!(
        with_new
            .iter()
            .all(|(opens, id)| *opens && *id == key_id_of(&new_file))
    );

    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v.state().join("volume.json")).unwrap()).unwrap();
    assert_eq!(cfg["key"]["key_id"], key_id_of(&new_file));
    assert!(
        cfg["last_key_rotation_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    ok(&v.fsck());
}

#[test]
fn rotation_cut_at_every_step_rolls_forward() {
    let points = [
        "after-new-key",
        "after-journal",
        "drive0-slot0",
        "drive0-slot1",
        "drive1-slot0",
        "drive1-slot1",
        "drive2-slot0",
        "after-rewrap",
        "after-config",
        "after-destroy",
    ];
    for point in points {
        let v = TestVolume::format(3, "32M", 2);
        let old_file = v.key_file();
        let data_before = v.data_area_hashes();

        let out = atrest_env(
            &["rotate-keys", "--state-dir", &v.state_str()],
            &[("ATREST_TEST_CRASH_POINT", point)],
        );
        assert_eq!(out.status.code(), Some(99), "{point}: {:?}", out);

        // The next start finishes (or, before the journal, abandons) the rotation.
        ok(&atrest(&["status", "--state-dir", &v.state_str()]));
        let key_file = v.key_file();
        if point == "after-new-key" {
            assert_eq!(
                key_file, old_file,
                "{point}: rotation before its journal must not count"
            );
        } else {
            assert_ne!(
                key_file, old_file,
                "{point}: journaled rotation not rolled forward"
            );
        }
        let key = std::fs::read(&key_file).unwrap();
        assert!(
            slot_report(&v.drives, &key)
                .iter()
                .all(|(opens, id)| *opens && *id == key_id_of(&key_file)),
            "{point}: some slot is not wrapped under the surviving key"
        );
        assert!(
            !v.state().join("rotation.journal").exists(),
            "{point}: journal left behind"
        );
        assert_eq!(
            v.data_area_hashes(),
            data_before,
            "{point}: data area changed"
        );
        ok(&v.fsck());
    }
}
