// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Minimal views of the Ocean v4 contracts this contract talks to (genuine artifacts from
// the npm package oceanprotocol/contracts 2.6.0; only the functions used here).
interface IOceanFactory {
    struct NftCreateData {
        string name;
        string symbol;
        uint256 templateIndex;
        string tokenURI;
        bool transferable;
        address owner;
    }
    struct ErcCreateData {
        uint256 templateIndex;
        string[] strings;
        address[] addresses;
        uint256[] uints;
        bytes[] bytess;
    }
    function createNftWithErc20(NftCreateData calldata nft, ErcCreateData calldata erc)
        external
        returns (address erc721Address, address erc20Address);
}

interface IOceanNft {
    function ownerOf(uint256 tokenId) external view returns (address);
    function getData(bytes32 key) external view returns (bytes memory);
    function setNewData(bytes32 key, bytes calldata value) external;
    /// Ocean's ERC721Template.metaDataProof, field for field.
    struct MetaDataProof {
        address validatorAddress;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }
    function setMetaData(
        uint8 metaDataState,
        string calldata metaDataDecryptorUrl,
        string calldata metaDataDecryptorAddress,
        bytes calldata flags,
        bytes calldata data,
        bytes32 metaDataHash,
        MetaDataProof[] memory metadataProofs
    ) external;
}

interface IOceanDatatoken {
    /// Ocean's provider fee (ERC20Template.providerFee), field for field.
    struct ProviderFee {
        address providerFeeAddress;
        address providerFeeToken;
        uint256 providerFeeAmount;
        uint8 v;
        bytes32 r;
        bytes32 s;
        uint256 validUntil;
        bytes providerData;
    }
    function getERC721Address() external view returns (address);
    function mint(address account, uint256 value) external;
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function approve(address spender, uint256 value) external returns (bool);
    function createFixedRate(address fixedPriceAddress, address[] memory addresses, uint256[] memory uints)
        external
        returns (bytes32 exchangeId);
    function reuseOrder(bytes32 orderTxId, ProviderFee calldata providerFee) external;
    function router() external view returns (address);
}

/// Ocean's FactoryRouter: where its community collector is (`createChild` seeds it), and
/// which fixed-rate exchange contracts it approved (`openSale` uses only those).
interface IOceanRouter {
    function getOPCCollector() external view returns (address);
    function isFixedRateContract(address fre) external view returns (bool);
}

/// Ocean's FixedRateExchange: the calls `openSale` / `closeSale` make as the child NFT's owner
/// (the exchange lets only the NFT owner or an ERC20 deployer change a rate or pause it).
interface IOceanFixedRate {
    function MIN_RATE() external view returns (uint256);
    function generateExchangeId(address baseToken, address datatoken) external pure returns (bytes32);
    function getRate(bytes32 exchangeId) external view returns (uint256);
    function isActive(bytes32 exchangeId) external view returns (bool);
    function setRate(bytes32 exchangeId, uint256 newRate) external;
    function toggleExchangeState(bytes32 exchangeId) external;
    function calcBaseInGivenOutDT(bytes32 exchangeId, uint256 datatokenAmount, uint256 consumeMarketSwapFeeAmount)
        external
        view
        returns (uint256 baseTokenAmount, uint256 oceanFeeAmount, uint256 publishMarketFeeAmount, uint256 consumeFee);
    function buyDT(
        bytes32 exchangeId,
        uint256 datatokenAmount,
        uint256 maxBaseTokenAmount,
        address consumeMarketAddress,
        uint256 consumeMarketSwapFeeAmount
    ) external;
    function sellDT(
        bytes32 exchangeId,
        uint256 datatokenAmount,
        uint256 minBaseTokenAmount,
        address consumeMarketAddress,
        uint256 consumeMarketSwapFeeAmount
    ) external;
}

/// The royalty token (OCEAN): plain ERC-20 calls only.
interface IRoyaltyToken {
    function balanceOf(address who) external view returns (uint256);
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function approve(address spender, uint256 value) external returns (bool);
}

// OCEAN base units `createChild` seeds each royalty vault with (`RoyaltyVault.SEED`).
uint256 constant VAULT_SEED = 1;

