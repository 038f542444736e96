"""The VQ-VAE tokenizer: frames ``uint8 (B, 3, H, W)`` <-> tokens ``int64 (B, K)`` (``model``), its discrete
bottleneck (``quantizer``), its losses (``losses``) and its Lightning system (``module``). Knows nothing of RL."""
