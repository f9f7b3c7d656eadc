"""Fixtures shared by the generation and pruning tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The test machine's 2 cores are shared: intra-op threads spin against other work and a tiny
    forward pass goes from ~1 ms to ~100 ms. One thread keeps a module of tiny models fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """A random hidden-64 Qwen2 over the testbed tokenizer, with wider weights than the default
    init: a default init (std 0.02) repeats one token forever; wider weights give varied outputs,
    so rows end with EOS at different steps and argmax ties are unlikely."""
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, num_kv_heads=1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.15, generator=g)
    return model.eval(), tok
