"""HybridTrainer under torchrun (2 gloo processes on CPU): the same run as one process with the
same global batch (to float32 summation order), bit-identical weights on every rank, and the ZO
block's communication is q + 1 scalars per step (no DistributedDataParallel)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import hf_args, tiny

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


def equal_length_data(tok):
    # every example has the same number of label tokens, so a mean of shard means is the global mean
    return [dict(tok(f"Question: what is {a} plus {b}? Answer: {a + b}.")) for a in range(5) for b in range(5)]


def run(out, per_device):
    from transformers import DataCollatorForLanguageModeling
    from hybridopt.hf import HybridTrainer
    from hybridopt.llm import tiny_tokenizer

    tok = tiny_tokenizer()
    # SGD: Adam would turn float32 summation-order noise in near-zero gradients into full-size steps
    tr = HybridTrainer(model=tiny("hybrid"), args=hf_args(out, max_steps=STEPS, per_device_train_batch_size=per_device,
                                                          fo_optimizer="sgd"),
                       train_dataset=equal_length_data(tok), data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                       processing_class=tok)
    tr.train()
    return tr


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_port()), str(REPO / "tests" / "hf" / "dp_worker.py"), str(tmp_path), str(REPO)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "dp.pt", weights_only=False)
    assert got["world"] == 2
    one = run(tmp_path / "one", per_device=4)
    assert got["losses"] == pytest.approx([x["loss"] for x in one.state.log_history if "loss" in x], rel=1e-5)
    for a, b in zip(got["weights"], one.model.parameters()):
        assert torch.allclose(a, b.detach(), rtol=1e-5, atol=1e-6)
    assert got["hashes"][0] == got["hashes"][1]                 # ranks hold bit-identical weights
    assert got["per_step"] == [(2 * 4, got["fo_numel"] * 4)] * STEPS   # ZO: q + 1 float32 scalars per step
