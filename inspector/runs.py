"""Where outputs go: a fresh run folder per run, filled out of sight and shown only when complete.

A stopped scan, a closed tab or a crash must never leave a half-written report that looks finished,
and a later run must never overwrite an earlier one. So every writer fills a hidden staging folder
(or file) next to the destination and moves it into place in one rename at the end. A process killed
outright (SIGKILL, power loss) cannot clean up, so staging names carry the writer's process id and
a tag of its host, and the next writer in the same folder removes what dead processes of its own host
left (on a disk shared by several machines, a process id means nothing on another host).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from inspector.errors import InputError

STAGING_PREFIX = ".partial-"
# .partial-<final name>-<pid>-<host tag><4 hex> (folders), .<final name>.partial-<pid>-<host tag><4 hex> (files)
STAGED = re.compile(r"^\.(?:partial-.*|.*\.partial)-(\d+)-([0-9a-f]{4})[0-9a-f]{4}$")
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:40] or "run"


def fresh_run_name(root: Path, label: str) -> Path:
    """``root/<time>-<label>[-n]``: a name no earlier run has used (the folder is not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slug(label)}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        if not path.exists():
            return path
    raise InputError(f"could not find a free run folder name under {root}", hint="clean up old runs")


def check_output_folder(final: Path, overwrite: bool = False) -> None:
    """Refuse a destination that is a file, or a folder with earlier outputs (unless ``overwrite``)."""
    if final.exists() and not final.is_dir():
        raise InputError(f"{final} exists and is not a folder", hint="choose a folder for the outputs")
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise InputError(f"{final} already exists and is not empty",
                         hint="choose a fresh output folder (or pass --overwrite)")
    existing = next(p for p in [final.absolute(), *final.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise InputError(f"cannot create {final}: {existing} is a file", hint="choose a folder for the outputs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {existing}", hint="choose a folder you can write to")


def _staging_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{HOST_TAG}{uuid.uuid4().hex[:4]}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts: its files are left alone)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def sweep_stale(folder: Path) -> list[Path]:
    """Remove the staging folders and files in ``folder`` whose writer is no longer running; returns them."""
    removed = []
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return removed
    for name in names:
        match = STAGED.match(name)
        if match is None or match.group(2) != HOST_TAG or _alive(int(match.group(1))):
            continue  # not staging, another host's (its process cannot be checked here), or a living writer's
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a hidden staging path beside ``path``; once the block has written it, it replaces ``path`` in one
    rename; on any failure nothing is left. Stale staging files of killed writers in that folder go first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    staging = path.with_name(_staging_name(f".{path.name}.partial"))
    try:
        yield staging
        os.replace(staging, path)
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()


@contextlib.contextmanager
def staged_folder(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; on success its files land in ``final``, on any failure nothing does.

    ``final`` must not exist yet, unless ``overwrite`` (then files of the same names are replaced and
    other files in it are left alone).
    """
    final = Path(final)
    check_output_folder(final, overwrite)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(final.parent)
        staging = final.parent / _staging_name(f"{STAGING_PREFIX}{final.name}")
        staging.mkdir()
    except OSError as exc:
        raise InputError(f"cannot create the output folder {final} ({exc.strerror or exc})",
                         hint="choose a folder you can write to") from exc
    try:
        yield staging
        _publish(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, final: Path) -> None:
    try:
        staging.rename(final)  # the common case: one atomic step
        return
    except OSError:
        pass  # final exists (empty, or overwrite): move the files over it one by one
    for folder, _, files in os.walk(staging):
        target = final / Path(folder).relative_to(staging)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(folder) / name, target / name)
