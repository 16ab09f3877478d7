//! [`S3Uploads`]: the AWS side of [`DirectUploads`], presigned S3 PUTs (see the parent
//! module's docs).
//!
//! A presigned URL is only as alive as the credentials that signed it: one signed with a
//! role's temporary credentials is refused once their session token expires, whatever its
//! `X-Amz-Expires` says. So each URL is signed with credentials resolved for it, and lives
//! until the asked expiry or [`CREDENTIALS_MARGIN_SECS`] before those credentials expire,
//! whichever comes first; [`Presigned::expires_at`] says which (the upload's answer carries
//! it). Credentials that report no expiry (long-term keys; the environment variables Lambda
//! sets, which carry a session token but not its expiry) leave the asked expiry as it is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::error::DisplayErrorContext;

use super::{DeclaredFile, DirectUploads, Presigned, PutQuery, PutTarget, Staged, staged_key};
use crate::catalogue::now_secs;
use crate::error::ApiError;

/// A URL ends this long before the credentials that signed it: clock skew between the API
/// and S3, and the moments between the answer and the client's PUT.
pub const CREDENTIALS_MARGIN_SECS: u64 = 60;
/// The shortest lifetime a URL is handed out with; credentials closer to their expiry are
/// refused (503, retry: the next resolution brings fresh ones).
pub const MIN_URL_SECS: u64 = 60;

/// Presigned S3 PUTs into one bucket.
#[derive(Clone, Debug)]
pub struct S3Uploads {
    client: aws_sdk_s3::Client,
    bucket: String,
    credentials: Option<SharedCredentialsProvider>,
}

impl S3Uploads {
    /// Uploads into the bucket of `store` with its client and its credentials provider (a
    /// store from `S3Store::new`; one without a known provider presigns nothing).
    pub fn new(store: &posthuman_store::S3Store) -> Self {
        S3Uploads {
            client: store.client().clone(),
            bucket: store.bucket().to_string(),
            credentials: store.credentials_provider().cloned(),
        }
    }

    /// Uploads into `bucket` with `client`, signing with credentials from `credentials`.
    pub fn from_client(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        credentials: SharedCredentialsProvider,
    ) -> Self {
        S3Uploads { client, bucket: bucket.into(), credentials: Some(credentials) }
    }

    /// The credentials to sign one URL with: resolved here (not through the client's
    /// identity cache) so the expiry checked is that of the credentials that sign.
    async fn credentials(&self) -> Result<aws_sdk_s3::config::Credentials, ApiError> {
        let provider = self.credentials.as_ref().ok_or_else(|| {
            ApiError::internal("S3Uploads over a store without a known credentials provider")
        })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| s3_err("resolving credentials to presign with", DisplayErrorContext(e)))
    }
}

/// The expiry a URL signed now with credentials expiring at `credentials_expiry` can have:
/// `wanted`, or [`CREDENTIALS_MARGIN_SECS`] before the credentials expire if that is sooner;
/// an error when that leaves less than [`MIN_URL_SECS`].
pub fn cap_expiry(
    wanted: u64,
    credentials_expiry: Option<SystemTime>,
    now: u64,
) -> Result<u64, ApiError> {
    let Some(t) = credentials_expiry else {
        return Ok(wanted);
    };
    let dies = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let limit = dies.saturating_sub(CREDENTIALS_MARGIN_SECS);
    if limit < now + MIN_URL_SECS {
        return Err(ApiError::unavailable(
            "object store",
            format!(
                "the API's AWS credentials expire in {} s, too soon to sign an upload URL: retry",
                dies.saturating_sub(now)
            ),
        ));
    }
    Ok(wanted.min(limit))
}

fn s3_err(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable("object store", format!("{what}: {e}"))
}

