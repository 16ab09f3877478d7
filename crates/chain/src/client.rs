//! The `Chain` client: a provider with the operator's key (and any other local signers),
//! the address book, and the Ocean operations: publish, mint, transfer, approve, balances,
//! fixed-rate exchanges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::{Ethereum, EthereumWallet};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{
    DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder, RootProvider, SendableTx,
};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::TransportResult;
use posthuman_types::{Hash32, RewardScheme};

use crate::bindings::{
    ERC20Template, ERC721Factory, ERC721Template, FixedRateExchange, IFactory, OceanToken,
};
use crate::{AddressBook, ChainError};

/// ERC725Y key under which a model's canonical weights hash is stored in its data NFT
/// (the lineage contract reads the same key).
pub fn weights_hash_key() -> B256 {
    keccak256("posthuman.weightsHash")
}

/// ERC725Y key holding the same weights hash as [`weights_hash_key`], as the UTF-8 text of its
/// `0x` hex: Ocean's tools decode every ERC725Y value as UTF-8 (ocean.js `Nft.getData`), which
/// the raw 32 bytes are not. The raw value stays the commitment the lineage contract and
/// `verify` read; this one only lets stock tools show it.
pub const WEIGHTS_HASH_HEX_KEY_NAME: &str = "posthuman.weightsHashHex";

/// The ERC725Y key of [`WEIGHTS_HASH_HEX_KEY_NAME`].
pub fn weights_hash_hex_key() -> B256 {
    keccak256(WEIGHTS_HASH_HEX_KEY_NAME)
}

/// ERC725Y key for the model card JSON (public metadata, never weights).
pub fn card_key() -> B256 {
    keccak256("posthuman.card")
}

/// Builds an HTTP provider that signs with `signers` (the first is the default sender).
///
/// Each sender's transactions go out one at a time per process (see [`OneSendAtATime`]):
/// the nonce is the node's pending count, read while holding the sender's turn, so
/// concurrent sends from one key (clones of a [`Chain`], several `Chain`s, `deploy_stack`)
/// never share a nonce. Nothing is cached, so a send the node refused, an `evm_revert`, or a
/// restarted chain on the same port leaves nothing to resynchronise.
pub(crate) fn build_provider(
    rpc_url: &str,
    signers: &[PrivateKeySigner],
) -> Result<DynProvider, ChainError> {
    let url =
        rpc_url.parse().map_err(|e| ChainError::Invalid(format!("rpc url {rpc_url}: {e}")))?;
    let Some((first, rest)) = signers.split_first() else {
        return Err(ChainError::Invalid("at least one signer".into()));
    };
    let mut wallet = EthereumWallet::new(first.clone());
    for s in rest {
        wallet.register_signer(s.clone());
    }
    let p = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(wallet)
        .connect_http(url);
    Ok(DynProvider::new(OneSendAtATime {
        inner: p,
        rpc_url: rpc_url.to_string(),
        default_sender: first.address(),
    }))
}

/// Each sender's turn to send, per endpoint, shared by every provider in this process.
type Turns = HashMap<(String, Address), Arc<tokio::sync::Mutex<()>>>;

fn turns() -> &'static std::sync::Mutex<Turns> {
    static TURNS: OnceLock<std::sync::Mutex<Turns>> = OnceLock::new();
    TURNS.get_or_init(Default::default)
}

/// A provider that holds its sender's turn from filling a transaction (gas estimate, nonce,
/// signature) until the node has accepted or refused it.
///
/// Without it, two concurrent sends from one key both read the same pending nonce and the
/// node refuses the second ("nonce too low"). With it, the second reads the pending count
/// only after the first is in the node's pool, so it gets the next nonce; a send the node
/// refused consumed nothing, so the next one reads the same nonce again (no gap). Only the
/// sends queue up: waiting for receipts happens outside the turn, so transactions still
/// confirm concurrently.
///
/// The turn is per process and per endpoint URL: another process sending from the same key
/// can still collide (that send fails with the node's "nonce too low"; nothing stalls).
#[derive(Clone, Debug)]
struct OneSendAtATime<P> {
    inner: P,
    rpc_url: String,
    /// Who sends a transaction that names no `from` (the wallet's default signer).
    default_sender: Address,
}

