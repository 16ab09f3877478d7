//! The batch worker: GPT-2 train, infer and evaluate in candle
