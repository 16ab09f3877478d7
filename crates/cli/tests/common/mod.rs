//! What the CLI's binary tests share: the embedded API (anvil, Ocean v4, the lineage contract)
//! served over HTTP on a free loopback port, as a user's `posthuman --api URL` reaches it.

use posthuman_functions::server::{Embedded, ServerConfig, start};

/// Starts the embedded deployment `cfg` describes and serves its API; returns it (the caller
/// shuts its queue and anvil down) and the API's base URL.
pub async fn serve(cfg: &ServerConfig) -> (Embedded, String) {
    let emb = start(cfg).await.expect("the embedded deployment starts");
    let app = posthuman_functions::api::router(emb.deps.clone(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let api = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (emb, api)
}
