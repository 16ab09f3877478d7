// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

interface IPeerMarketBuy {
    function buy(uint256 offerId, uint256 amount, uint256 maxCost) external returns (uint256);
}

/// Test fixture only (never deployed by `deploy_stack`): an ERC-20 that, once armed, calls
/// back into `PeerMarket.buy` from inside the market's `transferFrom`, and records how the
/// nested call failed, so a test can show the market's reentrancy guard stops it.
contract ReentrantToken is ERC20 {
    address public market;
    uint256 public offerId;
    bool public armed;
    /// Revert data of the nested buy (0x01 if it unexpectedly succeeded).
    bytes public reentryError;

    constructor() ERC20("Reentrant", "RE") {
        _mint(msg.sender, 1000e18);
    }

    function arm(address market_, uint256 offerId_) external {
        market = market_;
        offerId = offerId_;
        armed = true;
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        bool ok = super.transferFrom(from, to, value);
        if (armed) {
            armed = false;
            try IPeerMarketBuy(market).buy(offerId, 1, type(uint256).max) {
                reentryError = hex"01";
            } catch (bytes memory e) {
                reentryError = e;
            }
        }
        return ok;
    }
}
