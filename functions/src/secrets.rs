//! The operator key at run time from AWS Secrets Manager, never from the environment.
//!
//! A Lambda's environment is readable by anyone who may `GetFunctionConfiguration`, shows in
//! the console and in every CloudFormation template that resolves into it. The stack
//! therefore passes only the secret's ARN (`POSTHUMAN_OPERATOR_KEY_SECRET`), grants the
//! function `secretsmanager:GetSecretValue` on that one secret, and the function reads the
//! key once at cold start with [`operator_key`]. Rotating the secret (and the lineage
//! contract's operator, `setOperator`) takes effect on the next cold start.

use aws_sdk_secretsmanager::Client;

/// Why the key could not be read: each variant says what the deployer can do.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret does not exist or this role may not read it: check the ARN and the grant.
    #[error("the operator key secret {id} cannot be read: {detail}")]
    Unreadable { id: String, detail: String },
    /// The secret holds no string (binary secrets are not used by the stack).
    #[error("the operator key secret {id} holds no SecretString")]
    NotAString { id: String },
    /// The string is not a 32-byte hex private key (optionally JSON `{"key": "0x…"}`).
    #[error("the operator key secret {id} does not hold a private key")]
    NotAKey { id: String },
}

/// A Secrets Manager client from the ambient AWS configuration; `endpoint_url` for a local
/// twin (moto in tests).
pub async fn client(region: &str, endpoint_url: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// Reads secret `id` (name or ARN) and returns the operator key it holds, as `0x…` hex. The
/// secret's value is either the key itself or JSON with a `key` field.
pub async fn operator_key(client: &Client, id: &str) -> Result<String, SecretError> {
    let out = client.get_secret_value().secret_id(id).send().await.map_err(|e| {
        SecretError::Unreadable {
            id: id.to_string(),
            detail: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        }
    })?;
    let text = out.secret_string().ok_or_else(|| SecretError::NotAString { id: id.into() })?;
    parse_key(text).ok_or_else(|| SecretError::NotAKey { id: id.into() })
}

/// The key in a secret's string: bare hex (with or without `0x`) or `{"key": "…"}`.
pub fn parse_key(text: &str) -> Option<String> {
    let text = text.trim();
    let raw = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => o.get("key")?.as_str()?.trim().to_string(),
        _ => text.to_string(),
    };
    let hex = raw.strip_prefix("0x").unwrap_or(&raw);
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_bare_or_as_json_and_nothing_else() {
        let k = "ab".repeat(32);
        assert_eq!(parse_key(&k).as_deref(), Some(format!("0x{k}").as_str()));
        assert_eq!(parse_key(&format!(" 0x{} \n", k.to_uppercase())), Some(format!("0x{k}")));
        assert_eq!(parse_key(&format!(r#"{{"key": "0x{k}"}}"#)), Some(format!("0x{k}")));
        for bad in ["", "0x1234", &"zz".repeat(32), r#"{"other": 1}"#, &"ab".repeat(33)] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
