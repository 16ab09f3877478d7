//! The wallet, as plain data: what the storefront asks an EIP-1193 provider (`eth_call`
//! bodies for `balanceOf`, the chain to switch to or add) and how it reads the answers (chain
//! ids, balances, the provider's error codes in words). The browser side is
//! [`crate::eip1193`]; this module is unit-tested natively.
//!
//! Request params are written as JSON text directly (`format!` over addresses, hex and
//! numbers, which need no escaping; [`json_str`] for any other string): building them as
//! `serde_json::Value`s (`json!`) cost the storefront's wasm ~10 KB of map and serializer
//! code. Answers are still read as `Value`s (the receipt checks' RPC reads them so anyway).

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol;
use alloy::sol_types::SolCall;
use serde_json::Value;

sol! {
    /// ERC-20 `balanceOf` (OCEAN and every datatoken).
    function balanceOf(address owner) external view returns (uint256);
    /// The lineage contract's royalty vault of a derived model (zero when it has none): a
    /// `RoyaltyPaid` event counts only from the vault the contract made for that model.
    function royaltyVaultOf(address childNft) external view returns (address);
}

/// Why a wallet request failed, in words the page shows where it happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// No EIP-1193 provider in this browser: install or enable a wallet.
    #[error(
        "no wallet found in this browser: install or enable one (any EIP-1193 wallet, e.g. MetaMask)"
    )]
    NoProvider,
    /// 4001: the person declined in their wallet; they can try again.
    #[error("you rejected the request in your wallet")]
    Rejected,
    /// 4902: the wallet does not know the chain; it can be added.
    #[error("your wallet does not know this network yet")]
    UnknownChain,
    /// -32002: a request of the same kind is already open in the wallet.
    #[error("your wallet already has a request waiting: open it to answer")]
    Pending,
    /// Anything else the wallet or its node answered.
    #[error("the wallet answered: {0}")]
    Other(String),
}

impl WalletError {
    /// From an EIP-1193 error object's `code` and `message`.
    pub fn from_code(code: Option<i64>, message: &str) -> WalletError {
        match code {
            Some(4001) => WalletError::Rejected,
            Some(4902) => WalletError::UnknownChain,
            Some(-32002) => WalletError::Pending,
            _ => WalletError::Other(message.to_string()),
        }
    }
}

