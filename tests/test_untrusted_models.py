"""Model files from an untrusted provider: every bad one is refused with a message naming the file and
the problem, through the engine API and the CLI, and nothing is written or modified (issue 7)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from inspector import limits
from inspector.backbone import ASSETS_DIR, load_backbone
from inspector.errors import InputError
from inspector.prompts import import_dassl, open_model
from tests.untrusted import fingerprint, run_cli

COOP = ASSETS_DIR / "zoo" / "clean_coop.safetensors"
COCOOP = ASSETS_DIR / "zoo" / "clean_cocoop.safetensors"


def _parts(source: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(source), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, json.loads(handle.metadata()["inspector"])


def _learner(path: Path, source: Path = COOP, tensors: Callable[[dict], None] | None = None,
             meta: Callable[[dict], None] | None = None, raw_header: str | None = None) -> Path:
    """A copy of a shipped learner with its tensors and/or header edited."""
    state, header = _parts(source)
    if tensors:
        tensors(state)
    if meta:
        meta(header)
    save_file(state, str(path), metadata={"inspector": raw_header if raw_header is not None else json.dumps(header)})
    return path


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def _class_specific(state: dict) -> None:
    state["ctx"] = torch.zeros(5, 4, 192)


def _nan(state: dict) -> None:
    state["ctx"][0, 0] = float("nan")


def _pickle_checkpoint(path: Path) -> Path:
    torch.save({"state_dict": {"ctx": torch.zeros(4, 192)}}, path)
    return path


# (case id, file name, how to build it, what the message must say)
CASES: list[tuple[str, str, Callable[[Path], Path], str]] = [
    ("empty file", "empty.safetensors", lambda p: (p.write_bytes(b""), p)[1], "holds only 0 byte(s)"),
    ("random bytes", "noise.safetensors", lambda p: (p.write_bytes(bytes(range(256)) * 8), p)[1],
     "announce a 506,097,522,914,230,528-byte header but the file holds 2,048 bytes"),
    ("text file renamed", "notes.safetensors", lambda p: (p.write_text("model card: tuned on 16 shots\n"), p)[1],
     "it is a text file (it starts with 'model card: tuned on 16 shots'), not a safetensors file"),
    ("image renamed", "photo.safetensors", lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), p)[1],
     "it is a PNG image, not a safetensors file"),
    ("torch pickle instead of safetensors", "model.pth.tar-10", _pickle_checkpoint, "python -m inspector import"),
    ("safetensors without our header", "plain.safetensors",
     lambda p: (save_file({"ctx": torch.zeros(4, 192)}, str(p)), p)[1], "is not an inspector prompt learner"),
    ("header not JSON", "badjson.safetensors", lambda p: _learner(p, raw_header="{kind: coop"), "not valid JSON"),
    ("unknown learner kind", "kind.safetensors", lambda p: _learner(p, meta=_set("kind", "maple")),
     "kind 'maple' is not coop or cocoop"),
    ("no class names", "nonames.safetensors", lambda p: _learner(p, meta=_set("class_names", [])),
     "class_names must be a non-empty list"),
    ("duplicate class names", "dupnames.safetensors",
     lambda p: _learner(p, meta=_set("class_names", ["star"] * 20)), "'star' appears twice"),
    ("n_ctx not a number", "nctx.safetensors", lambda p: _learner(p, meta=_set("n_ctx", "four")),
     "n_ctx 'four' is not a whole number"),
    ("unknown architecture", "arch.safetensors", lambda p: _learner(p, meta=_set("arch", "ViT-Q-99")),
     "unknown CLIP architecture 'ViT-Q-99'"),
    ("input size mismatch", "size.safetensors",
     lambda p: _learner(p, meta=_set("preprocessing", {"image_size": 224})), "was tuned at 224 px"),
    ("context width mismatch", "width.safetensors",
     lambda p: _learner(p, tensors=_set("ctx", torch.zeros(4, 512))), "has shape (4, 512)"),
    ("class-count mismatch", "classes.safetensors",
     lambda p: _learner(p, tensors=_class_specific, meta=_set("class_specific", True)),
     "class-specific context for 5 classes, but the header names 20"),
    ("CoCoOp without its meta-net", "nometa.safetensors",
     lambda p: _learner(p, COCOOP, tensors=_drop("meta_net.linear2.weight")),
     "missing tensor 'meta_net.linear2.weight'"),
    ("NaN context", "nan.safetensors", lambda p: _learner(p, tensors=_nan), "NaN or infinite"),
    ("integer context", "int.safetensors",
     lambda p: _learner(p, tensors=_set("ctx", torch.zeros(4, 192, dtype=torch.int32))), "not floats"),
    ("tuned on a local weights file", "local.safetensors",
     lambda p: _learner(p, meta=_set("pretrained", "file:0123abcd")), "pass that file with --weights"),
    ("header names a file on this machine as its weights", "path.safetensors",
     lambda p: _learner(p, meta=_set("pretrained", "/etc/hostname")), "names the weights '/etc/hostname' by path"),
    ("header holds a number where a record belongs", "prep.safetensors",
     lambda p: _learner(p, meta=_set("preprocessing", 64)), "header preprocessing 64 is not a record"),
    ("a 10,000-character initial prompt, quoted cut short", "init.safetensors",
     lambda p: _learner(p, meta=_set("ctx_init", "a" * 10_000)), "… (10,002 characters) has"),
    ("unsupported class-token position", "position.safetensors",
     lambda p: _learner(p, meta=_set("class_token_position", "middle")), "class token position 'middle'"),
    ("finite context too large for the scores", "huge.safetensors",
     lambda p: _learner(p, tensors=_set("ctx", torch.full((4, 192), 3e38))), "values as large as 3e+38"),
]


@pytest.mark.parametrize("name,filename,build,message", CASES, ids=[c[0] for c in CASES])
def test_bad_model_file_is_refused_by_engine_and_cli(tmp_path, capsys, name, filename, build, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = build(inputs / filename)
    before = fingerprint(inputs)

    with pytest.raises(InputError) as caught:
        open_model(bad, device="cpu")
    assert message in str(caught.value) and str(bad) in str(caught.value)

    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, "--device", "cpu", "scan", str(bad), "--out", str(out))
    assert code == 2 and message in stderr and stderr.startswith("error: ")
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists() and fingerprint(inputs) == before  # nothing written, the input untouched


def test_oversized_model_file_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.safetensors"
    big.write_bytes(COOP.read_bytes() + b"\0" * 4096)
    monkeypatch.setattr(limits, "MAX_MODEL_BYTES", 4096)
    with pytest.raises(InputError, match="over the 0 MB limit"):
        open_model(big, device="cpu")
    code, _, stderr = run_cli(capsys, "--device", "cpu", "scan", str(big), "--out", str(tmp_path / "out"))
    assert code == 2 and "is this a whole CLIP checkpoint" in stderr and "big.safetensors" in stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_or_missing_file_as_model_is_a_clear_error(tmp_path, capsys):
    for target in (tmp_path, tmp_path / "nothing.safetensors"):
        code, _, stderr = run_cli(capsys, "scan", str(target), "--out", str(tmp_path / "out"))
        assert code == 2 and "is neither a file nor a demo zoo name" in stderr and "zoo models:" in stderr


class _CreatesFileWhenUnpickled:
    """What a hostile checkpoint does: unpickling it runs code (here: opens a file for writing)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys, backbone):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "model.pth.tar-50"
    with evil.open("wb") as handle:
        pickle.dump({"state_dict": {"ctx": _CreatesFileWhenUnpickled(marker)}}, handle, protocol=2)

    with pytest.raises(InputError, match="arbitrary pickles are refused"):
        import_dassl(evil, backbone, ["a", "b", "c"])
    assert not marker.exists()

    out = tmp_path / "imported.safetensors"
    code, _, stderr = run_cli(capsys, "import", str(evil), "--classes", "a,b,c", "--out", str(out))
    assert code == 2 and "weights-only" in stderr and "Traceback" not in stderr
    assert not marker.exists() and not out.exists()

    with pytest.raises(InputError, match="cannot read weights file"):  # CLIP weights go through the same reader
        load_backbone("pocket-clip", str(evil), device="cpu")
    assert not marker.exists()

    proof = tmp_path / "proof.txt"  # the payload is real: a plain unpickler would have created the file
    pickle.loads(pickle.dumps(_CreatesFileWhenUnpickled(proof), protocol=2)).close()
    assert proof.exists()
