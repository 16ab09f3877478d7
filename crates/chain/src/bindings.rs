//! Contract bindings generated at compile time from the committed artifacts in
//! `contracts/out/` (abi + bytecode; regenerate with `node contracts/build.mjs`).

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::sol;

sol!(
    #[sol(rpc)]
    ERC721Factory,
    "../../contracts/out/ERC721Factory.json"
);
sol!(
    #[sol(rpc)]
    ERC721Template,
    "../../contracts/out/ERC721Template.json"
);
sol!(
    #[sol(rpc)]
    ERC20Template,
    "../../contracts/out/ERC20Template.json"
);
sol!(
    #[sol(rpc)]
    FactoryRouter,
    "../../contracts/out/FactoryRouter.json"
);
sol!(
    #[sol(rpc)]
    FixedRateExchange,
    "../../contracts/out/FixedRateExchange.json"
);
sol!(
    #[sol(rpc)]
    Dispenser,
    "../../contracts/out/Dispenser.json"
);
sol!(
    #[sol(rpc)]
    OceanToken,
    "../../contracts/out/OceanToken.json"
);
sol!(
    #[sol(rpc)]
    OPFCommunityFeeCollector,
    "../../contracts/out/OPFCommunityFeeCollector.json"
);
sol!(
    #[sol(rpc, all_derives)]
    ModelLineage,
    "../../contracts/out/ModelLineage.json"
);
sol!(
    #[sol(rpc, all_derives)]
    RoyaltyVault,
    "../../contracts/out/RoyaltyVault.json"
);
sol!(
    #[sol(rpc, all_derives)]
    PeerMarket,
    "../../contracts/out/PeerMarket.json"
);