/// @title ModelLineage: who trained what from what, and who is paid for it.
///
/// Ocean v4 gives every model a data NFT and a datatoken but knows nothing about derivation.
/// This contract records the lineage root → M2 → M3 … and pays each derivation's reward in
/// the child's datatokens, under a scheme fixed when the root was registered.
///
/// Flow for a training job (commit-before-reveal):
///  1. `commitTraining` — the operator commits (job id, parent, trainer, output weights hash,
///     receipt hash) before the derived model exists anywhere public. Once per job id.
///  2. `createChild` — this contract itself creates the child's data NFT + datatoken through
///     the Ocean factory, as their owner and sole minter, and writes the committed weights
///     hash into the NFT's ERC725Y store.
///  3. `recordDerivation` — exactly once per job: mints the reward to the most recent trainers
///     (at most 16, bounded walk up the lineage) and the remainder to the root owner.
///
/// Royalties follow the lineage: every child datatoken is created with Ocean's publish-market
/// fee set to the root's royalty (fixed at registration, at most `MAX_ROYALTY` OCEAN), paid
/// by each `startOrder` into a `RoyaltyVault` of its own. The vault is the fee address, the
/// only account Ocean lets change the fee, and it has no function that does: nobody can
/// redirect or raise it. Anyone may call the vault's `distribute()`, which pays its whole
/// balance to the child's ancestors by the root's scheme (`royaltySplit`).
///
/// A derived model is made ready for its first order inside `createChild`, so its first
/// buyer pays no set-up: the operator seeds the vault with `RoyaltyVault.SEED` (1 wei of
/// OCEAN, which the vault keeps for ever, so its balance never returns to zero and no order
/// pays to create it), and the child datatoken's reentrancy guard is started (Ocean clones
/// datatokens without running constructors, so the guard is zero until the first
/// `nonReentrant` call, which would pay 20,000 gas to create it).
///
/// Lineages are at most `MAX_DEPTH` derivations deep, so every walk up one is bounded.
/// The operator key can be rotated by the contract's owner (`setOperator`); ownership moves
/// in two steps (`transferOwnership`, then `acceptOwnership` by the new owner). Every
/// operator's term is kept (`operatorHistory`, `operatorAt`): a receipt is checked against
/// the operator of its own time, so a rotation neither voids what the old key signed while
/// it was the operator nor lets it sign anything later.
///
/// Trust choice (why the contract owns the child NFT): in Ocean v4 whoever holds the NFT's
/// `deployERC20` permission (the NFT owner has it) can `addMinter` on its datatokens or open a
/// minting exchange. If the operator owned child NFTs it could mint child datatokens outside
/// the reward rules. Here the child NFT is created with this contract as owner and as the
/// only initial minter, is non-transferable, and this contract has no function that grants
/// roles, transfers the NFT or mints outside `recordDerivation`. So the child's supply is
/// exactly the rewards, provably from this bytecode. The operator is still trusted to tell
/// the truth in `commitTraining` (it is accountable through signed receipts and audits), but
/// it cannot mint. Root models are published by their owners (or by the operator holding
/// the NFT in custody for them) and registered by the operator with their address as root owner.
///
/// Selling a derived model on Ocean's own exchange (`openSale`, trainer only): Ocean 2.6's
/// FixedRateExchange sells only what it mints or what `sellDT`s left in it (its `dtBalance`),
/// never a holder's balance, and Ocean's datatoken ignores the cap it is given. A minting
/// exchange would break the supply rule above, so the child's exchange never mints
/// (`withMint` off; it is not a minter): `openSale` moves the trainer's tokens into it with
/// `sellDT`. A `sellDT` pays its seller from OCEAN the exchange holds, which a new exchange
/// has none of, so `openSale` first gives it that float within the same transaction: it sells
/// the exchange a sliver of tokens worth nothing at Ocean's minimum rate, buys them back at a
/// rate that leaves the OCEAN the deposit needs (advanced by the trainer), sells the
/// trainer's tokens at the minimum rate, hands the trainer what that returned, and sets his
/// price. The trainer's whole cost is Ocean's swap fee on ~1e-8 OCEAN per token; the
/// exchange's owner of record is the trainer and its payment collector (the datatoken's) is
/// the trainer, so every sale's OCEAN goes to him (`collectBT`, callable by anyone). Like
/// every Ocean exchange it also buys back: until that OCEAN is collected, any holder of the
/// child's datatokens can `sellDT` them into it at the trainer's price, paid from it (the
/// tokens then sell again from the exchange); collecting promptly keeps the proceeds his.
contract ModelLineage {
    /// ERC725Y key holding a model's canonical weights hash in its data NFT.
    bytes32 public constant WEIGHTS_HASH_KEY = keccak256("posthuman.weightsHash");
    /// The same hash as text ("0x" + 64 lowercase hex digits), which Ocean's tools can read
    /// (ocean.js decodes ERC725Y values as UTF-8). Written beside the raw commitment for
    /// derived models, as a root's publisher writes it for roots; nothing here reads it.
    bytes32 public constant WEIGHTS_HASH_HEX_KEY = keccak256("posthuman.weightsHashHex");
    uint256 public constant MAX_BENEFICIARIES = 16;
    uint256 public constant BPS = 10_000;
    /// Most derivations below a root (a root has depth 0).
    uint32 public constant MAX_DEPTH = 32;
    /// Most OCEAN (base units) a root may charge per order of a derived model: 10 OCEAN.
    uint256 public constant MAX_ROYALTY = 10 ether;
    /// What `createChild` mints to Ocean's community collector (see there).
    uint256 public constant COLLECTOR_SEED = 1;
    /// Datatoken base units `openSale` sells and buys back to give a new exchange its OCEAN
    /// float: the most that is worth 0 OCEAN at Ocean's minimum rate (1e10 per 1e18).
    uint256 internal constant SLIVER = 1e8 - 1;
    /// Ocean's ERC721Template and ERC20Template indices in the factory.
    uint256 internal constant NFT_TEMPLATE = 1;
    uint256 internal constant ERC20_TEMPLATE = 1;

    struct Model {
        address parent; // zero for a root
        uint32 depth; // 0 for a root
        bool exists;
        address trainer; // the root's owner for a root
        address root;
        address datatoken;
        bytes32 weightsHash;
        bytes32 jobId; // zero for a root
    }

    struct Scheme {
        uint128 totalReward; // child datatokens (wei) minted per derivation
        uint8 count; // number of shares
        uint96 royalty; // OCEAN (base units) per order of a derived model
        uint256 packedShares; // 16 × uint16 bps, share i in bits [16i, 16i+16)
    }

    // Job states.
    uint8 internal constant COMMITTED = 1;
    uint8 internal constant CHILD_CREATED = 2;
    uint8 internal constant RECORDED = 3;

    struct Job {
        address parent;
        uint8 state;
        uint64 committedAt; // block of commitTraining (packed with parent and state)
        address trainer;
        bytes32 outputWeightsHash;
        bytes32 receiptHash;
        address childNft;
    }

    /// One operator's term: from `fromBlock` until the next term's `fromBlock` (inclusive: in
    /// a rotation's block the old key acted before the rotation, the new one after it).
    struct OperatorTerm {
        address operator;
        uint64 fromBlock;
    }

    /// Signs commitments and derivations; rotated by `owner` (`setOperator`).
    address public operator;
    /// May rotate the operator and hand ownership on (two steps).
    address public owner;
    /// The proposed owner until it accepts.
    address public pendingOwner;
    IOceanFactory public immutable factory;
    /// The token royalties are paid in (OCEAN).
    address public immutable royaltyToken;

    mapping(address => Model) internal models;
    mapping(address => Scheme) internal schemes; // by root NFT
    mapping(bytes32 => Job) internal jobs;
    /// The royalty vault of each child model (its datatoken's publish-market fee address).
    mapping(address => address) public royaltyVaultOf;
    /// Every operator so far, oldest first (the last is `operator`); one append per rotation.
    OperatorTerm[] internal operatorTerms;
    /// Set only while `createChild` runs, so the contract accepts exactly the NFTs it mints
    /// for itself (the factory `_safeMint`s to the owner) and no others.
    bool transient creatingChild;

    /// `rootOwner` is the beneficiary of remainders; `holder` held the NFT at registration.
    event RootRegistered(
        address indexed nft, address indexed datatoken, address indexed rootOwner, address holder,
        bytes32 weightsHash, uint256 totalReward, uint16[] sharesBps, uint256 royalty
    );
    event TrainingCommitted(
        bytes32 indexed jobId, address indexed parentNft, address indexed trainer, bytes32 outputWeightsHash,
        bytes32 receiptHash
    );
    event ChildCreated(bytes32 indexed jobId, address indexed childNft, address indexed childDatatoken);
    /// The child's vault and the royalty each order of it pays there.
    event RoyaltyVaultCreated(address indexed childNft, address indexed vault, uint256 royalty);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event DerivationRecorded(
        bytes32 indexed jobId, address indexed parentNft, address indexed childNft, address childDatatoken,
        address trainer, bytes32 weightsHash, bytes32 receiptHash
    );
    event RewardPaid(bytes32 indexed jobId, address indexed childDatatoken, address indexed beneficiary, uint256 amount);
    /// `amount` more child datatokens are on sale at `rate` (OCEAN base units per datatoken).
    event SaleOpened(
        address indexed childNft, bytes32 indexed exchangeId, address indexed trainer, uint256 rate, uint256 amount
    );
    event SaleClosed(address indexed childNft, bytes32 indexed exchangeId);

    error NotOperator();
    error BadScheme();
    error AlreadyRegistered();
    error NotOwnedBy(address nft, address expectedOwner);
    error DatatokenNotOfNft(address datatoken, address nft);
    error WeightsHashMismatch(bytes32 onNft, bytes32 given);
    error UnknownModel(address nft);
    error JobAlreadyCommitted(bytes32 jobId);
    error WrongJobState(bytes32 jobId, uint8 state);
    error ChildMismatch(address childNft, address childDatatoken);
    error ZeroAddress();
    error UnexpectedNft();
    error NotOwner();
    error NotPendingOwner();
    error DepthExceeded(address parentNft, uint32 maxDepth);
    error RoyaltyTooHigh(uint256 royalty, uint256 cap);
    error VaultSeedFailed(address vault);
    error NotTrainer(address childNft, address caller);
    error NotOceanExchange(address fixedRate);
    error TransferFailed();

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address operator_, address owner_, IOceanFactory factory_, address royaltyToken_) {
        if (
            operator_ == address(0) || owner_ == address(0) || address(factory_) == address(0)
                || royaltyToken_ == address(0)
        ) revert ZeroAddress();
        operator = operator_;
        operatorTerms.push(OperatorTerm({operator: operator_, fromBlock: uint64(block.number)}));
        owner = owner_;
        factory = factory_;
        royaltyToken = royaltyToken_;
        emit OperatorChanged(address(0), operator_);
        emit OwnershipTransferred(address(0), owner_);
    }

    // ---- ownership ----

    /// Replaces the operator (owner only). The previous key loses every power at once; jobs
    /// it committed are finished by the new one.
    function setOperator(address newOperator) external onlyOwner {
        if (newOperator == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
        operatorTerms.push(OperatorTerm({operator: newOperator, fromBlock: uint64(block.number)}));
    }

    /// Proposes `newOwner`; ownership moves when it calls `acceptOwnership` (so a mistyped
    /// address cannot take the contract out of reach). Zero cancels a proposal.
    function transferOwnership(address newOwner) external onlyOwner {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(owner, newOwner);
    }

    /// Completes a transfer started by `transferOwnership` (the proposed owner only).
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner();
        emit OwnershipTransferred(owner, msg.sender);
        owner = msg.sender;
        pendingOwner = address(0);
    }

    /// Registers a root model, fixing its reward scheme for all derivations below it. The NFT
    /// must be held by `holder`, the datatoken must belong to it, and the NFT's ERC725Y weights
    /// commitment must equal `weightsHash`. `rootOwner` is the model's owner of record: the
    /// root's `trainer` and the beneficiary of every derivation's remainder. It is separate
    /// from `holder` because the holder may be a custodian (the operator publishing on a
    /// model owner's behalf, without her key), who must not collect her remainders.
    /// `royalty` (≤ `MAX_ROYALTY`) is what every order of a model derived from it pays its
    /// ancestors, in `royaltyToken`.
    function registerRoot(
        address nft,
        address datatoken,
        bytes32 weightsHash,
        address holder,
        address rootOwner,
        uint128 totalReward,
        uint16[] calldata sharesBps,
        uint96 royalty
    ) external onlyOperator {
        if (holder == address(0) || rootOwner == address(0)) revert ZeroAddress();
        if (royalty > MAX_ROYALTY) revert RoyaltyTooHigh(royalty, MAX_ROYALTY);
        if (models[nft].exists) revert AlreadyRegistered();
        if (sharesBps.length > MAX_BENEFICIARIES) revert BadScheme();
        uint256 packed;
        uint256 sum;
        for (uint256 i = 0; i < sharesBps.length; i++) {
            sum += sharesBps[i];
            packed |= uint256(sharesBps[i]) << (16 * i);
        }
        if (sum > BPS) revert BadScheme();
        if (IOceanNft(nft).ownerOf(1) != holder) revert NotOwnedBy(nft, holder);
        if (IOceanDatatoken(datatoken).getERC721Address() != nft) revert DatatokenNotOfNft(datatoken, nft);
        bytes32 onNft = _weightsHashOf(nft);
        if (onNft != weightsHash) revert WeightsHashMismatch(onNft, weightsHash);

        models[nft] = Model({
            parent: address(0),
            depth: 0,
            exists: true,
            trainer: rootOwner,
            root: nft,
            datatoken: datatoken,
            weightsHash: weightsHash,
            jobId: bytes32(0)
        });
        schemes[nft] =
            Scheme({totalReward: totalReward, count: uint8(sharesBps.length), royalty: royalty, packedShares: packed});
        emit RootRegistered(nft, datatoken, rootOwner, holder, weightsHash, totalReward, sharesBps, royalty);
    }

    /// Commits the outcome of training job `jobId` before anything is revealed: from which
    /// model, by whom, the output weights hash and the signed receipt's hash. Once per job.
    function commitTraining(
        bytes32 jobId,
        address parentNft,
        address trainer,
        bytes32 outputWeightsHash,
        bytes32 receiptHash
    ) external onlyOperator {
        if (trainer == address(0)) revert ZeroAddress();
        Model storage parent = models[parentNft];
        if (!parent.exists) revert UnknownModel(parentNft);
        if (parent.depth >= MAX_DEPTH) revert DepthExceeded(parentNft, MAX_DEPTH);
        Job storage job = jobs[jobId];
        if (job.state != 0) revert JobAlreadyCommitted(jobId);
        job.parent = parentNft;
        job.state = COMMITTED;
        job.committedAt = uint64(block.number);
        job.trainer = trainer;
        job.outputWeightsHash = outputWeightsHash;
        job.receiptHash = receiptHash;
        emit TrainingCommitted(jobId, parentNft, trainer, outputWeightsHash, receiptHash);
    }

    /// Creates the child's data NFT and datatoken for a committed job, owned by this contract
    /// (see the trust note above). Payments for orders on the child go to its trainer; the
    /// root's royalty per order goes to the child's new `RoyaltyVault`, which the operator
    /// seeds with `RoyaltyVault.SEED` of OCEAN (it must have approved this contract for it).
    function createChild(bytes32 jobId, string calldata name, string calldata symbol, string calldata tokenURI)
        external
        onlyOperator
        returns (address childNft, address childDatatoken)
    {
        Job storage job = jobs[jobId];
        if (job.state != COMMITTED) revert WrongJobState(jobId, job.state);
        Model storage parent = models[job.parent];
        if (parent.depth >= MAX_DEPTH) revert DepthExceeded(job.parent, MAX_DEPTH);
        uint256 royalty = schemes[parent.root].royalty;
        address vault = address(new RoyaltyVault(jobId, royaltyToken));
        if (!IRoyaltyToken(royaltyToken).transferFrom(msg.sender, vault, VAULT_SEED)) {
            revert VaultSeedFailed(vault);
        }

        string[] memory strings = new string[](2);
        strings[0] = name;
        strings[1] = symbol;
        address[] memory addresses = new address[](4);
        addresses[0] = address(this); // the only minter
        addresses[1] = job.trainer; // payment collector
        addresses[2] = vault; // publish-market fee address: only it could change the fee
        addresses[3] = royaltyToken; // publish-market fee token
        uint256[] memory uints = new uint256[](2);
        uints[0] = type(uint256).max / 2; // cap: rewards are the only supply
        uints[1] = royalty; // publish-market fee per order
        creatingChild = true;
        (childNft, childDatatoken) = factory.createNftWithErc20(
            IOceanFactory.NftCreateData({
                name: name,
                symbol: symbol,
                templateIndex: NFT_TEMPLATE,
                tokenURI: tokenURI,
                transferable: false,
                owner: address(this)
            }),
            IOceanFactory.ErcCreateData({
                templateIndex: ERC20_TEMPLATE,
                strings: strings,
                addresses: addresses,
                uints: uints,
                bytess: new bytes[](0)
            })
        );
        creatingChild = false;
        IOceanNft(childNft).setNewData(WEIGHTS_HASH_KEY, abi.encodePacked(job.outputWeightsHash));
        IOceanNft(childNft).setNewData(WEIGHTS_HASH_HEX_KEY, _hexText(job.outputWeightsHash));
        // Starts the datatoken's reentrancy guard (see the contract notes): `reuseOrder` is
        // the one `nonReentrant` function open to anyone. With an all-zero fee it transfers
        // nothing: the unsigned fee recovers to address 0, which is its fee address, and a
        // zero amount is skipped. It only logs a reuse of order 0 by this contract.
        IOceanDatatoken.ProviderFee memory none;
        IOceanDatatoken(childDatatoken).reuseOrder(bytes32(0), none);
        // Ocean's community collector takes its share of every order in the datatoken, and
        // its balance of a new datatoken starts at zero: the first buyer would pay 17,100 gas
        // more than later ones to create that slot. `COLLECTOR_SEED` (1 wei, worth nothing)
        // minted to it here makes the first order cost what every later one does; it is the
        // only supply of a child not minted as a reward.
        IOceanDatatoken(childDatatoken).mint(
            IOceanRouter(IOceanDatatoken(childDatatoken).router()).getOPCCollector(), COLLECTOR_SEED
        );

        models[childNft] = Model({
            parent: job.parent,
            depth: parent.depth + 1,
            exists: true,
            trainer: job.trainer,
            root: parent.root,
            datatoken: childDatatoken,
            weightsHash: job.outputWeightsHash,
            jobId: jobId
        });
        job.state = CHILD_CREATED;
        job.childNft = childNft;
        royaltyVaultOf[childNft] = vault;
        emit ChildCreated(jobId, childNft, childDatatoken);
        emit RoyaltyVaultCreated(childNft, vault, royalty);
    }

    /// Sets (or updates) a derived model's Ocean metadata, its DDO, exactly as Ocean's publish
    /// flow does for any asset (`MetadataCreated`, then `MetadataUpdated`, from the NFT). This
    /// contract owns every child NFT, so it alone holds the NFT's metadata role; forwarding
    /// for the current operator (rather than granting a role to one operator key at
    /// creation) keeps DDO updates working across operator rotations. Roots are left to their
    /// own owners, who set their metadata directly.
    function setChildMetaData(
        address childNft,
        uint8 metaDataState,
        string calldata metaDataDecryptorUrl,
        string calldata metaDataDecryptorAddress,
        bytes calldata flags,
        bytes calldata data,
        bytes32 metaDataHash
    ) external onlyOperator {
        Model storage child = models[childNft];
        if (!child.exists || child.depth == 0) revert UnknownModel(childNft);
        IOceanNft(childNft).setMetaData(
            metaDataState,
            metaDataDecryptorUrl,
            metaDataDecryptorAddress,
            flags,
            data,
            metaDataHash,
            new IOceanNft.MetaDataProof[](0)
        );
    }

    /// Puts `amount` of the caller's datatokens of derived model `childNft` on sale at `rate`
    /// (OCEAN base units per whole datatoken, at least Ocean's `MIN_RATE`) on Ocean's
    /// FixedRateExchange `fixedRate` (one the datatoken's router approved), creating the
    /// child's exchange on first use or re-pricing and reopening it. Trainer only, once the
    /// derivation is recorded. The caller approves this contract for `amount` datatokens and
    /// for the OCEAN float the deposit needs (see the contract notes; ~1e-8 OCEAN per token,
    /// all but Ocean's fee handed back). `amount` 0 only re-prices or reopens.
    function openSale(address childNft, address fixedRate, uint256 rate, uint256 amount)
        external
        returns (bytes32 exchangeId)
    {
        IOceanDatatoken dt = _trainersChild(childNft);
        if (!IOceanRouter(dt.router()).isFixedRateContract(fixedRate)) revert NotOceanExchange(fixedRate);
        IOceanFixedRate fre = IOceanFixedRate(fixedRate);
        uint256 minRate = fre.MIN_RATE();
        exchangeId = fre.generateExchangeId(royaltyToken, address(dt));
        if (fre.getRate(exchangeId) == 0) {
            address[] memory addresses = new address[](4);
            addresses[0] = royaltyToken; // priced in OCEAN
            addresses[1] = msg.sender; // owner of record (Ocean lets only the NFT owner manage it)
            addresses[2] = msg.sender; // market fee collector (the market fee is 0)
            uint256[] memory uints = new uint256[](5);
            uints[0] = 18; // OCEAN decimals
            uints[1] = 18; // datatoken decimals
            uints[2] = minRate; // the deposit below runs at the minimum rate
            // uints[3] = 0: no market fee; uints[4] = 0: never mints
            dt.createFixedRate(fixedRate, addresses, uints);
        } else if (!fre.isActive(exchangeId)) {
            fre.toggleExchangeState(exchangeId);
        }
        if (amount != 0) {
            if (!dt.transferFrom(msg.sender, address(this), amount)) revert TransferFailed();
            _deposit(fre, exchangeId, dt, amount, minRate);
        }
        fre.setRate(exchangeId, rate);
        emit SaleOpened(childNft, exchangeId, msg.sender, rate, amount);
    }

    /// Moves `amount` datatokens this contract holds into exchange `id` (its `dtBalance`) by
    /// `sellDT` at the minimum rate, first giving the exchange the OCEAN that sale pays out
    /// (advanced by the caller, handed back less Ocean's fee). Leaves the rate at `minRate`.
    function _deposit(IOceanFixedRate fre, bytes32 id, IOceanDatatoken dt, uint256 amount, uint256 minRate)
        private
    {
        fre.setRate(id, minRate);
        dt.approve(address(fre), amount + SLIVER);
        // What selling `amount` at the minimum rate pays out (Ocean's price, rounded down).
        uint256 need = (amount * minRate) / 1e18;
        if (need != 0) {
            // A sliver sold at the minimum rate is worth 0: it needs no OCEAN in the exchange.
            fre.sellDT(id, SLIVER, 0, address(0), 0);
            // Buying it back at `need / SLIVER` leaves `need` OCEAN in the exchange.
            fre.setRate(id, (need * 1e18 + SLIVER - 1) / SLIVER);
            (uint256 cost,,,) = fre.calcBaseInGivenOutDT(id, SLIVER, 0);
            IRoyaltyToken ocean = IRoyaltyToken(royaltyToken);
            if (!ocean.transferFrom(msg.sender, address(this), cost)) revert TransferFailed();
            ocean.approve(address(fre), cost);
            fre.buyDT(id, SLIVER, cost, address(0), 0);
            fre.setRate(id, minRate);
        }
        uint256 before = IRoyaltyToken(royaltyToken).balanceOf(address(this));
        fre.sellDT(id, amount, 0, address(0), 0);
        uint256 back = IRoyaltyToken(royaltyToken).balanceOf(address(this)) - before;
        if (back != 0 && !IRoyaltyToken(royaltyToken).transfer(msg.sender, back)) revert TransferFailed();
    }

    /// Pauses the sale of `childNft` on `fixedRate` (trainer only); what was put on sale and not
    /// sold stays reserved for a later `openSale`.
    function closeSale(address childNft, address fixedRate) external {
        IOceanDatatoken dt = _trainersChild(childNft);
        IOceanFixedRate fre = IOceanFixedRate(fixedRate);
        bytes32 exchangeId = fre.generateExchangeId(royaltyToken, address(dt));
        if (fre.isActive(exchangeId)) fre.toggleExchangeState(exchangeId);
        emit SaleClosed(childNft, exchangeId);
    }

    /// The datatoken of derived model `childNft`, if the caller trained it and its derivation
    /// is recorded (before that, the room under the cap is the rewards still to be minted).
    function _trainersChild(address childNft) private view returns (IOceanDatatoken) {
        Model storage child = models[childNft];
        if (!child.exists || child.depth == 0) revert UnknownModel(childNft);
        if (msg.sender != child.trainer) revert NotTrainer(childNft, msg.sender);
        uint8 state = jobs[child.jobId].state;
        if (state != RECORDED) revert WrongJobState(child.jobId, state);
        return IOceanDatatoken(child.datatoken);
    }

    /// Records the derivation of job `jobId` and pays its reward in the child's datatokens,
    /// exactly once: share i of the root's scheme to the i-th most recent trainer, the
    /// remainder (shares not used, rounding) to the root owner. One mint per beneficiary.
    function recordDerivation(bytes32 jobId, address childNft, address childDatatoken) external onlyOperator {
        Job storage job = jobs[jobId];
        if (job.state != CHILD_CREATED) revert WrongJobState(jobId, job.state);
        Model storage child = models[childNft];
        if (job.childNft != childNft || child.datatoken != childDatatoken) {
            revert ChildMismatch(childNft, childDatatoken);
        }
        job.state = RECORDED;

        address root = child.root;
        Scheme storage scheme = schemes[root];
        uint256 total = scheme.totalReward;
        uint256 packed = scheme.packedShares;
        uint256 paid = child.depth; // trainers between the root and the child, inclusive
        if (paid > scheme.count) paid = scheme.count;

        address[MAX_BENEFICIARIES + 1] memory who;
        uint256[MAX_BENEFICIARIES + 1] memory amount;
        uint256 n;
        uint256 spent;
        address cursor = childNft;
        for (uint256 i = 0; i < paid; i++) {
            Model storage m = models[cursor];
            uint256 share = (total * ((packed >> (16 * i)) & 0xffff)) / BPS;
            spent += share;
            n = _add(who, amount, n, m.trainer, share);
            cursor = m.parent;
        }
        n = _add(who, amount, n, models[root].trainer, total - spent);
        for (uint256 i = 0; i < n; i++) {
            if (amount[i] == 0) continue;
            IOceanDatatoken(childDatatoken).mint(who[i], amount[i]);
            emit RewardPaid(jobId, childDatatoken, who[i], amount[i]);
        }
        emit DerivationRecorded(
            jobId, job.parent, childNft, childDatatoken, job.trainer, job.outputWeightsHash, job.receiptHash
        );
    }

    /// How `amount` of royalty received for the child of job `jobId` is paid: share i of the
    /// root's scheme to the trainer of the child's i-th ancestor (the parent first), the
    /// remainder (shares the lineage does not reach, rounding) to the root owner, in that
    /// order. `ancestors[k]` is the model whose trainer `who[k]` is paid for; the amounts add
    /// up to `amount` exactly. Empty before the child exists.
    function royaltySplit(bytes32 jobId, uint256 amount)
        external
        view
        returns (address childNft, address[] memory ancestors, address[] memory who, uint256[] memory amounts)
    {
        childNft = jobs[jobId].childNft;
        if (childNft == address(0)) return (childNft, ancestors, who, amounts);
        Model storage child = models[childNft];
        address root = child.root;
        Scheme storage scheme = schemes[root];
        uint256 packed = scheme.packedShares;
        uint256 paid = models[child.parent].depth; // trainers from the parent up, below the root
        if (paid > scheme.count) paid = scheme.count;
        ancestors = new address[](paid + 1);
        who = new address[](paid + 1);
        amounts = new uint256[](paid + 1);
        uint256 spent;
        address cursor = child.parent;
        for (uint256 i = 0; i < paid; i++) {
            Model storage m = models[cursor];
            uint256 share = (amount * ((packed >> (16 * i)) & 0xffff)) / BPS;
            spent += share;
            (ancestors[i], who[i], amounts[i]) = (cursor, m.trainer, share);
            cursor = m.parent;
        }
        (ancestors[paid], who[paid], amounts[paid]) = (root, models[root].trainer, amount - spent);
    }

    /// ERC721 receiver hook: accepts the child NFTs this contract creates, refuses the rest.
    function onERC721Received(address, address, uint256, bytes calldata) external view returns (bytes4) {
        if (!creatingChild) revert UnexpectedNft();
        return this.onERC721Received.selector;
    }

    /// Adds `value` to `to`'s pending amount (merging repeated beneficiaries).
    function _add(
        address[MAX_BENEFICIARIES + 1] memory who,
        uint256[MAX_BENEFICIARIES + 1] memory amount,
        uint256 n,
        address to,
        uint256 value
    ) private pure returns (uint256) {
        for (uint256 j = 0; j < n; j++) {
            if (who[j] == to) {
                amount[j] += value;
                return n;
            }
        }
        who[n] = to;
        amount[n] = value;
        return n + 1;
    }

    /// "0x" + the 64 lowercase hex digits of `h`.
    function _hexText(bytes32 h) private pure returns (bytes memory s) {
        bytes16 digits = "0123456789abcdef";
        s = new bytes(66);
        s[0] = "0";
        s[1] = "x";
        for (uint256 i = 0; i < 32; i++) {
            uint8 b = uint8(h[i]);
            s[2 + 2 * i] = digits[b >> 4];
            s[3 + 2 * i] = digits[b & 0x0f];
        }
    }

    function _weightsHashOf(address nft) private view returns (bytes32 h) {
        bytes memory data = IOceanNft(nft).getData(WEIGHTS_HASH_KEY);
        if (data.length != 32) return bytes32(0);
        h = bytes32(data);
    }

    // ---- reads ----

    /// A model's record (`exists` false if unknown).
    function getModel(address nft) external view returns (Model memory) {
        return models[nft];
    }

    /// The root's reward scheme and royalty per order of a derived model.
    function schemeOf(address rootNft)
        external
        view
        returns (uint256 totalReward, uint16[] memory sharesBps, uint256 royalty)
    {
        Scheme storage s = schemes[rootNft];
        totalReward = s.totalReward;
        royalty = s.royalty;
        sharesBps = new uint16[](s.count);
        for (uint256 i = 0; i < s.count; i++) {
            sharesBps[i] = uint16(s.packedShares >> (16 * i));
        }
    }

    /// The operator at the end of block `blockNumber` (zero before the deployment).
    function operatorAt(uint256 blockNumber) external view returns (address) {
        for (uint256 i = operatorTerms.length; i > 0; i--) {
            if (operatorTerms[i - 1].fromBlock <= blockNumber) return operatorTerms[i - 1].operator;
        }
        return address(0);
    }

    /// Every operator's term, oldest first: the history receipts are verified against.
    function operatorHistory() external view returns (OperatorTerm[] memory) {
        return operatorTerms;
    }

    /// A job's commitment (state 0 unknown, 1 committed, 2 child created, 3 recorded) and
    /// the block it was committed in.
    function getJob(bytes32 jobId) external view returns (Job memory) {
        return jobs[jobId];
    }

    /// The lineage from `nft` up to its root, `nft` first. A view (free to call); its length
    /// is the model's depth + 1.
    function lineage(address nft) external view returns (Model[] memory chain) {
        Model storage m = models[nft];
        if (!m.exists) revert UnknownModel(nft);
        chain = new Model[](uint256(m.depth) + 1);
        address cursor = nft;
        for (uint256 i = 0; i < chain.length; i++) {
            chain[i] = models[cursor];
            cursor = chain[i].parent;
        }
    }
}

