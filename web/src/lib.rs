//! The Posthuman storefront: a Yew single-page app, compiled to `wasm32-unknown-unknown`
//! (`web/build.sh`) and served as static files by the embedded server
//! (`posthuman-server --static-dir web/dist`).
//!
//! Pages: the catalogue (price, lineage parent, weights hash, evaluations), a model (its
//! lineage M1 → M2 → M3, quotes), a consumer's jobs, a job's live progress, and the
//! **receipt view** (`/jobs/{id}/receipt`), which verifies the signed receipt *in the
//! browser* with `posthuman-receipts`' own checks against facts read from the chain's node —
//! the same checks and reasons as `posthuman verify` (see [`verify`] for the trust model).
//!
//! Modules — plain Rust, unit-tested natively:
//! - [`route`]: paths ↔ pages.
//! - [`wire`]: the API's public views as the storefront reads them.
//! - [`verify`]: running the checks against facts fetched from the chain.
//! - [`checks`]: the receipt view's rows (fields, grouped checks with reasons).
//! - [`format`]: amounts, times, hashes, progress.
//! - [`chart`]: the loss curve and perplexity bars as geometry (drawn as inline SVG).
//! - [`wallet`]: what the storefront asks the user's wallet and how it reads the answers.
//! - [`order`]: ordering a job: the bounded form, the quote's fee check, the order's
//!   transactions (`sol!`), the signed job request and result read.
//! - [`sale`]: a derived model's trainer puts its datatokens on sale (`openSale`).
//! - [`royalty`]: anyone pays out a derived model's royalty vault (`distribute()`).
//! - [`upload`]: direct uploads (a publish's files, a job's dataset): the folder pick, the
//!   API's caps, the signed declaration, every refusal in words.
//!
//! Browser side: [`net`] (`fetch` for the API and JSON-RPC), [`eip1193`] (the user's
//! wallet: `window.ethereum` or EIP-6963 discovery) and [`app`] (Yew components,
//! which only render what the modules above compute).

// Unit tests may unwrap (a panic is the failure report).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod chart;
pub mod checks;
pub mod eip1193;
pub mod format;
pub mod market;
pub mod net;
pub mod order;
pub mod publish;
pub mod route;
pub mod royalty;
pub mod sale;
pub mod upload;
pub mod verify;
pub mod wallet;
pub mod wire;

/// The wasm entry point: mounts the app on `<body>`.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    yew::Renderer::<app::App>::new().render();
}
