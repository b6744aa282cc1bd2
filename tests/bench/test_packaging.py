"""The installed package cannot be shadowed: a non-editable install in a fresh venv, run from a
folder holding a user's own ``benchmarks/`` and ``theory/`` packages, still finds its own modules
(installed as ``hybridopt.benchmarks``, ``hybridopt.theory``) and its data files."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = r"""
import json, sys
import benchmarks, theory                      # the user's own packages (the decoys in the working dir)
assert benchmarks.DECOY and theory.DECOY
import hybridopt, hybridopt.benchmarks.cli, hybridopt.benchmarks.runner, hybridopt.theory.lemmas, hybridopt.hf
from hybridopt.benchmarks import config, tasks
site = sys.argv[1]
for mod in (hybridopt, hybridopt.benchmarks.cli, hybridopt.theory.lemmas, hybridopt.hf):
    assert mod.__file__.startswith(site), (mod.__name__, mod.__file__)
for name in tasks.BUILTIN:                     # package data: task files, data splits, configs, manifest
    t = tasks.load_task(name)
    assert str(t.path).startswith(site) and len(t.load_records("dev")) > 0
assert config.DEFAULTS_FILE.is_file() and (config.CONFIG_DIR / "scales" / "quick.json").is_file()
assert json.loads((tasks.DATA_DIR / "MANIFEST.json").read_text())["seed"] == 0
print("ok", hybridopt.__file__)
"""


def _copy_sources(dest: Path) -> None:
    """The repository's files (tracked and new, not ignored): building in a copy leaves the checkout clean."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for f in files:
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


@pytest.mark.slow
def test_fresh_venv_install_is_not_shadowed_by_a_users_benchmarks_folder(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    src, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    _copy_sources(src)
    # --without-pip: the venv uses the system pip and setuptools (no download, no bundled old setuptools)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for decoy in ("benchmarks", "theory"):
        (work / decoy).mkdir(parents=True)
        (work / decoy / "__init__.py").write_text("DECOY = True\n")
    r = subprocess.run([str(py), "-c", CHECK, site], cwd=work, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok " + site), r.stderr[-2000:]
    cli = venv / "bin" / "hybridopt"
    r = subprocess.run([str(cli), "finetune", "--help"], cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--task NAME|FILE" in r.stdout, r.stderr
    # validation reads the installed task files and configs, then stops before loading a model
    r = subprocess.run([str(cli), "finetune", "--task", "sst2", "--method", "hybrid", "--model", "tiny-llama",
                        "--steps", "0", "--out", str(work / "run")], cwd=work, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "hybridopt finetune: error: steps must be an integer >= 1, got 0"
    assert not (work / "run").exists()
    r = subprocess.run([str(cli)], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("usage: hybridopt <command>")
