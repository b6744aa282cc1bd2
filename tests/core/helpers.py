"""Tiny objectives shared by the core tests."""
from __future__ import annotations

import torch

import hybridopt as ho
from hybridopt.llm import parameter_blocks


def quadratic_problem(n=12, dx=5, dy=3, seed=0, dtype=torch.float64, replicates=None):
    """f_i(x, y) = 0.5 ||A_i z - b_i||^2 with z = (x, y); convex, minimiser known by least squares."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 4, dx + dy, generator=g, dtype=dtype)
    b = torch.randn(n, 4, generator=g, dtype=dtype)
    shape = () if replicates is None else (replicates,)
    x = torch.zeros(*shape, dx, dtype=dtype)
    y = torch.zeros(*shape, dy, dtype=dtype)

    def fn(xs, ys, batch):
        z = torch.cat([xs[0], ys[0]], dim=-1)
        if batch.dim() == 1:
            r = torch.einsum("bkd,...d->...bk", A[batch], z) - b[batch]
        else:  # (R, b) per-replicate indices
            r = torch.einsum("rbkd,rd->rbk", A[batch], z) - b[batch]
        return 0.5 * (r ** 2).sum(-1).mean(-1)

    prob = ho.TensorProblem(fn, [x], [y], n=n, replicate_shape=shape)
    zstar = torch.linalg.lstsq(A.reshape(-1, dx + dy), b.reshape(-1, 1)).solution.squeeze(-1)
    return prob, A, b, zstar


def full_grad(A, b, z):
    """∇f(z) for the quadratic above (average over components)."""
    r = torch.einsum("nkd,d->nk", A, z) - b
    return torch.einsum("nkd,nk->d", A, r) / A.shape[0]


class MLP(torch.nn.Module):
    def __init__(self, d=6, h=16):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, h)
        self.norm = torch.nn.LayerNorm(h)
        self.fc2 = torch.nn.Linear(h, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


def lora_problem(method="hybrid", dtype=torch.float32, n=24, seed=0):
    """A tiny MLP wrapped with a real ``peft`` LoRA adapter, as a ModuleProblem for ``method``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    X = torch.randn(n, 6)
    Y = torch.randn(n, 1)
    model = MLP()
    if method in ("fo-peft", "zo-peft", "hybrid"):
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["fc1", "fc2"],
                                                 init_lora_weights=False))
        base, adapter = parameter_blocks(model)
    else:
        base, adapter = list(model.parameters()), []
    model.to(dtype)
    zo, fo = ho.split_blocks(method, base, adapter)

    def loss_fn(m, idx):
        return torch.nn.functional.mse_loss(m(X[idx].to(dtype)).float(), Y[idx])

    return ho.ModuleProblem(model, loss_fn, zo, fo, n=n), base, adapter
