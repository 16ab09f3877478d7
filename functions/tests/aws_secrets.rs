//! Issue 13 §7: the Lambdas read the operator key from Secrets Manager at run time (moto
//! stands in for AWS), so the key is in no function's environment.

#![allow(clippy::unwrap_used)] // tests may unwrap (COMMON.md)

mod common;

use posthuman_functions::secrets::{SecretError, operator_key};

fn client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let creds = aws_sdk_secretsmanager::config::Credentials::new("test", "test", None, None, "t");
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

#[tokio::test]
async fn the_operator_key_is_read_from_secrets_manager() {
    let Some(endpoint) = common::twin_endpoint(
        "POSTHUMAN_MOTO_ENDPOINT",
        "the_operator_key_is_read_from_secrets_manager",
    ) else {
        return;
    };
    let c = client(&endpoint);
    let name = format!("posthuman-operator-{}", std::process::id());
    let key = "11".repeat(32);
    let made = c.create_secret().name(&name).secret_string(&key).send().await.unwrap();
    let arn = made.arn().unwrap().to_string();
    // By ARN (what the stack passes) and by name.
    assert_eq!(operator_key(&c, &arn).await.unwrap(), format!("0x{key}"));
    assert_eq!(operator_key(&c, &name).await.unwrap(), format!("0x{key}"));

    // A JSON secret with a `key` field works too; a secret that is no key is refused.
    let json = format!("{name}-json");
    c.create_secret()
        .name(&json)
        .secret_string(format!(r#"{{"key":"0x{key}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(operator_key(&c, &json).await.unwrap(), format!("0x{key}"));
    let junk = format!("{name}-junk");
    c.create_secret().name(&junk).secret_string("hunter2").send().await.unwrap();
    let e = operator_key(&c, &junk).await.unwrap_err();
    assert!(matches!(e, SecretError::NotAKey { .. }), "{e}");
    // The refusal never echoes the secret's value.
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = operator_key(&c, &format!("{name}-missing")).await.unwrap_err();
    assert!(matches!(e, SecretError::Unreadable { .. }), "{e}");
}

/// Issue 17: the address book is read from its SSM parameter at cold start (so a contract
/// redeploy reaches the functions without a stack update); a missing or malformed one is
/// refused with the parameter's name.
#[tokio::test]
async fn the_address_book_is_read_from_its_ssm_parameter() {
    use posthuman_functions::aws::address_book_from_ssm;
    let Some(endpoint) = common::twin_endpoint(
        "POSTHUMAN_MOTO_ENDPOINT",
        "the_address_book_is_read_from_its_ssm_parameter",
    ) else {
        return;
    };
    let creds = aws_sdk_ssm::config::Credentials::new("test", "test", None, None, "t");
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(creds)
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(conf);
    let name = format!("/posthuman-test/{}/address-book", std::process::id());
    let z = "0x0000000000000000000000000000000000000000";
    let book = serde_json::json!({
        "chain_id": 8996, "operator": "0x00000000000000000000000000000000000000aa", "ocean": z,
        "opf_collector": z, "router": z, "fixed_rate": z, "dispenser": z, "erc20_template": z,
        "erc721_template": z, "factory": z, "lineage": z, "market": z, "deployed_at_block": 7
    });
    let put = |value: String| {
        ssm.put_parameter()
            .name(&name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
    };
    let e = address_book_from_ssm(&ssm, &name).await.unwrap_err();
    assert!(e.contains(&name), "{e}");
    put("{}".into()).await.unwrap();
    let e = address_book_from_ssm(&ssm, &name).await.unwrap_err();
    assert!(e.contains(&name) && e.contains("AddressBook"), "{e}");
    put(book.to_string()).await.unwrap();
    let got = address_book_from_ssm(&ssm, &name).await.unwrap();
    assert_eq!(got.chain_id, 8996);
    assert_eq!(got.deployed_at_block, 7);
}
