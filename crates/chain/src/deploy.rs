//! Deploying the Ocean v4 stack plus our lineage contract and peer market, and the address
//! book that records where everything lives: [`deploy_stack`] on a fresh (test) chain, and
//! [`deploy_contracts`] for any chain (reusing an Ocean deployment already there, idempotent
//! over an existing book), which `posthuman-deploy-contracts` runs.

use std::path::{Path, PathBuf};

use alloy::contract::{CallBuilder, CallDecoder, RawCallBuilder};
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::ChainError;
use crate::bindings::{
    Dispenser, ERC20Template, ERC721Factory, ERC721Template, FactoryRouter, FixedRateExchange,
    ModelLineage, OPFCommunityFeeCollector, OceanToken, PeerMarket,
};
use crate::client::{build_provider, send};

/// Where every contract of a deployment lives (JSON on disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddressBook {
    /// The chain's EIP-155 id.
    pub chain_id: u64,
    /// The operator key's address at deployment: signs provider fees, is the lineage
    /// contract's first operator and its owner (who may rotate the operator later).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub operator: Address,
    /// The OCEAN token (every provider fee and price is paid in it).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub ocean: Address,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub opf_collector: Address,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub router: Address,
    /// Ocean's FixedRateExchange (datatokens are bought there).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub fixed_rate: Address,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub dispenser: Address,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub erc20_template: Address,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub erc721_template: Address,
    /// Ocean's ERC721Factory (data NFTs and datatokens).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub factory: Address,
    /// `ModelLineage`: lineage, rewards and royalties; the verifying contract of receipts
    /// and signed requests.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub lineage: Address,
    /// The peer-to-peer fixed-price market (paid in OCEAN). Books written before it existed
    /// parse with the zero address.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub market: Address,
    /// Block of the last deployment transaction (indexers start here).
    pub deployed_at_block: u64,
}