#[async_trait::async_trait]
impl DirectUploads for S3Uploads {
    async fn presign(
        &self,
        upload_id: &str,
        file: &DeclaredFile,
        expires_at: u64,
    ) -> Result<Presigned, ApiError> {
        use base64::Engine;
        let now = now_secs();
        let creds = self.credentials().await?;
        let expires_at = cap_expiry(expires_at, creds.expiry(), now)?;
        let secs = expires_at.saturating_sub(now).max(1);
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(secs))
            .map_err(ApiError::internal)?;
        let len = i64::try_from(file.bytes).map_err(ApiError::internal)?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(file.sha256.0);
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(staged_key(upload_id, &file.name))
            .content_length(len)
            .checksum_sha256(checksum)
            .customize()
            // Signed with exactly the credentials whose expiry capped the URL.
            .config_override(aws_sdk_s3::config::Builder::default().credentials_provider(creds))
            .presigned(cfg)
            .await
            .map_err(|e| s3_err("presigning a PUT", DisplayErrorContext(e)))?;
        let headers = req.headers().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        let target = PutTarget {
            name: file.name.clone(),
            url: req.uri().to_string(),
            method: req.method().to_string(),
            headers,
        };
        Ok(Presigned { target, expires_at })
    }

    async fn check(&self, upload_id: &str, file: &DeclaredFile) -> Result<Staged, ApiError> {
        use base64::Engine;
        let r = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(staged_key(upload_id, &file.name))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await;
        let head = match r {
            Ok(h) => h,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                return Ok(Staged::Missing);
            }
            Err(e) => {
                return Err(s3_err("HEAD", DisplayErrorContext(e)));
            }
        };
        let len = head.content_length().unwrap_or(-1);
        if u64::try_from(len).ok() != Some(file.bytes) {
            return Ok(Staged::Differs(format!("{len} bytes, not {}", file.bytes)));
        }
        let want = base64::engine::general_purpose::STANDARD.encode(file.sha256.0);
        match head.checksum_sha256() {
            Some(got) if got == want => Ok(Staged::Ready),
            Some(_) => Ok(Staged::Differs("S3's SHA-256 is not the declared one".into())),
            None => Ok(Staged::Differs("S3 holds no SHA-256 for it".into())),
        }
    }

    async fn receive(
        &self,
        _upload_id: &str,
        _file: &str,
        _q: &PutQuery,
        _body: axum::body::Body,
    ) -> Result<(), ApiError> {
        Err(ApiError::not_found("upload route (this deployment takes files at S3 URLs)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use posthuman_types::Hash32;

    /// Presigns over `creds` with no network (an unused loopback endpoint).
    fn uploads(creds: Credentials) -> S3Uploads {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .endpoint_url("http://127.0.0.1:9")
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        S3Uploads::from_client(client, "b", SharedCredentialsProvider::new(creds))
    }

    fn role_credentials(expires_in: u64) -> Credentials {
        let expiry = UNIX_EPOCH + Duration::from_secs(now_secs() + expires_in);
        Credentials::new("ASIAEXAMPLE", "secret", Some("session".into()), Some(expiry), "test")
    }

    fn query(url: &str, key: &str) -> Option<String> {
        url.split(['?', '&']).find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(String::from))
    }

    fn weights() -> DeclaredFile {
        DeclaredFile { name: "weights".into(), bytes: 3, sha256: Hash32([7; 32]) }
    }

    fn id() -> String {
        format!("u-{}", "ab".repeat(16))
    }

    /// A URL signed with a role's temporary credentials dies with their session token,
    /// whatever its `X-Amz-Expires` says: the presigner ends it before them and says when.
    #[tokio::test]
    async fn urls_end_before_their_credentials() {
        let now = now_secs();
        let p = uploads(role_credentials(300)).presign(&id(), &weights(), now + 900).await.unwrap();
        let secs: u64 = query(&p.target.url, "X-Amz-Expires").unwrap().parse().unwrap();
        let want = 300 - CREDENTIALS_MARGIN_SECS;
        assert!((want - 2..=want).contains(&secs), "X-Amz-Expires={secs}, want ~{want}");
        assert!(
            (now + want - 2..=now + want + 2).contains(&p.expires_at),
            "the real expiry is told: {} vs now + {want}",
            p.expires_at - now
        );
        assert_eq!(query(&p.target.url, "X-Amz-Security-Token").as_deref(), Some("session"));
        assert!(query(&p.target.url, "X-Amz-Credential").unwrap().starts_with("ASIAEXAMPLE"));
    }

    /// Credentials that outlive the asked lifetime, or report no expiry, leave it as asked.
    #[tokio::test]
    async fn long_lived_credentials_keep_the_asked_lifetime() {
        let now = now_secs();
        for creds in [
            role_credentials(6 * 3600),
            Credentials::new("AKIAEXAMPLE", "secret", None, None, "test"),
        ] {
            let p = uploads(creds).presign(&id(), &weights(), now + 900).await.unwrap();
            assert_eq!(p.expires_at, now + 900);
            let secs: u64 = query(&p.target.url, "X-Amz-Expires").unwrap().parse().unwrap();
            assert!((898..=900).contains(&secs), "X-Amz-Expires={secs}");
        }
    }

    /// Credentials about to expire sign nothing: a URL that died within a minute would only
    /// fail the client's PUT later; a 503 says retry now.
    #[tokio::test]
    async fn credentials_about_to_expire_are_refused() {
        let now = now_secs();
        let e = uploads(role_credentials(90)).presign(&id(), &weights(), now + 900).await;
        let e = e.unwrap_err();
        assert!(matches!(e, ApiError::Unavailable { .. }), "{e:?}");
        assert!(e.to_string().contains("retry"), "{e}");
        assert!(cap_expiry(now + 900, None, now).is_ok_and(|t| t == now + 900));
    }
}
