//! GPT-2 in candle with HF tensor layout, fused ops with hand-written backward, and AdamW
