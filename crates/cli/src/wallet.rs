//! Wallets: an encrypted keystore file (Web3 Secret Storage, scrypt + AES-128-CTR) or a raw
//! key taken from an environment variable, never from a command-line argument (arguments
//! leak into shell history and `ps`).

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;

use crate::error::CliError;

/// Where the CLI gets its key from, resolved once from the global flags.
#[derive(Clone, Debug)]
pub enum WalletSource {
    /// An encrypted keystore and its password (read from the environment at start-up).
    Keystore { path: PathBuf, password: Option<String>, password_env: String },
    /// A hex private key read from the named environment variable at start-up.
    Key { key: Option<String>, var: String },
}

impl WalletSource {
    /// Decrypts or parses the key.
    pub fn load(&self) -> Result<PrivateKeySigner, CliError> {
        match self {
            WalletSource::Key { key, var } => {
                let hex = key.as_deref().ok_or_else(|| {
                    CliError::Usage(format!("the environment variable {var} holds no private key"))
                })?;
                parse_key(hex)
            }
            WalletSource::Keystore { path, password, password_env } => {
                let password = checked_password(password.as_deref(), password_env)?;
                if !path.exists() {
                    return Err(CliError::Usage(format!(
                        "no wallet at {}: create one with `posthuman wallet create`",
                        path.display()
                    )));
                }
                PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
                    CliError::Usage(format!(
                        "cannot open the wallet at {} ({e}): check the password in {password_env}",
                        path.display()
                    ))
                })
            }
        }
    }
}

fn checked_password<'a>(password: Option<&'a str>, var: &str) -> Result<&'a str, CliError> {
    let p = password.ok_or_else(|| {
        CliError::Usage(format!("set the wallet password in the environment variable {var}"))
    })?;
    if p.len() < 8 {
        return Err(CliError::Usage(format!(
            "the password in {var} must be at least 8 characters"
        )));
    }
    Ok(p)
}

/// Parses a 32-byte hex private key, with or without `0x`.
pub fn parse_key(hex: &str) -> Result<PrivateKeySigner, CliError> {
    let b: B256 = hex
        .trim()
        .parse()
        .map_err(|_| CliError::Usage("a private key is 32 bytes of hex".into()))?;
    PrivateKeySigner::from_bytes(&b)
        .map_err(|_| CliError::Usage("that private key is not a valid secp256k1 key".into()))
}

/// Encrypts `signer` into a keystore file at `path` (refusing to overwrite one), 0600.
pub fn save_keystore(
    path: &Path,
    signer: &PrivateKeySigner,
    password: Option<&str>,
    password_env: &str,
) -> Result<Address, CliError> {
    let password = checked_password(password, password_env)?;
    if path.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists: choose another --wallet path or remove it first",
            path.display()
        )));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::Usage("the wallet path must end in a file name".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| CliError::Io(format!("{}: {e}", dir.display())))?;
    let mut rng = rand08::thread_rng();
    PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rng,
        signer.credential().to_bytes(),
        password,
        Some(name),
    )
    .map_err(|e| CliError::Io(format!("writing the keystore: {e}")))?;
    restrict(path)?;
    Ok(signer.address())
}

#[cfg(unix)]
fn restrict(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CliError::Io(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> Result<(), CliError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.json");
        let pw = Some("correct horse battery");
        let signer = PrivateKeySigner::random();
        assert!(save_keystore(&path, &signer, Some("short"), "PW").is_err());
        let addr = save_keystore(&path, &signer, pw, "PW").unwrap();
        assert_eq!(addr, signer.address());
        let src = |p: &str| WalletSource::Keystore {
            path: path.clone(),
            password: Some(p.into()),
            password_env: "PW".into(),
        };
        assert_eq!(src("correct horse battery").load().unwrap().address(), addr);
        // Never overwrites.
        assert!(save_keystore(&path, &signer, pw, "PW").is_err());
        // A wrong password is one clear error, not a panic.
        assert!(matches!(src("wrong password!").load(), Err(CliError::Usage(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_from_env() {
        assert!(parse_key("0x12").is_err());
        assert!(parse_key(&format!("0x{}", "00".repeat(32))).is_err()); // zero is no key
        let k = format!("0x{}", "11".repeat(32));
        assert!(parse_key(&k).is_ok());
    }
}
