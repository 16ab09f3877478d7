//! Interleavings the object catalogue must survive (issue 13 §4): a store wrapper holds one
//! caller's writes until the test lets them go, so two operations interleave exactly where a
//! get-then-write would break.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use posthuman_functions::catalogue::{Catalogue, ObjectCatalogue, OrderClaim};
use posthuman_store::{LocalStore, ObjectStore, StoreError};
use tokio::sync::Notify;

tokio::task_local! {
    /// Set for the caller whose writes the store holds back.
    static SLOW: ();
}

/// A filesystem store that parks every write of the `SLOW` caller until `go` is notified
/// (and says so on `waiting`); reads and other callers pass straight through.
#[derive(Debug)]
struct Gated {
    inner: LocalStore,
    waiting: Notify,
    go: Notify,
}

impl Gated {
    async fn gate(&self) {
        if SLOW.try_with(|_| ()).is_ok() {
            self.waiting.notify_one();
            self.go.notified().await;
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Gated {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.put(key, body).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.gate().await;
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        self.inner.get(key, max_bytes).await
    }
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        self.inner.get_to_file(key, path).await
    }
    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.delete(key).await
    }
}

/// Two FAILED events for one job release its order twice. The second one read the claim
/// before the first released it, and writes only after a retry (job B) claimed the order:
/// it must not free B's claim, or a third job runs on the same payment.
#[tokio::test]
async fn a_duplicate_release_cannot_free_a_newer_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Gated {
        inner: LocalStore::new(dir.path()).unwrap(),
        waiting: Notify::new(),
        go: Notify::new(),
    });
    let cat = ObjectCatalogue::new(store.clone(), "state");
    let tx = format!("0x{}-0", "ab".repeat(32));
    assert_eq!(cat.claim_order(&tx, "j-a").await.unwrap(), OrderClaim::Claimed);

    let late = tokio::spawn({
        let (cat, tx) = (cat.clone(), tx.clone());
        SLOW.scope((), async move { cat.release_order(&tx, "j-a").await.unwrap() })
    });
    store.waiting.notified().await; // the duplicate has read the claim and is about to write
    assert!(cat.release_order(&tx, "j-a").await.unwrap(), "the first event releases");
    assert_eq!(cat.claim_order(&tx, "j-b").await.unwrap(), OrderClaim::Claimed, "the retry");
    store.go.notify_one();

    assert!(!late.await.unwrap(), "the duplicate release found nothing of j-a's to free");
    assert_eq!(cat.order_holder(&tx).await.unwrap().as_deref(), Some("j-b"));
    assert_eq!(
        cat.claim_order(&tx, "j-c").await.unwrap(),
        OrderClaim::Taken { job_id: "j-b".into() },
        "one order, one live job"
    );
}
