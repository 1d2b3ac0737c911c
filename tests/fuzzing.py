"""A seeded fuzzer of prompt-learner files and clean-reference files: hostile mutations of real ones and how the
engine takes each.

Every learner mutant is loaded as ``scan`` loads a delivered model (header, backbone, tensors) and, when it loads,
run through the prompt side once; every reference mutant is taken as ``scan --reference FILE`` takes it (read,
checked against the scan, its clean learners' values drawn) and decides a real scan's records. The outcome is one
of: ``ran`` (usable), ``refused`` (an ``InputError`` naming the file, short), ``unnamed`` (refused without the
file's name), ``long`` (a message that prints a value in full) or ``unexpected`` (any other exception). The suite
runs a few hundred cases (tests/test_fuzz.py); benchmarks/fuzz.py runs thousands and records the tally.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inspector.errors import InputError

MESSAGE_LIMIT = 600  # characters: a refusal that prints a header value in full is longer than this
ODD_VALUES: tuple[Any, ...] = (None, 0, -1, 3, 2 ** 63, 1e308, float("nan"), True, "", "x" * 10_000, "🙂",
                               [], [1, 2], [[[[]]]], {}, {"image_size": "big"}, {"a": [1, {"b": None}]},
                               ["star"] * 3, "../../etc/passwd", "end\x00")
DTYPES = ("F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "XYZ", "")


@dataclass
class Learner:
    """A learner file cut into its parts: header length, header JSON, the inspector metadata, the tensors' bytes."""

    header: dict[str, Any]
    meta: dict[str, Any]
    data: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Learner:
        length = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + length])
        return cls(header, json.loads(header["__metadata__"]["inspector"]), raw[8 + length:])

    def to_bytes(self, meta_text: str | None = None) -> bytes:
        header = json.loads(json.dumps(self.header))
        header["__metadata__"]["inspector"] = meta_text if meta_text is not None else json.dumps(self.meta)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + self.data


def _tensor_names(learner: Learner) -> list[str]:
    return [name for name in learner.header if name != "__metadata__"]


