//! Ethereum access (alloy): Ocean v4 datatokens, the lineage contract, and the order check
