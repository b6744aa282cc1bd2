"""Atomic file writes: a crash leaves either the old file or the new one, never a torn one.

Every file the package writes goes through :func:`atomic_write` (temporary file in the same
directory, flush + fsync, ``os.replace``, then fsync of the directory), so a full disk
(``ENOSPC``) or an I/O error while writing leaves the previous file as it was.  On top of it:

* :func:`save_checked` / :func:`load_checked`: a ``torch.save`` payload framed by a magic line
  and its SHA-256, so an empty, truncated or damaged file is *detected* (:class:`DamagedFileError`)
  instead of unpickled;
* :func:`save_tensors` / :class:`TensorFile`: a safetensors file written tensor by tensor (no
  copy of the whole set in memory), each tensor's SHA-256 in the header, checked when read;
* :func:`write_problem`: why files cannot be created at a path (below a file, read-only or
  pseudo file system), found before anything is written;
* :class:`RunLock`: one process per directory (a lock file with the holder's pid; a lock left
  by a dead process is taken over).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it atomically replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make results private
        with _open_fd(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _open_fd(fd: int, mode: str):
    """``os.fdopen``; a seam where tests inject a full disk or an I/O error."""
    return os.fdopen(fd, mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write ``data`` as indented JSON (NaN -> null, ±inf -> strings, tensors -> lists)."""
    with atomic_write(path) as fh:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """Atomic ``torch.save``."""
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def save_with(path: str | os.PathLike, saver: Callable[[Any], None], mode: str = "wb") -> None:
    """Atomic write through any ``saver(fileobj)`` (e.g. ``lambda f: fig.savefig(f, format='png')``)."""
    with atomic_write(path, mode) as fh:
        saver(fh)


# ---- checksummed files ----------------------------------------------------------------------------

#: first bytes of a :func:`save_checked` file (then the ``torch.save`` payload, then its SHA-256)
CHECKED_MAGIC = b"hybridopt-checked/1\n"
_DIGEST = 32


class DamagedFileError(ValueError):
    """A file that is empty, truncated, not of the expected format or fails its checksum."""


class _Hashing:
    """A write-only file wrapper that hashes what goes through it."""

    def __init__(self, fh) -> None:
        self.fh, self.sha = fh, hashlib.sha256()
        self.error: OSError | None = None   # the first write error (torch.save may hide it behind its own)

    def write(self, data) -> int:
        self.sha.update(data)
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checked(path: str | os.PathLike, obj: Any) -> None:
    """Atomic ``torch.save`` of ``obj`` framed by :data:`CHECKED_MAGIC` and the payload's SHA-256
    (streamed: no copy of the payload in memory)."""
    with atomic_write(path, "wb") as fh:
        fh.write(CHECKED_MAGIC)
        w = _Hashing(fh)
        try:
            torch.save(obj, w)
        except Exception:
            # a full disk inside torch.save surfaces as its zip writer's RuntimeError: raise the OSError
            if w.error is not None:
                raise w.error from None
            raise
        fh.write(w.sha.digest())


def is_checked(path: str | os.PathLike) -> bool:
    """True when ``path`` starts like a :func:`save_checked` file (says nothing of its integrity)."""
    with open(path, "rb") as f:
        return f.read(len(CHECKED_MAGIC)) == CHECKED_MAGIC


