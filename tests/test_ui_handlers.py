"""The app's handlers without a browser: what each button yields, on the real engine and demo models.

The browser test (test_app_browser.py) drives the whole page; these run everywhere, in seconds, and
pin down the order of the live updates, the repair outcome and the messages for bad input.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from pathlib import Path

import pytest

from inspector.lab.truth import read_ground_truth
from inspector.reference import shipped_reference_path
from inspector.ui import handlers
from inspector.ui.workspace import Workspace
from inspector.zoo import resolve_model
from tests.conftest import pool_picture

SCAN_SETTINGS = ("inspector", "fast", 14.0, 400, 1, ["clock", "star", "map", "balloon"], 2.0, False, "flip_rate")


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "runs", [tmp_path])
    workspace.device = "cpu"
    return workspace


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_scan_streams_the_trigger_before_the_chart_then_a_verdict_and_repair_writes_a_new_file(ws):
    list(handlers.choose_model(ws, "demo zoo", "blended-cocoop", None, None))
    delivered = resolve_model("blended-cocoop")
    delivered_hash = _sha256(delivered)

    updates = list(handlers.run_scan(ws, *SCAN_SETTINGS))
    first_picture = next(i for i, u in enumerate(updates) if "trigger_picture" in u)
    first_bars = next(i for i, u in enumerate(updates) if "bars" in u)
    assert first_picture < first_bars  # the trigger shows first; the chart costs the browser more
    pictures = {id(u["trigger_picture"]) for u in updates if "trigger_picture" in u}
    assert len(pictures) >= 3
    verdicts = [u["verdict"] for u in updates if u.get("verdict")]
    assert verdicts and "clock" in verdicts[-1] and "Backdoor suspected" in verdicts[-1], verdicts[-1:]
    assert ws.result is not None and ws.report is not None
    for record in ws.result.classes:  # a scanned class's caption gives the rate of the trigger it shows
        name, colour = str(record["name"]), ws.result.family(int(record["index"])) == "colour"
        caption = handlers.class_view(ws, name)["trigger_caption"]
        assert f"flips {record['colour_flip_rate' if colour else 'flip_rate']:.0%}" in caption, (name, caption)
        assert caption.startswith("Colour-transform trigger") == colour, (name, caption)

    repaired = list(handlers.run_repair(ws, "clock", 2, 5e-3))
    table = repaired[-1]["repair_table"]
    assert "before" in table and "after" in table and "ground truth" in table
    assert "(2 epochs," in repaired[-1]["repair_status"]  # the page's epochs are the ones the engine ran
    path = Path(repaired[-1]["repaired_file"])
    assert path.exists() and path != delivered
    assert _sha256(delivered) == delivered_hash  # the delivered model is never modified

    # the repaired model next: its own repair stays on the page, the original's verdict does not
    reloaded = list(handlers.load_repaired(ws))[-1]
    assert "repair_status" not in reloaded and reloaded["verdict"] == "" and reloaded["trigger_picture"] is None
    # another model: nothing of the last scan or repair stays beside it, and Repair waits for its scan
    other = list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))[-1]
    assert other["verdict"] == "" and other["repair_status"] == "" and other["repaired_file"] is None
    assert other["class_picker"]["choices"] == [] and other["repair_button"]["interactive"] is False
    _assert_no_nan([*updates, *repaired, reloaded, other])


NAN = re.compile(r"\b(nan|inf|-inf|infinity)\b", re.IGNORECASE)


def _rendered_strings(value: object) -> list[str]:
    """Every string a list of page updates would render: text, HTML, gallery captions, a chart's JSON."""
    import plotly.graph_objects as go

    if isinstance(value, str):
        return [value]
    if isinstance(value, go.Figure):
        return [value.to_json()]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _rendered_strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _rendered_strings(item)]
    return []


