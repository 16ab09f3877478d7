//! Deploying the Ocean v4 stack plus our lineage contract to a fresh chain, and the address
//! book that records where everything lives.

use std::path::Path;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
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
pub struct AddressBook {
    pub chain_id: u64,
    /// The operator key's address at deployment: signs provider fees, is the lineage
    /// contract's first operator and its owner (who may rotate the operator later).
    pub operator: Address,
    pub ocean: Address,
    pub opf_collector: Address,
    pub router: Address,
    pub fixed_rate: Address,
    pub dispenser: Address,
    pub erc20_template: Address,
    pub erc721_template: Address,
    pub factory: Address,
    pub lineage: Address,
    /// The peer-to-peer fixed-price market (paid in OCEAN). Books written before it existed
    /// parse with the zero address.
    #[serde(default)]
    pub market: Address,
    /// Block of the last deployment transaction (indexers start here).
    pub deployed_at_block: u64,
}

impl AddressBook {
    pub fn load(path: &Path) -> Result<AddressBook, ChainError> {
        let err =
            |reason: String| ChainError::AddressBook { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
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

/// Deploys OCEAN, the community fee collector, the router, the fixed-rate exchange, the
/// dispenser, the ERC20/ERC721 templates, the factory, the lineage contract (in the order
/// RECIPES §3 gives) and the peer market, wires them together, and returns the book. The
/// operator pays for and owns everything (the market has no owner at all).
pub async fn deploy_stack(
    rpc_url: &str,
    operator: &PrivateKeySigner,
) -> Result<(AddressBook, DeployReport), ChainError> {
    let p = build_provider(rpc_url, std::slice::from_ref(operator))?;
    let owner = operator.address();
    let chain_id = p.get_chain_id().await?;
    let mut report = DeployReport::default();

    macro_rules! deploy {
        ($name:literal, $builder:expr) => {{
            let builder = $builder;
            let receipt = builder.send().await?.get_receipt().await?;
            if !receipt.status() {
                return Err(ChainError::Reverted(format!("deploying {}", $name)));
            }
            let Some(addr) = receipt.contract_address else {
                return Err(ChainError::Reverted(format!("deploying {}: no address", $name)));
            };
            report.steps.push(($name, receipt.gas_used));
            addr
        }};
    }

    let ocean = deploy!("OceanToken", OceanToken::deploy_builder(&p, owner));
    let r = send(OceanToken::new(ocean, &p).mint(owner, U256::from(OCEAN_SUPPLY))).await?;
    report.steps.push(("OceanToken.mint", r.gas_used));
    let opf = deploy!(
        "OPFCommunityFeeCollector",
        OPFCommunityFeeCollector::deploy_builder(&p, owner, owner)
    );
    let dead: Address = "0x000000000000000000000000000000000000dEaD"
        .parse()
        .map_err(|_| ChainError::Invalid("dead address".into()))?;
    let router = deploy!(
        "FactoryRouter",
        FactoryRouter::deploy_builder(&p, owner, ocean, dead, opf, vec![])
    );
    let fre = deploy!("FixedRateExchange", FixedRateExchange::deploy_builder(&p, router));
    let erc20 = deploy!("ERC20Template", ERC20Template::deploy_builder(&p));
    let erc721 = deploy!("ERC721Template", ERC721Template::deploy_builder(&p));
    let dispenser = deploy!("Dispenser", Dispenser::deploy_builder(&p, router));
    let factory =
        deploy!("ERC721Factory", ERC721Factory::deploy_builder(&p, erc721, erc20, router));
    let router_i = FactoryRouter::new(router, &p);
    let r = send(router_i.addFactory(factory)).await?;
    report.steps.push(("router.addFactory", r.gas_used));
    let r = send(router_i.addFixedRateContract(fre)).await?;
    report.steps.push(("router.addFixedRateContract", r.gas_used));
    let r = send(router_i.addDispenserContract(dispenser)).await?;
    report.steps.push(("router.addDispenserContract", r.gas_used));
    // The deployer is both the first operator and the owner who may rotate it; royalties
    // are paid in OCEAN.
    let lineage =
        deploy!("ModelLineage", ModelLineage::deploy_builder(&p, owner, owner, factory, ocean));
    let market = deploy!("PeerMarket", PeerMarket::deploy_builder(&p, ocean));
    let deployed_at_block = p.get_block_number().await?;

    let book = AddressBook {
        chain_id,
        operator: owner,
        ocean,
        opf_collector: opf,
        router,
        fixed_rate: fre,
        dispenser,
        erc20_template: erc20,
        erc721_template: erc721,
        factory,
        lineage,
        market,
        deployed_at_block,
    };
    Ok((book, report))
}