/// An address book (ours or Ocean's part) read from a JSON file.
fn load_book<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ChainError> {
    let err = |reason: String| ChainError::AddressBook { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

impl AddressBook {
    pub fn load(path: &Path) -> Result<AddressBook, ChainError> {
        load_book(path)
    }

    /// Writes the book atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), ChainError> {
        let err =
            |reason: String| ChainError::AddressBook { path: path.display().to_string(), reason };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// The deployment as Ocean's own tools read one: an entry of `@oceanprotocol/contracts`'
    /// `addresses/address.json` (what ocean.js's `ConfigHelper` loads from `ADDRESS_FILE`),
    /// under the network name Ocean uses for this chain id, with our two contracts added
    /// under their own names (`ModelLineage`, `PeerMarket`). The factory registers its
    /// templates as index 1, as Ocean's deployment does.
    pub fn ocean_address_file(&self) -> serde_json::Value {
        let a = |x: &Address| format!("{x:#x}");
        serde_json::json!({
            ocean_network_name(self.chain_id): {
                "chainId": self.chain_id,
                "startBlock": self.deployed_at_block,
                "Ocean": a(&self.ocean),
                "OPFCommunityFeeCollector": a(&self.opf_collector),
                "Router": a(&self.router),
                "FixedPrice": a(&self.fixed_rate),
                "Dispenser": a(&self.dispenser),
                "ERC721Factory": a(&self.factory),
                "ERC20Template": { "1": a(&self.erc20_template) },
                "ERC721Template": { "1": a(&self.erc721_template) },
                "ModelLineage": a(&self.lineage),
                "PeerMarket": a(&self.market),
            }
        })
    }
}

/// The name Ocean's address files and ocean.js use for a chain id; any other chain (a local
/// anvil included) is Ocean's local `development` network.
pub fn ocean_network_name(chain_id: u64) -> &'static str {
    match chain_id {
        1 => "mainnet",
        10 => "optimism",
        137 => "polygon",
        8453 => "base",
        11155111 => "sepolia",
        11155420 => "optimism_sepolia",
        _ => "development",
    }
}

/// Gas used by each deployment step, in order.
#[derive(Clone, Debug, Default)]
pub struct DeployReport {
    pub steps: Vec<(&'static str, u64)>,
}

impl DeployReport {
    pub fn total_gas(&self) -> u64 {
        self.steps.iter().map(|(_, g)| g).sum()
    }
}

/// OCEAN minted to the operator on a fresh chain (1,000,000 OCEAN).
pub const OCEAN_SUPPLY: u128 = 1_000_000 * 10u128.pow(18);

/// An Ocean v4 deployment already on a chain, for ours to build on: the Ocean half of an
/// [`AddressBook`] (so any address book for that chain serves as one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OceanBook {
    pub chain_id: u64,
    pub ocean: Address,
    pub opf_collector: Address,
    pub router: Address,
    pub fixed_rate: Address,
    pub dispenser: Address,
    pub erc20_template: Address,
    pub erc721_template: Address,
    pub factory: Address,
}

impl OceanBook {
    pub fn load(path: &Path) -> Result<OceanBook, ChainError> {
        load_book(path)
    }

    fn contracts(&self) -> [(&'static str, Address); 8] {
        [
            ("ocean", self.ocean),
            ("opf_collector", self.opf_collector),
            ("router", self.router),
            ("fixed_rate", self.fixed_rate),
            ("dispenser", self.dispenser),
            ("erc20_template", self.erc20_template),
            ("erc721_template", self.erc721_template),
            ("factory", self.factory),
        ]
    }
}

impl AddressBook {
    fn contracts(&self) -> Vec<(&'static str, Address)> {
        let mut all = self.ocean_book().contracts().to_vec();
        all.extend([("lineage", self.lineage), ("market", self.market)]);
        all
    }

    /// The Ocean half of this book.
    pub fn ocean_book(&self) -> OceanBook {
        OceanBook {
            chain_id: self.chain_id,
            ocean: self.ocean,
            opf_collector: self.opf_collector,
            router: self.router,
            fixed_rate: self.fixed_rate,
            dispenser: self.dispenser,
            erc20_template: self.erc20_template,
            erc721_template: self.erc721_template,
            factory: self.factory,
        }
    }
}

/// Deploys OCEAN, the community fee collector, the router, the fixed-rate exchange, the
/// dispenser, the ERC20/ERC721 templates, the factory, the lineage contract (in the order
/// RECIPES §3 gives) and the peer market, wires them together, and returns the book. The
/// operator pays for and owns everything (the market has no owner at all).
pub async fn deploy_stack(
    rpc_url: &str,
    operator: &PrivateKeySigner,
) -> Result<(AddressBook, DeployReport), ChainError> {
    let p = build_provider(rpc_url, std::slice::from_ref(operator))?;
    let chain_id = p.get_chain_id().await?;
    let mut steps = Steps { p: &p, report: DeployReport::default(), progress: &mut |_| {} };
    let ocean = steps.ocean(chain_id, operator.address()).await?;
    let book = steps.ours(&ocean, operator.address()).await?;
    Ok((book, steps.report))
}

/// Deploys transaction by transaction, recording each step's gas and telling `progress`.
struct Steps<'a> {
    p: &'a DynProvider,
    report: DeployReport,
    progress: &'a mut (dyn FnMut(&str) + Send),
}

impl Steps<'_> {
    async fn deploy(
        &mut self,
        name: &'static str,
        builder: RawCallBuilder<&DynProvider>,
    ) -> Result<Address, ChainError> {
        (self.progress)(&format!("deploying {name} ..."));
        let receipt = builder.send().await?.get_receipt().await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(format!("deploying {name}")));
        }
        let Some(addr) = receipt.contract_address else {
            return Err(ChainError::Reverted(format!("deploying {name}: no address")));
        };
        self.report.steps.push((name, receipt.gas_used));
        (self.progress)(&format!("  {name} at {addr} (gas {})", receipt.gas_used));
        Ok(addr)
    }

    async fn call<P: Provider, D: CallDecoder>(
        &mut self,
        name: &'static str,
        call: CallBuilder<P, D>,
    ) -> Result<(), ChainError> {
        (self.progress)(&format!("{name} ..."));
        let r = send(call).await?;
        self.report.steps.push((name, r.gas_used));
        Ok(())
    }

    /// Ocean v4 as RECIPES §3 deploys it, owned by `owner` (who gets [`OCEAN_SUPPLY`]).
    async fn ocean(&mut self, chain_id: u64, owner: Address) -> Result<OceanBook, ChainError> {
        let p = self.p;
        let ocean = self.deploy("OceanToken", OceanToken::deploy_builder(p, owner)).await?;
        self.call(
            "OceanToken.mint",
            OceanToken::new(ocean, p).mint(owner, U256::from(OCEAN_SUPPLY)),
        )
        .await?;
        let opf = self
            .deploy(
                "OPFCommunityFeeCollector",
                OPFCommunityFeeCollector::deploy_builder(p, owner, owner),
            )
            .await?;
        let dead: Address = "0x000000000000000000000000000000000000dEaD"
            .parse()
            .map_err(|_| ChainError::Invalid("dead address".into()))?;
        let router = self
            .deploy(
                "FactoryRouter",
                FactoryRouter::deploy_builder(p, owner, ocean, dead, opf, vec![]),
            )
            .await?;
        let fre =
            self.deploy("FixedRateExchange", FixedRateExchange::deploy_builder(p, router)).await?;
        let erc20 = self.deploy("ERC20Template", ERC20Template::deploy_builder(p)).await?;
        let erc721 = self.deploy("ERC721Template", ERC721Template::deploy_builder(p)).await?;
        let dispenser = self.deploy("Dispenser", Dispenser::deploy_builder(p, router)).await?;
        let factory = self
            .deploy("ERC721Factory", ERC721Factory::deploy_builder(p, erc721, erc20, router))
            .await?;
        let router_i = FactoryRouter::new(router, p);
        self.call("router.addFactory", router_i.addFactory(factory)).await?;
        self.call("router.addFixedRateContract", router_i.addFixedRateContract(fre)).await?;
        self.call("router.addDispenserContract", router_i.addDispenserContract(dispenser)).await?;
        Ok(OceanBook {
            chain_id,
            ocean,
            opf_collector: opf,
            router,
            fixed_rate: fre,
            dispenser,
            erc20_template: erc20,
            erc721_template: erc721,
            factory,
        })
    }

    /// Ours on top of `ocean`: the lineage contract (the deployer is both its first operator
    /// and the owner who may rotate it; royalties in OCEAN) and the peer market.
    async fn ours(&mut self, ocean: &OceanBook, owner: Address) -> Result<AddressBook, ChainError> {
        let p = self.p;
        let lineage = self
            .deploy(
                "ModelLineage",
                ModelLineage::deploy_builder(p, owner, owner, ocean.factory, ocean.ocean),
            )
            .await?;
        let market = self.deploy("PeerMarket", PeerMarket::deploy_builder(p, ocean.ocean)).await?;
        let deployed_at_block = p.get_block_number().await?;
        Ok(AddressBook {
            chain_id: ocean.chain_id,
            operator: owner,
            ocean: ocean.ocean,
            opf_collector: ocean.opf_collector,
            router: ocean.router,
            fixed_rate: ocean.fixed_rate,
            dispenser: ocean.dispenser,
            erc20_template: ocean.erc20_template,
            erc721_template: ocean.erc721_template,
            factory: ocean.factory,
            lineage,
            market,
            deployed_at_block,
        })
    }
}

