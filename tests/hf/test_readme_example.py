"""The README's "Fine-tune an LLM with the Trainer" example runs as-is (tiny-llama), lowers the eval
loss, and the model saved by HybridTrainer.save_model reloads with transformers + peft bit for bit."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def trainer_example() -> str:
    section = README.read_text().split("## Fine-tune an LLM with the Trainer\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_trainer_example_runs(tmp_path):
    out = subprocess.run([sys.executable, "-c", trainer_example()], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"eval loss ([0-9.]+) -> ([0-9.]+); reloaded model identical: (True|False)", out.stdout)
    assert m, out.stdout[-2000:]
    assert float(m.group(2)) < float(m.group(1)) and m.group(3) == "True"
    assert (tmp_path / "runs" / "trainer-example" / "final" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "runs" / "trainer-example" / "metrics.jsonl").is_file()
