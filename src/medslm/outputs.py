"""One rule for writing: medslm replaces only what it wrote.

Every command that writes (an artifact directory, a GGUF file, a result JSON, an index) checks its
target here *before* any work, so a bad ``--out`` costs a second, not a calibration run:

- the target must not be, contain, or lie inside an input (a model directory being read);
- an existing target is replaced only with ``--overwrite``, and only when medslm wrote it
  (recognised by its metadata: ``medslm.json`` in an artifact, the result schema in a result file,
  the ``.medslm.json`` sidecar of a GGUF, ``index.json`` of an index) or it is an empty folder;
- the place it goes must be creatable and writable (probed with a temporary file, which also
  catches read-only filesystems and a regular file where a folder is needed).

The writers themselves build the new content beside the target and swap it in with a rename, so a
crash leaves the old or the new, whole (``models.artifact.write_artifact``, ``write_result``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable

from medslm.errors import MedslmError

ARTIFACT_META = "medslm.json"


class OutputError(MedslmError):
    """A target that medslm must not (or cannot) write."""


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def is_result(path: Path) -> bool:
    """A result JSON medslm wrote (``evaluate.runner`` schema)."""
    d = _json(path) if path.is_file() else None
    return isinstance(d, dict) and "schema_version" in d and isinstance(d.get("task"), dict) \
        and isinstance(d.get("model"), dict)


def written_by_medslm(path: Path) -> str | None:
    """What medslm wrote at ``path``: 'artifact', 'index', 'gguf', 'imatrix' (``--save-imatrix``),
    'result', 'rag' (a retrieval comparison), 'run' or 'empty' (an empty folder); None for anything
    else."""
    if path.is_dir():
        if not any(path.iterdir()):
            return "empty"
        if isinstance(_json(path / ARTIFACT_META), dict):
            return "artifact"
        if isinstance(_json(path / "index.json"), dict) and (path / "chunks.jsonl").is_file():
            return "index"
        if (path / "recipe.json").is_file() and (path / "results").is_dir():
            return "run"
        return None
    if path.is_file():
        if path.suffix == ".gguf" and path.with_name(path.name + ".medslm.json").is_file():
            return "gguf"
        if path.suffix == ".gguf" and _medslm_imatrix(path):
            return "imatrix"
        if is_result(path):
            return "result"
        d = _json(path) if path.suffix == ".json" else None
        if isinstance(d, dict) and {"acc_without", "acc_with", "mcnemar_p"} <= set(d):
            return "rag"
    return None


IMATRIX_WRITTEN_BY_KEY = "medslm.written_by"  # a GGUF key medslm's importance-matrix files carry


def _medslm_imatrix(path: Path) -> bool:
    """An importance matrix ``medslm export --save-imatrix`` wrote (llama-imatrix's GGUF format)."""
    try:
        import gguf

        f = gguf.GGUFReader(path).fields.get(IMATRIX_WRITTEN_BY_KEY)
        return f is not None and f.contents() == "medslm"
    except Exception:  # noqa: BLE001 - not a GGUF, or not readable: not medslm's
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_writable(target: str | os.PathLike, flag: str, folder: bool = False) -> None:
    """``target``'s folder (``folder``: ``target`` itself, a folder to write in) can be created and
    written: probed with a temporary file, not guessed from permissions."""
    p = Path(target).absolute() if folder else Path(target).absolute().parent
    while not p.exists():
        if p.is_symlink():  # a dangling link
            raise OutputError(f"{flag} {target}: {p} is a broken symbolic link; choose another {flag}")
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"{flag} {target}: {p} is a file, not a folder, so {target} cannot be "
                          f"created; choose another {flag}")
    try:
        fd, name = tempfile.mkstemp(dir=p, prefix=".medslm-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"{flag} {target}: cannot write in {p} ({e.strerror or e}); choose a "
                          f"writable {flag}") from None


