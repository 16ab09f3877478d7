//! The contract every ObjectStore must meet, as generic async fns (one test each in
//! `tests/contract.rs`, instantiated per implementation).

use std::sync::Arc;

use bytes::Bytes;
use posthuman_store::StoreError;

use super::{FailingReader, Fixture, Streaming, data};

const MB: usize = 1024 * 1024;

pub async fn round_trip<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    s.put("a/hello.txt", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(s.get("a/hello.txt", 100).await.unwrap(), Bytes::from_static(b"hello"));
    assert_eq!(s.head("a/hello.txt").await.unwrap(), Some(5));

    // Every byte value, including NUL and invalid UTF-8.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    s.put("bin/all-bytes.bin", Bytes::from(binary.clone())).await.unwrap();
    assert_eq!(s.get("bin/all-bytes.bin", 1 << 20).await.unwrap(), binary);

    let empty = s.put("a/empty", Bytes::new()).await;
    empty.unwrap();
    assert_eq!(s.get("a/empty", 0).await.unwrap().len(), 0);
    assert_eq!(s.head("a/empty").await.unwrap(), Some(0));

    let dest = fx.scratch("out.bin");
    assert_eq!(s.get_to_file("bin/all-bytes.bin", &dest).await.unwrap(), 70_000);
    assert_eq!(std::fs::read(&dest).unwrap(), binary);
}

pub async fn overwrite_replaces<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    s.put("k", Bytes::from_static(b"first version")).await.unwrap();
    s.put("k", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(s.get("k", 100).await.unwrap(), Bytes::from_static(b"second"));
    assert_eq!(s.head("k").await.unwrap(), Some(6));
}

pub async fn large_file_round_trip<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    // More than two parts, with a short last one: exercises multipart on S3.
    let body = data(2 * fx.part_size.max(MB) + 123_457, 7);
    let src = fx.scratch("big.src");
    std::fs::write(&src, &body).unwrap();
    s.put_file("models/m1/model.safetensors", &src).await.unwrap();
    assert_eq!(s.head("models/m1/model.safetensors").await.unwrap(), Some(body.len() as u64));

    let dest = fx.scratch("big.dst");
    let n = s.get_to_file("models/m1/model.safetensors", &dest).await.unwrap();
    assert_eq!(n, body.len() as u64);
    assert!(std::fs::read(&dest).unwrap() == body, "downloaded bytes differ");
    let got = s.get("models/m1/model.safetensors", body.len() as u64).await.unwrap();
    assert!(got == body, "get bytes differ");

    // A small file through put_file is one plain PUT.
    std::fs::write(fx.scratch("small"), b"tiny").unwrap();
    s.put_file("models/m1/config.json", &fx.scratch("small")).await.unwrap();
    assert_eq!(s.get("models/m1/config.json", 10).await.unwrap(), Bytes::from_static(b"tiny"));
}

pub async fn list_by_prefix_sorted<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    for k in ["l/b/d", "l/a", "l2/x", "l/b/c", "lz", "m/l/a"] {
        s.put(k, Bytes::from(k.as_bytes().to_vec())).await.unwrap();
    }
    assert_eq!(s.list("l/").await.unwrap(), ["l/a", "l/b/c", "l/b/d"]);
    assert_eq!(s.list("l/b/").await.unwrap(), ["l/b/c", "l/b/d"]);
    assert_eq!(s.list("l").await.unwrap(), ["l/a", "l/b/c", "l/b/d", "l2/x", "lz"]);
    assert_eq!(s.list("l/b").await.unwrap(), ["l/b/c", "l/b/d"]);
    assert_eq!(s.list("").await.unwrap(), ["l/a", "l/b/c", "l/b/d", "l2/x", "lz", "m/l/a"]);
    assert!(s.list("nothing/").await.unwrap().is_empty());
    assert!(s.list("l/a/").await.unwrap().is_empty(), "an object is not a prefix");
    s.delete("l/b/c").await.unwrap();
    s.delete("l/b/d").await.unwrap();
    assert_eq!(s.list("l/").await.unwrap(), ["l/a"]);
}

pub async fn absent_keys<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    assert_eq!(s.head("no/such").await.unwrap(), None);
    assert!(
        matches!(s.get("no/such", 10).await, Err(StoreError::NotFound { key }) if key == "no/such")
    );
    let dest = fx.scratch("never");
    assert!(matches!(s.get_to_file("no/such", &dest).await, Err(StoreError::NotFound { .. })));
    assert!(!dest.exists(), "a failed download must not create the file");
    assert!(
        std::fs::read_dir(fx.scratch.path())
            .unwrap()
            .all(|e| { !e.unwrap().file_name().to_string_lossy().contains('~') })
    );
    s.delete("no/such").await.unwrap(); // idempotent, like S3

    s.put("p/q", Bytes::from_static(b"x")).await.unwrap();
    // A prefix is not an object.
    assert_eq!(s.head("p").await.unwrap(), None);
    assert!(matches!(s.get("p", 10).await, Err(StoreError::NotFound { .. })));
    s.delete("p/q").await.unwrap();
    assert_eq!(s.head("p/q").await.unwrap(), None);
    assert!(matches!(s.get("p/q", 10).await, Err(StoreError::NotFound { .. })));
    s.delete("p/q").await.unwrap();
}

