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
}

interface IOceanDatatoken {
    function getERC721Address() external view returns (address);
    function mint(address account, uint256 value) external;
}

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
/// Consequence: nobody holds the child's ERC20-deployer role, so no fixed-rate exchange can be
/// opened on a child datatoken (Ocean 2.6's exchange only sells what it mints or holds from
/// earlier sales); rewards change hands by plain ERC-20 transfers.
contract ModelLineage {
    /// ERC725Y key holding a model's canonical weights hash in its data NFT.
    bytes32 public constant WEIGHTS_HASH_KEY = keccak256("posthuman.weightsHash");
    uint256 public constant MAX_BENEFICIARIES = 16;
    uint256 public constant BPS = 10_000;
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
        uint256 packedShares; // 16 × uint16 bps, share i in bits [16i, 16i+16)
    }

    // Job states.
    uint8 internal constant COMMITTED = 1;
    uint8 internal constant CHILD_CREATED = 2;
    uint8 internal constant RECORDED = 3;

    struct Job {
        address parent;
        uint8 state;
        address trainer;
        bytes32 outputWeightsHash;
        bytes32 receiptHash;
        address childNft;
    }

    address public immutable operator;
    IOceanFactory public immutable factory;

    mapping(address => Model) internal models;
    mapping(address => Scheme) internal schemes; // by root NFT
    mapping(bytes32 => Job) internal jobs;
    /// Set only while `createChild` runs, so the contract accepts exactly the NFTs it mints
    /// for itself (the factory `_safeMint`s to the owner) and no others.
    bool transient creatingChild;

    /// `rootOwner` is the beneficiary of remainders; `holder` held the NFT at registration.
    event RootRegistered(
        address indexed nft, address indexed datatoken, address indexed rootOwner, address holder,
        bytes32 weightsHash, uint256 totalReward, uint16[] sharesBps
    );
    event TrainingCommitted(
        bytes32 indexed jobId, address indexed parentNft, address indexed trainer, bytes32 outputWeightsHash,
        bytes32 receiptHash
    );
    event ChildCreated(bytes32 indexed jobId, address indexed childNft, address indexed childDatatoken);
    event DerivationRecorded(
        bytes32 indexed jobId, address indexed parentNft, address indexed childNft, address childDatatoken,
        address trainer, bytes32 weightsHash, bytes32 receiptHash
    );
    event RewardPaid(bytes32 indexed jobId, address indexed childDatatoken, address indexed beneficiary, uint256 amount);

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

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    constructor(address operator_, IOceanFactory factory_) {
        if (operator_ == address(0) || address(factory_) == address(0)) revert ZeroAddress();
        operator = operator_;
        factory = factory_;
    }

    /// Registers a root model, fixing its reward scheme for all derivations below it. The NFT
    /// must be held by `owner`, the datatoken must belong to it, and the NFT's ERC725Y weights
    /// commitment must equal `weightsHash`. `rootOwner` is the model's owner of record: the
    /// root's `trainer` and the beneficiary of every derivation's remainder. It is separate
    /// from `owner` because the holder may be a custodian (the operator publishing on a
    /// model owner's behalf, without her key), who must not collect her remainders.
    function registerRoot(
        address nft,
        address datatoken,
        bytes32 weightsHash,
        address owner,
        address rootOwner,
        uint128 totalReward,
        uint16[] calldata sharesBps
    ) external onlyOperator {
        if (owner == address(0) || rootOwner == address(0)) revert ZeroAddress();
        if (models[nft].exists) revert AlreadyRegistered();
        if (sharesBps.length > MAX_BENEFICIARIES) revert BadScheme();
        uint256 packed;
        uint256 sum;
        for (uint256 i = 0; i < sharesBps.length; i++) {
            sum += sharesBps[i];
            packed |= uint256(sharesBps[i]) << (16 * i);
        }
        if (sum > BPS) revert BadScheme();
        if (IOceanNft(nft).ownerOf(1) != owner) revert NotOwnedBy(nft, owner);
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
        schemes[nft] = Scheme({totalReward: totalReward, count: uint8(sharesBps.length), packedShares: packed});
        emit RootRegistered(nft, datatoken, rootOwner, owner, weightsHash, totalReward, sharesBps);
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
        if (!models[parentNft].exists) revert UnknownModel(parentNft);
        Job storage job = jobs[jobId];
        if (job.state != 0) revert JobAlreadyCommitted(jobId);
        job.parent = parentNft;
        job.state = COMMITTED;
        job.trainer = trainer;
        job.outputWeightsHash = outputWeightsHash;
        job.receiptHash = receiptHash;
        emit TrainingCommitted(jobId, parentNft, trainer, outputWeightsHash, receiptHash);
    }

    /// Creates the child's data NFT and datatoken for a committed job, owned by this contract
    /// (see the trust note above). Payments for orders on the child go to its trainer.
    function createChild(bytes32 jobId, string calldata name, string calldata symbol, string calldata tokenURI)
        external
        onlyOperator
        returns (address childNft, address childDatatoken)
    {
        Job storage job = jobs[jobId];
        if (job.state != COMMITTED) revert WrongJobState(jobId, job.state);

        string[] memory strings = new string[](2);
        strings[0] = name;
        strings[1] = symbol;
        address[] memory addresses = new address[](4);
        addresses[0] = address(this); // the only minter
        addresses[1] = job.trainer; // payment collector
        uint256[] memory uints = new uint256[](2);
        uints[0] = type(uint256).max / 2; // cap: rewards are the only supply
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

        Model storage parent = models[job.parent];
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
        emit ChildCreated(jobId, childNft, childDatatoken);
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

    /// The root's reward scheme.
    function schemeOf(address rootNft) external view returns (uint256 totalReward, uint16[] memory sharesBps) {
        Scheme storage s = schemes[rootNft];
        totalReward = s.totalReward;
        sharesBps = new uint16[](s.count);
        for (uint256 i = 0; i < s.count; i++) {
            sharesBps[i] = uint16(s.packedShares >> (16 * i));
        }
    }

    /// A job's commitment (state 0 unknown, 1 committed, 2 child created, 3 recorded).
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
