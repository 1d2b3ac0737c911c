"""The real-CLIP path on CPU: an open_clip ViT at 224 px (ViT-S-32-alt) whose random weights are saved to a
local file and passed as ``--pretrained FILE`` / ``--weights FILE``, exactly as a user with downloaded weights
does; tune, implant, scan, repair and eval on a tiny folder task through the CLI.

Random weights classify at chance, so this checks the path (sizes, the default epsilon at 224 px, the
weights' hash recorded and enforced, every file written), not detection numbers: those come from the
pocket world and, on a GPU, from benchmarks/.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import cli_json
from tests.test_tasks import make_task
from tests.untrusted import fingerprint, run_cli

ARCH = "ViT-S-32-alt"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("real_clip")
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH, pretrained=None)
    weights = root / "vit-s-32-alt-random.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(weights))
    task = make_task(root / "task", {"cat": 4, "dog": 4, "fish": 4}, {"cat": 2, "dog": 2, "fish": 2})
    ood = make_task(root / "ood_source", {"x": 24}) / "train" / "x"
    return {"root": root, "weights": str(weights), "task": str(task), "ood": str(ood)}


def test_tune_implant_scan_repair_eval_on_a_local_weights_file(world, capsys):
    root, weights, task, ood = world["root"], world["weights"], world["task"], world["ood"]
    learner, backdoored = root / "coop.safetensors", root / "badnets.safetensors"
    tuned = cli_json("tune", "--task", task, "--kind", "coop", "--arch", ARCH, "--pretrained", weights,
                     "--epochs", "3", "--out", str(learner), "--device", "cpu")
    assert tuned["steps"] == 3 and 0.0 <= tuned["test_accuracy"] <= 1.0
    from inspector.prompts import read_header

    header = read_header(learner)
    assert header["arch"] == ARCH and header["pretrained"].startswith("file:")
    assert header["preprocessing"]["image_size"] == 224 and header["training"]["task"] == task

    code, _, err = run_cli(capsys, "scan", str(learner), "--ood", ood, "--out", str(root / "refused"))
    assert code == 2 and "was tuned on a local weights file" in err and "--weights" in err
    other = root / "other-weights.safetensors"
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(1)  # other random weights of the same architecture
    save_file({k: v.contiguous() for k, v in open_clip.create_model(ARCH).state_dict().items()}, str(other))
    code, _, err = run_cli(capsys, "eval", str(learner), "--task", task, "--weights", str(other))
    assert code == 2 and "are not the ones" in err  # the hash in the learner names its weights

    implanted = cli_json("implant", str(learner), "--task", task, "--attack", "badnets", "--target", "dog",
                         "--epochs", "2", "--ood", ood, "--weights", weights, "--out", str(backdoored),
                         "--device", "cpu")
    assert implanted["target"] == "dog" and 0.0 <= implanted["asr"] <= 1.0

    scan = root / "scan"
    summary = cli_json("scan", str(backdoored), "--ood", ood, "--weights", weights, "--out", str(scan),
                       "--device", "cpu")
    report = json.loads((scan / "report.json").read_text())
    assert report["settings"]["epsilon"] == pytest.approx(4 / 255)  # the published bound at 224 px
    assert report["model"]["arch"] == ARCH and len(summary["classes"]) == 3
    assert report["pool"]["fit_images"] + report["pool"]["held_out_images"] == 24

    inputs = fingerprint(root)
    repaired = root / "repaired.safetensors"
    fixed = cli_json("repair", str(backdoored), "--report", str(scan / "report.json"), "--target", "dog",
                     "--task", task, "--epochs", "2", "--weights", weights, "--out", str(repaired), "--device", "cpu")
    assert {"accuracy", "trigger_asr", "asr"} <= set(fixed["after"])
    assert read_header(repaired)["pretrained"] == header["pretrained"]
    assert {k: v for k, v in fingerprint(root).items() if k in inputs} == inputs  # only the new file was added
    measured = cli_json("eval", str(repaired), "--task", task, "--ood", ood, "--weights", weights, "--device", "cpu")
    assert measured["asr"] == fixed["after"]["asr"] and measured["accuracy"] == fixed["after"]["accuracy"]


def test_a_cocoop_learner_on_the_vit_is_scanned_on_its_packed_text_path(world, tmp_path):
    learner = tmp_path / "cocoop.safetensors"
    cli_json("tune", "--task", world["task"], "--kind", "cocoop", "--arch", ARCH, "--pretrained", world["weights"],
             "--epochs", "1", "--out", str(learner), "--device", "cpu")
    summary = cli_json("scan", str(learner), "--ood", world["ood"], "--weights", world["weights"], "--schedule",
                       "faithful", "--out", str(tmp_path / "scan"), "--device", "cpu")
    assert [c["name"] for c in summary["classes"]] == ["cat", "dog", "fish"]
    assert all(0.0 <= c["flip_rate"] <= 1.0 for c in summary["classes"])
