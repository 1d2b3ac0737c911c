"""Scan reports: JSON schema, trigger PNGs and tensors, the self-contained HTML, reading back."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from inspector.candidates import AdditiveInversion
from inspector.data import load_shipped_pool
from inspector.errors import InputError
from inspector.examples import Example
from inspector.invert import ScanConfig, run_scan
from inspector.prompts import load_learner
from inspector.report import read_report, write_report
from inspector.zoo import resolve_model


@pytest.fixture(scope="module")
def written(backbone, tmp_path_factory):
    model = load_learner(resolve_model("clean-coop"), backbone)
    pool = load_shipped_pool().pixels
    result = run_scan(model, pool, ScanConfig(classes=(2, 7, 16, 19), pool_size=128))
    out = tmp_path_factory.mktemp("scan")
    example = Example(pool[0], pool[0], "map", "clock")
    report = write_report(result, out, {"name": "clean-coop", "kind": "coop", "arch": "pocket-clip", "n_classes": 20},
                          {"source": "shipped", "images": len(pool)}, [example])
    return out, report, result


def test_report_json_schema(written):
    out, report, result = written
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    for key, kind in {"flagged": bool, "max_anomaly": float, "seconds": float, "classes": list, "settings": dict,
                      "versions": dict, "timings": dict, "model": dict, "pool": dict}.items():
        assert isinstance(on_disk[key], kind), key
    assert on_disk["target"] is None or isinstance(on_disk["target"], str)
    assert on_disk["settings"]["epsilon"] == pytest.approx(14 / 255)  # 4/255 at 224 px, scaled to 64 px
    assert {"torch", "open_clip_torch", "python"} <= set(on_disk["versions"])
    assert [c["name"] for c in on_disk["classes"]] == ["road sign", "computer", "balloon", "clock"]
    for c in on_disk["classes"]:
        assert {"name", "index", "flip_rate", "anomaly", "loss", "trigger_png", "true_scale_png"} <= set(c)
        with Image.open(out / c["trigger_png"]) as image:
            assert image.size == (256, 256)
    assert on_disk["pool"]["fit_images"] + on_disk["pool"]["held_out_images"] == 128
    assert not list(out.glob("*.partial"))


def test_html_is_self_contained(written):
    out, report, _ = written
    page = (out / "report.html").read_text()
    assert "<script" in page and "Plotly" in page  # plotly.js inlined, works offline
    assert 'src="http' not in page and "src='http" not in page  # nothing fetched from the network
    assert page.count("data:image/png;base64,") >= 2 * len(report["classes"]) + 2
    assert "Not flagged" in page or "BACKDOOR SUSPECTED" in page


def test_html_class_table_is_ranked_by_anomaly_and_explains_its_columns(written):
    out, report, _ = written
    page = (out / "report.html").read_text()
    table = page.split("<h2>Per class")[1].split("</table>")[0]
    shown = re.findall(r"<tr[^>]*><td>(\d+)</td><td>([^<]+)</td>", table)
    by_anomaly = sorted(report["classes"], key=lambda c: -c["anomaly"])
    assert [name for _, name in shown] == [c["name"] for c in by_anomaly]
    assert [int(rank) for rank, _ in shown] == list(range(1, len(shown) + 1))
    legend = page.split("<dl class='legend'>")[1].split("</dl>")[0]
    headers = re.findall(r"<th>([^<]+)</th>", table)
    for header in headers[2:-2]:  # every measured column (after rank and class, before the pictures) has its entry
        assert f"<dt>{header}</dt>" in legend, header
    assert "margin loss" in legend and "held-out" in legend


def test_report_reads_back_with_its_triggers(written):
    out, report, result = written
    saved = read_report(out / "report.json")
    again = saved.result
    written_only = ("anomaly", "family", "trigger_png", "true_scale_png")  # the verdict's, or the page's
    assert again.classes == [{k: v for k, v in c.items() if k not in written_only} for c in report["classes"]]
    assert again.verdict == result.verdict and again.settings.as_dict() == result.settings.as_dict()  # typed, rebuilt
    assert again.class_names == result.class_names and saved.model == report["model"]
    assert set(again.triggers) == {2, 7, 16, 19}
    rebuilt = again.trigger(16)
    assert isinstance(rebuilt, AdditiveInversion)
    assert torch.allclose(rebuilt.delta, result.triggers[16]["delta"], atol=1e-7)
    pool = load_shipped_pool().pixels
    assert torch.equal(again.held_out(pool), result.held_out(pool))  # the images its flip rates were measured on


def test_bad_reports_get_clear_errors(tmp_path, written):
    with pytest.raises(InputError, match="does not exist"):
        read_report(tmp_path / "nothing.json")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not an inspector scan report"):
        read_report(tmp_path)
    out, report, _ = written
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "report.json").write_text(json.dumps(report))
    with pytest.raises(InputError, match="triggers file"):
        read_report(lonely / "report.json")


def test_a_corroborated_verdict_is_written_named_and_read_back(tmp_path, written):
    """A verdict two families reached together keeps their names in report.json, says so on the HTML page, and
    reads back equal; a report naming a family the scan does not have is refused by its field."""
    from dataclasses import replace

    _, _, result = written
    verdict = replace(result.verdict, flagged=True, target=16, target_name="balloon", suspect=16,
                      suspect_name="balloon", suspect_family="patch", corroborated_by=["patch", "additive"],
                      corroborated_gate=0.6)
    together = replace(result, verdict=verdict)
    out = tmp_path / "together"
    report = write_report(together, out, {"name": "clean-coop", "kind": "coop"}, {"source": "shipped", "images": 1200},
                          [])
    assert report["corroborated_by"] == ["patch", "additive"]
    page = (out / "report.html").read_text()
    assert "two or more families together" in page and "the pasted patch" in page
    assert "at least 30% for a class two\nfamilies name together" in page  # the gate this verdict applied
    assert read_report(out / "report.json").result.verdict == verdict
    (out / "report.json").write_text(json.dumps({**report, "corroborated_gate": 0}))
    with pytest.raises(InputError, match="corroborated_gate"):
        read_report(out / "report.json")
    damaged = {**report, "corroborated_by": ["telepathy"]}
    (out / "report.json").write_text(json.dumps(damaged))
    with pytest.raises(InputError, match="corroborated_by"):
        read_report(out / "report.json")
