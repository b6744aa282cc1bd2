"""Fixtures for the HybridTrainer tests: the tiny random llama, a small SFT dataset, HF collator."""
from __future__ import annotations

import warnings

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

TEXTS = [f"Question: what is {a} plus {b}? Answer: {a + b}." + " Well." * (a % 3) for a in range(5) for b in range(4)]


@pytest.fixture(scope="session")
def tok():
    from hybridopt.llm import tiny_tokenizer
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def sft_data(tok):
    """20 examples of different lengths (so batches are padded)."""
    return [dict(tok(t)) for t in TEXTS]


@pytest.fixture(scope="session")
def collator(tok):
    from transformers import DataCollatorForLanguageModeling
    return DataCollatorForLanguageModeling(tok, mlm=False)


def tiny(method: str = "hybrid", seed: int = 0):
    """A fresh tiny llama, with a LoRA adapter for the methods that train one."""
    from hybridopt import methods
    from hybridopt.llm import attach_peft
    from hybridopt.llm.models import _load_tiny

    model, _ = _load_tiny(seed)
    if methods.get(method).uses_adapter:
        model = attach_peft(model, "lora", r=4, alpha=8, seed=seed)
    return model


def hf_args(out, method="hybrid", **kw):
    from hybridopt.hf import HybridTrainingArguments
    opts = dict(output_dir=str(out), method=method, lr_x=1e-3, learning_rate=1e-2, mu=1e-2, max_steps=4,
                per_device_train_batch_size=4, logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=True, seed=0, disable_tqdm=True)
    opts.update(kw)
    return HybridTrainingArguments(**opts)
