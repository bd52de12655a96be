//! The embedded store's snapshot file: save atomically, load all-or-nothing.
//!
//! Layout (version 1), all integers little-endian:
//!
//! ```text
//! magic    8 bytes  "CACHETSN"
//! version  u32      1
//! count    u64      number of entries
//! entries  count ×  id u64, partition u64, created_at_ms u64, expires_at_ms u64, cost f32,
//!                   category str, tenant str, question (u8 0 | u8 1 + str),
//!                   vector (u32 n + n × f32), body (u64 len + bytes)
//!                   where str = u32 len + UTF-8 bytes
//! sha256   32 bytes of everything before it
//! ```
//!
//! Saving writes `<name>.tmp` beside the target, fsyncs it, renames it over the target and
//! fsyncs the directory, so a crash leaves either the old or the new snapshot, never a mix.
//! Loading reads and checks the whole file before building the store.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::codec::{vector_from_le_bytes, vector_to_le_bytes};
use super::{EntryMeta, MemoryStore, StoredEntry};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CACHETSN";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8;
const DIGEST_BYTES: usize = 32;

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Live entries written (expired ones are skipped).
    pub entries: usize,
    /// Size of the snapshot file.
    pub bytes: u64,
}

impl MemoryStore {
    /// Writes every entry live now (by the system clock) to `path`, replacing it atomically.
    ///
    /// Synchronous file I/O: call it from a blocking thread. Puts may run concurrently: each
    /// shard is copied under its own read lock, so the snapshot holds, for every shard, its
    /// state at some instant during the save.
    pub fn save_snapshot(&self, path: &Path) -> Result<SnapshotStats> {
        self.save_snapshot_at(path, unix_now_ms())
    }

    /// [`Self::save_snapshot`] with the clock given: entries expired at `now_ms` are skipped.
    pub fn save_snapshot_at(&self, path: &Path, now_ms: u64) -> Result<SnapshotStats> {
        let _saving = self.saving.lock();
        let entries = self.live_entries(now_ms);
        let temp = temp_path(path);
        let io = |action| {
            move |source| Error::SnapshotIo {
                action,
                path: path.to_owned(),
                source,
            }
        };

        let file = File::create(&temp).map_err(io("create"))?;
        let mut out = HashingWriter {
            inner: BufWriter::new(file),
            digest: Sha256::new(),
            bytes: 0,
        };
        write_all(&mut out, &entries).map_err(io("write"))?;
        let digest = out.digest.finalize();
        let HashingWriter { inner, bytes, .. } = out;
        let mut file = inner
            .into_inner()
            .map_err(|error| io("write")(error.into_error()))?;
        file.write_all(&digest).map_err(io("write"))?;
        file.sync_all().map_err(io("sync"))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(io("rename"))?;
        sync_parent_dir(path).map_err(io("sync the directory of"))?;
        Ok(SnapshotStats {
            entries: entries.len(),
            bytes: bytes + DIGEST_BYTES as u64,
        })
    }

    /// Builds a store from the snapshot at `path`, without the entries expired at `now_ms`.
    ///
    /// An absent file is [`Error::SnapshotMissing`]; a truncated, damaged, foreign or
    /// newer-version file is [`Error::CorruptSnapshot`], and then nothing is loaded. A temporary
    /// file left by a save that crashed is removed (it was never renamed, so never valid).
    pub fn load_snapshot(path: &Path, now_ms: u64) -> Result<Self> {
        let temp = temp_path(path);
        if let Err(error) = std::fs::remove_file(&temp)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %temp.display(), %error, "cannot remove a crashed save's temporary file");
        }
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::SnapshotMissing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(Error::SnapshotIo {
                    action: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| Error::CorruptSnapshot {
            path: path.to_owned(),
            reason,
        };
        let entries = parse(&data).map_err(corrupt)?;
        let store = MemoryStore::new();
        let mut expired = 0usize;
        for entry in entries {
            if entry.is_expired(now_ms) {
                expired += 1;
            } else {
                store.put(entry);
            }
        }
        tracing::debug!(path = %path.display(), loaded = store.len(), expired, "snapshot loaded");
        Ok(store)
    }
}

