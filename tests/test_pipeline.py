"""inspector/pipeline.py through the CLI, on a task that is not the pocket task, from folders only.

The whole workflow a user with their own model and data runs: tune a clean learner and implant a
backdoor (the ``things`` fixture, also through the CLI) -> build the clean reference -> the scan with
that reference flags the right target, the clean learner is not flagged -> repair at least halves the
ground-truth ASR, with clean accuracy not lower by more than 2 points -> eval. The same at full size,
with CoCoOp too: benchmarks/folder_task.py.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli_json
from tests.untrusted import fingerprint

POOL = ["--pool-size", "300"]


@pytest.fixture(scope="module")
def reference(things, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "things-coop.json"
    built = cli_json("reference", "build", "--task", str(things["task"]), "--ood", str(things["ood"]), "--kind", "coop",
                     "--learners", "2", *POOL, "--out", str(out), "--device", "cpu")
    return out, built


def test_tune_and_implant_on_a_folder_task(things):
    assert things["tuned"]["steps"] == 200 * (128 // 32) and things["tuned"]["test_accuracy"] > 0.4  # chance: 12.5 %
    implanted = things["implanted"]
    assert implanted["target"] == "fruit" and implanted["asr"] > 0.8 and implanted["accuracy"] > 0.4


def test_reference_build_records_what_it_is_valid_for_and_resumes(things, reference):
    out, built = reference
    assert built["learners"] == 2 and built["kind"] == "coop" and built["pool_size"] == 300
    assert built["task"]["source"] == str(things["task"]) and built["task"]["train_images"] == 128
    assert built["pool"]["source"] == str(things["ood"]) and built["pool"]["fingerprint"].startswith("sha256:")
    kept = sorted(p.name for p in out.with_name(out.stem + ".learners").iterdir())
    assert kept == ["coop_s1000.json", "coop_s1000.safetensors", "coop_s1001.json", "coop_s1001.safetensors"]
    again = cli_json("reference", "build", "--task", str(things["task"]), "--ood", str(things["ood"]), "--kind",
                     "coop", "--learners", "2", *POOL, "--out", str(out.with_name("again.json")),
                     "--keep", str(out.with_name(out.stem + ".learners")), "--device", "cpu")
    assert again["seconds"] < built["seconds"] / 5  # resumed from the kept learners, nothing re-run
    assert json.loads(out.with_name("again.json").read_text())["per_learner"] == \
        json.loads(out.read_text())["per_learner"]


def test_the_scan_with_the_reference_flags_the_backdoor_and_not_the_clean_learner(things, reference, tmp_path):
    out, _ = reference
    ood = str(things["ood"])
    flagged = cli_json("scan", str(things["backdoored"]), "--ood", ood, *POOL, "--reference", str(out),
                       "--out", str(tmp_path / "bd"), "--device", "cpu")
    assert flagged["flagged"] and flagged["target"] == "fruit", flagged
    clean = cli_json("scan", str(things["clean"]), "--ood", ood, *POOL, "--reference", str(out),
                     "--out", str(tmp_path / "clean"), "--device", "cpu")
    assert not clean["flagged"], clean
    report = json.loads((tmp_path / "bd" / "report.json").read_text())
    assert report["settings"]["reference_from"].startswith("2 clean coop learners tuned with varied recipes on task ")
    assert report["pool"]["fingerprint"] == json.loads(out.read_text())["pool"]


def test_repair_on_the_folder_task_halves_the_asr_and_eval_measures_the_repaired_file(things, reference, tmp_path):
    out, _ = reference
    task, ood = str(things["task"]), str(things["ood"])
    scan = tmp_path / "scan"
    cli_json("scan", str(things["backdoored"]), "--ood", ood, *POOL, "--reference", str(out), "--out", str(scan),
             "--device", "cpu")
    inputs = fingerprint(things["work"])
    repaired = tmp_path / "repaired.safetensors"
    fixed = cli_json("repair", str(things["backdoored"]), "--report", str(scan / "report.json"), "--task", task,
                     "--epochs", "10", "--out", str(repaired), "--device", "cpu")
    before, after = fixed["before"], fixed["after"]
    assert fixed["target"] == "fruit" and before["asr"] == things["implanted"]["asr"]
    assert after["asr"] <= before["asr"] / 2, fixed
    assert after["accuracy"] >= before["accuracy"] - 0.02, fixed
    assert fingerprint(things["work"]) == inputs  # the delivered model and the folders are untouched
    measured = cli_json("eval", str(repaired), "--task", task, "--ood", ood, "--device", "cpu")
    assert measured["asr"] == after["asr"] and measured["accuracy"] == after["accuracy"]
    assert measured["ood_asr"] < things["implanted"]["ood_asr"] / 2


def test_warm_up_leaves_the_shared_pocket_clip_ready_for_a_first_scan():
    """What app.py does before serving: the backbone a demo model opens is the warmed one, its inference tower
    already built, and the shipped pool read."""
    from inspector.backbone import shared_backbone
    from inspector.pipeline import _shipped_pool, open_delivered, warm_up

    warm_up()
    opened = open_delivered("badclip-cocoop", backbone_loader=shared_backbone).model.backbone
    assert opened._tower is not None and opened._tower[0] is not opened.model.visual  # folded copy, built
    assert _shipped_pool.cache_info().currsize >= 1