def load_checked(path: str | os.PathLike) -> Any:
    """Read a :func:`save_checked` file; :class:`DamagedFileError` (one line, naming the file and
    what is wrong) unless its checksum matches."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    n = len(CHECKED_MAGIC)
    if not data:
        raise DamagedFileError(f"{path}: empty file")
    if len(data) < n and CHECKED_MAGIC.startswith(bytes(data)):
        raise DamagedFileError(f"{path}: truncated ({len(data)} bytes)")
    if bytes(data[:n]) != CHECKED_MAGIC:
        raise DamagedFileError(f"{path}: not a checksummed file of this package (its first bytes are damaged "
                               "or it was written by something else)")
    if len(data) < n + _DIGEST:
        raise DamagedFileError(f"{path}: truncated ({len(data)} bytes)")
    payload = data[n:-_DIGEST]
    if hashlib.sha256(payload).digest() != bytes(data[-_DIGEST:]):
        raise DamagedFileError(f"{path}: checksum mismatch (the file is truncated or damaged)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a payload that passed its checksum but does not unpickle
        raise DamagedFileError(f"{path}: unreadable payload ({type(e).__name__}: {e})") from None


# ---- tensor files (safetensors, written tensor by tensor) -----------------------------------------

_ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}


def _bytes_of(t: torch.Tensor):
    """The bytes of ``t`` as a numpy view (a CPU copy of that one tensor when it is elsewhere)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's bytes: equal digests = bit-identical tensors of one dtype."""
    return hashlib.sha256(_bytes_of(t)).hexdigest()


