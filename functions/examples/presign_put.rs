//! `presign_put`: the AWS presigner ([`S3Uploads`], what `POST /api/uploads` hands out on a
//! deployment) outside the API, for tests that need a real presigned PUT against an S3
//! emulator without running the whole publish flow: `localstack/browser-cors.sh` PUTs the
//! file with it from headless Chromium through the bucket's CORS, then asks `check` whether
//! it arrived as declared.
//!
//! ```sh
//! presign_put presign --bucket B --upload-id u-<32 hex> --name weights --path FILE [--validity-secs 900]
//! presign_put check   --bucket B --upload-id u-<32 hex> --name weights --path FILE
//! ```
//! `presign` prints `{"target": PutTarget, "expires_at": unix seconds}`; `check` prints
//! `ready`, `missing` or `differs: <why>` (exit 0, 3, 4). The client comes from the default
//! AWS chain with the region and, for an emulator, `--endpoint` (path-style), as the Lambdas
//! build theirs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use posthuman_functions::catalogue::now_secs;
use posthuman_functions::uploads::{DeclaredFile, DirectUploads, S3Uploads, Staged};
use posthuman_store::{S3Config, S3Store};
use posthuman_types::Hash32;
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Presign the PUT of one declared file.
    Presign {
        #[command(flatten)]
        file: FileArgs,
        /// Seconds the URL is asked to live (the API's default upload validity).
        #[arg(long, default_value_t = posthuman_functions::uploads::UPLOAD_VALIDITY_SECS)]
        validity_secs: u64,
    },
    /// Whether the file arrived as declared (the check a publish makes before using it).
    Check {
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(clap::Args, Debug)]
struct FileArgs {
    #[arg(long)]
    bucket: String,
    /// An S3 emulator's URL (path-style addressing); unset: AWS.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long)]
    upload_id: String,
    /// The declared file's name (`weights`, `dataset`, ...).
    #[arg(long)]
    name: String,
    /// The local file whose length and SHA-256 are declared.
    #[arg(long)]
    path: PathBuf,
}

impl FileArgs {
    async fn open(&self) -> Result<(S3Uploads, DeclaredFile)> {
        let body = std::fs::read(&self.path).with_context(|| format!("reading {:?}", self.path))?;
        let declared = DeclaredFile {
            name: self.name.clone(),
            bytes: body.len() as u64,
            sha256: Hash32(Sha256::digest(&body).into()),
        };
        let store = S3Store::new(S3Config {
            bucket: self.bucket.clone(),
            endpoint_url: self.endpoint.clone(),
            region: self.region.clone(),
            force_path_style: self.endpoint.is_some(),
        })
        .await?;
        Ok((S3Uploads::new(&store), declared))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Presign { file, validity_secs } => {
            let (uploads, declared) = file.open().await?;
            let p = uploads
                .presign(&file.upload_id, &declared, now_secs() + validity_secs)
                .await
                .map_err(|e| anyhow::anyhow!("presigning: {e}"))?;
            println!("{}", serde_json::json!({ "target": p.target, "expires_at": p.expires_at }));
        }
        Cmd::Check { file } => {
            let (uploads, declared) = file.open().await?;
            let staged = uploads
                .check(&file.upload_id, &declared)
                .await
                .map_err(|e| anyhow::anyhow!("checking: {e}"))?;
            match staged {
                Staged::Ready => println!("ready"),
                Staged::Missing => {
                    println!("missing");
                    std::process::exit(3);
                }
                Staged::Differs(why) => {
                    println!("differs: {why}");
                    std::process::exit(4);
                }
            }
        }
    }
    Ok(())
}