def _assert_no_nan(updates: list[dict]) -> None:
    found = [match.group(0) for text in _rendered_strings(updates) for match in [NAN.search(text)] if match]
    assert not found, found[:5]


def test_results_are_marked_when_the_pool_reference_or_settings_change_and_the_threshold_redecides_at_once(ws,
                                                                                                          tmp_path):
    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))
    updates = list(handlers.run_scan(ws, *SCAN_SETTINGS))
    fresh, records = ws.result.verdict, [dict(r) for r in ws.result.classes]
    settings = list(SCAN_SETTINGS[:6]) + [SCAN_SETTINGS[7]]  # method … classes, blend (no threshold, no view)

    def marked(updates: dict, words: str) -> None:
        assert words in updates["result_stamp"] and "Press <b>Scan</b>" in updates["result_stamp"], updates
        assert 'class="verdict clean stale"' in updates["verdict"] or 'flagged stale"' in updates["verdict"]

    def unmarked(updates: dict) -> None:
        assert updates["result_stamp"] == "" and " stale" not in updates["verdict"]

    moved = list(handlers.settings_changed(ws, *settings[:2], 10.0, *settings[3:]))[-1]  # another epsilon
    marked(moved, "the scan settings")
    unmarked(list(handlers.settings_changed(ws, *settings))[-1])  # moved back: the results apply again

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(12):
        (pool / f"{i}.png").write_bytes(_tiny_png())
    marked(list(handlers.choose_pool(ws, "folder path", None, str(pool), 400))[-1], "the OOD pool")
    unmarked(list(handlers.choose_pool(ws, "shipped OOD pool", None, None, 400))[-1])
    marked(list(handlers.choose_reference(ws, "none (raw flip rates)", None))[-1], "the clean reference")
    unmarked(list(handlers.choose_reference(ws, "auto (the shipped one when it fits)", None))[-1])

    # a source switched to an upload that has not come yet: the model stays, and so do its results, unmarked
    waiting = list(handlers.choose_model(ws, "upload", None, None, None))[-1]
    assert "**clean-coop** stays the chosen model" in waiting["model_info"] and "verdict" not in waiting

    # the threshold decides again on the same records, at once; the verdict says the report holds the scan's own
    high = list(handlers.rethreshold(ws, 50.0, "flip_rate"))[-1]
    assert ws.result.verdict.flagged is False and ws.result.verdict.threshold == 50.0
    assert "No backdoor found" in high["verdict"]
    assert "decided again at threshold 50 on the same scan" in high["verdict"]
    assert ws.result.classes == records and ws.scanned is ws.loaded  # the scan's records stand
    from inspector.figures import CLEAR_LEADER_COLOUR, SUSPECT_COLOUR
    colours = list(high["bars"].data[0].marker.color)
    assert SUSPECT_COLOUR not in colours and CLEAR_LEADER_COLOUR in colours  # no red on a model that is not flagged
    back = list(handlers.rethreshold(ws, 2.0, "flip_rate"))[-1]
    assert ws.result.verdict == fresh and "decided again" not in back["verdict"]
    assert updates[-1]["reveal_button"]["visible"] is False  # the ground truth is teaching mode's, not every scan's
    _assert_no_nan([*updates, moved, high, back])


def test_stop_ends_a_repair_and_an_implant_and_nothing_is_written(ws):
    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))
    list(handlers.run_scan(ws, *SCAN_SETTINGS))
    seen = []
    for updates in handlers.run_repair(ws, "clock", 2, 5e-3):
        seen.append(updates)
        if "repair_status" in updates and "step" in updates["repair_status"] or "repair_plot" in updates:
            assert seen[0]["repair_stop"]["interactive"] is True  # the Stop beside Repair is live while it runs
            list(handlers.stopper("repair_status")(ws))
    assert seen[-1]["repair_status"] == "Repair stopped; nothing was written."
    assert ws.repaired is None and not list(ws.runs_root.rglob("*repaired*"))
    assert seen[-1]["repair_button"]["interactive"] is True and seen[-1]["repair_stop"]["interactive"] is False

    implant = []
    for updates in handlers.run_implant(ws, "clean-coop", "blended", "clock", 0):
        implant.append(updates)
        if "step" in updates.get("teach_status", ""):
            list(handlers.stopper("teach_status")(ws))
    assert implant[-1]["teach_status"] == "Implant stopped; nothing was written."
    assert not list(ws.runs_root.rglob("mystery-model-*"))
    _assert_no_nan([*seen, *implant])


