"""Counter-based directions: element e of a direction is a pure function of (key, e).

**Definition** (the direction laws' common part; :mod:`hybridopt.laws` says what each law makes of
it).  A direction is identified by a 64-bit *key* (:func:`hybridopt.rng.direction_key`: the step's
seed, the probe and the ZO tensor).  Its random words are

    word(c) = splitmix64(key + c·γ)   (γ = 0x9E3779B97F4A7C15, arithmetic mod 2^64)

i.e. the SplitMix64 generator's c-th output for the seed ``key`` (:func:`hybridopt.rng.splitmix64`
is its scalar form).  So any element range — a row chunk, a looked-up embedding row, half a
tensor on another rank — is drawn on its own, with no stream to align and nothing to keep between
calls, and the values cannot depend on how a consumer cuts the tensor.

**Two implementations, the same bits.**  A compiled CPU kernel (``kernels/counter.cpp``: plain
C++, vectorised, OpenMP on torch's own thread pool) and a torch reference (any device; every
float operation is one IEEE float32 operation in the kernel's order, and both are built without
FMA contraction).  The kernel is built once per machine with the system C++ compiler into the
user cache (``HYBRIDOPT_KERNEL_DIR`` overrides the folder), loaded with :mod:`ctypes`, and used for
float32 CPU tensors; without a compiler, or with ``HYBRIDOPT_KERNEL=0``, the reference is used
everywhere (a warning says so once).  ``tests/core/test_counter.py`` checks that both agree bit
for bit.

The kernel also fuses what a sweep does with a fresh draw — a paired probe's two points
W + μU, W − μU (:func:`pair`), an SGD update p + c·u (:func:`axpy`) — into one pass over
memory, with the same roundings as the separate operations (``su = μ·u`` rounded once, then one
sum), so fused and unfused paths hold bit-identical weights.  (Fused operations need the
kernel; without it the callers draw and combine in separate passes, with the same values.)
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import torch

GAMMA = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: elements per piece of the torch reference (bounds its int64 temporaries; larger on GPUs, where
#: every piece is some sixty kernel launches)
REFERENCE_PIECE = 1 << 20
REFERENCE_PIECE_GPU = 1 << 24


def _signed(v: int) -> int:
    """A 64-bit pattern as the int64 torch stores it."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 patterns (torch's ``>>`` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def words(key: int, c: torch.Tensor) -> torch.Tensor:
    """``word(c)`` for an int64 tensor of counters (the 64-bit patterns as int64; products wrap)."""
    x = (c + 1) * _signed(GAMMA) + _signed(key)
    x = (x ^ _srl(x, 30)) * _signed(_M1)
    x = (x ^ _srl(x, 27)) * _signed(_M2)
    return x ^ _srl(x, 31)


# -- the compiled kernel --------------------------------------------------------------------------
_FLAGS = (["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared",
           "-std=c++17"]
          # 512-bit vectors where the CPU has them (gcc's default prefers 256: measured 1.3-2.3x slower)
          + (["-mprefer-vector-width=512"] if platform.machine() in ("x86_64", "AMD64") else []))
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_why_not = ""
_disabled = 0   # > 0 inside :func:`reference_only`


def _cpu_tag() -> str:
    """What ``-march=native`` depends on: a build is never reused on another kind of CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def kernel_dir() -> Path:
    env = os.environ.get("HYBRIDOPT_KERNEL_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_cache_dir("hybridopt")) / "kernels"


def _build() -> ctypes.CDLL:
    source = resources.files("hybridopt.kernels").joinpath("counter.cpp").read_bytes()
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise RuntimeError("no C++ compiler (c++/g++) on PATH")
    tag = hashlib.sha256(source + " ".join([cxx] + _FLAGS).encode() + _cpu_tag().encode()).hexdigest()[:16]
    folder = kernel_dir()
    so = folder / f"counter-{tag}.so"
    if not so.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            src = Path(tmp) / "counter.cpp"
            src.write_bytes(source)
            out = Path(tmp) / so.name
            done = subprocess.run([cxx, *_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-400:]}")
            os.replace(out, so)        # atomic: a concurrent build or a reader never sees half a file
    lib = ctypes.CDLL(str(so))
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    for name, extra in (("ho_fill", [ptr]), ("ho_pair", [ptr, ptr, ptr]), ("ho_axpy", [ptr])):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int, ctypes.c_uint64, i64, i64, f32] + extra
        fn.restype = ctypes.c_int
    return lib


def kernel() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None when it cannot be (the reason: :func:`why_not`)."""
    global _lib, _tried, _why_not
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("HYBRIDOPT_KERNEL", "1") == "0":
                _why_not = "HYBRIDOPT_KERNEL=0"
            else:
                try:
                    _lib = _build()
                except Exception as e:  # no compiler, a failed build, an unloadable library
                    _why_not = f"{type(e).__name__}: {e}"
                    warnings.warn(f"hybridopt: the compiled direction kernel is unavailable ({_why_not}); "
                                  "using the torch reference (the same values, slower)", RuntimeWarning,
                                  stacklevel=3)
            _tried = True
    return _lib


