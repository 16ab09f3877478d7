// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title PeerMarket: fixed-price offers for any ERC-20, held by anyone, paid in one base token.
///
/// Why it exists: derived models' datatokens are minted only by ModelLineage (which owns the
/// child data NFT), so nobody holds the ERC20-deployer role a FixedRateExchange needs, and
/// Ocean 2.6's exchange sells only by minting or from its own balance. Holders of reward
/// tokens (Bob with M2) still need to sell them (to Charlie); this market lets them.
///
/// Design (kept small enough to audit by reading):
///  - The seller keeps custody: an offer records seller, token, price and remaining amount;
///    the seller `approve`s this contract for the token. Nothing is escrowed here, so this
///    contract never holds tokens and has nothing to lose or to sweep.
///  - `buy` moves the base token buyer → seller and the token seller → buyer in the same
///    transaction with `transferFrom`, after updating state (checks-effects-interactions)
///    and under a reentrancy guard. If either transfer fails, everything reverts.
///  - Cost = amount * price / 1e18, rounded UP, so the seller is never short-changed by
///    rounding; the buyer bounds it with `maxCost`.
///  - No owner, no fees, no upgradeability, no pause: the bytecode is the whole policy.
///  - Offer ids start at 1, so 0 is never a valid id.
contract PeerMarket is ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// `active` sits next to `seller` so the two share one storage slot (4 slots per offer).
    struct Offer {
        address seller;
        /// False once cancelled (a sold-out offer stays active with `remaining == 0`, and its
        /// seller may refill it with `updateOffer`).
        bool active;
        address token;
        /// Base-token base units per whole (1e18 base units) token.
        uint256 price;
        /// Token base units still for sale.
        uint256 remaining;
    }

    /// The token every offer is paid in (OCEAN), fixed at construction.
    IERC20 public immutable baseToken;
    /// The id the next offer gets minus one (ids start at 1).
    uint256 public offerCount;
    mapping(uint256 => Offer) private offers;

    event OfferCreated(
        uint256 indexed offerId,
        address indexed seller,
        address indexed token,
        uint256 price,
        uint256 amount
    );
    event OfferUpdated(
        uint256 indexed offerId,
        address indexed seller,
        address indexed token,
        uint256 price,
        uint256 amount
    );
    event OfferCancelled(uint256 indexed offerId, address indexed seller, address indexed token);
    event Bought(
        uint256 offerId,
        address indexed buyer,
        address indexed seller,
        address indexed token,
        uint256 amount,
        uint256 cost
    );

    error ZeroAddress();
    error ZeroAmount();
    error ZeroPrice();
    error UnknownOffer(uint256 offerId);
    error NotSeller(uint256 offerId, address caller);
    error OfferInactive(uint256 offerId);
    error NotEnoughRemaining(uint256 offerId, uint256 requested, uint256 remaining);
    error CostAboveMax(uint256 cost, uint256 maxCost);

    constructor(IERC20 base) {
        if (address(base) == address(0)) revert ZeroAddress();
        baseToken = base;
    }

    /// Offers `amount` of `token` at `price` base units per whole token. The caller must
    /// approve this contract for the tokens before anyone can buy.
    function createOffer(address token, uint256 price, uint256 amount)
        external
        returns (uint256 offerId)
    {
        if (token == address(0)) revert ZeroAddress();
        if (price == 0) revert ZeroPrice();
        if (amount == 0) revert ZeroAmount();
        offerId = ++offerCount;
        offers[offerId] = Offer(msg.sender, true, token, price, amount);
        emit OfferCreated(offerId, msg.sender, token, price, amount);
    }

    /// Seller only: replaces the price and the amount still for sale.
    function updateOffer(uint256 offerId, uint256 price, uint256 amount) external {
        Offer storage o = ownOffer(offerId);
        if (price == 0) revert ZeroPrice();
        if (amount == 0) revert ZeroAmount();
        o.price = price;
        o.remaining = amount;
        emit OfferUpdated(offerId, msg.sender, o.token, price, amount);
    }

    /// Seller only: withdraws the offer for good (the seller should also revoke the approval).
    function cancelOffer(uint256 offerId) external {
        Offer storage o = ownOffer(offerId);
        o.active = false;
        o.remaining = 0;
        emit OfferCancelled(offerId, msg.sender, o.token);
    }

    /// Buys `amount` token base units from an offer, paying at most `maxCost` base units.
    function buy(uint256 offerId, uint256 amount, uint256 maxCost)
        external
        nonReentrant
        returns (uint256 cost)
    {
        Offer storage o = liveOffer(offerId);
        if (amount == 0) revert ZeroAmount();
        if (amount > o.remaining) revert NotEnoughRemaining(offerId, amount, o.remaining);
        cost = Math.mulDiv(amount, o.price, 1e18, Math.Rounding.Ceil);
        if (cost > maxCost) revert CostAboveMax(cost, maxCost);
        address seller = o.seller;
        IERC20 token = IERC20(o.token);
        o.remaining -= amount;
        emit Bought(offerId, msg.sender, seller, address(token), amount, cost);
        baseToken.safeTransferFrom(msg.sender, seller, cost);
        token.safeTransferFrom(seller, msg.sender, amount);
    }

    /// The cost of buying `amount` now (reverts where `buy` would for the offer's state).
    function quote(uint256 offerId, uint256 amount) external view returns (uint256) {
        Offer storage o = liveOffer(offerId);
        if (amount == 0) revert ZeroAmount();
        if (amount > o.remaining) revert NotEnoughRemaining(offerId, amount, o.remaining);
        return Math.mulDiv(amount, o.price, 1e18, Math.Rounding.Ceil);
    }

    function offer(uint256 offerId) external view returns (Offer memory) {
        if (offerId == 0 || offerId > offerCount) revert UnknownOffer(offerId);
        return offers[offerId];
    }

    function liveOffer(uint256 offerId) private view returns (Offer storage o) {
        o = offers[offerId];
        if (o.seller == address(0)) revert UnknownOffer(offerId);
        if (!o.active) revert OfferInactive(offerId);
    }

    function ownOffer(uint256 offerId) private view returns (Offer storage o) {
        o = liveOffer(offerId);
        if (o.seller != msg.sender) revert NotSeller(offerId, msg.sender);
    }
}