def mutate(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One hostile mutation of the learner file ``raw``: what was done, and the new bytes."""
    learner = Learner.parse(raw)
    length = struct.unpack("<Q", raw[:8])[0]
    kind = rng.choice(("flip-header", "flip-tensors", "truncate", "header-length", "meta-field", "meta-delete",
                       "preprocessing", "class-names", "tensor-dtype", "tensor-shape", "tensor-offsets",
                       "tensor-values", "meta-text", "tensor-missing", "tensor-extra"))
    if kind in ("flip-header", "flip-tensors"):
        low, high = (8, 8 + length) if kind == "flip-header" else (8 + length, len(raw))
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(low, high)] ^= rng.randint(1, 255)
        return kind, bytes(data)
    if kind == "truncate":
        return kind, raw[:rng.randrange(0, len(raw))]
    if kind == "header-length":
        value = rng.choice((0, 1, length - 1, length + 1, len(raw), 2 ** 63 - 1, 2 ** 64 - 1, rng.getrandbits(40)))
        return kind, struct.pack("<Q", value) + raw[8:]
    if kind in ("meta-field", "meta-delete"):
        key = rng.choice(sorted(learner.meta) + ["format", "kind", "n_ctx", "class_token_position"])
        if kind == "meta-delete":
            learner.meta.pop(key, None)
        else:
            learner.meta[key] = rng.choice(ODD_VALUES)
        return f"{kind} {key}", learner.to_bytes()
    if kind == "preprocessing":
        pre = learner.meta.get("preprocessing")
        if isinstance(pre, dict) and rng.random() < 0.7:
            pre[rng.choice(sorted(pre) + ["image_size"])] = rng.choice(ODD_VALUES)
        else:
            learner.meta["preprocessing"] = rng.choice(ODD_VALUES)
        return kind, learner.to_bytes()
    if kind == "class-names":
        names = list(learner.meta["class_names"])
        edit = rng.choice(("duplicate", "empty", "long", "many", "odd", "drop", "add"))
        if edit == "duplicate":
            names[rng.randrange(len(names))] = names[0]
        elif edit == "empty":
            names[rng.randrange(len(names))] = rng.choice(("", "   "))
        elif edit == "long":
            names[rng.randrange(len(names))] = "word " * rng.choice((20, 200, 5000))
        elif edit == "many":
            names = [f"class {i}" for i in range(rng.choice((1, 2, 1000, 20_000)))]
        elif edit == "odd":
            names[rng.randrange(len(names))] = rng.choice(ODD_VALUES)
        elif edit == "drop":
            names.pop()
        else:
            names.append("extra class")
        learner.meta["class_names"] = names
        return f"{kind} {edit}", learner.to_bytes()
    if kind.startswith("tensor-") and kind not in ("tensor-values", "tensor-extra"):
        name = rng.choice(_tensor_names(learner))
        entry = learner.header[name]
        if kind == "tensor-dtype":
            entry["dtype"] = rng.choice(DTYPES)
        elif kind == "tensor-shape":
            shape = list(entry["shape"])
            edit = rng.choice(("dim", "add", "drop", "negative", "huge"))
            if edit == "dim" and shape:
                shape[rng.randrange(len(shape))] = rng.choice((0, 1, 3, 1000))
            elif edit == "add":
                shape.append(1)
            elif edit == "drop" and shape:
                shape.pop()
            elif edit == "negative" and shape:
                shape[0] = -shape[0]
            else:
                shape = [2 ** 31, 2 ** 31]
            entry["shape"] = shape
        elif kind == "tensor-offsets":
            start, end = entry["data_offsets"]
            entry["data_offsets"] = rng.choice(([end, start], [start, end + 4], [start, 2 ** 40], [-4, end],
                                                [start, start], [0, len(learner.data) + 8]))
        else:
            del learner.header[name]
        return f"{kind} {name}", learner.to_bytes()
    if kind == "tensor-values":
        name = rng.choice(_tensor_names(learner))
        entry = learner.header[name]
        start, end = entry["data_offsets"]
        data = bytearray(learner.data)
        if entry["dtype"] == "F32" and end - start >= 4:
            value = rng.choice((float("nan"), float("inf"), -float("inf"), 3e38, 1e-45))
            for _ in range(rng.randint(1, 4)):
                at = start + 4 * rng.randrange((end - start) // 4)
                data[at:at + 4] = struct.pack("<f", value)
        learner.data = bytes(data)
        return f"{kind} {name}", learner.to_bytes()
    if kind == "tensor-extra":
        learner.header[rng.choice(("extra", "ctx.extra", "meta_net.x", "__metadata__x"))] = {
            "dtype": "F32", "shape": [1], "data_offsets": [len(learner.data), len(learner.data) + 4]}
        learner.data += b"\x00\x00\x80\x7f"
        return kind, learner.to_bytes()
    # meta-text: the inspector metadata itself is not a JSON object
    return kind, learner.to_bytes(rng.choice(("", "{", "[]", "42", "null", '"text"', "{" * 10_000,
                                              json.dumps({"format": "inspector.prompt_learner"}))))


Loader = Callable[[Path], Any]


def learner_use(load: Loader) -> Callable[[Path], None]:
    """Load a learner file as ``scan`` does and run it once on two images."""

    def use(path: Path) -> None:
        model = load(path)
        size = model.backbone.image_size
        with torch.no_grad():
            logits = model(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
        if not torch.isfinite(logits).all():
            raise FloatingPointError("the learner loaded but gives non-finite logits")

    return use


def fuzz(originals: dict[str, bytes], folder: Path, cases: int, seed: int, load: Loader,
         keep: bool = False) -> Iterator[dict[str, Any]]:
    """``cases`` mutants of the learner files ``originals`` (name -> bytes), written in ``folder``, each judged
    (and kept there with ``keep``)."""
    rng = random.Random(seed)
    names = sorted(originals)
    for case in range(cases):
        name = names[case % len(names)]
        what, data = mutate(originals[name], rng)
        path = folder / f"case-{case:05d}-{name}"
        path.write_bytes(data)
        outcome, detail = judge(path, learner_use(load))
        yield {"case": case, "original": name, "mutation": what, "outcome": outcome, "detail": detail,
               "path": str(path)}
        if not keep:
            path.unlink()


def _paths(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document, as the keys and indexes that lead to it."""
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):  # long lists: their first items stand for the rest
            yield from _paths(value, (*at, i))