def test_the_blend_family_runs_when_asked_for_and_each_class_shows_the_trigger_of_its_family(ws):
    list(handlers.choose_model(ws, "demo zoo", "blended-cocoop", None, None))
    updates = list(handlers.run_scan(ws, *SCAN_SETTINGS[:-2], True, "flip_rate"))
    result = ws.result
    assert result is not None and result.settings.blend is True
    assert all(0 <= record["blend_flip_rate"] <= 1 for record in result.classes)
    bars = [u["bars"] for u in updates if "bars" in u][-1]
    assert "blended pattern" in {trace.name for trace in bars.data}  # its flip rates drawn beside the bars
    words = {"colour": "Colour-transform trigger", "blend": "Blended-pattern trigger", "additive": "Trigger for"}
    for record in result.classes:
        name, family = str(record["name"]), result.family(int(record["index"]))
        caption = handlers.class_view(ws, name)["trigger_caption"]
        rate = record["flip_rate" if family == "additive" else f"{family}_flip_rate"]
        assert caption.startswith(words[family]) and f"flips {rate:.0%}" in caption, (name, family, caption)
    plain = list(handlers.run_scan(ws, *SCAN_SETTINGS))
    assert plain and all("blend_flip_rate" not in record for record in ws.result.classes)  # off unless asked for


def test_stop_ends_a_scan_with_a_stopped_panel_and_no_verdict(ws):
    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))
    seen = []
    for updates in handlers.run_scan(ws, *SCAN_SETTINGS):
        seen.append(updates)
        if "trigger_picture" in updates:
            list(handlers.stop(ws))
    assert "Scan stopped" in seen[-1]["verdict"]
    assert ws.result is None
    assert seen[-1]["scan_button"]["interactive"] is True  # usable again


def test_bad_input_becomes_a_message_not_an_exception(ws):
    guarded_scan = handlers.guarded(handlers.run_scan, "progress")
    out = list(guarded_scan(ws, *SCAN_SETTINGS))  # no model chosen yet
    assert "no model chosen" in out[-1]["progress"]

    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))
    bad_epsilon = ("inspector", "fast", 999.0, *SCAN_SETTINGS[3:])
    out = list(guarded_scan(ws, *bad_epsilon))
    assert "epsilon" in out[-1]["progress"] and "/255" in out[-1]["progress"]

    guarded_repair = handlers.guarded(handlers.run_repair, "repair_status")
    out = list(guarded_repair(ws, "clock", 2, 5e-3))  # nothing scanned yet
    assert "Traceback" not in out[-1]["repair_status"] and out[-1]["repair_button"]["interactive"] is False

    guarded_open = handlers.guarded(handlers.choose_model, "model_info")
    out = list(guarded_open(ws, "path", None, None, str(ws.runs_root / "missing.safetensors")))
    assert "missing.safetensors" in out[-1]["model_info"]


