//! A store that runs a hook before every operation of the store it wraps: the one place tests
//! inject faults (a disk that fails mid-write) and interleavings (a write parked until the test
//! lets it go, a read held back) without each writing its own eight-method wrapper.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::{ObjectStore, StoreError};

/// The operation a [`StoreHook`] runs before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Put,
    PutFile,
    PutIfAbsent,
    Get,
    GetToFile,
    Head,
    List,
    Delete,
}

impl StoreOp {
    /// Whether the operation changes the store.
    pub fn writes(self) -> bool {
        matches!(self, StoreOp::Put | StoreOp::PutFile | StoreOp::PutIfAbsent | StoreOp::Delete)
    }
}

/// What [`Hooked`] runs first.
#[async_trait::async_trait]
pub trait StoreHook: Send + Sync + std::fmt::Debug + 'static {
    /// Runs before `op` on `key` (the prefix, for [`StoreOp::List`]); an error is returned in
    /// place of the operation's result, and the wrapped store is not called.
    async fn before(&self, op: StoreOp, key: &str) -> Result<(), StoreError>;
}

/// `inner` with `hook` run before each of its operations.
#[derive(Debug)]
pub struct Hooked<H> {
    pub inner: Arc<dyn ObjectStore>,
    pub hook: H,
}

impl<H> Hooked<H> {
    pub fn new(inner: Arc<dyn ObjectStore>, hook: H) -> Self {
        Hooked { inner, hook }
    }
}

#[async_trait::async_trait]
impl<H: StoreHook> ObjectStore for Hooked<H> {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.hook.before(StoreOp::Put, key).await?;
        self.inner.put(key, body).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.hook.before(StoreOp::PutFile, key).await?;
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.hook.before(StoreOp::PutIfAbsent, key).await?;
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        self.hook.before(StoreOp::Get, key).await?;
        self.inner.get(key, max_bytes).await
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        self.hook.before(StoreOp::GetToFile, key).await?;
        self.inner.get_to_file(key, path).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.hook.before(StoreOp::Head, key).await?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.hook.before(StoreOp::List, prefix).await?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.hook.before(StoreOp::Delete, key).await?;
        self.inner.delete(key).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use std::sync::Mutex;

    /// Records every call and refuses writes under `ro/`.
    #[derive(Debug, Default)]
    struct Log(Mutex<Vec<(StoreOp, String)>>);

    #[async_trait::async_trait]
    impl StoreHook for Log {
        async fn before(&self, op: StoreOp, key: &str) -> Result<(), StoreError> {
            self.0.lock().unwrap().push((op, key.to_string()));
            if op.writes() && key.starts_with("ro/") {
                return Err(StoreError::Io("read-only".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_hook_runs_first_and_its_error_stops_the_operation() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let s = Hooked::new(inner.clone(), Log::default());
        s.put("rw/a", Bytes::from_static(b"1")).await.unwrap();
        assert!(s.put("ro/a", Bytes::from_static(b"1")).await.is_err());
        assert!(s.put_if_absent("ro/b", Bytes::from_static(b"1")).await.is_err());
        assert_eq!(
            inner.head("ro/a").await.unwrap(),
            None,
            "a refused write never reached the store"
        );
        assert_eq!(&s.get("rw/a", 10).await.unwrap()[..], b"1");
        assert_eq!(s.list("rw/").await.unwrap(), vec!["rw/a".to_string()]);
        s.delete("rw/a").await.unwrap();
        let ops: Vec<StoreOp> = s.hook.0.lock().unwrap().iter().map(|(o, _)| *o).collect();
        use StoreOp::*;
        assert_eq!(ops, [Put, Put, PutIfAbsent, Get, List, Delete]);
    }
}