fn unix_now_ms() -> u64 {
    // A clock before 1970 only makes every entry look live, which a load then corrects.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `<file name>.tmp` in the target's directory, so the rename stays within one file system.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Makes the rename durable: without this a power loss may forget the new directory entry.
fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Counts and hashes what passes through, so the digest needs no second pass over the file.
struct HashingWriter<W> {
    inner: W,
    digest: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.digest.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_all(out: &mut impl Write, entries: &[std::sync::Arc<StoredEntry>]) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&(entries.len() as u64).to_le_bytes())?;
    for entry in entries {
        let meta = &entry.meta;
        for number in [
            meta.id,
            meta.partition,
            meta.created_at_ms,
            meta.expires_at_ms,
        ] {
            out.write_all(&number.to_le_bytes())?;
        }
        out.write_all(&meta.cost.to_le_bytes())?;
        write_str(out, &meta.category)?;
        write_str(out, &meta.tenant)?;
        match &meta.question {
            None => out.write_all(&[0])?,
            Some(question) => {
                out.write_all(&[1])?;
                write_str(out, question)?;
            }
        }
        out.write_all(&len_u32(meta.vector.len())?.to_le_bytes())?;
        out.write_all(&vector_to_le_bytes(&meta.vector))?;
        out.write_all(&(entry.body.len() as u64).to_le_bytes())?;
        out.write_all(&entry.body)?;
    }
    out.flush()
}

fn write_str(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(&len_u32(text.len())?.to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn len_u32(len: usize) -> std::io::Result<u32> {
    u32::try_from(len).map_err(|_| std::io::Error::other("field longer than 4 GiB"))
}

/// Parses the whole file, or says why not; builds no store, so a bad file loads nothing.
fn parse(data: &[u8]) -> Result<Vec<StoredEntry>, String> {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err("not a cachet snapshot (wrong magic)".to_owned());
    }
    if data.len() < HEADER_BYTES + DIGEST_BYTES {
        return Err(format!("truncated: {} bytes", data.len()));
    }
    let mut reader = Reader {
        data: &data[MAGIC.len()..data.len() - DIGEST_BYTES],
    };
    let version = reader.u32()?;
    if version != VERSION {
        return Err(format!(
            "unsupported version {version}, this build reads {VERSION}"
        ));
    }
    let (body, digest) = data.split_at(data.len() - DIGEST_BYTES);
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch (truncated or damaged)".to_owned());
    }
    let count = reader.u64()?;
    let mut entries = Vec::new();
    for index in 0..count {
        entries.push(read_entry(&mut reader).map_err(|reason| format!("entry {index}: {reason}"))?);
    }
    if !reader.data.is_empty() {
        return Err(format!("{} bytes after the last entry", reader.data.len()));
    }
    Ok(entries)
}

fn read_entry(reader: &mut Reader<'_>) -> Result<StoredEntry, String> {
    let id = reader.u64()?;
    let partition = reader.u64()?;
    let created_at_ms = reader.u64()?;
    let expires_at_ms = reader.u64()?;
    let cost = f32::from_le_bytes(reader.array()?);
    let category = reader.string()?;
    let tenant = reader.string()?;
    let question = match reader.array::<1>()? {
        [0] => None,
        [1] => Some(reader.string()?),
        [flag] => return Err(format!("bad question flag {flag}")),
    };
    let dims = reader.u32()? as usize;
    let vector_bytes = reader.take(dims.checked_mul(4).ok_or("vector length overflows")?)?;
    let vector = vector_from_le_bytes(vector_bytes).ok_or("bad vector bytes")?;
    let body_len = usize::try_from(reader.u64()?).map_err(|_| "body length overflows")?;
    let body = Bytes::copy_from_slice(reader.take(body_len)?);
    let meta = EntryMeta {
        id,
        category,
        tenant,
        partition,
        vector,
        question,
        created_at_ms,
        expires_at_ms,
        cost,
        body_bytes: body.len(),
    };
    Ok(StoredEntry { meta, body })
}

/// A cursor that checks every length against what is left, so a damaged length can neither
/// read out of bounds nor allocate more than the file holds.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        if len > self.data.len() {
            return Err(format!("needs {len} bytes, {} left", self.data.len()));
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not utf-8".to_owned())
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