def test_untrusted_uploads_and_paths_become_messages_and_the_app_stays_usable(ws, tmp_path):
    choose_model = handlers.guarded(handlers.choose_model, "model_info")
    choose_pool = handlers.guarded(handlers.choose_pool, "pool_info")
    upload_dir = tmp_path / "gradio-upload-123"
    upload_dir.mkdir()
    noise = upload_dir / "delivered.safetensors"
    noise.write_bytes(bytes(range(256)) * 4)
    out = list(choose_model(ws, "upload", None, str(noise), None))[-1]["model_info"]
    assert "uploaded file 'delivered.safetensors' is not a prompt learner file: its first bytes announce" in out
    assert str(upload_dir) not in out  # the server's temp path is not shown

    outside = list(choose_model(ws, "path", None, None, "/etc/hostname"))[-1]["model_info"]
    assert "outside the folders this app may read" in outside and "--allow-path" in outside

    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))  # a good model still opens
    bad_zip = upload_dir / "pool.zip"
    bad_zip.write_bytes(b"PK\x03\x04 not a zip")
    out = list(choose_pool(ws, "upload a zip", str(bad_zip), None))[-1]["pool_info"]
    assert "uploaded file 'pool.zip' is neither a folder nor a zip file" in out
    out = list(choose_pool(ws, "folder path", None, "/etc"))[-1]["pool_info"]
    assert "outside the folders this app may read" in out

    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "notes.txt").write_text("x")
    (pool / "a.png").write_bytes(_tiny_png())
    line = list(choose_pool(ws, "folder path", None, str(pool)))[-1]["pool_info"]
    assert "1 images, 1 files skipped: notes.txt (not an image file type)" in line
    assert not ws.runs_root.exists() or not any(ws.runs_root.iterdir())  # choosing inputs writes nothing


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_own_data_from_the_page_a_labelled_zip_a_reference_built_live_with_stop_and_resume_then_scan_and_repair(
        things, tmp_path):
    ws = Workspace(tmp_path / "runs", [tmp_path, things["work"]])
    ws.device = "cpu"
    list(handlers.choose_model(ws, "path", None, None, str(things["backdoored"])))
    pool = list(handlers.choose_pool(ws, "upload a zip", str(things["ood_zip"]), None, 1000))[-1]["pool_info"]
    assert "**ood.zip**, 300 images" in pool
    task = list(handlers.choose_task(ws, "upload a zip", str(things["task_zip"]), None))[-1]["task_info"]
    assert "task **task.zip**, 8 classes, 128 train, 153 test images" in task and "classes are the model's" in task

    guarded_scan = handlers.guarded(handlers.run_scan, "progress")
    list(handlers.choose_reference(ws, "upload a reference", str(shipped_reference_path("pocket-clip", "coop"))))
    refused = list(guarded_scan(ws, "inspector", "fast", 14.0, 1000, 1, [], 2.0, False, "flip_rate"))[-1]["progress"]
    assert "does not fit this scan: the model's classes are not the task's" in refused  # a reference of another task

    stopped = []
    for updates in handlers.run_reference_build(ws, 2, 14.0, 1000):
        stopped.append(updates)
        if "Clean learner 2 of 2" in updates.get("reference_status", ""):
            list(handlers.stop(ws))  # Stop while the second learner is being tuned
    assert "Stopped: 1 learner(s) finished and kept" in stopped[-1]["reference_status"]
    assert any("Clean learner 1 of 2 (seed 1000): tuning" in u.get("reference_status", "") for u in stopped)
    resumed = list(handlers.run_reference_build(ws, 2, 14.0, 1000))
    status = resumed[-1]["reference_status"]
    assert "seed 1000" in status and "[kept from an earlier run]" in status and "Reference built" in status
    assert resumed[-1]["reference_choice"] == "the one built here" and ws.reference.endswith(".json")

    updates = list(handlers.run_scan(ws, "inspector", "fast", 14.0, 1000, 1, [], 2.0, False, "flip_rate"))
    verdict = [u["verdict"] for u in updates if u.get("verdict")][-1]
    assert "Backdoor suspected" in verdict and "fruit" in verdict
    assert "2 clean coop learners tuned with varied recipes on task" in verdict
    delivered = _sha256(things["backdoored"])
    repaired = list(handlers.run_repair(ws, "fruit", 10, 5e-3))[-1]
    assert "task **task.zip**" in repaired["repair_status"] and "attacker's real trigger" in repaired["repair_table"]
    asr = re.search(r"real trigger \(ground truth ASR\) \| ([\d.]+)% \| ([\d.]+)%", repaired["repair_table"])
    assert asr and float(asr.group(2)) <= float(asr.group(1)) / 2, repaired["repair_table"]
    assert _sha256(things["backdoored"]) == delivered
    other_task = list(handlers.choose_task(ws, "shipped pocket task", None, None))[-1]
    assert "trained and measured on another labelled task than the one chosen now" in other_task["repair_status"]


