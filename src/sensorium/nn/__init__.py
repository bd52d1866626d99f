"""Building blocks: attention (SDPA), transformer blocks, experts, pooling, projectors."""

from .attention import Attention, KVCache, attention_mask
from .experts import ModalityExperts
from .moe import MoE, moe_aux_loss
from .rope import RotaryEmbedding, apply_rotary, rope_inv_freq
from .transformer import MLP, Block, RMSNorm, Transformer, TransformerConfig, make_norm

__all__ = ["Attention", "Block", "KVCache", "MLP", "ModalityExperts", "MoE", "RMSNorm", "RotaryEmbedding",
           "Transformer", "TransformerConfig", "apply_rotary", "attention_mask", "make_norm", "moe_aux_loss",
           "rope_inv_freq"]