/// @title RoyaltyVault: collects one derived model's lineage royalty and pays it out.
///
/// Created by `ModelLineage.createChild` as the child datatoken's publish-market fee address,
/// so every `startOrder` of the child transfers the root's royalty here. It has no owner and
/// no function that calls the datatoken's `setPublishingMarketFee` (which only this address
/// could), so the fee can be neither redirected nor changed. `distribute()` is open to
/// anyone: it pays the vault's token balance (royalties and anything else sent) but the
/// `SEED` the operator put in at creation by `ModelLineage.royaltySplit`, whose amounts add
/// up to what is paid, so nothing else stays behind. The seed keeps the balance non-zero, so
/// every order rewrites a non-zero slot instead of paying 20,000 gas to create one.
contract RoyaltyVault {
    /// OCEAN base units the operator seeds the vault with, kept by it for ever.
    uint256 public constant SEED = VAULT_SEED;
    /// The lineage contract that created this vault and knows the lineage.
    ModelLineage public immutable lineage;
    /// The training job whose child model this vault serves.
    bytes32 public immutable jobId;
    /// The royalty token (OCEAN).
    IRoyaltyToken public immutable token;

    /// `ancestorNft` is the model whose trainer `beneficiary` is (the root for the remainder).
    event RoyaltyPaid(
        address indexed childNft, address indexed beneficiary, address indexed ancestorNft, uint256 amount
    );

    error TransferFailed(address to, uint256 amount);

    constructor(bytes32 jobId_, address token_) {
        lineage = ModelLineage(msg.sender);
        jobId = jobId_;
        token = IRoyaltyToken(token_);
    }

    /// Pays the balance but the seed to the child's ancestors; returns what was paid (0 when
    /// nothing but the seed is there).
    function distribute() external returns (uint256 total) {
        uint256 held = token.balanceOf(address(this));
        if (held <= SEED) return 0;
        total = held - SEED;
        (address childNft, address[] memory ancestors, address[] memory who, uint256[] memory amounts) =
            lineage.royaltySplit(jobId, total);
        if (childNft == address(0)) return 0;
        for (uint256 i = 0; i < who.length; i++) {
            if (amounts[i] == 0) continue;
            if (!token.transfer(who[i], amounts[i])) revert TransferFailed(who[i], amounts[i]);
            emit RoyaltyPaid(childNft, who[i], ancestors[i], amounts[i]);
        }
    }
}