def why_not() -> str:
    kernel()
    return _why_not


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Use the torch reference inside the block (tests and benchmarks compare the two paths)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def _kernel_for(code: int | None, *tensors: torch.Tensor) -> ctypes.CDLL | None:
    """The kernel when it serves these tensors: float32, CPU, contiguous, a law it knows."""
    if code is None or _disabled:
        return None
    for t in tensors:      # a plain loop: this runs for every chunk of every sweep
        if t.dtype != torch.float32 or not t.is_cpu or not t.is_contiguous():
            return None
    return kernel()


# -- what a law provides, and the operations built on it -------------------------------------------
#: ``reference(key, elements) -> float32 tensor``: the law's values at an int64 tensor of elements
Reference = Callable[[int, torch.Tensor], torch.Tensor]


def _pieces(start: int, n: int, device) -> "list[tuple[int, torch.Tensor]]":
    k = REFERENCE_PIECE if torch.device(device).type == "cpu" else REFERENCE_PIECE_GPU
    return [(o, torch.arange(start + o, start + min(n, o + k), device=device)) for o in range(0, n, k)]


def _call(fn, code: int, key: int, start: int, n: int, factor, *tensors: torch.Tensor) -> None:
    """One kernel call: the key as its 64-bit pattern; the factor rounded to float32 by ctypes'
    ``c_float`` (round to nearest, as torch rounds a scalar into a float32 operation)."""
    fn(code, key & (1 << 64) - 1, start, n, float(factor), *(t.data_ptr() for t in tensors))


def _u32(code: int | None, reference: Reference, n: int, key: int, start: int, device) -> torch.Tensor:
    """u[start : start + n] as a fresh float32 tensor."""
    out = torch.empty(n, dtype=torch.float32, device=device)
    return fill(code, reference, out, key, start)


def fill(code: int | None, reference: Reference, out: torch.Tensor, key: int, start: int,
         factor: float | torch.Tensor | None = None) -> torch.Tensor:
    """``out`` (flat, contiguous) ← factor·u[start : start + n], the product rounded once in
    ``out``'s dtype (u is float32, exact in float64)."""
    n = out.numel()
    if out.dtype != torch.float32:       # float64 (small problems): float32 u, then the product
        out.copy_(_u32(code, reference, n, key, start, out.device))
        return out if factor is None else out.mul_(factor)
    lib = _kernel_for(code, out)
    if lib is not None:
        _call(lib.ho_fill, code, key, start, n, 1.0 if factor is None else factor, out)
        return out
    for o, idx in _pieces(start, n, out.device):
        part = out[o:o + idx.numel()]
        part.copy_(reference(key, idx))
        if factor is not None:
            part.mul_(factor)
    return out


def fill_rows(code: int | None, reference: Reference, out: torch.Tensor, key: int, starts: list[int]) -> torch.Tensor:
    """Row i of ``out`` (shape (len(starts), H), contiguous) ← u[starts[i] : starts[i] + H]."""
    H = out.shape[1]
    lib = _kernel_for(code, out)
    if lib is not None:
        for i, s in enumerate(starts):
            _call(lib.ho_fill, code, key, s, H, 1.0, out[i])
        return out
    idx = torch.tensor(starts, dtype=torch.int64, device=out.device).unsqueeze(1) + torch.arange(H, device=out.device)
    out.copy_(reference(key, idx))
    return out


def pair(code: int | None, w: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor, key: int, start: int,
         mu: float) -> bool:
    """``plus`` ← w + μu, ``minus`` ← w − μu for elements [start, start + n) of u, in one pass (μu
    rounded once, each sum once) where the kernel serves the tensors; False (nothing written)
    where it does not: the caller then draws μu and forms the sums itself."""
    lib = _kernel_for(code, w, plus, minus)
    if lib is None:
        return False
    _call(lib.ho_pair, code, key, start, w.numel(), mu, w, plus, minus)
    return True


def axpy(code: int | None, p: torch.Tensor, key: int, start: int, factor) -> bool:
    """``p`` ← p + factor·u[start : start + n] in place, the product rounded once, then the sum,
    where the kernel serves ``p``; False (``p`` untouched) where it does not: the caller then
    draws factor·u and adds it."""
    lib = _kernel_for(code, p)
    if lib is None:
        return False
    _call(lib.ho_axpy, code, key, start, p.numel(), factor, p)
    return True