impl<P> OneSendAtATime<P> {
    /// Waits for the sender's turn; `None` for an already signed envelope (its nonce is set).
    async fn turn(&self, tx: &SendableTx<Ethereum>) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let SendableTx::Builder(req) = tx else { return None };
        let sender = req.from.unwrap_or(self.default_sender);
        let turn = {
            // A poisoned map only means another thread panicked while inserting; the map
            // itself is still a valid set of locks.
            let mut all = turns().lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(all.entry((self.rpc_url.clone(), sender)).or_default())
        };
        Some(turn.lock_owned().await)
    }
}

#[async_trait::async_trait]
impl<P: Provider<Ethereum>> Provider<Ethereum> for OneSendAtATime<P> {
    fn root(&self) -> &RootProvider<Ethereum> {
        self.inner.root()
    }

    async fn send_transaction_internal(
        &self,
        tx: SendableTx<Ethereum>,
    ) -> TransportResult<PendingTransactionBuilder<Ethereum>> {
        let _turn = self.turn(&tx).await;
        self.inner.send_transaction_internal(tx).await
    }

    async fn send_transaction_sync_internal(
        &self,
        tx: SendableTx<Ethereum>,
    ) -> TransportResult<TransactionReceipt> {
        let _turn = self.turn(&tx).await;
        self.inner.send_transaction_sync_internal(tx).await
    }
}

/// Sends a transaction, waits for its receipt, and fails if it reverted.
pub(crate) async fn send<P, D>(
    call: CallBuilder<P, D, Ethereum>,
) -> Result<TransactionReceipt, ChainError>
where
    P: Provider<Ethereum>,
    D: CallDecoder,
{
    let receipt = call.send().await?.get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::Reverted(format!("{}", receipt.transaction_hash)));
    }
    Ok(receipt)
}

pub(crate) fn b256(h: &Hash32) -> B256 {
    B256::from(h.0)
}

pub(crate) fn hash32(b: B256) -> Hash32 {
    Hash32(b.0)
}

/// A model asset as published: its data NFT and datatoken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedModel {
    pub nft: Address,
    pub datatoken: Address,
    pub tx: B256,
    /// Gas of each transaction, in order (create, metadata, registerRoot).
    pub gas: Vec<(&'static str, u64)>,
}

/// What to publish for a root model.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    pub name: String,
    pub symbol: String,
    pub token_uri: String,
    /// Canonical weights hash (the commitment stored in the NFT and the lineage contract).
    pub weights_hash: Hash32,
    /// Optional public model card JSON stored in the NFT's ERC725Y store.
    pub card_json: Option<String>,
    /// Reward scheme for derivatives (fixed at registration).
    pub reward: RewardScheme,
    /// The model's owner of record, paid every derivation's remainder, when it is not the
    /// publisher (e.g. the operator publishes and holds the NFT for a user without her
    /// key). `None`: the publisher itself.
    pub root_owner: Option<Address>,
}

/// A fixed-rate exchange for a datatoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub id: B256,
    pub datatoken: Address,
    pub gas: u64,
}

/// The chain client: operator key, other local signers, and the address book.
#[derive(Clone, Debug)]
pub struct Chain {
    pub(crate) provider: DynProvider,
    rpc_url: String,
    operator: PrivateKeySigner,
    signers: BTreeMap<Address, PrivateKeySigner>,
    pub(crate) book: AddressBook,
    /// Confirmations an order needs (0 on a local dev chain; the API sets it from its
    /// configuration, see [`crate::orders::default_min_confirmations`]).
    pub min_confirmations: u64,
}

impl Chain {
    /// Connects to `rpc_url` with the operator key and a deployment's address book.
    pub fn connect(
        rpc_url: &str,
        operator: PrivateKeySigner,
        book: AddressBook,
    ) -> Result<Chain, ChainError> {
        let provider = build_provider(rpc_url, std::slice::from_ref(&operator))?;
        Ok(Chain {
            provider,
            rpc_url: rpc_url.to_string(),
            operator,
            signers: BTreeMap::new(),
            book,
            min_confirmations: 0,
        })
    }