def check_target(target: str | os.PathLike, *, flag: str, kind: str = "dir",
                 inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False,
                 replaceable: tuple[str, ...] = ("artifact",)) -> Path:
    """Check that medslm may write ``target`` (a ``kind`` 'dir' or 'file'); see the module doc.
    ``replaceable``: what medslm wrote that ``--overwrite`` may replace. Returns the path."""
    out = Path(target)
    res = out.resolve()
    for inp in inputs:
        ri = Path(inp).resolve()
        if _inside(ri, res):
            what = "is" if ri == res else "contains"
            raise OutputError(f"{flag} {out} {what} the input {inp}; medslm never modifies or "
                              f"deletes its input: choose a {flag} outside it")
        if _inside(res, ri) and ri.is_dir():
            raise OutputError(f"{flag} {out} lies inside the input {inp}; medslm never writes into "
                              f"its input: choose a {flag} outside it")
    if out.exists() or out.is_symlink():
        if kind == "dir" and not out.is_dir():
            raise OutputError(f"{flag} {out} is an existing file, not a folder; choose another {flag}")
        if kind == "file" and out.is_dir():
            raise OutputError(f"{flag} {out} is an existing folder, not a file; choose another {flag}")
        mine = written_by_medslm(out)
        if mine is None:
            raise OutputError(f"{flag} {out} already exists and was not written by medslm; medslm "
                              f"replaces only what it wrote (even with --overwrite): choose another {flag}")
        if mine != "empty" and mine not in replaceable:
            raise OutputError(f"{flag} {out} holds a medslm {mine}, not a {' or '.join(replaceable)}; "
                              f"choose another {flag}")
        if not overwrite:
            raise OutputError(f"{flag} {out} already exists; pass --overwrite to replace it, or choose "
                              f"another {flag}")
    check_writable(out, flag)
    return out


RESULT_SETTINGS = ("name", "requested_split", "limit", "fewshot", "seed")


def check_result(target: str | os.PathLike, settings: dict, *, flag: str, overwrite: bool = False,
                 backend: str | None = None, model: str | None = None) -> Path:
    """A result file may be written at ``target``: absent; or a medslm result of the same settings
    (a rerun, which reproduces it); or one of other settings with ``overwrite``. Anything else
    (a file medslm did not write, a folder) is refused."""
    f = Path(target)
    if f.is_dir():
        raise OutputError(f"{flag} {f} is an existing folder, not a result file; choose another {flag}")
    if f.exists():
        if not is_result(f):
            raise OutputError(f"{flag} {f} already exists and is not a medslm result; medslm replaces "
                              f"only what it wrote: choose another {flag}")
        old = _json(f)
        t = old["task"]
        diff = [f"{k} {t.get(k)!r} there, {settings.get(k)!r} now" for k in RESULT_SETTINGS
                if k in settings and t.get(k) != settings.get(k)]
        if backend and old["model"].get("backend") not in (None, backend):
            diff.append(f"backend {old['model'].get('backend')!r} there, {backend!r} now")
        was = old["model"].get("label") or old["model"].get("model")
        if model and was not in (None, model):
            diff.append(f"model {was!r} there, {model!r} now")
        if diff and not overwrite:
            raise OutputError(f"{f} holds a result of other settings ({'; '.join(diff)}); pass "
                              f"--overwrite to replace it, or choose another {flag}")
    check_writable(f, flag)
    return f


def replace_file(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a unique temporary file beside it and an atomic rename:
    readers see the old file or the new one, never a half-written one (also with two writers)."""
    f = Path(path)
    f.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(f, ("tmp",))
    fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f".tmp-{f.name}-{os.getpid()}-")
    try:
        with os.fdopen(fd, "w") as h:
            h.write(text)
            h.flush()
            os.fsync(h.fileno())
        os.replace(tmp, f)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return f


def temp_name(target: Path, kind: str = "tmp") -> Path:
    """A unique sibling of ``target`` for building its replacement: ``.tmp-<name>-<pid>-<random>``.
    The pid lets a later run remove what a killed one left (:func:`sweep_stale`)."""
    import uuid

    return target.parent / f".{kind}-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_TEMP_TAIL = re.compile(r"^(\d+)-[A-Za-z0-9_]{8}$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(target: Path, kinds: tuple[str, ...] = ("tmp", "old")) -> None:
    """Remove the temporary siblings of ``target`` left by runs that were killed (their process is
    gone); a concurrent writer's are left alone. A replaced artifact moved aside by a run killed
    before the new one was moved in is restored, not removed."""
    import shutil

    if not target.parent.is_dir():
        return
    for kind in kinds:
        prefix = f".{kind}-{target.name}-"
        stale = [p for p in target.parent.iterdir() if p.name.startswith(prefix)
                 and (m := _TEMP_TAIL.match(p.name[len(prefix):])) and not _alive(int(m[1]))]
        if kind == "old" and stale and not target.exists():
            # killed between moving the old one aside and moving the new one in: the old comes back
            keep = max(stale, key=lambda p: p.stat().st_mtime)
            os.replace(keep, target)
            stale.remove(keep)
        for p in stale:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