def save_tensors(path: str | os.PathLike, tensors: Iterable[tuple[str, torch.Tensor]],
                 metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file, one tensor at a time (memory: one tensor's CPU copy
    at most); ``sha256:<name>`` in the header's metadata holds each tensor's digest, which
    :class:`TensorFile` checks.  The header is written with placeholder digests first and
    rewritten in place once the tensors are written (same length), so the data is read once."""
    tensors = list(tensors)
    header: dict[str, Any] = {}
    offset = 0
    for name, t in tensors:
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} cannot be stored")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}

    def encoded(digests: dict[str, str]) -> bytes:
        raw = json.dumps({"__metadata__": {**meta, **{f"sha256:{k}": d for k, d in digests.items()}}, **header},
                         separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)

    head = encoded({name: "0" * 64 for name, _ in tensors})
    with atomic_write(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        digests = {}
        for name, t in tensors:
            data = _bytes_of(t)
            digests[name] = hashlib.sha256(data).hexdigest()
            fh.write(data)
        fh.seek(8)
        fh.write(encoded(digests))
        fh.seek(0, os.SEEK_END)


_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_READ_CHUNK = 1 << 24


class TensorFile:
    """A safetensors file opened for reading, tensor by tensor, without memory-mapping it: each
    tensor is read straight into its destination (:meth:`read_into`: no second copy, and no
    mapped file pages adding to the resident memory), and checked against its ``sha256:<name>``
    digest when the header holds one.  Use as a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as e:
            raise DamagedFileError(f"{self.path}: cannot be read ({e.strerror or e})") from None
        try:
            size = os.fstat(self._fh.fileno()).st_size
            raw = self._fh.read(8)
            if len(raw) < 8:
                raise ValueError(f"{size} bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(self._fh.read(n))
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self.entries: dict[str, dict[str, Any]] = header
            end = max((e["data_offsets"][1] for e in header.values()), default=0)
            if size != 8 + n + end:
                raise ValueError(f"{size} bytes where the header describes {8 + n + end}")
            self._base = 8 + n
        except (ValueError, KeyError, TypeError) as e:
            self._fh.close()
            raise DamagedFileError(f"{self.path}: truncated or not a tensor file ({e})") from None

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def keys(self) -> list[str]:
        return list(self.entries)

    def _entry(self, name: str) -> tuple[torch.dtype, tuple[int, ...], int, int]:
        try:
            e = self.entries[name]
            a, b = e["data_offsets"]
            return _ST_NAMES[e["dtype"]], tuple(e["shape"]), a, b
        except KeyError:
            raise DamagedFileError(f"{self.path}: no tensor {name!r} (or an unknown dtype)") from None

    def _stream(self, name: str, sink: Callable[[int, int], memoryview | None]) -> None:
        """Read tensor ``name`` chunk by chunk; ``sink(offset, n)`` gives the buffer to fill (None:
        a scratch one); the digest is checked at the end."""
        _, _, a, b = self._entry(name)
        sha = hashlib.sha256()
        self._fh.seek(self._base + a)
        pos = 0
        while pos < b - a:
            k = min(_READ_CHUNK, b - a - pos)
            buf = sink(pos, k)
            buf = memoryview(bytearray(k)) if buf is None else buf
            if self._fh.readinto(buf) != k:
                raise DamagedFileError(f"{self.path}: tensor {name!r} is truncated")
            sha.update(buf)
            pos += k
        want = self.metadata.get(f"sha256:{name}")
        if want is not None and sha.hexdigest() != want:
            raise DamagedFileError(f"{self.path}: tensor {name!r} fails its checksum (the file is damaged)")

    @torch.no_grad()
    def read_into(self, name: str, dst: torch.Tensor) -> None:
        """Fill ``dst`` (same dtype and shape) with tensor ``name``; through one CPU copy of the
        tensor when ``dst`` is on another device or not contiguous."""
        dtype, shape, _, _ = self._entry(name)
        if dtype != dst.dtype or shape != tuple(dst.shape):
            raise DamagedFileError(f"{self.path}: tensor {name!r} is {dtype} {list(shape)}, expected "
                                   f"{dst.dtype} {list(dst.shape)} (a snapshot of another model?)")
        direct = dst.device.type == "cpu" and dst.is_contiguous()
        target = dst if direct else torch.empty(shape, dtype=dtype)
        view = memoryview(target.detach().reshape(-1).view(torch.uint8).numpy()) if target.numel() else memoryview(b"")
        self._stream(name, lambda pos, k: view[pos:pos + k])
        if not direct:
            dst.copy_(target)

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as a new CPU tensor."""
        dtype, shape, _, _ = self._entry(name)
        t = torch.empty(shape, dtype=dtype)
        self.read_into(name, t)
        return t

    def verify(self) -> None:
        """Read every tensor once (in chunks) and check its digest."""
        for name in self.keys():
            self._stream(name, lambda pos, k: None)


# ---- where files can be written ---------------------------------------------------------------------

def write_problem(path: str | os.PathLike) -> str | None:
    """Why a directory ``path`` (existing or to be created) cannot receive files, or None.

    Every existing component must be a directory, and a file must be creatable in ``path`` (if
    it exists) or in its nearest existing ancestor: a probe file is created there and removed at
    once, which catches read-only mounts and pseudo file systems (``/proc``, ``/sys``) that
    permission bits do not."""
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(probe)!r} is a file, not a directory" if probe != p else f"{str(p)!r} exists and is not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".hybridopt-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return f"cannot create files in {str(probe)!r} ({e.strerror or e})"
    return None


# ---- one process per directory -----------------------------------------------------------------------

class LockedError(RuntimeError):
    """The directory is in use by another live process (``holder``: its pid, host and start)."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``DIR/.lock``: held by one process at a time (``flock`` on the file, which the kernel
    releases when the holder dies; the file names the holder: pid, host, start time).  A lock
    file left by a process that is gone is *stale* and taken over (:attr:`stale` then holds what
    it said).  Where ``flock`` is unsupported (some network file systems), a lock file whose
    pid is alive on this host counts as held."""

    NAME = ".lock"

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / self.NAME
        self.fd: int | None = None
        self.stale: dict[str, Any] | None = None

    @staticmethod
    def _parse(text: str) -> dict[str, Any]:
        try:
            d = json.loads(text)
            return d if isinstance(d, dict) else {}
        except ValueError:
            return {}

    def _refuse(self, holder: dict[str, Any]) -> None:
        who = f"process {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")
        since = f", since {holder['since']}" if holder.get("since") else ""
        raise LockedError(f"{str(self.path.parent)!r} is in use by {who}{since} (lock file {self.path}); "
                          "wait for it to finish or stop it", holder)

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                os.close(fd)
                self._refuse(holder)
            except OSError:  # no flock here: trust a live pid on this host
                holder = self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                if (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
                        and holder["pid"] != os.getpid() and _pid_alive(holder["pid"])):
                    os.close(fd)
                    self._refuse(holder)
            try:   # the file may have been removed by its previous holder in between: lock the current one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            self.stale = old or None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
