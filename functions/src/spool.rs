//! Upload files spooled to disk as they arrive, so an upload costs the server a chunk of
//! memory rather than its size.
//!
//! The API writes each file part (a publish's weights, a submit's dataset) chunk by chunk
//! into a [`SpoolWriter`], which hashes it (SHA-256, what the signed requests commit to) and
//! checks it is UTF-8 on the way; [`SpoolWriter::finish`] hands the handler a [`Spooled`]
//! file, validated from disk in bounded reads and stored with `ObjectStore::put_file`. Both
//! own their file and remove it when dropped, so every path — success, a refused upload, an
//! error, a client that hangs up mid-body (the handler's future is dropped) — leaves nothing
//! behind. Files are created `0600` with a fresh name: the spool directory may be a shared
//! temp dir, and uploads are private weights and data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use posthuman_types::Hash32;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// Every spool file's name starts with this (the rest is process, counter and time).
pub const PREFIX: &str = "posthuman-upload-";

/// A file part written in full to the spool directory, removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    path: PathBuf,
    len: u64,
    sha256: Hash32,
    utf8: bool,
}

impl Spooled {
    /// Spools bytes already in memory (callers without a streamed body: benches, tests).
    pub async fn from_bytes(dir: &Path, bytes: &[u8]) -> Result<Self, ApiError> {
        let mut w = SpoolWriter::create(dir).await?;
        w.write(bytes).await?;
        w.finish().await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// SHA-256 of its bytes.
    pub fn sha256(&self) -> Hash32 {
        self.sha256
    }

    /// Whether its bytes are UTF-8 text.
    pub fn is_utf8(&self) -> bool {
        self.utf8
    }
}

impl Spooled {
    /// Fetches the object at `key` into a fresh spool file and hashes it there in bounded
    /// reads (a staged direct upload, `crate::uploads`): the caller compares length and hash
    /// with what was declared, so what is used is what was checked.
    pub async fn from_store(
        store: &dyn posthuman_store::ObjectStore,
        key: &str,
        dir: &Path,
    ) -> Result<Self, ApiError> {
        let mut out = SpoolWriter::create(dir).await?.finish().await?;
        store.get_to_file(key, &out.path).await?;
        let path = out.path.clone();
        let (len, sha256, utf8) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            // The store replaced the file: keep it owner-only like every spool file.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            let mut f = std::fs::File::open(&path)?;
            let (mut hasher, mut check, mut len) = (Sha256::new(), Utf8Check::default(), 0u64);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                check.feed(&buf[..n]);
                len += n as u64;
            }
            Ok::<_, std::io::Error>((len, Hash32(hasher.finalize().into()), check.finish()))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| spool_err("reading", &out.path, e))?;
        (out.len, out.sha256, out.utf8) = (len, sha256, utf8);
        Ok(out)
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        // Best effort: the only failure left is a file someone else already removed.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A spool file being written. Dropped before [`SpoolWriter::finish`] (a part over its cap,
/// a broken body, a cancelled request), it removes what it wrote.
pub struct SpoolWriter {
    file: tokio::fs::File,
    /// Owns the path from the start, so a drop at any point removes the file.
    out: Spooled,
    hasher: Sha256,
    utf8: Utf8Check,
}

impl SpoolWriter {
    /// A new, empty, owner-only file in `dir`.
    pub async fn create(dir: &Path) -> Result<Self, ApiError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{PREFIX}{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let p = path.clone();
        let file = tokio::task::spawn_blocking(move || opts.open(&p))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| spool_err("creating", &path, e))?;
        Ok(SpoolWriter {
            file: tokio::fs::File::from_std(file),
            out: Spooled { path, len: 0, sha256: Hash32::ZERO, utf8: true },
            hasher: Sha256::new(),
            utf8: Utf8Check::default(),
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.len
    }

    pub fn is_empty(&self) -> bool {
        self.out.len == 0
    }

    /// Appends a chunk: hashed, checked and written before the next one is read.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.hasher.update(chunk);
        self.utf8.feed(chunk);
        self.file.write_all(chunk).await.map_err(|e| spool_err("writing", &self.out.path, e))?;
        self.out.len += chunk.len() as u64;
        Ok(())
    }

    /// The whole file, flushed (readable from its path), with its hash.
    pub async fn finish(mut self) -> Result<Spooled, ApiError> {
        self.file.flush().await.map_err(|e| spool_err("writing", &self.out.path, e))?;
        let SpoolWriter { file, mut out, hasher, utf8 } = self;
        drop(file);
        out.sha256 = Hash32(hasher.finalize().into());
        out.utf8 = utf8.finish();
        Ok(out)
    }
}

/// A full spool disk is the server's trouble, not the request's: a 503 to retry later, the
/// path and OS error logged only.
fn spool_err(what: &str, path: &Path, e: std::io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "upload spool: {what} failed");
    ApiError::unavailable("upload spool", format!("{what} {}: {e}", path.display()))
}

/// Incremental UTF-8 validation over chunks that may split a character.
#[derive(Default)]
struct Utf8Check {
    bad: bool,
    /// The start of a character the last chunk ended inside (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Check {
    fn feed(&mut self, chunk: &[u8]) {
        if self.bad {
            return;
        }
        let joined;
        let data = if self.carry.is_empty() {
            chunk
        } else {
            joined = [self.carry.as_slice(), chunk].concat();
            &joined
        };
        match std::str::from_utf8(data) {
            Ok(_) => self.carry.clear(),
            // Cut inside a character: keep its start for the next chunk.
            Err(e) if e.error_len().is_none() => self.carry = data[e.valid_up_to()..].to_vec(),
            Err(_) => self.bad = true,
        }
    }

    fn finish(self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use super::*;

    fn spool_dir_entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn spooled_bytes_hash_and_go_away_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooled::from_bytes(dir.path(), b"hello").await.unwrap();
        assert_eq!(std::fs::read(s.path()).unwrap(), b"hello");
        assert_eq!(s.len(), 5);
        assert_eq!(s.sha256(), Hash32(Sha256::digest(b"hello").into()));
        assert!(s.is_utf8());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(s);
        assert_eq!(spool_dir_entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn an_unfinished_writer_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::create(dir.path()).await.unwrap();
        w.write(&[7u8; 4096]).await.unwrap();
        assert_eq!(spool_dir_entries(dir.path()), 1);
        drop(w);
        assert_eq!(spool_dir_entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_missing_spool_dir_is_a_503() {
        let e = SpoolWriter::create(Path::new("/nonexistent/spool")).await.err().unwrap();
        assert!(matches!(e, ApiError::Unavailable { backend: "upload spool", .. }), "{e}");
    }

    #[test]
    fn utf8_is_checked_across_chunk_boundaries() {
        let text = "naïve café — ☃ 𝄞 end".as_bytes();
        for split in 0..=text.len() {
            for split2 in split..=text.len() {
                let mut c = Utf8Check::default();
                c.feed(&text[..split]);
                c.feed(&text[split..split2]);
                c.feed(&text[split2..]);
                assert!(c.finish(), "split at {split}, {split2}");
            }
        }
        // A truncated character at the end, a bad byte, an overlong encoding.
        for bad in [&text[..text.len() - 5], b"ok \xff ok".as_slice(), b"\xc0\xaf"] {
            for split in 0..=bad.len() {
                let mut c = Utf8Check::default();
                c.feed(&bad[..split]);
                c.feed(&bad[split..]);
                assert!(!c.finish(), "{bad:?} split at {split}");
            }
        }
    }
}
