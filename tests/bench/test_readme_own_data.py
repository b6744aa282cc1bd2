"""The README's "Your own data" section runs as written: the CSV + task file in docs/examples, the
one `hybridopt finetune --save-model` command on smollm2-135m (which reloads the written model with
transformers and finds the trained dev loss bit for bit), and the transformers snippet that loads it."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def section_blocks(title: str) -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        blocks.setdefault(lang, []).append(code)
    return blocks


@pytest.mark.realmodel
def test_own_data_section_runs_as_written(tmp_path):
    from hybridopt.llm.models import _smollm2_cached
    if not _smollm2_cached() and os.environ.get("HYBRIDOPT_OFFLINE"):
        pytest.skip("smollm2-135m is not cached and downloads are off")
    blocks = section_blocks("Your own data")
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    assert json.loads(blocks["json"][0]) == json.loads((REPO / "docs/examples/headlines.task.json").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    (cmd,) = blocks["bash"]
    r = subprocess.run(["bash", "-c", cmd.replace("hybridopt ", f"{sys.executable} -m hybridopt ", 1)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "headlines/hybrid: best dev accuracy" in r.stdout
    assert re.search(r"model of step \d+ in runs/headlines/model; reloaded with transformers, its dev loss on 12 "
                     r"examples is [0-9.]+ \(identical to the trained model's\)", r.stdout), r.stdout
    r = subprocess.run([sys.executable, "-c", blocks["python"][0]], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.fullmatch(r"topic: (sport|business|science)\n", r.stdout), r.stdout
