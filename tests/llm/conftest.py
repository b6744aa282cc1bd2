"""Fixtures for the LLM tests: a tiny random llama (no download) and its in-code tokenizer."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tok():
    from hybridopt.llm import tiny_tokenizer
    return tiny_tokenizer()


@pytest.fixture
def make_tiny(tiny_tok):
    """Factory of fresh tiny-llama models (peft modifies a model in place)."""
    from hybridopt.llm.models import _load_tiny

    def make(dtype=torch.float32, seed: int = 0):
        model, _ = _load_tiny(seed)
        return model.to(dtype).eval()
    return make


@pytest.fixture
def tiny_model(make_tiny):
    return make_tiny()


@pytest.fixture(scope="session")
def sst2_dev():
    from hybridopt.benchmarks.tasks import load_split
    return load_split("sst2", "dev")


@pytest.fixture(scope="session")
def wino_dev():
    from hybridopt.benchmarks.tasks import load_split
    return load_split("winogrande", "dev")


@pytest.fixture(scope="session")
def wsc_dev():
    from hybridopt.benchmarks.tasks import load_split
    return load_split("wsc", "dev")
