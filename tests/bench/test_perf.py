"""`hybridopt bench --quick` on the tiny random llama, and the GPU script's CPU (shrunk) mode.
Well-formedness only: no timing assertions."""
import json
import math

import pytest

from hybridopt.benchmarks.perf import cli, gpu_check
from hybridopt.cli import COMMANDS

REQUIRED_RATIOS = ("hybrid_step_over_floor", "hybrid_reuse_step_over_floor", "zo_pass_time_over_two_forwards",
                   "zo_step_over_mezo_reference", "hybrid_memory_over_fo_peft", "zo_full_memory_over_inference",
                   "hybrid_memory_over_fo_full")
METHODS = ("fo-full", "fo-peft", "zo-full", "zo-peft", "hybrid", "mezo-reference")


def test_bench_quick_writes_well_formed_json(tmp_path, capsys):
    assert cli.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    ratios = res["ratios"]
    for k in REQUIRED_RATIOS:
        v = ratios[k]
        assert isinstance(v, float) and math.isfinite(v) and v > 0, (k, v)
    passes = ratios["zo_passes_per_step"]
    assert isinstance(passes, int) and not isinstance(passes, bool) and 1 <= passes <= 3
    assert ratios["mezo_reference_passes_per_step"] == 4
    for m in METHODS:
        row = res["methods"][m]
        assert row["step_s"] > 0 and row["tokens_per_s"] > 0 and row["peak_memory_bytes"] > 0, m
    assert res["methods"]["fo-peft"]["zo_passes_per_step"] == 0
    assert res["memory"]["inference"]["peak_bytes"] > 0
    assert set(res["goals"]) <= set(ratios)
    assert "zo_pass_s" in res["definitions"] and res["profile"]["zo-full"]["step_s"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "| hybrid |" in md and "hybrid_step_over_floor" in md
    assert "hybrid_step_over_floor" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpu_script_runs_shrunk_on_cpu(tmp_path, monkeypatch):
    from hybridopt import directions as D

    monkeypatch.setattr(D, "CHUNK_ELEMENTS", D.CHUNK_ELEMENTS)  # --shrink lowers it; restored after
    rc = gpu_check.main(["--out", str(tmp_path), "--shrink", "--device", "cpu", "--reps", "1", "--batch", "2",
                         "--seq-len", "8", "--no-memory", "--no-profile"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert rc == 0, summary
    assert summary["chunk_elements"] == gpu_check.SHRUNK_CHUNK_ELEMENTS  # chunked paths exercised
    for shape in ("opt-1.3b", "llama-7b"):
        assert summary["phases"][f"{shape}/bench"]["ok"]
        restore = json.loads((tmp_path / shape / "restore.json").read_text())
        assert restore["dtype"] == "bfloat16" and restore["core_exact"] is True
        assert restore["mezo_elements_changed"] > 0       # MeZO's +eps/-2eps/+eps does not restore bf16
        bench = json.loads((tmp_path / shape / "bench.json").read_text())
        assert bench["workload"]["shrunk"] is True and bench["ratios"]["zo_passes_per_step"] == 3
        assert summary["phases"][f"{shape}/bench-rademacher"]["ok"]
        fast = json.loads((tmp_path / shape / "bench-rademacher.json").read_text())
        assert fast["config"]["direction"] == "rademacher" and bench["config"]["direction"] == "gaussian"


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--reps", "0"], ["--memory-only", "--no-memory"],
                                  ["--memory-items", "bogus"], ["--direction", "bogus"],
                                  ["--nonsense"]])
def test_bench_bad_arguments_exit_2(argv, tmp_path, capsys):
    try:
        rc = cli.main(argv + ["--out", str(tmp_path)])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def test_bench_command_registered():
    assert COMMANDS["bench"][:2] == ("hybridopt.benchmarks.perf.cli", "main")


def test_piece_timer_sees_chunked_probes(monkeypatch):
    """The ZO-pass timer brackets the chunked perturbation (every step of ``Perturbation.chunks``
    and ``.rows``), not only whole-tensor ``Perturbation.apply`` calls."""
    import torch

    import hybridopt as ho
    from hybridopt.benchmarks.perf.bench import _around_zo_pieces
    from hybridopt import directions as D

    monkeypatch.setattr(D, "CHUNK_ELEMENTS", 1000)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(200, 16), torch.nn.Linear(16, 200))
    ids = torch.randint(0, 200, (8, 5))

    def loss_fn(m, b):
        return torch.nn.functional.cross_entropy(m(ids[b]).reshape(-1, 200), ids[b].reshape(-1))

    prob = ho.ModuleProblem(model, loss_fn, list(model.parameters()), [], n=8)
    opt = ho.HybridOptimizer(prob, ho.HybridConfig(direction="rademacher"), cache_directions=False)
    events = []
    with _around_zo_pieces(lambda kind: events.append(kind), lambda kind, token: None):
        opt.step(torch.arange(8))
    chunks = len(D.row_chunks(model[1].weight.shape))
    assert chunks > 1
    # per probe: the embedding lookup (rows), every chunk of the head + the end of its generator, the bias
    assert events.count("apply") == 2 * (1 + chunks + 1 + 1)
    assert events.count("update") == 1
    assert D.Perturbation.chunks.__name__ == "chunks" and "wrapper" not in D.Perturbation.apply.__qualname__
