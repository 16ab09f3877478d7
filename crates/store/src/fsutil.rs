//! Filesystem helpers both stores share: temp files that vanish unless committed, and an
//! atomic "stream into a local file" used by every `get_to_file`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::StoreError;

/// Buffer for async copies into files: each tokio file write is a blocking-pool round trip.
pub(crate) const COPY_BUF: usize = 1 << 20;

pub(crate) fn io_err(what: &str, e: io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// A temp file that is removed when dropped unless [`TempFile::persist`] renamed it.
pub(crate) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Renames the temp file over `dest` (atomic: same directory) and disarms the guard.
    pub(crate) fn persist(&mut self, dest: &Path) -> io::Result<()> {
        let Some(p) = self.path.as_deref() else {
            return Err(io::Error::other("temp file already persisted"));
        };
        fs::rename(p, dest)?;
        self.path = None;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates an exclusive temp file beside `final_path` (same directory, so rename is atomic).
/// The name contains `~`, which no valid key does: temp files are invisible to `list` and
/// can never collide with an object.
pub(crate) fn create_temp(final_path: &Path) -> io::Result<(TempFile, File)> {
    let dir = match final_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = final_path.file_name().and_then(|n| n.to_str()).unwrap_or("obj");
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let temp = dir.join(format!(".{name}.~{}.{n}.{nanos}~", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp) {
            Ok(f) => return Ok((TempFile { path: Some(temp) }, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename durable: fsync the directory holding the new name.
pub(crate) fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", e))
}

/// Blocking twin of [`write_file_atomically`] for a local source (file-to-file copies use
/// copy_file_range).
pub(crate) fn copy_file_atomically(dest: &Path, mut src: File) -> Result<u64, StoreError> {
    let (mut temp, mut out) = create_temp(dest)
        .map_err(|e| io_err(&format!("creating a temp file beside {}", dest.display()), e))?;
    let n = io::copy(&mut src, &mut out)
        .and_then(|n| out.sync_all().map(|()| n))
        .map_err(|e| io_err(&format!("writing {}", dest.display()), e))?;
    drop(out);
    temp.persist(dest).map_err(|e| io_err(&format!("renaming into {}", dest.display()), e))?;
    sync_parent(dest)?;
    Ok(n)
}

/// Streams `reader` into `dest` through a temp file, so a half-copied file never appears
/// under `dest` (a crashed download leaves the old file or none). Returns the byte count.
pub(crate) async fn write_file_atomically<R>(dest: &Path, reader: R) -> Result<u64, StoreError>
where
    R: AsyncRead + Unpin + Send,
{
    let d = dest.to_path_buf();
    let (mut temp, file) = tokio::task::spawn_blocking(move || create_temp(&d))
        .await
        .map_err(|e| StoreError::Io(format!("blocking task failed: {e}")))?
        .map_err(|e| io_err(&format!("creating a temp file beside {}", dest.display()), e))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut reader = tokio::io::BufReader::with_capacity(COPY_BUF, reader);
    let n = tokio::io::copy_buf(&mut reader, &mut file)
        .await
        .map_err(|e| io_err(&format!("writing {}", dest.display()), e))?;
    file.flush().await.map_err(|e| io_err("flushing", e))?;
    file.sync_all().await.map_err(|e| io_err("fsync", e))?;
    drop(file);
    temp.persist(dest).map_err(|e| io_err(&format!("renaming into {}", dest.display()), e))?;
    sync_parent(dest)?;
    Ok(n)
}