pub async fn put_if_absent_semantics<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    assert!(s.put_if_absent("once/marker", Bytes::from_static(b"first")).await.unwrap());
    assert!(!s.put_if_absent("once/marker", Bytes::from_static(b"second")).await.unwrap());
    assert_eq!(s.get("once/marker", 10).await.unwrap(), Bytes::from_static(b"first"));
    s.delete("once/marker").await.unwrap();
    assert!(s.put_if_absent("once/marker", Bytes::from_static(b"third")).await.unwrap());

    // A race: exactly one of many concurrent creators wins, and its body is what is stored.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = Arc::clone(&fx.store);
        tasks.push(tokio::spawn(async move {
            let won = store.put_if_absent("race/key", Bytes::from(vec![i; 1000])).await.unwrap();
            (i, won)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, won) = t.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator must win, got {winners:?}");
    assert_eq!(s.get("race/key", 1000).await.unwrap(), vec![winners[0]; 1000]);
}

pub async fn too_large_refused<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    s.put("big", Bytes::from(vec![1u8; 100])).await.unwrap();
    match s.get("big", 99).await {
        Err(StoreError::TooLarge { key, size: 100, limit: 99 }) => assert_eq!(key, "big"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(s.get("big", 100).await.unwrap().len(), 100);
    assert!(matches!(s.get("big", 0).await, Err(StoreError::TooLarge { .. })));
}

pub async fn invalid_keys_rejected<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    let src = fx.scratch("src");
    std::fs::write(&src, b"x").unwrap();
    let bad =
        ["", "/etc/passwd", "../escape", "a/../../b", "a//b", "a/", "./a", "caf\u{e9}", "a b"];
    for key in bad {
        let inv = |r: &Result<_, StoreError>| matches!(r, Err(StoreError::InvalidKey { .. }));
        assert!(inv(&s.put(key, Bytes::from_static(b"x")).await.map(|_| ())), "put {key:?}");
        assert!(inv(&s.put_file(key, &src).await), "put_file {key:?}");
        assert!(
            inv(&s.put_if_absent(key, Bytes::new()).await.map(|_| ())),
            "put_if_absent {key:?}"
        );
        assert!(inv(&s.get(key, 10).await.map(|_| ())), "get {key:?}");
        assert!(
            inv(&s.get_to_file(key, &fx.scratch("d")).await.map(|_| ())),
            "get_to_file {key:?}"
        );
        assert!(inv(&s.head(key).await.map(|_| ())), "head {key:?}");
        assert!(inv(&s.delete(key).await), "delete {key:?}");
    }
    for prefix in ["/", "/a", "../", "a//"] {
        assert!(matches!(s.list(prefix).await, Err(StoreError::InvalidKey { .. })), "{prefix:?}");
    }
    assert!(s.list("").await.unwrap().is_empty(), "nothing may have been written");
}

/// Readers racing a writer that keeps replacing the object see either version, whole.
pub async fn overwrite_is_atomic_for_readers<S: Streaming>(fx: &Fixture<S>) {
    let len = MB;
    fx.store.put("atomic/obj", Bytes::from(vec![b'a'; len])).await.unwrap();
    let writer = {
        let store = Arc::clone(&fx.store);
        tokio::spawn(async move {
            for i in 0..20 {
                let fill = if i % 2 == 0 { b'b' } else { b'a' };
                store.put("atomic/obj", Bytes::from(vec![fill; len])).await.unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..2 {
        let store = Arc::clone(&fx.store);
        readers.push(tokio::spawn(async move {
            for _ in 0..20 {
                let got = store.get("atomic/obj", len as u64).await.unwrap();
                assert_eq!(got.len(), len, "partial object visible");
                assert!(got.iter().all(|&b| b == got[0]), "mixed object visible");
            }
        }));
    }
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}

/// A source that fails halfway (after a committed part on S3) leaves nothing visible, and
/// an existing object keeps its old content.
pub async fn failed_write_leaves_nothing<S: Streaming>(fx: &Fixture<S>) {
    let s = &*fx.store;
    let failing = || Box::new(FailingReader { remaining: fx.part_size + 4096 });
    let err = s.put_stream("fail/new", failing()).await.unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert_eq!(s.head("fail/new").await.unwrap(), None);
    assert!(matches!(s.get("fail/new", u64::MAX).await, Err(StoreError::NotFound { .. })));

    s.put("fail/old", Bytes::from_static(b"old content")).await.unwrap();
    assert!(s.put_stream("fail/old", failing()).await.is_err());
    assert_eq!(s.get("fail/old", 100).await.unwrap(), Bytes::from_static(b"old content"));
    assert_eq!(s.list("").await.unwrap(), ["fail/old"], "no temp or partial object is listed");

    // A working stream of the same size goes through.
    let ok = tokio::io::repeat(7).take_bytes(fx.part_size as u64 + 4096);
    assert_eq!(s.put_stream("fail/new", Box::new(ok)).await.unwrap(), fx.part_size as u64 + 4096);
}

trait TakeBytes: tokio::io::AsyncRead + Sized {
    fn take_bytes(self, n: u64) -> tokio::io::Take<Self> {
        tokio::io::AsyncReadExt::take(self, n)
    }
}
impl<R: tokio::io::AsyncRead> TakeBytes for R {}