    /// Lets the client send transactions as `signer` (a buyer, a publisher…), by passing its
    /// address as `from` to the methods that take one.
    pub fn add_signer(&mut self, signer: PrivateKeySigner) -> Result<(), ChainError> {
        self.signers.insert(signer.address(), signer);
        let mut all = vec![self.operator.clone()];
        all.extend(self.signers.values().cloned());
        self.provider = build_provider(&self.rpc_url, &all)?;
        Ok(())
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The JSON-RPC endpoint this client talks to.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    pub fn operator(&self) -> Address {
        self.operator.address()
    }

    pub(crate) fn operator_signer(&self) -> &PrivateKeySigner {
        &self.operator
    }

    pub(crate) fn check_signer(&self, from: Address) -> Result<(), ChainError> {
        if from == self.operator.address() || self.signers.contains_key(&from) {
            Ok(())
        } else {
            Err(ChainError::UnknownSigner(from))
        }
    }

    /// Native balance (wei).
    pub async fn eth_balance(&self, who: Address) -> Result<U256, ChainError> {
        Ok(self.provider.get_balance(who).await?)
    }

    /// Sends `wei` of the native coin from the operator (funding local wallets for gas).
    pub async fn send_eth(&self, to: Address, wei: U256) -> Result<B256, ChainError> {
        let tx = alloy::rpc::types::TransactionRequest::default().to(to).value(wei);
        let receipt = self.provider.send_transaction(tx).await?.get_receipt().await?;
        if !receipt.status() {
            return Err(ChainError::Reverted("eth transfer".into()));
        }
        Ok(receipt.transaction_hash)
    }

    /// Publishes a root model as `publisher` (who owns the NFT and mints its datatokens):
    /// data NFT + datatoken via `createNftWithErc20`, the weights commitment (and the card,
    /// if any) in the NFT's ERC725Y store, then the operator registers it as a lineage root
    /// with its reward scheme and `req.root_owner` (default: `publisher`) as root owner.
    pub async fn publish_model(
        &self,
        publisher: Address,
        req: &PublishRequest,
    ) -> Result<PublishedModel, ChainError> {
        self.check_signer(publisher)?;
        req.reward.validate().map_err(|e| ChainError::Invalid(e.to_string()))?;
        let total = req.reward.total().map_err(|e| ChainError::Invalid(e.to_string()))?;
        let royalty = req.reward.royalty().map_err(|e| ChainError::Invalid(e.to_string()))?;
        let mut gas = Vec::new();
        let factory = ERC721Factory::new(self.book.factory, &self.provider);
        let nft_data = IFactory::NftCreateData {
            name: req.name.clone(),
            symbol: req.symbol.clone(),
            templateIndex: U256::from(1),
            tokenURI: req.token_uri.clone(),
            transferable: true,
            owner: publisher,
        };
        let erc_data = IFactory::ErcCreateData {
            templateIndex: U256::from(1),
            strings: vec![req.name.clone(), req.symbol.clone()],
            // Minter: the publisher (who mints for the exchange); payment collector: the
            // root owner, so order payments reach the owner even when the operator holds
            // the NFT in custody for them.
            addresses: vec![
                publisher,
                req.root_owner.unwrap_or(publisher),
                Address::ZERO,
                Address::ZERO,
            ],
            uints: vec![U256::MAX >> 1, U256::ZERO],
            bytess: vec![],
        };
        let receipt = send(factory.createNftWithErc20(nft_data, erc_data).from(publisher)).await?;
        gas.push(("createNftWithErc20", receipt.gas_used));
        let tx = receipt.transaction_hash;
        let nft = receipt
            .decoded_log::<ERC721Factory::NFTCreated>()
            .map(|l| l.newTokenAddress)
            .ok_or(ChainError::MissingEvent { event: "NFTCreated", tx: tx.to_string() })?;
        let datatoken = receipt
            .decoded_log::<ERC721Factory::TokenCreated>()
            .map(|l| l.newTokenAddress)
            .ok_or(ChainError::MissingEvent { event: "TokenCreated", tx: tx.to_string() })?;

        let nft_i = ERC721Template::new(nft, &self.provider);
        let value = Bytes::copy_from_slice(&req.weights_hash.0);
        let r = send(nft_i.setNewData(weights_hash_key(), value).from(publisher)).await?;
        gas.push(("setNewData(weightsHash)", r.gas_used));
        let hex = format!("{:#x}", B256::from(req.weights_hash.0));
        let r = send(
            nft_i.setNewData(weights_hash_hex_key(), Bytes::from(hex.into_bytes())).from(publisher),
        )
        .await?;
        gas.push(("setNewData(weightsHashHex)", r.gas_used));
        if let Some(card) = &req.card_json {
            let r = send(
                nft_i
                    .setNewData(card_key(), Bytes::from(card.clone().into_bytes()))
                    .from(publisher),
            )
            .await?;
            gas.push(("setNewData(card)", r.gas_used));
        }
        let r = self
            .register_root(
                nft,
                datatoken,
                req.weights_hash,
                publisher,
                req.root_owner.unwrap_or(publisher),
                total,
                &req.reward.shares_bps,
                royalty,
            )
            .await?;
        gas.push(("registerRoot", r.gas_used));
        Ok(PublishedModel { nft, datatoken, tx, gas })
    }

    /// A value from a data NFT's ERC725Y store.
    pub async fn nft_data(&self, nft: Address, key: B256) -> Result<Bytes, ChainError> {
        Ok(ERC721Template::new(nft, &self.provider).getData(key).call().await?)
    }

    /// The weights commitment stored in a model's NFT.
    pub async fn weights_commitment(&self, nft: Address) -> Result<Option<Hash32>, ChainError> {
        let data = self.nft_data(nft, weights_hash_key()).await?;
        Ok(<[u8; 32]>::try_from(data.as_ref()).ok().map(Hash32))
    }

    /// Mints `amount` of `token` to `to`, sent by `from` (must be a minter).
    pub async fn mint(
        &self,
        from: Address,
        token: Address,
        to: Address,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(from)?;
        send(ERC20Template::new(token, &self.provider).mint(to, amount).from(from)).await
    }

    /// ERC-20 transfer of `amount` of `token` from `from` to `to`.
    pub async fn transfer(
        &self,
        from: Address,
        token: Address,
        to: Address,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(from)?;
        send(OceanToken::new(token, &self.provider).transfer(to, amount).from(from)).await
    }

    /// ERC-20 approve of `spender` for `amount` of `token`, by `owner`.
    pub async fn approve(
        &self,
        owner: Address,
        token: Address,
        spender: Address,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        self.check_signer(owner)?;
        send(OceanToken::new(token, &self.provider).approve(spender, amount).from(owner)).await
    }

    /// ERC-20 balance.
    pub async fn balance_of(&self, token: Address, who: Address) -> Result<U256, ChainError> {
        Ok(OceanToken::new(token, &self.provider).balanceOf(who).call().await?)
    }

    /// Creates a fixed-rate exchange selling `datatoken` for OCEAN at `rate` (OCEAN base units
    /// per whole datatoken, 18 decimals), sent by `owner` (needs the NFT's ERC20-deployer
    /// role, which the NFT owner has). With `with_mint` the exchange mints on each sale;
    /// otherwise it sells `owner`'s approved tokens.
    pub async fn create_fixed_rate(
        &self,
        owner: Address,
        datatoken: Address,
        rate: U256,
        with_mint: bool,
    ) -> Result<Exchange, ChainError> {
        self.check_signer(owner)?;
        let dt = ERC20Template::new(datatoken, &self.provider);
        let addresses = vec![self.book.ocean, owner, owner, Address::ZERO];
        let uints =
            vec![U256::from(18), U256::from(18), rate, U256::ZERO, U256::from(u8::from(with_mint))];
        let receipt =
            send(dt.createFixedRate(self.book.fixed_rate, addresses, uints).from(owner)).await?;
        let id = receipt.decoded_log::<ERC20Template::NewFixedRate>().map(|l| l.exchangeId).ok_or(
            ChainError::MissingEvent {
                event: "NewFixedRate",
                tx: receipt.transaction_hash.to_string(),
            },
        )?;
        Ok(Exchange { id, datatoken, gas: receipt.gas_used })
    }

    /// OCEAN needed to buy `amount` datatokens from an exchange (fees included).
    pub async fn quote(&self, exchange: B256, amount: U256) -> Result<U256, ChainError> {
        let fre = FixedRateExchange::new(self.book.fixed_rate, &self.provider);
        Ok(fre.calcBaseInGivenOutDT(exchange, amount, U256::ZERO).call().await?.baseTokenAmount)
    }

    /// Buys `amount` datatokens as `buyer`, approving exactly the quoted OCEAN first.
    /// Returns (approve receipt gas, buy receipt).
    pub async fn buy(
        &self,
        buyer: Address,
        exchange: B256,
        amount: U256,
    ) -> Result<(u64, TransactionReceipt), ChainError> {
        self.check_signer(buyer)?;
        let cost = self.quote(exchange, amount).await?;
        let approve = self.approve(buyer, self.book.ocean, self.book.fixed_rate, cost).await?;
        let fre = FixedRateExchange::new(self.book.fixed_rate, &self.provider);
        let receipt =
            send(fre.buyDT(exchange, amount, cost, self.operator(), U256::ZERO).from(buyer))
                .await?;
        Ok((approve.gas_used, receipt))
    }
}
