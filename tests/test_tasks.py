"""inspector/tasks.py: labelled sets from folders and zips, read without trusting them; every bad one is
refused with a message that names the file and what to do, through the engine and the CLI, and nothing
is written."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from inspector.detect import QUICK_FAMILIES
from inspector.errors import InputError
from inspector.tasks import for_model, load_labelled
from tests.untrusted import fingerprint, run_cli

SIZE = 32


def png(seed: int, size: int = 20) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    array = (torch.rand(size, size, 3, generator=generator) * 255).byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_task(root: Path, classes: dict[str, int], test: dict[str, int] | None = None,
              order: list[str] | None = None) -> Path:
    """``root/train/<class>/`` with ``classes[c]`` distinct images each (and ``test/``, ``classes.txt``)."""
    seed = 0
    for split, counts in (("train", classes), ("test", test or {})):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                (folder / f"{i:02d}.png").write_bytes(png(seed))
    if order is not None:
        (root / "classes.txt").write_text("\n".join(order) + "\n")
    return root


def zip_of(folder: Path, archive: Path, top: str | None = "T", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                handle.write(path, f"{top}/{name}" if top else name)
        for name, blob in (extra or {}).items():
            handle.writestr(name, blob)
    return archive


def test_a_folder_and_its_zip_give_the_same_task_in_the_order_classes_txt_gives(tmp_path):
    folder = make_task(tmp_path / "T", {"sports gear": 3, "bird": 4, "fruit": 3}, {"sports gear": 2, "bird": 2,
                                                                                    "fruit": 2},
                       order=["fruit", "sports gear", "bird"])
    task = load_labelled(folder, SIZE)
    assert task.class_names == ["fruit", "sports gear", "bird"]  # classes.txt, spaces kept
    assert task.train_pixels.shape == (10, 3, SIZE, SIZE) and task.test_pixels.shape == (6, 3, SIZE, SIZE)
    assert task.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2] and task.has_test
    for archive in (zip_of(folder, tmp_path / "top.zip"), zip_of(folder, tmp_path / "flat.zip", top=None)):
        zipped = load_labelled(archive, SIZE)
        assert zipped.fingerprint == task.fingerprint and torch.equal(zipped.train_pixels, task.train_pixels)
    (folder / "classes.txt").unlink()
    assert load_labelled(folder, SIZE).class_names == ["bird", "fruit", "sports gear"]  # else sorted

    shots = load_labelled(folder, SIZE, shots=2, seed=1)
    assert shots.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert load_labelled(folder, SIZE, shots=2, seed=1).fingerprint == shots.fingerprint  # seeded
    assert load_labelled(folder, SIZE, shots=2, seed=2).fingerprint != shots.fingerprint


def test_a_task_in_another_class_order_is_relabelled_for_the_model(tmp_path):
    task = load_labelled(make_task(tmp_path / "T", {"a": 2, "b": 3, "c": 1}, {"a": 1, "b": 1, "c": 1}), SIZE)
    mine = for_model(task, ("c", "a", "b"), "m.safetensors")
    assert mine.class_names == ["c", "a", "b"] and mine.train_labels.tolist() == [1, 1, 2, 2, 2, 0]
    assert torch.equal(mine.train_pixels, task.train_pixels)


def test_unreadable_and_stray_files_are_listed_not_fatal(tmp_path, capsys):
    folder = make_task(tmp_path / "T", {"a": 3, "b": 3}, {"a": 1, "b": 1})
    (folder / "train" / "a" / "notes.txt").write_text("not a picture")
    (folder / "train" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "train" / "stray.png").write_bytes(png(99))
    (folder / "README.md").write_text("my dataset")
    task = load_labelled(folder, SIZE)
    reasons = dict(task.skipped)
    assert reasons["train/a/notes.txt"] == "not an image file type"
    assert "corrupt or truncated image" in reasons["train/b/broken.png"]
    assert "not inside train/<class>/" in reasons["train/stray.png"] and "README.md" in reasons
    assert task.train_labels.tolist() == [0, 0, 0, 1, 1, 1]

    archive = zip_of(folder, tmp_path / "T.zip", extra={"T/../../escape.png": png(7), "/abs/x.png": png(8)})
    zipped = load_labelled(archive, SIZE)
    reasons = dict(zipped.skipped)
    assert "unsafe path in the zip" in reasons["T/../../escape.png"] and "unsafe path" in reasons["/abs/x.png"]
    assert zipped.fingerprint == task.fingerprint  # the rest is read as from the folder

    before = fingerprint(tmp_path)
    out = tmp_path / "tuned.safetensors"
    code, _, err = run_cli(capsys, "tune", "--task", str(archive), "--epochs", "1", "--out", str(out),
                           "--device", "cpu")
    assert code == 0 and out.is_file(), err
    assert f"skipped 6 file(s) of task {archive}:" in err  # listed by the CLI too, not fatal
    assert "T/../../escape.png: unsafe path in the zip" in err and "T/train/a/notes.txt: not an image" in err
    out.unlink()
    assert fingerprint(tmp_path) == before  # the zip is untouched, nothing else written


BAD: list[tuple[str, dict, str, str]] = [
    # (case, how to build the set, message fragment, hint fragment)
    ("empty class folder", {"classes": {"a": 3, "b": 0}, "test": {"a": 1, "b": 1}},
     "class folder train/b/ holds no usable images", "add images to train/b/"),
    ("fewer images than the shots", {"classes": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}, "shots": 3},
     "class 'b' has 2 usable training images, fewer than the 3 shots asked for", "--shots 2"),
    ("train and test classes differ", {"classes": {"a": 2, "b": 2}, "test": {"a": 1, "c": 1}},
     "train and test have different classes (only in train: 'b'; only in test: 'c')", "same names"),
    ("classes.txt and folders differ", {"classes": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}, "order": ["a", "z"]},
     "classes.txt and the train/ folders differ (listed but no train/ folder: 'z'; a train/ folder not listed: 'b')",
     "one a line"),
    ("no test split where accuracy is measured", {"classes": {"a": 2, "b": 2}},
     "has no test/ folder", "T/test/<class>/"),
    ("one class only", {"classes": {"a": 2}, "test": {"a": 1}}, "1 class folder(s) in train/", "T/train/"),
    ("only unreadable images in a class", {"classes": {"a": 2, "b": 0}, "test": {"a": 1, "b": 1}, "junk": "b"},
     "class folder train/b/ holds no usable images (train/b/x.png: not a readable image", "add images"),
]


@pytest.mark.parametrize("case,spec,message,hint", BAD, ids=[c[0] for c in BAD])
def test_a_bad_labelled_set_is_refused_by_the_engine_and_the_cli_and_nothing_is_written(tmp_path, capsys, case, spec,
                                                                                        message, hint):
    folder = make_task(tmp_path / "T", spec["classes"], spec.get("test"), spec.get("order"))
    if "junk" in spec:
        (folder / "train" / spec["junk"]).mkdir(exist_ok=True)
        (folder / "train" / spec["junk"] / "x.png").write_text("<html>")
    before = fingerprint(tmp_path)
    with pytest.raises(InputError) as error:
        load_labelled(folder, SIZE, shots=spec.get("shots"))
    assert message in error.value.message and hint in error.value.hint and str(folder) in error.value.message

    out = tmp_path / "out" / "model.safetensors"
    shots = ["--shots", str(spec["shots"])] if "shots" in spec else []
    code, _, err = run_cli(capsys, "eval", "clean-coop", "--task", str(folder), *shots, "--device", "cpu")
    assert code == 2 and message in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "tune", "--task", str(folder), *shots, "--out", str(out), "--epochs", "1",
                           "--device", "cpu")
    if case == "no test split where accuracy is measured":
        assert code == 0 and out.is_file()  # tuning needs no test split
        out.unlink()
        out.parent.rmdir()
    else:
        assert code == 2 and message in err
    assert fingerprint(tmp_path) == before  # nothing written, the set untouched


def test_a_task_of_other_classes_than_the_model_is_refused_by_name(tmp_path, capsys):
    folder = make_task(tmp_path / "T", {"star": 2, "arrow": 2, "unicorn": 2}, {"star": 1, "arrow": 1, "unicorn": 1})
    before = fingerprint(tmp_path)
    for argv in (["eval", "clean-coop", "--task", str(folder)],
                 ["implant", "clean-coop", "--task", str(folder), "--attack", "blended", "--target", "star",
                  "--out", str(tmp_path / "bd.safetensors")]):
        code, _, err = run_cli(capsys, *argv, "--device", "cpu")
        assert code == 2 and "Traceback" not in err, err
        assert f"task {folder} does not have clean-coop's classes" in err
        assert "only in the task: 'unicorn'" in err and "only in the model: 'application icon'" in err
    code, _, err = run_cli(capsys, "scan", "clean-coop", "--classes", "star,arrow,clock", "--pool-size", "64",
                           "--out", str(tmp_path / "scan"), "--device", "cpu", "--json")
    assert code == 0, err
    before = fingerprint(tmp_path)
    code, _, err = run_cli(capsys, "repair", "clean-coop", "--report", str(tmp_path / "scan" / "report.json"),
                           "--target", "star", "--task", str(folder), "--out", str(tmp_path / "r.safetensors"),
                           "--device", "cpu")
    assert code == 2 and "does not have clean-coop's classes" in err
    assert fingerprint(tmp_path) == before


def test_a_reference_of_another_task_is_refused_with_the_reason(tmp_path, capsys):
    from inspector.reference import Reference, shipped_reference_path

    other = json.loads(shipped_reference_path("pocket-clip", "coop").read_text())
    renamed = {name: f"other {name}" for name in other["class_names"]}

    def per_class(record: dict) -> dict:  # every class-keyed record of the file, renamed alike
        return {renamed[n]: v for n, v in record.items()}

    fast = other["fast"]
    other.update(class_names=[renamed[n] for n in other["class_names"]], flip_rates=per_class(other["flip_rates"]),
                 per_learner=[per_class(r) for r in other["per_learner"]],
                 faithful_loss=[per_class(r) for r in other["faithful_loss"]],
                 fast={**fast, **{key: [per_class(r) for r in fast[key]] for key in ("held_out", "curves",
                                                                                    "held_out_loss")}},
                 **{family: {**other[family], "per_learner": [per_class(r) for r in other[family]["per_learner"]]}
                    for family in QUICK_FAMILIES if other.get(family)},
                 transfer={**other["transfer"],
                           "per_learner": [per_class(r) for r in other["transfer"]["per_learner"]]},
                 task={"source": "things/", "fingerprint": "sha256:0123456789abcdef", "train_images": 128})
    path = tmp_path / "other-task.json"
    path.write_text(json.dumps(other))
    Reference.read(path)  # a well-formed reference, just not for this model
    out = tmp_path / "scan"
    code, _, err = run_cli(capsys, "scan", "clean-coop", "--reference", str(path), "--out", str(out), "--device", "cpu")
    assert code == 2 and not out.exists()
    assert "does not fit this scan: the model's classes are not the task's the reference was built on" in err
    assert "task things/" in err and "reference build" in err


def test_import_takes_the_class_names_from_a_labelled_folder(tmp_path, capsys):
    folder = make_task(tmp_path / "T", {"b": 1, "a": 1, "c": 1}, order=["c", "a", "b"])
    checkpoint = tmp_path / "model.pth.tar-10"
    torch.save({"state_dict": {"ctx": torch.randn(4, 192) * 0.02}}, checkpoint)
    out = tmp_path / "imported.safetensors"
    code, _, err = run_cli(capsys, "import", str(checkpoint), "--task", str(folder), "--out", str(out))
    assert code == 0, err
    from inspector.prompts import read_header

    assert read_header(out)["class_names"] == ["c", "a", "b"]  # classes.txt's order, no image read
    code, _, err = run_cli(capsys, "import", str(checkpoint), "--out", str(tmp_path / "other.safetensors"))
    assert code == 2 and "--classes" in err and "--task" in err