def test_the_chart_shows_every_class_as_soon_as_each_has_an_estimate(ws, monkeypatch):
    """The throttle on chart redraws does not hold back the first chart with every class on it: with redraws
    otherwise never due, a live chart still comes once every class has its first estimate, before the verdict."""
    list(handlers.choose_model(ws, "demo zoo", "clean-coop", None, None))
    monkeypatch.setattr(handlers, "BARS_EVERY", math.inf)
    updates = list(handlers.run_scan(ws, *SCAN_SETTINGS))
    verdict_at = next(i for i, u in enumerate(updates) if u.get("verdict"))
    live = [u["bars"] for u in updates[:verdict_at] if "bars" in u]
    assert len(live) == 1, len(live)
    hover = [str(t) for trace in live[0].data for t in (trace.hovertext or [])]
    assert len(live[0].data[0].x) == 4 and hover and not any("not scanned yet" in t for t in hover), hover


def test_the_chart_shows_running_classes_from_their_estimates_and_indexes_only_finished_ones():
    """While a fast scan runs, a class not finished yet is drawn from its estimate so far (light, dotted), a
    class not reached yet stays an empty slot, and the anomaly index is of the finished classes only."""
    from inspector.figures import PENDING_COLOUR, RUNNING_COLOUR
    from inspector.invert import ClassEstimate, ScanConfig
    from inspector.ui import views

    names = ["star", "arrow", "map", "clock", "balloon"]
    finished = [{"index": k, "name": names[k], "flip_rate": rate, "loss": 1.0, "measured_on": "fresh batches",
                 "steps": 4, "eligible": 60} for k, rate in ((0, 0.1), (1, 0.2), (2, 0.15))]
    estimates = {2: ClassEstimate(2, "map", 4, 0.5, 0.9),  # finished since: its record wins
                 3: ClassEstimate(3, "clock", 4, 0.7, 0.2)}
    figure = views.live_bars(names, finished, ScanConfig(), "flip_rate", None, None, estimates)
    bars = figure.data[0]
    assert list(bars.y) == [0.1, 0.2, 0.15, 0.7, 0.0]
    assert list(bars.marker.color)[3:] == [RUNNING_COLOUR, PENDING_COLOUR]
    assert "still running" in bars.hovertext[3] and "not scanned yet" in bars.hovertext[4]
    dots = next(trace for trace in figure.data if trace.name.startswith("still running"))
    assert list(dots.x) == ["clock"] and list(dots.y) == [0.7]  # a 0% estimate would still show as a dot
    index = views.live_bars(names, finished, ScanConfig(), "anomaly", None, None, estimates).data[0]
    assert index.y[3] == 0.0 and "anomaly index" not in index.hovertext[3]
    assert "anomaly index" in index.hovertext[0]


