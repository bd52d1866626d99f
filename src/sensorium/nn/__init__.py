"""Building blocks: attention (SDPA), transformer blocks, experts, pooling, projectors."""

from .attention import Attention, KVCache, attention_mask
from .experts import ModalityExperts
from .lora import LoRALinear, apply_lora, merge_lora
from .moe import MoE, moe_aux_loss
from .projector import ProjectorConfig, build_projector
from .rope import RotaryEmbedding, apply_rotary, rope_inv_freq
from .transformer import MLP, Block, RMSNorm, Transformer, TransformerConfig, make_norm

__all__ = ["Attention", "Block", "KVCache", "LoRALinear", "MLP", "ModalityExperts", "MoE", "ProjectorConfig",
           "RMSNorm", "RotaryEmbedding", "Transformer", "TransformerConfig", "apply_lora", "apply_rotary",
           "attention_mask", "build_projector", "make_norm", "merge_lora", "moe_aux_loss", "rope_inv_freq"]
