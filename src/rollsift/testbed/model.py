"""The testbed policy: a tiny ``Qwen2ForCausalLM`` (head_dim 64) over the character tokenizer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the testbed model.

    hidden_size: width of the residual stream; must be a multiple of 64 (head_dim is 64).
    num_layers: transformer blocks.
    intermediate_size: MLP width.
    num_kv_heads: key/value heads (grouped-query attention when fewer than hidden_size / 64).
    """

    hidden_size: int = 256
    num_layers: int = 4
    intermediate_size: int = 768
    num_kv_heads: int = 4

    def __post_init__(self) -> None:
        if self.hidden_size % 64:
            raise ValueError(f"hidden_size must be a multiple of 64 (head_dim 64), got {self.hidden_size}")
        heads = self.hidden_size // 64
        if heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide the {heads} attention heads")


def build_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig(), seed: int = 0):
    """A freshly initialised ``Qwen2ForCausalLM`` sized for ``tokenizer``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.hidden_size // 64,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=64,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