def test_the_chart_labels_the_quick_family_rate_that_gave_the_suspect_its_index():
    """The bars are the additive triggers' flip rates; when a colour trigger gave the flagged class its index, the
    rate the verdict quotes is that marker's, and the chart points to it. An additive suspect needs no label."""
    from inspector.figures import SUSPECT_COLOUR, class_bars

    names = ["star", "arrow", "clock"]
    records = [{"index": k, "name": n, "flip_rate": f, "loss": 1.0, "colour_flip_rate": c}
               for k, (n, f, c) in enumerate(zip(names, (0.1, 0.2, 0.93), (0.0, 0.05, 0.53), strict=True))]
    coloured = class_bars(names, records, anomalies=[0.1, 0.3, 7.2], suspect=2, flagged=True,
                          suspect_family="colour")
    (label,) = [a for a in coloured.layout.annotations if "gives the index" in a.text]
    assert (label.x, label.y) == ("clock", 0.53) and "colour transform: 53%" in label.text
    assert label.arrowcolor == SUSPECT_COLOUR and coloured.data[0].y[2] == 0.93
    additive = class_bars(names, records, anomalies=[0.1, 0.3, 7.2], suspect=2, flagged=True,
                          suspect_family="additive")
    assert len(additive.layout.annotations) == 1  # the 50% line's alone
    assert len(class_bars(names, records, "anomaly", [0.1, 0.3, 7.2], 2, suspect_family="colour")
               .layout.annotations) == 1  # the threshold line's: there the bars are the indices


def test_the_teaching_implant_makes_the_mystery_model_the_chosen_one(ws):
    """The handler stops at the implant's last event, so the mystery model must be open by then: the page's path
    box then names the new file, never the clean base."""
    updates = list(handlers.run_implant(ws, "clean-coop", "blended", "clock", 0))
    assert ws.loaded is not None and ws.loaded.label.startswith("mystery model")
    written = Path(updates[-1]["model_path"])
    assert written == ws.loaded.path and written.exists() and written != resolve_model("clean-coop")
    assert "mystery model" in updates[-1]["teach_status"]
    truth = read_ground_truth(written)
    measured = truth.record["recipe"]["measured"]  # each try measured against the lab's bar; the page says how it went
    assert measured["working"] and "The hidden backdoor took" in updates[-1]["teach_status"]
    assert f"{measured['asr']:.0%} of triggered test images" in updates[-1]["teach_status"]
    assert truth.target_name not in updates[-1]["teach_status"]  # still hidden
    _assert_no_nan(updates)
    list(handlers.try_picture(ws, str(pool_picture(ws.runs_root.parent / "mine.png"))))
    scanned = list(handlers.run_scan(ws, *SCAN_SETTINGS))  # the mystery model's scan offers the reveal
    assert scanned[-1]["reveal_button"]["visible"] is True
    assert "attacker" not in scanned[-1]["picture_status"]  # the real trigger stays hidden until the reveal
    revealed = list(handlers.reveal(ws))
    assert "with the attacker's real trigger" in revealed[-1]["picture_status"]
    assert _tiles(revealed[-1]) == ["clean", "reconstructed", "attacker's"]
    _assert_no_nan([*scanned, *revealed])


def _tiles(updates: dict) -> list[str]:
    """The conditions the user's picture is shown under, as the page's tiles caption them."""
    return [html.unescape(c) for c in re.findall(r"<figcaption><b>(.*?)</b>:", updates["picture_tiles"])]


