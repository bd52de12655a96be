//! Tests of the snapshot file: round trip, every kind of damage refused whole, crashed saves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::store::test_support::entry;

fn sorted(store: &MemoryStore) -> Vec<StoredEntry> {
    let mut entries: Vec<_> = store
        .live_entries(0)
        .iter()
        .map(|e| (**e).clone())
        .collect();
    entries.sort_by_key(|e| e.meta.id);
    entries
}

/// A store with varied entries (with and without question, empty body, empty vector) saved to
/// `dir/snap`; returns the store, the path and the file's bytes.
fn saved(dir: &Path) -> (MemoryStore, PathBuf, Vec<u8>) {
    let store = MemoryStore::new();
    for id in 0..6 {
        let mut e = entry(id, &"body ".repeat(id as usize), 1_000 + id);
        if id % 2 == 0 {
            e.meta.question = None;
        }
        if id == 3 {
            e.meta.vector.clear();
            e.meta.category = "ünïcode".to_owned();
        }
        store.put(e);
    }
    let path = dir.join("snap");
    store.save_snapshot_at(&path, 0).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (store, path, bytes)
}

fn assert_corrupt(path: &Path, what: &str) -> String {
    match MemoryStore::load_snapshot(path, 0) {
        Err(Error::CorruptSnapshot { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        Err(other) => panic!("{what}: expected corrupt, got {other:?}"),
        Ok(store) => panic!("{what}: loaded {} entries from a bad file", store.len()),
    }
}

#[test]
fn round_trip_keeps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, bytes) = saved(dir.path());
    let stats = store.save_snapshot_at(&path, 0).unwrap();
    assert_eq!(
        stats,
        SnapshotStats {
            entries: 6,
            bytes: bytes.len() as u64
        }
    );
    let loaded = MemoryStore::load_snapshot(&path, 0).unwrap();
    assert_eq!(sorted(&loaded), sorted(&store));
    assert_eq!(loaded.size_bytes(), store.size_bytes());
}

#[test]
fn empty_store_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let stats = MemoryStore::new().save_snapshot(&path).unwrap();
    assert_eq!(stats.entries, 0);
    assert!(MemoryStore::load_snapshot(&path, 0).unwrap().is_empty());
}

#[test]
fn expired_entries_are_skipped_on_save_and_dropped_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path, _) = saved(dir.path());
    // Expiries are 1_000..=1_005; at 1_003 entries 0..=3 are expired.
    let loaded = MemoryStore::load_snapshot(&path, 1_003).unwrap();
    let ids: Vec<_> = sorted(&loaded).iter().map(|e| e.meta.id).collect();
    assert_eq!(ids, vec![4, 5]);

    let stats = loaded.save_snapshot_at(&path, 1_004).unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(MemoryStore::load_snapshot(&path, 0).unwrap().len(), 1);
}

#[test]
fn missing_file_is_distinct_from_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    match MemoryStore::load_snapshot(&path, 0) {
        Err(Error::SnapshotMissing { path: p }) => assert_eq!(p, path),
        other => panic!("expected missing, got {other:?}"),
    }
}

#[test]
fn every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path, bytes) = saved(dir.path());
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert_corrupt(&path, &format!("truncated to {len}"));
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path, bytes) = saved(dir.path());
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert_corrupt(&path, &format!("flipped byte {at}"));
    }
}

#[test]
fn wrong_magic_version_and_trailing_bytes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path, bytes) = saved(dir.path());

    let mut foreign = bytes.clone();
    foreign[..8].copy_from_slice(b"NOTCACHE");
    std::fs::write(&path, &foreign).unwrap();
    assert!(assert_corrupt(&path, "magic").contains("wrong magic"));

    // A newer version with a valid checksum: refused for its version, not its digest.
    let mut newer = bytes[..bytes.len() - DIGEST_BYTES].to_vec();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    let digest = Sha256::digest(&newer);
    newer.extend_from_slice(&digest);
    std::fs::write(&path, &newer).unwrap();
    assert!(assert_corrupt(&path, "version").contains("unsupported version 2"));

    // Extra bytes inside a valid checksum: the count says fewer entries than the file holds.
    let mut longer = bytes[..bytes.len() - DIGEST_BYTES].to_vec();
    longer.extend_from_slice(b"junk");
    let digest = Sha256::digest(&longer);
    longer.extend_from_slice(&digest);
    std::fs::write(&path, &longer).unwrap();
    assert!(assert_corrupt(&path, "trailing").contains("4 bytes after the last entry"));
}

#[test]
fn huge_length_with_valid_checksum_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&VERSION.to_le_bytes());
    data.extend_from_slice(&u64::MAX.to_le_bytes());
    data.extend_from_slice(&[0; 36]);
    data.extend_from_slice(&u32::MAX.to_le_bytes());
    let digest = Sha256::digest(&data);
    data.extend_from_slice(&digest);
    std::fs::write(&path, &data).unwrap();
    assert!(assert_corrupt(&path, "huge").starts_with("entry 0: needs"));
}

#[test]
fn crashed_save_leaves_old_snapshot_and_its_temp_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, _) = saved(dir.path());
    // A save that died mid-write leaves a partial temporary file and the old snapshot.
    let temp = temp_path(&path);
    std::fs::write(&temp, b"CACHETSN partial").unwrap();
    let loaded = MemoryStore::load_snapshot(&path, 0).unwrap();
    assert_eq!(sorted(&loaded), sorted(&store));
    assert!(!temp.exists(), "the crashed save's temp file is cleaned");

    // A leftover temp file does not disturb the next save either.
    std::fs::write(&temp, b"leftover").unwrap();
    store.save_snapshot_at(&path, 0).unwrap();
    assert!(!temp.exists());
    assert_eq!(
        sorted(&MemoryStore::load_snapshot(&path, 0).unwrap()),
        sorted(&store)
    );
}

#[test]
fn save_failure_is_an_io_error_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("snap");
    match MemoryStore::new().save_snapshot(&path) {
        Err(Error::SnapshotIo {
            action: "create", ..
        }) => {}
        other => panic!("expected create error, got {other:?}"),
    }
}

#[test]
fn concurrent_puts_while_saving_give_a_valid_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap");
    let store = Arc::new(MemoryStore::new());
    for id in 0..1_000 {
        store.put(entry(id, "initial", u64::MAX));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut id = 1_000;
            // Bounded, so a slow machine cannot grow the store without end.
            while !stop.load(Ordering::Relaxed) && id < 20_000 {
                store.put(entry(id, "added", u64::MAX));
                store.put(entry(id % 1_000, "replaced", u64::MAX));
                id += 1;
            }
            id
        })
    };
    for _ in 0..10 {
        let stats = store.save_snapshot_at(&path, 0).unwrap();
        let loaded = MemoryStore::load_snapshot(&path, 0).unwrap();
        assert_eq!(loaded.len(), stats.entries);
        assert!(
            stats.entries >= 1_000,
            "entries present before the save are all there"
        );
        for e in loaded.live_entries(0) {
            assert!(["initial", "added", "replaced"].contains(&&*String::from_utf8_lossy(&e.body)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let last_id = writer.join().unwrap();
    store.save_snapshot_at(&path, 0).unwrap();
    assert_eq!(
        MemoryStore::load_snapshot(&path, 0).unwrap().len(),
        last_id as usize
    );
}