/// A `0x…` quantity (`eth_chainId`, `chainChanged`) as a number.
pub fn parse_quantity(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => u64::from_str_radix(s.strip_prefix("0x")?, 16).ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The accounts of `eth_requestAccounts` / `accountsChanged`: the first is the one in use.
pub fn first_account(v: &Value) -> Option<Address> {
    v.as_array()?.first()?.as_str()?.parse().ok()
}

/// `0x1234…abcd`.
pub fn short_address(a: &Address) -> String {
    let s = a.to_checksum(None);
    format!("{}…{}", &s[..6], &s[s.len() - 4..])
}

/// A network's name for people (the ids this project meets; others by number).
pub fn network_name(chain_id: u64) -> String {
    match chain_id {
        1 => "Ethereum".into(),
        10 => "Optimism".into(),
        137 => "Polygon".into(),
        11155111 => "Sepolia".into(),
        8996 => "local development chain (8996)".into(),
        31337 => "local anvil (31337)".into(),
        n => format!("chain {n}"),
    }
}

/// `s` as a JSON string literal (quoted and escaped as serde_json escapes).
pub fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// `eth_call` params reading `owner`'s balance of the ERC-20 `token`.
pub fn balance_call(token: Address, owner: Address) -> String {
    crate::order::call_params(token, &balanceOfCall { owner }.abi_encode())
}

/// The `eth_call` answer of [`balance_call`].
pub fn parse_balance(v: &Value) -> Result<U256, WalletError> {
    let s = v.as_str().ok_or_else(|| WalletError::Other(format!("balanceOf answered {v}")))?;
    let bytes = unhex(s).ok_or_else(|| WalletError::Other(format!("balanceOf answered {s}")))?;
    balanceOfCall::abi_decode_returns(&bytes)
        .map_err(|e| WalletError::Other(format!("balanceOf answered {s}: {e}")))
}

/// `wallet_switchEthereumChain` params.
pub fn switch_params(chain_id: u64) -> String {
    format!(r#"[{{"chainId":"0x{chain_id:x}"}}]"#)
}

/// `wallet_addEthereumChain` params, or `None` when the deployment publishes no RPC (then
/// the wallet cannot be told where the chain is; the page says so).
pub fn add_params(chain_id: u64, rpc_url: Option<&str>) -> Option<String> {
    let rpc = rpc_url?;
    let name = json_str(&format!("Posthuman ({})", network_name(chain_id)));
    Some(format!(
        r#"[{{"chainId":"0x{chain_id:x}","chainName":{name},"nativeCurrency":{{"name":"Ether","symbol":"ETH","decimals":18}},"rpcUrls":[{}]}}]"#,
        json_str(rpc)
    ))
}

/// One `RewardPaid(jobId, childDatatoken, beneficiary, amount)` event of the lineage
/// contract: datatokens of a derived model minted to a trainer by its derivation.
#[derive(Clone, Debug, PartialEq)]
pub struct RewardLog {
    /// The lineage contract's job id of the derivation that paid it.
    pub job_id: alloy::primitives::B256,
    pub datatoken: Address,
    pub amount: U256,
}

/// `eth_getLogs` params since `from_block`: events of `address` (any contract when `None`)
/// whose topics match `topics` (the event signature first; `None` matches anything).
pub(crate) fn logs_params(
    address: Option<Address>,
    topics: &[Option<B256>],
    from_block: u64,
) -> String {
    let topics: Vec<String> =
        topics.iter().map(|t| t.map_or_else(|| "null".into(), |t| format!(r#""{t}""#))).collect();
    let address = address.map(|a| format!(r#","address":"{a:#x}""#)).unwrap_or_default();
    format!(
        r#"[{{"fromBlock":"0x{from_block:x}","toBlock":"latest","topics":[{}]{address}}}]"#,
        topics.join(",")
    )
}

/// `eth_getLogs` params: every `RewardPaid` of `lineage` naming `beneficiary` (its third
/// indexed topic), since the deployment's block.
pub fn reward_logs_params(lineage: Address, beneficiary: Address, from_block: u64) -> String {
    let sig = keccak256("RewardPaid(bytes32,address,address,uint256)");
    logs_params(Some(lineage), &[Some(sig), None, None, Some(beneficiary.into_word())], from_block)
}

/// `eth_getLogs` params: every ERC-20 `Transfer` to `account`, of any token, since the
/// deployment's block. The tokens that emitted them are the only ones the account can hold
/// (minting is a transfer from zero), so the account page reads those balances instead of
/// one per catalogue model (a thousand wallet calls at a thousand models).
pub fn received_logs_params(account: Address, from_block: u64) -> String {
    let sig = keccak256("Transfer(address,address,uint256)");
    logs_params(None, &[Some(sig), None, Some(account.into_word())], from_block)
}

/// The distinct contracts that emitted the events of an `eth_getLogs` answer, in first-seen
/// order.
pub fn parse_log_emitters(v: &Value) -> Result<Vec<Address>, WalletError> {
    let logs =
        v.as_array().ok_or_else(|| WalletError::Other(format!("eth_getLogs answered {v}")))?;
    let mut out: Vec<Address> = Vec::new();
    for l in logs {
        let a: Address = l["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| WalletError::Other(format!("an event without an address: {l}")))?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// One `RoyaltyPaid(childNft, beneficiary, ancestorNft, amount)` event of a royalty vault:
/// OCEAN that orders of a derived model paid to one of its ancestors' trainers. Genuine only
/// when `vault` is the lineage contract's `royaltyVaultOf(child)` ([`royalty_vault_call`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RoyaltyLog {
    pub vault: Address,
    pub child: Address,
    /// Who was paid: the trainer of `ancestor` (its owner of record, for the root).
    pub beneficiary: Address,
    pub ancestor: Address,
    pub amount: U256,
}

/// `eth_getLogs` params: every `RoyaltyPaid` naming `beneficiary`, from any contract (vaults
/// are many; each is checked with [`royalty_vault_call`]).
pub fn royalty_logs_params(beneficiary: Address, from_block: u64) -> String {
    logs_params(
        None,
        &[Some(royalty_paid_topic()), None, Some(beneficiary.into_word())],
        from_block,
    )
}

/// The topic of `RoyaltyVault.RoyaltyPaid(address,address,address,uint256)`.
pub fn royalty_paid_topic() -> B256 {
    keccak256("RoyaltyPaid(address,address,address,uint256)")
}

/// The events of an `eth_getLogs` answer to [`royalty_logs_params`].
pub fn parse_royalty_logs(v: &Value) -> Result<Vec<RoyaltyLog>, WalletError> {
    parse_amount_logs(v, "royalty", |l, topic, amount| {
        Ok(RoyaltyLog {
            vault: l["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| WalletError::Other("a royalty event with no address".into()))?,
            child: Address::from_word(topic(1)?),
            beneficiary: Address::from_word(topic(2)?),
            ancestor: Address::from_word(topic(3)?),
            amount,
        })
    })
}

/// The events of an `eth_getLogs` answer whose data is one uint256 (an amount), each made
/// into a `T` by `make` from the log, its topics (by index) and that amount; `what` names the
/// event in errors.
fn parse_amount_logs<T>(
    v: &Value,
    what: &str,
    make: impl Fn(&Value, &dyn Fn(usize) -> Result<B256, WalletError>, U256) -> Result<T, WalletError>,
) -> Result<Vec<T>, WalletError> {
    let bad = |e: &str| WalletError::Other(format!("a {what} event with {e}"));
    let logs =
        v.as_array().ok_or_else(|| WalletError::Other(format!("eth_getLogs answered {v}")))?;
    logs.iter()
        .map(|l| {
            let topic = |i: usize| -> Result<B256, WalletError> {
                l["topics"][i]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("a bad topic"))
            };
            let data = l["data"].as_str().and_then(unhex).ok_or_else(|| bad("no data"))?;
            if data.len() != 32 {
                return Err(bad("data that is not one uint256"));
            }
            make(l, &topic, U256::from_be_slice(&data))
        })
        .collect()
}

/// `eth_call` params asking `lineage` for `child`'s royalty vault.
pub fn royalty_vault_call(lineage: Address, child: Address) -> String {
    crate::order::call_params(lineage, &royaltyVaultOfCall { childNft: child }.abi_encode())
}

/// The `eth_call` answer of [`royalty_vault_call`].
pub fn parse_royalty_vault(v: &Value) -> Result<Address, WalletError> {
    let s = v.as_str().ok_or_else(|| WalletError::Other(format!("royaltyVaultOf answered {v}")))?;
    let bytes =
        unhex(s).ok_or_else(|| WalletError::Other(format!("royaltyVaultOf answered {s}")))?;
    royaltyVaultOfCall::abi_decode_returns(&bytes)
        .map_err(|e| WalletError::Other(format!("royaltyVaultOf answered {s}: {e}")))
}

/// The events of an `eth_getLogs` answer to [`reward_logs_params`].
pub fn parse_reward_logs(v: &Value) -> Result<Vec<RewardLog>, WalletError> {
    parse_amount_logs(v, "reward", |_, topic, amount| {
        Ok(RewardLog { job_id: topic(1)?, datatoken: Address::from_word(topic(2)?), amount })
    })
}

/// The bytes of a node's `0x…` data answer (`None`: not `0x`-prefixed hex).
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    alloy::hex::decode(s.strip_prefix("0x")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn balance_of_is_encoded_and_decoded_as_erc20() {
        let token: Address = "0x00000000000000000000000000000000000000aa".parse().unwrap();
        let owner: Address = "0x00000000000000000000000000000000000000bb".parse().unwrap();
        let p = parsed(balance_call(token, owner));
        let data = p[0]["data"].as_str().unwrap();
        // selector of balanceOf(address), then the owner left-padded to 32 bytes.
        assert_eq!(&data[..10], "0x70a08231");
        assert!(data.ends_with("00bb") && data.len() == 2 + 8 + 64);
        let answer = format!("0x{:064x}", 1234u64);
        assert_eq!(parse_balance(&json!(answer)).unwrap(), U256::from(1234u64));
        assert!(parse_balance(&json!("0x12")).is_err());
        assert!(parse_balance(&json!(null)).is_err());
    }

    #[test]
    fn reward_events_are_asked_for_by_beneficiary_and_read() {
        let lineage: Address = "0x00000000000000000000000000000000000000aa".parse().unwrap();
        let me: Address = "0x00000000000000000000000000000000000000bb".parse().unwrap();
        let p = parsed(reward_logs_params(lineage, me, 16));
        assert_eq!(p[0]["fromBlock"], "0x10");
        // keccak256("RewardPaid(bytes32,address,address,uint256)"), as the contract emits it.
        let sig = p[0]["topics"][0].as_str().unwrap().to_string();
        assert_eq!(sig.len(), 66);
        assert_eq!(p[0]["topics"][3], format!("0x{:0>64}", "bb"));
        let log = json!([{
            "topics": [sig, format!("0x{:0>64}", "01"), format!("0x{:0>64}", "cc"), format!("0x{:0>64}", "bb")],
            "data": format!("0x{:064x}", 5_000_000_000_000_000_000u128),
        }]);
        let got = parse_reward_logs(&log).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].datatoken,
            "0x00000000000000000000000000000000000000cc".parse::<Address>().unwrap()
        );
        assert_eq!(got[0].amount, U256::from(5_000_000_000_000_000_000u128));
        assert_eq!(got[0].job_id, alloy::primitives::B256::with_last_byte(1));
        assert!(parse_reward_logs(&json!([{ "topics": [], "data": "0x" }])).is_err());
        assert!(parse_reward_logs(&json!({})).is_err());
    }

    #[test]
    fn received_tokens_and_royalties_are_read_from_logs() {
        let me: Address = "0x00000000000000000000000000000000000000bb".parse().unwrap();
        let p = parsed(received_logs_params(me, 7));
        assert!(p[0].get("address").is_none(), "any token");
        assert_eq!(p[0]["fromBlock"], "0x7");
        // keccak256("Transfer(address,address,uint256)"), the ERC-20 event.
        assert_eq!(
            p[0]["topics"][0],
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
        assert_eq!(p[0]["topics"][1], Value::Null);
        assert_eq!(p[0]["topics"][2], format!("0x{:0>64}", "bb"));
        let at =
            |a: &str| json!({ "address": format!("0x{:0>40}", a), "topics": [], "data": "0x" });
        let got = parse_log_emitters(&json!([at("aa"), at("cc"), at("aa")])).unwrap();
        assert_eq!(got.len(), 2, "each token once");
        assert_eq!(
            got[0],
            "0x00000000000000000000000000000000000000aa".parse::<Address>().unwrap()
        );
        assert!(parse_log_emitters(&json!([{ "topics": [] }])).is_err());

        let p = parsed(royalty_logs_params(me, 7));
        assert!(p[0].get("address").is_none(), "any vault");
        assert_eq!(p[0]["topics"][2], format!("0x{:0>64}", "bb"));
        let sig = p[0]["topics"][0].as_str().unwrap().to_string();
        let log = json!([{
            "address": format!("0x{:0>40}", "5a"),
            "topics": [sig, format!("0x{:0>64}", "c3"), format!("0x{:0>64}", "bb"), format!("0x{:0>64}", "c2")],
            "data": format!("0x{:064x}", 250_000_000_000_000_000u128),
        }]);
        let got = parse_royalty_logs(&log).unwrap();
        assert_eq!(
            got[0].vault,
            "0x000000000000000000000000000000000000005a".parse::<Address>().unwrap()
        );
        assert_eq!(
            got[0].child,
            "0x00000000000000000000000000000000000000c3".parse::<Address>().unwrap()
        );
        assert_eq!(
            got[0].ancestor,
            "0x00000000000000000000000000000000000000c2".parse::<Address>().unwrap()
        );
        assert_eq!(got[0].beneficiary, me);
        assert_eq!(got[0].amount, U256::from(250_000_000_000_000_000u128));
        assert!(parse_royalty_logs(&json!([{ "topics": [], "data": "0x" }])).is_err());

        let lineage: Address = "0x00000000000000000000000000000000000000ee".parse().unwrap();
        let call = parsed(royalty_vault_call(lineage, got[0].child));
        assert!(call[0]["data"].as_str().unwrap().ends_with("00c3"));
        let answer = json!(format!("0x{:0>64}", "5a"));
        assert_eq!(parse_royalty_vault(&answer).unwrap(), got[0].vault);
        assert!(parse_royalty_vault(&json!("0x")).is_err());
    }

    #[test]
    fn wallet_answers_are_read_and_errors_are_words() {
        assert_eq!(parse_quantity(&json!("0x7a69")), Some(31337));
        assert_eq!(parse_quantity(&json!("31337")), None);
        let a = first_account(&json!(["0x00000000000000000000000000000000000000bb"])).unwrap();
        assert_eq!(short_address(&a), "0x0000…00bb");
        assert_eq!(first_account(&json!([])), None);
        assert_eq!(WalletError::from_code(Some(4001), "x"), WalletError::Rejected);
        assert_eq!(WalletError::from_code(Some(4902), "x"), WalletError::UnknownChain);
        assert_eq!(WalletError::from_code(None, "boom").to_string(), "the wallet answered: boom");
        assert_eq!(parsed(switch_params(31337)), json!([{ "chainId": "0x7a69" }]));
        assert_eq!(add_params(1, None), None);
        // The RPC URL comes from the API: quoted and escaped, never spliced in raw.
        let url = r#"http://x/"],"evil":["\"#;
        assert_eq!(
            parsed(add_params(31337, Some(url)).unwrap()),
            json!([{
                "chainId": "0x7a69",
                "chainName": "Posthuman (local anvil (31337))",
                "nativeCurrency": { "name": "Ether", "symbol": "ETH", "decimals": 18 },
                "rpcUrls": [url],
            }])
        );
        assert_eq!(json_str("a\"b\n"), r#""a\"b\n""#);
    }

    /// The params are JSON text; parsed here to assert on them.
    fn parsed(params: String) -> Value {
        serde_json::from_str(&params).unwrap_or_else(|e| panic!("{params}: {e}"))
    }
}
