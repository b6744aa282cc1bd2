"""Grid search: selection on dev only; the selected checkpoint's test accuracy is exact."""
import json

import pytest

from hybridopt.benchmarks import runner
from hybridopt.benchmarks.cli import grid_main
from hybridopt.benchmarks.config import ConfigError
from hybridopt.benchmarks.grid import parse_grid, run_grid, trial_configs

from .test_finetune import cfg_for, numbers


def test_grid_selects_on_dev_and_tests_once(tmp_path):
    base = cfg_for("hybrid", steps=4)
    grid = {"lr_y": [1e-3, 3e-1], "lr_x": [1e-3]}
    res = run_grid(base, grid, tmp_path, progress=False)
    trials = res["grid"]["trials"]
    assert len(trials) == 2
    best = max(trials, key=lambda t: t["dev_best"])
    assert res["grid"]["selected"] == best["name"]
    for t in trials:  # trials never looked at test
        r = json.loads((tmp_path / "trials" / t["name"] / "result.json").read_text())
        assert r["test_accuracy"] is None
    # the selected checkpoint, rebuilt from selected.pt, scores exactly like a plain run of that config
    chosen = next(c for n, _, c in trial_configs(base, grid) if n == best["name"])
    plain = runner.run(chosen, tmp_path / "plain", progress=False)
    assert res["test_accuracy"] == plain["test_accuracy"]
    assert numbers({**res, "grid": None}) | {"grid": None} == numbers(plain) | {"grid": None}
    assert json.loads((tmp_path / "grid.json").read_text())["test_accuracy_of_selected"] == res["test_accuracy"]


@pytest.mark.parametrize("spec,msg", [("lr=1", "KEY one of"), ("lr_x=a", "must be numbers"), ("lr_x=", "no values")])
def test_bad_grid_specs(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_grid([spec])


def test_grid_axis_must_apply_to_method(tmp_path):
    with pytest.raises(ConfigError, match="no zeroth-order block"):
        trial_configs(cfg_for("fo-peft"), {"lr_x": [1e-3]})
    assert grid_main(["--task", "sst2", "--method", "fo-peft", "--model", "tiny-llama", "--grid", "mu=1e-3",
                      "--out", str(tmp_path / "g")]) == 2
    assert not (tmp_path / "g").exists()