def mutate_json(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One hostile mutation of the JSON document ``raw``: a value of another type or range, a key removed, a list
    cut or lengthened, or the text itself damaged."""
    kind = rng.choice(("value", "value", "value", "delete", "list", "text"))
    if kind == "text":
        edit = rng.choice(("truncate", "flip", "nest"))
        if edit == "truncate":
            return "text truncate", raw[:rng.randrange(0, len(raw))]
        if edit == "flip":
            data = bytearray(raw)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(32, 127)
            return "text flip", bytes(data)
        return "text nest", b"[" * 100_000 + b"]" * 100_000
    document = json.loads(raw)
    places = [at for at in _paths(document) if at]
    at = rng.choice(places)
    parent = document
    for key in at[:-1]:
        parent = parent[key]
    last = at[-1]
    where = ".".join(str(k) for k in at)
    if kind == "delete" and isinstance(parent, dict):
        del parent[last]
    elif kind == "list" and isinstance(parent[last], list):
        parent[last] = parent[last][:rng.randrange(0, max(1, len(parent[last])))] if rng.random() < 0.5 \
            else parent[last] + parent[last][:1] * rng.randint(1, 3)
    else:
        parent[last] = rng.choice(ODD_VALUES + (-0.5, 1.5, 1e-9, [0, 16], [[0, 16, 1.0]] * 2))
    return f"{kind} {where}"[:120], json.dumps(document).encode()


def judge(path: Path, use: Callable[[Path], Any]) -> tuple[str, str]:
    """How the engine takes the file at ``path`` (``use`` does with it what a scan or a repair does): (outcome,
    detail)."""
    try:
        use(path)
    except InputError as exc:
        message = str(exc)
        if path.name not in message:
            return "unnamed", message[:300]
        return ("long", message[:300]) if len(message) > MESSAGE_LIMIT else ("refused", message)
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
        return "unexpected", f"{type(exc).__name__}: {str(exc)[:300]}"
    return "ran", ""


def fuzz_json(original: bytes, folder: Path, cases: int, seed: int, use: Callable[[Path], Any],
              name: str = "reference") -> Iterator[dict[str, Any]]:
    """``cases`` mutants of the JSON file ``original`` (a clean reference, a scan report), written in ``folder``
    as ``name``-NNNNN.json, each judged with ``use``."""
    rng = random.Random(seed)
    for case in range(cases):
        what, data = mutate_json(original, rng)
        path = folder / f"{name}-{case:05d}.json"
        path.write_bytes(data)
        outcome, detail = judge(path, use)
        yield {"case": case, "original": name, "mutation": what, "outcome": outcome, "detail": detail,
               "path": str(path)}
        path.unlink()


def reference_use(kind: str = "coop") -> Callable[[Path], None]:
    """What ``scan --reference FILE`` does with a reference file, on a demo model: read it, check it against the
    scan, draw the clean learners' values, and decide a real scan's records with it."""
    from inspector.backbone import shared_backbone
    from inspector.data import load_shipped_pool
    from inspector.invert import ScanConfig
    from inspector.prompts import open_model
    from inspector.reference import Reference, decide_with_reference, reference_for
    from inspector.zoo import resolve_model

    model = open_model(resolve_model(f"clean-{kind}"), device="cpu", backbone_loader=shared_backbone)
    pool = load_shipped_pool(model.backbone.image_size)
    report = Path(__file__).resolve().parent.parent / "benchmarks" / "demo_scans" / f"clean-{kind}" / "report.json"
    records = json.loads(report.read_text())["classes"]

    def use(path: Path) -> None:
        reference_for(model, ScanConfig(), pool, choice=str(path))
        decide_with_reference(records, Reference.read(path), "fast")

    return use


def report_use(folder: Path, kind: str = "coop") -> Callable[[Path], None]:
    """What ``repair --report FILE`` does with a scan report (whose triggers file lies in ``folder``) before it
    trains, on the kind's clean demo model: read it, pick the class to repair against and its triggers of every
    family, stamp two images with them, split the pool as the scan did and check it is the scan's pool."""
    from inspector.backbone import shared_backbone
    from inspector.data import load_shipped_pool
    from inspector.pipeline import pool_of
    from inspector.prompts import open_model
    from inspector.report import read_report
    from inspector.zoo import resolve_model

    model = open_model(resolve_model(f"clean-{kind}"), device="cpu", backbone_loader=shared_backbone)
    size = model.backbone.image_size
    pool = load_shipped_pool(size)

    def use(path: Path) -> None:
        saved = read_report(path, model.class_names)
        result = saved.result
        target = result.verdict.target if result.verdict.target is not None else result.verdict.suspect
        trigger, also = result.repair_triggers(target, "both")
        for stamp in (trigger, *also):
            stamp(pool.pixels[:2])
        result.held_out(pool.pixels)
        pool_of(saved, size)

    return use


def tally(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(row["outcome"] for row in rows)