/// A contract deployment to a chain (e.g. a public one), into an address book file.
#[derive(Clone, Debug)]
pub struct ContractsDeployment {
    pub rpc_url: String,
    /// Pays for every contract and becomes the lineage contract's operator and owner.
    pub deployer: PrivateKeySigner,
    /// The address book written (and, when it exists already, checked instead).
    pub out: PathBuf,
    /// An Ocean v4 deployment already on the chain: deploy only ours on top of it.
    pub ocean: Option<OceanBook>,
}

/// What [`deploy_contracts`] did.
#[derive(Clone, Debug)]
pub enum DeployOutcome {
    /// `out` already named contracts that all have code on this chain: nothing was sent.
    AlreadyDeployed(AddressBook),
    /// Contracts were deployed and `out` written.
    Deployed { book: AddressBook, report: DeployReport },
}

/// Deploys the contracts `cfg` asks for and writes its address book, telling `progress` each
/// step. Idempotent: when `cfg.out` exists and every contract it names has code on the
/// chain, nothing is sent. A book for another chain, or one naming a contract with no code
/// (a reset devnet), is refused rather than overwritten; so is an Ocean book that does not
/// match the chain.
pub async fn deploy_contracts(
    cfg: &ContractsDeployment,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<DeployOutcome, ChainError> {
    let p = build_provider(&cfg.rpc_url, std::slice::from_ref(&cfg.deployer))?;
    let chain_id = p.get_chain_id().await?;
    progress(&format!("chain {chain_id}"));
    let book_err = |path: &Path, reason: String| ChainError::AddressBook {
        path: path.display().to_string(),
        reason,
    };
    if cfg.out.exists() {
        let book = AddressBook::load(&cfg.out)?;
        check_deployed(&p, chain_id, book.chain_id, &book.contracts())
            .await
            .map_err(|reason| book_err(&cfg.out, format!("{reason}; move it away to redeploy")))?;
        progress(&format!("{} already deployed on chain {chain_id}", cfg.out.display()));
        return Ok(DeployOutcome::AlreadyDeployed(book));
    }
    if let Some(ocean) = &cfg.ocean {
        check_deployed(&p, chain_id, ocean.chain_id, &ocean.contracts())
            .await
            .map_err(|reason| ChainError::Invalid(format!("the Ocean book: {reason}")))?;
    }
    let deployer = cfg.deployer.address();
    if p.get_balance(deployer).await?.is_zero() {
        return Err(ChainError::DeployerUnfunded { deployer, chain_id });
    }
    let mut steps = Steps { p: &p, report: DeployReport::default(), progress };
    let ocean = match &cfg.ocean {
        Some(ocean) => {
            (steps.progress)(&format!("reusing Ocean v4 at factory {}", ocean.factory));
            ocean.clone()
        }
        None => steps.ocean(chain_id, deployer).await?,
    };
    let book = steps.ours(&ocean, deployer).await?;
    book.save(&cfg.out)?;
    let report = steps.report;
    progress(&format!(
        "wrote {} ({} transactions, {} gas)",
        cfg.out.display(),
        report.steps.len(),
        report.total_gas()
    ));
    Ok(DeployOutcome::Deployed { book, report })
}

/// `Err(why)` unless `book_chain` is `chain_id` and every contract has code there.
async fn check_deployed(
    p: &DynProvider,
    chain_id: u64,
    book_chain: u64,
    contracts: &[(&'static str, Address)],
) -> Result<(), String> {
    if book_chain != chain_id {
        return Err(format!("it is for chain {book_chain}, the RPC URL's is {chain_id}"));
    }
    for &(name, addr) in contracts {
        let code = p.get_code_at(addr).await.map_err(|e| format!("reading code: {e}"))?;
        if code.is_empty() {
            return Err(format!("its {name} ({addr}) has no code on chain {chain_id}"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod ocean_file_tests {
    use super::*;

    fn book() -> AddressBook {
        let x = |b: u8| Address::repeat_byte(b);
        AddressBook {
            chain_id: 31337,
            operator: x(1),
            ocean: x(2),
            opf_collector: x(3),
            router: x(4),
            fixed_rate: x(5),
            dispenser: x(6),
            erc20_template: x(7),
            erc721_template: x(8),
            factory: x(9),
            lineage: x(10),
            market: x(11),
            deployed_at_block: 42,
        }
    }

    /// Issue 18: the file uses Ocean's own key names (those of `@oceanprotocol/contracts`'
    /// address.json, read from the package the contracts build installs) for every Ocean
    /// contract, and Ocean's network names for the chains Ocean is deployed on.
    #[test]
    fn the_ocean_address_file_uses_oceans_names() {
        let f = book().ocean_address_file();
        let ours = f["development"].as_object().unwrap();
        assert_eq!(ours["chainId"], 31337);
        assert_eq!(ours["ERC20Template"]["1"], format!("{:#x}", Address::repeat_byte(7)));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../contracts/node_modules/@oceanprotocol/contracts/addresses/address.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            assert!(std::env::var("CI").is_err(), "{} is missing", path.display());
            eprintln!("SKIPPED: no {} (run scripts/setup.sh)", path.display());
            return;
        };
        let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
        let nets = theirs.as_object().unwrap();
        let known: std::collections::BTreeSet<&str> =
            nets.values().flat_map(|n| n.as_object().unwrap().keys()).map(String::as_str).collect();
        for k in ours.keys().filter(|k| !["ModelLineage", "PeerMarket"].contains(&k.as_str())) {
            assert!(known.contains(k.as_str()), "`{k}` is not a key of Ocean's address.json");
        }
        for (id, name) in [(1, "mainnet"), (137, "polygon"), (11155111, "sepolia"), (8453, "base")]
        {
            assert_eq!(ocean_network_name(id), name);
            assert_eq!(nets[name]["chainId"], id, "{name}");
        }
    }
}
