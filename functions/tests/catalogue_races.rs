//! Interleavings the object catalogue must survive (issue 13 §4): a store hook holds one
//! caller's writes until the test lets them go, so two operations interleave exactly where a
//! get-then-write would break.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

use std::sync::Arc;

use posthuman_functions::catalogue::{Catalogue, ObjectCatalogue, OrderClaim};
use posthuman_store::{Hooked, LocalStore, StoreError, StoreHook, StoreOp};
use tokio::sync::Notify;

tokio::task_local! {
    /// Set for the caller whose writes the store holds back.
    static SLOW: ();
}

/// Parks every write of the `SLOW` caller until `go` is notified (and says so on `waiting`);
/// reads and other callers pass straight through.
#[derive(Debug, Default)]
struct Gate {
    waiting: Notify,
    go: Notify,
}

#[async_trait::async_trait]
impl StoreHook for Gate {
    async fn before(&self, op: StoreOp, _key: &str) -> Result<(), StoreError> {
        if op.writes() && SLOW.try_with(|_| ()).is_ok() {
            self.waiting.notify_one();
            self.go.notified().await;
        }
        Ok(())
    }
}

/// Two FAILED events for one job release its order twice. The second one read the claim
/// before the first released it, and writes only after a retry (job B) claimed the order:
/// it must not free B's claim, or a third job runs on the same payment.
#[tokio::test]
async fn a_duplicate_release_cannot_free_a_newer_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Hooked::new(Arc::new(LocalStore::new(dir.path()).unwrap()), Gate::default()));
    let cat = ObjectCatalogue::new(store.clone(), "state");
    let tx = format!("0x{}-0", "ab".repeat(32));
    assert_eq!(cat.claim_order(&tx, "j-a").await.unwrap(), OrderClaim::Claimed);

    let late = tokio::spawn({
        let (cat, tx) = (cat.clone(), tx.clone());
        SLOW.scope((), async move { cat.release_order(&tx, "j-a").await.unwrap() })
    });
    store.hook.waiting.notified().await; // the duplicate has read the claim and is about to write
    assert!(cat.release_order(&tx, "j-a").await.unwrap(), "the first event releases");
    assert_eq!(cat.claim_order(&tx, "j-b").await.unwrap(), OrderClaim::Claimed, "the retry");
    store.hook.go.notify_one();

    assert!(!late.await.unwrap(), "the duplicate release found nothing of j-a's to free");
    assert_eq!(cat.order_holder(&tx).await.unwrap().as_deref(), Some("j-b"));
    assert_eq!(
        cat.claim_order(&tx, "j-c").await.unwrap(),
        OrderClaim::Taken { job_id: "j-b".into() },
        "one order, one live job"
    );
}
