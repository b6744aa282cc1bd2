"""The README's Quick example runs as-is and prints a loss."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_example() -> str:
    text = README.read_text()
    section = text.split("## Quick example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_example_runs():
    out = subprocess.run([sys.executable, "-c", quick_example()], capture_output=True, text=True, timeout=300,
                         cwd=README.parent)
    assert out.returncode == 0, out.stderr
    m = re.search(r"loss ([0-9.]+) -> ([0-9.]+)", out.stdout)
    assert m, out.stdout
    assert float(m.group(2)) < float(m.group(1))
