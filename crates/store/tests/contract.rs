//! One contract suite, run against every ObjectStore implementation: the filesystem store
//! always, S3 on LocalStack (`POSTHUMAN_S3_ENDPOINT`) and on moto (`POSTHUMAN_MOTO_ENDPOINT`)
//! when the twins run (`localstack/twins.sh run -- cargo test -p posthuman-store`).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

mod support;

use support::suite;

macro_rules! contract {
    ($name:ident, $fixture:path) => {
        mod $name {
            use super::*;
            contract!(@each $fixture; round_trip, overwrite_replaces, large_file_round_trip,
                list_by_prefix_sorted, absent_keys, put_if_absent_semantics, too_large_refused,
                invalid_keys_rejected, overwrite_is_atomic_for_readers,
                failed_write_leaves_nothing);
        }
    };
    (@each $fixture:path; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(fx) = $fixture().await else { return };
                suite::$test(&fx).await;
            }
        )*
    };
}

contract!(local, support::local);
contract!(s3_localstack, support::localstack);
contract!(s3_moto, support::moto);
