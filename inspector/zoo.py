"""The demo zoo: prompt learners shipped in assets/zoo/, and resolving "which model?" to a file.

The listing is read from each file's own header, so the zoo cannot drift from its files. The
attack and target come from the ``ground_truth`` header key, which only the lab and the zoo
read; the scanner never does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from inspector.backbone import ASSETS_DIR
from inspector.errors import InputError
from inspector.prompts import read_header

ZOO_DIR = ASSETS_DIR / "zoo"


@dataclass
class ZooEntry:
    name: str
    path: str
    kind: str
    attack: str | None
    target: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def entry_for(path: Path) -> ZooEntry:
    meta = read_header(path)
    truth = read_header(path, key="ground_truth")
    return ZooEntry(name=path.stem.replace("_", "-"), path=str(path), kind=meta.get("kind", "?"),
                    attack=truth.get("attack"), target=truth.get("target"))


def list_zoo(folder: Path = ZOO_DIR) -> list[ZooEntry]:
    """Shipped models, clean ones first, then by name."""
    entries = [entry_for(p) for p in sorted(Path(folder).glob("*.safetensors"))]
    return sorted(entries, key=lambda e: (e.attack is not None, e.name))


def resolve_model(name_or_path: str, folder: Path = ZOO_DIR) -> Path:
    """A zoo name (``clean-coop``) or a path to a learner file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for entry in list_zoo(folder):
        if entry.name == name_or_path:
            return Path(entry.path)
    known = ", ".join(e.name for e in list_zoo(folder)) or "none"
    raise InputError(f"model {name_or_path!r} is neither a file nor a demo zoo name",
                     hint=f"zoo models: {known}")
