"""Building blocks: attention (SDPA), transformer blocks, experts, pooling, projectors."""

from sensorium.nn.attention import Attention, KVCache, attention_mask
from sensorium.nn.experts import ModalityExperts
from sensorium.nn.lora import LoRALinear, apply_lora, merge_lora
from sensorium.nn.moe import MoE, moe_aux_loss
from sensorium.nn.projector import ProjectorConfig, build_projector
from sensorium.nn.rope import RotaryEmbedding, apply_rotary, rope_inv_freq
from sensorium.nn.transformer import MLP, Block, RMSNorm, Transformer, TransformerConfig, make_norm

__all__ = ["Attention", "Block", "KVCache", "LoRALinear", "MLP", "ModalityExperts", "MoE", "ProjectorConfig",
           "RMSNorm", "RotaryEmbedding", "Transformer", "TransformerConfig", "apply_lora", "apply_rotary",
           "attention_mask", "build_projector", "make_norm", "merge_lora", "moe_aux_loss", "rope_inv_freq"]