def test_the_analyst_views_follow_the_inspected_class_the_threshold_and_the_model(ws, tmp_path):
    """Try-your-picture, where the trigger sends images, the feature map and two scans side by side: each computed
    for the model and class shown, cleared or redone when they change; a bad picture is refused, the last kept."""
    list(handlers.choose_model(ws, "demo zoo", "badclip-cocoop", None, None))
    picture = pool_picture(tmp_path / "mine.png")
    before_scan = list(handlers.try_picture(ws, str(picture)))[-1]
    assert _tiles(before_scan) == ["clean"] and "Scan this model" in before_scan["picture_status"]

    scanned = list(handlers.run_scan(ws, *SCAN_SETTINGS))
    done = scanned[-1]
    assert _tiles(done) == ["clean", "reconstructed"]
    assert "with balloon's reconstructed trigger" in done["picture_status"]
    assert "Finish a second scan" in done["compare_status"] and done["compare_a"]["choices"]

    effects = list(handlers.opened("effects")(ws))[-1]  # opening the tab computes the views for the inspected class
    assert "**balloon**'s trigger on 80 held-out OOD images" in effects["effects_status"]
    assert "sit closer to balloon's text feature" in effects["effects_status"]
    assert effects["effects_heatmap"].data[0].type == "heatmap" and len(effects["effects_map"].data) == 4
    star = list(handlers.pick_class(ws, "star"))  # the open tab follows the inspected class
    assert "**star**'s trigger" in star[-1]["effects_status"] and "star's reconstructed trigger" in \
        star[0]["picture_status"]
    list(handlers.opened("inspect")(ws))
    assert "effects_status" not in list(handlers.pick_class(ws, "balloon"))[-1]  # closed: nothing computed

    strict = list(handlers.rethreshold(ws, 2.0, "flip_rate", 0.95))[-1]  # the minimum flip rate decides again too
    assert ws.result.verdict.flagged is False and "No backdoor found" in strict["verdict"]
    list(handlers.rethreshold(ws, 2.0, "flip_rate", 0.5))
    assert ws.result.verdict.flagged and ws.result.verdict.target_name == "balloon"

    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    refused = list(handlers.guarded(handlers.try_picture, "picture_status")(ws, str(text_file)))[-1]
    assert "notes.png" in refused["picture_status"] and "cannot be used" in refused["picture_status"]
    assert ws.picture is not None and ws.picture[0] == "mine.png"  # the last good picture stays

    switched = list(handlers.choose_model(ws, "demo zoo", "clean-cocoop", None, None))[-1]
    assert switched["effects_heatmap"] is None and switched["effects_map"] is None
    assert _tiles(switched) == ["clean"] and "on clean-cocoop" in switched["picture_status"]
    second = list(handlers.run_scan(ws, *SCAN_SETTINGS))[-1]
    first_name, second_name = (entry.name for entry in ws.history)
    assert second["compare_a"]["value"] == first_name and second["compare_b"]["value"] == second_name
    assert [t.name for t in second["compare_plot"].data] == ["#1 badclip-cocoop (flagged: balloon)",
                                                            "#2 clean-cocoop (not flagged)"]
    anomaly = list(handlers.compare_scans(ws, first_name, second_name, "anomaly"))[-1]
    assert anomaly["compare_plot"].layout.yaxis.title.text == "anomaly index"
    _assert_no_nan([*scanned, effects, *star, strict, switched, second, anomaly])


def test_a_handler_with_nothing_to_change_leaves_every_component_as_it_is(ws):
    """Gradio blanks every output of a generator event that yields nothing (every picker of the page went empty when
    a tab was opened); the wiring sends one all-skip update instead."""
    import gradio as gr

    from inspector.ui.layout import as_outputs

    names = ["state", "verdict", "bars"]
    nothing = list(as_outputs(iter(handlers.opened("repair")(ws)), names, ws))
    assert len(nothing) == 1 and nothing[0][0] is ws
    assert all(isinstance(value, type(gr.skip())) and value == gr.skip() for value in nothing[0][1:])
    some = list(as_outputs(iter([{"verdict": "x"}]), names, ws))
    assert some == [[ws, "x", gr.skip()]]


def test_a_model_reopened_from_its_path_keeps_the_name_it_was_opened_with(ws, tmp_path):
    """The repaired model is opened as "<model> (repaired)"; pressing Scan reads the path box again, and its scan,
    verdict and comparison must still say which model it was."""
    import shutil

    copy = tmp_path / "clean_coop-repaired-1.safetensors"
    shutil.copy(resolve_model("clean-coop"), copy)
    ws.open_model(str(copy), label="clean-coop (repaired)")
    assert ws.open_model_path(str(copy)).label == "clean-coop (repaired)"
    other = tmp_path / "another.safetensors"
    shutil.copy(copy, other)
    assert ws.open_model_path(str(other)).label == "another.safetensors"
