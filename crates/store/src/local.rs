//! [`LocalStore`]: the object store on a local filesystem (embedded default and tests).
//!
//! An object `a/b/c` is the file `<root>/a/b/c`. Writes go to a temp file in the same
//! directory, are fsynced, then renamed over the final name (or hard-linked to it for
//! `put_if_absent`, which fails atomically if the name exists), and the directory is fsynced,
//! so a reader or a crash never exposes a partial object. Temp names contain `~`, which no
//! valid key does, so `list` never reports them and no key can collide with one.
//!
//! Keys are validated ([`crate::key`]) and a path that runs through a symlink is refused, so
//! no key reaches outside the root even if someone plants a link inside it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::fsutil::{COPY_BUF, TempFile, copy_file_atomically, create_temp, io_err, sync_parent};
use crate::key::{validate_key, validate_prefix};
use crate::{ObjectStore, StoreError};

/// Filesystem object store rooted at one directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| io_err(&format!("creating {}", root.display()), e))?;
        let root =
            root.canonicalize().map_err(|e| io_err(&format!("resolving {}", root.display()), e))?;
        Ok(Self { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Streams `reader` into `key` atomically; returns the number of bytes written. If the
    /// reader fails, nothing becomes visible and the temp file is removed.
    pub async fn put_reader<R>(&self, key: &str, reader: R) -> Result<u64, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let (root, k) = (self.root.clone(), key.to_owned());
        let (final_path, mut temp, file) = blocking(move || prepare_write(&root, &k)).await?;
        let mut file = tokio::fs::File::from_std(file);
        // Big reads mean big writes: each write is a round trip to the blocking pool.
        let mut reader = tokio::io::BufReader::with_capacity(COPY_BUF, reader);
        let n = tokio::io::copy_buf(&mut reader, &mut file)
            .await
            .map_err(|e| io_err(&format!("streaming into {key:?}"), e))?;
        file.flush().await.map_err(|e| io_err("flushing", e))?;
        file.sync_all().await.map_err(|e| io_err("fsync", e))?;
        drop(file);
        let k = key.to_owned();
        blocking(move || commit(&mut temp, &final_path, &k, Commit::Replace)).await?;
        Ok(n)
    }

    fn resolve(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        resolve_under(&self.root, key)
    }
}

/// Runs blocking filesystem work off the async executor.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("blocking task failed: {e}")))?
}

/// `root/key`, refusing any existing component that is a symlink (it could point outside).
fn resolve_under(root: &Path, rel: &str) -> Result<PathBuf, StoreError> {
    let mut path = root.to_path_buf();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        path.push(seg);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StoreError::invalid(rel, "resolves through a symlink"));
            }
            Ok(_) => {}
            // The rest does not exist yet (or a file sits where a directory would be):
            // nothing further can be a symlink.
            Err(e) if is_absent(&e) => return Ok(root.join(rel)),
            Err(e) => return Err(io_err(&format!("inspecting {}", path.display()), e)),
        }
    }
    Ok(path)
}

fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Creates the parent directories and a temp file for writing `key`.
fn prepare_write(root: &Path, key: &str) -> Result<(PathBuf, TempFile, File), StoreError> {
    validate_key(key)?;
    let final_path = resolve_under(root, key)?;
    if final_path.is_dir() {
        return Err(StoreError::invalid(key, "is a prefix of other objects"));
    }
    let parent = final_path.parent().unwrap_or(root).to_path_buf();
    // A concurrent delete may prune the (momentarily empty) parent between the two steps.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match fs::create_dir_all(&parent) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists
                ) =>
            {
                return Err(StoreError::invalid(key, "a parent segment is an existing object"));
            }
            Err(e) => return Err(io_err(&format!("creating {}", parent.display()), e)),
        }
        match create_temp(&final_path) {
            Ok((temp, file)) => return Ok((final_path, temp, file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => continue,
            Err(e) => return Err(io_err("creating temp file", e)),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Commit {
    Replace,
    NoReplace,
}

/// Moves a complete, fsynced temp file into place. Returns false if `NoReplace` found the
/// key taken.
fn commit(
    temp: &mut TempFile,
    final_path: &Path,
    key: &str,
    mode: Commit,
) -> Result<bool, StoreError> {
    let Some(temp_path) = temp.path().map(Path::to_path_buf) else {
        return Err(StoreError::Io("temp file already consumed".into()));
    };
    let created = match mode {
        // link(2) fails with EEXIST if the name exists: an atomic create-if-absent of a
        // complete file. The temp name is removed by the guard afterwards.
        Commit::NoReplace => match fs::hard_link(&temp_path, final_path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io_err(&format!("linking {key:?}"), e)),
        },
        Commit::Replace => match temp.persist(final_path) {
            Ok(()) => true,
            Err(_) if final_path.is_dir() => {
                return Err(StoreError::invalid(key, "is a prefix of other objects"));
            }
            Err(e) => return Err(io_err(&format!("renaming into {key:?}"), e)),
        },
    };
    if created {
        sync_parent(final_path)?;
    }
    Ok(created)
}

fn write_bytes(root: &Path, key: &str, body: &[u8], mode: Commit) -> Result<bool, StoreError> {
    let (final_path, mut temp, mut file) = prepare_write(root, key)?;
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("writing temp file", e))?;
    drop(file);
    commit(&mut temp, &final_path, key, mode)
}

/// Opens an object for reading: NotFound for absent keys and for prefixes (directories).
fn open_object(path: &Path, key: &str) -> Result<(File, u64), StoreError> {
    let file = File::open(path).map_err(|e| {
        if is_absent(&e) {
            StoreError::not_found(key)
        } else {
            io_err(&format!("opening {key:?}"), e)
        }
    })?;
    let meta = file.metadata().map_err(|e| io_err("stat", e))?;
    if !meta.is_file() {
        return Err(StoreError::not_found(key));
    }
    Ok((file, meta.len()))
}

fn list_under(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    // Only the directory named by the prefix's complete segments can hold matches.
    let dir_part = prefix.rfind('/').map(|i| &prefix[..=i]).unwrap_or("");
    let base = resolve_under(root, dir_part)?;
    let mut out = Vec::new();
    let mut stack = vec![(base, dir_part.to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(it) => it,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(io_err(&format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let ft = entry.file_type().map_err(|e| io_err("listing", e))?;
            let key = format!("{rel}{name}");
            if ft.is_dir() {
                let sub = format!("{key}/");
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    stack.push((entry.path(), sub));
                }
            } else if ft.is_file() && key.starts_with(prefix) && validate_key(&key).is_ok() {
                out.push(key);
            }
            // Symlinks and temp files (names with '~') are not objects.
        }
    }
    out.sort();
    Ok(out)
}

#[async_trait::async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || write_bytes(&root, &key, &body, Commit::Replace)).await.map(|_| ())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        let (root, key, src) = (self.root.clone(), key.to_owned(), path.to_path_buf());
        // All in one blocking task: std's file-to-file io::copy uses copy_file_range, far
        // faster than shuttling 8 KiB chunks through the async runtime.
        blocking(move || {
            validate_key(&key)?;
            let mut src =
                File::open(&src).map_err(|e| io_err(&format!("opening {}", src.display()), e))?;
            let (final_path, mut temp, mut file) = prepare_write(&root, &key)?;
            io::copy(&mut src, &mut file)
                .and_then(|_| file.sync_all())
                .map_err(|e| io_err(&format!("copying into {key:?}"), e))?;
            drop(file);
            commit(&mut temp, &final_path, &key, Commit::Replace).map(|_| ())
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        let (root, key) = (self.root.clone(), key.to_owned());
        blocking(move || write_bytes(&root, &key, &body, Commit::NoReplace)).await
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let path = self.resolve(key)?;
        let key = key.to_owned();
        blocking(move || {
            let (file, size) = open_object(&path, &key)?;
            if size > max_bytes {
                return Err(StoreError::TooLarge { key, size, limit: max_bytes });
            }
            let mut buf = Vec::with_capacity(size as usize);
            // Objects are immutable once renamed in, but never trust the size blindly.
            file.take(max_bytes.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(|e| io_err(&format!("reading {key:?}"), e))?;
            if buf.len() as u64 > max_bytes {
                return Err(StoreError::TooLarge { key, size: buf.len() as u64, limit: max_bytes });
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let src = self.resolve(key)?;
        let (key, dest) = (key.to_owned(), path.to_path_buf());
        blocking(move || {
            let (file, _) = open_object(&src, &key)?;
            copy_file_atomically(&dest, file)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.resolve(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(io_err(&format!("stat {key:?}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking(move || list_under(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.resolve(key)?;
        let root = self.root.clone();
        let key = key.to_owned();
        blocking(move || {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if is_absent(&e) => return Ok(()),
                Err(_) if path.is_dir() => return Ok(()), // a prefix, not an object
                Err(e) => return Err(io_err(&format!("deleting {key:?}"), e)),
            }
            // Prune now-empty parents so prefixes disappear like on S3; a non-empty one
            // (or a concurrent writer's fresh directory) stops the walk.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == root || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await
    }
}
