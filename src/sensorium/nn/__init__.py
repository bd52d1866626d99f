"""Building blocks: attention (SDPA), transformer blocks, experts, pooling, projectors."""
