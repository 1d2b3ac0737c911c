"""The Gradio Blocks page (DESIGN §5): pickers and settings, the live scan, verdict, before/after, repair,
teaching mode. Built in one function; the named API (``/scan``, ``/repair``, ``/implant``) is ui/api.py's.

Engine jobs (scan, repair, implant, reference build) share one queue slot (``concurrency_id="engine"``): one
runs at a time on the device, the others wait their turn. Each job is three chained
events (``_Wiring.job``), so that its live updates carry only the few outputs they change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from inspector.figures import PAGE_FONT_FAMILY
from inspector.invert import METHODS, SCHEDULES, ScanConfig
from inspector.lab.triggers import ATTACKS
from inspector.repair import RepairConfig
from inspector.ui import api, handlers, views
from inspector.ui.stages import JobStages
from inspector.ui.workspace import Workspace, zoo_names

CSS = """
.verdict {border-radius: 10px; padding: 14px 18px; margin: 4px 0;}
.verdict-head {font-size: 1.35em; font-weight: 700; margin-bottom: 4px;}
.verdict.flagged {background: #fde8e8; border: 2px solid #d62728; color: #5c0b0b;}
.verdict.clean {background: #e6f4ea; border: 2px solid #2ca02c; color: #0d3b17;}
.verdict.stopped {background: #eef0f3; border: 2px solid #8c9bab; color: #222;}
.verdict.stale {opacity: .45; filter: grayscale(.7);}
.problem {background: #fff4e5; border: 1px solid #f0a030; border-radius: 8px; padding: 8px 12px; color: #5a3600;}
.trigger-img img {image-rendering: pixelated;}
.probe-tiles {display: flex; gap: 14px; flex-wrap: wrap;}
.probe-tiles figure {margin: 0; text-align: center; font-size: .9em;}
.probe-tiles img {width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #d9dee4;}
/* a job waiting for the one engine slot: Gradio's "queue: 2/3 | 4.1s" at the right of the job's message line */
.job-line {overflow: visible !important; min-height: 1.6em;}
.job-line [data-testid="status-tracker"].minimal {height: 100% !important; top: 0 !important; flex-direction: row;
  align-items: center; justify-content: flex-end;}
.job-line [data-testid="status-tracker"].minimal .progress-text {position: static !important;
  transform: none !important; top: auto !important; margin: 0 !important; font-size: .95em; font-weight: 600;
  color: #8a4b00; background: #fff4e5; border-radius: 6px; padding: 2px 8px;}
"""

# the seconds are the last speed run's (benchmarks/speed-interactive.json), held to it by tests/test_recorded_numbers.py
TEACH_INTRO = ("**Teaching mode.** 1 · Implant a backdoor into a clean demo model: the **mystery model** becomes the "
               "chosen one. 2 · Press **Scan** (top left) and read the verdict. 3 · Come back here and **Reveal the "
               "ground truth**. Each try is measured and, while its backdoor misses the lab's bar, tried again as a "
               "provider would. On 2 CPU cores the default Blended implant took 23 s into clean-coop (two tries) and "
               "70 s into clean-cocoop (benchmarks/speed-interactive.md).")

SCHEDULE_INFO = ("fast: short runs for every class, full runs for the most suspicious; faithful: a full epoch for "
                 "every class (published), 4.65x the time; same verdict on 234 of 243 models "
                 "(benchmarks/speed-schedules.md)")

# A picture's corner buttons: no "share to Hugging Face", which an offline workshop cannot reach and whose icon
# would cover the end of a trigger picture's label.
OFFLINE_BUTTONS = ["download", "fullscreen"]


def theme() -> gr.themes.Base:
    """Gradio's default theme, its fonts read from whole font files only.

    The semibold Source Sans Pro and IBM Plex Mono files Gradio ships hold a few Latin letters each (A and B, or a
    and b) beside some Cyrillic, so bold text mixed two typefaces: a flagged verdict's "Backdoor" drew its B in one
    font and the rest in the browser's fallback. Regular and bold are whole files; semibold text then takes the bold
    face."""
    whole = (400, 700)
    return gr.themes.Default(
        font=(gr.themes.LocalFont(PAGE_FONT_FAMILY, weights=whole), "ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=whole), "ui-monospace", "Consolas", "monospace"))


@dataclass
class AppSettings:
    """Where the app may read and write, and on which device the engine runs."""

    runs_root: Path = Path("runs")
    allowed_roots: list[Path] = field(default_factory=list)
    device: str | None = None


def build_app(settings: AppSettings | None = None) -> gr.Blocks:
    settings = settings or AppSettings()
    runs_root = settings.runs_root.resolve()
    roots = [runs_root, *(p.resolve() for p in settings.allowed_roots)]
    sessions: dict[str, Workspace] = {}

    def new_workspace(request: gr.Request) -> Workspace:
        ws = Workspace(runs_root=runs_root, allowed_roots=roots, device=settings.device)
        sessions[request.session_hash or ""] = ws
        return ws

    def closed_tab(request: gr.Request) -> None:
        """A closed tab stops its running job and lets its memory go."""
        ws = sessions.pop(request.session_hash or "", None)
        if ws is not None:
            ws.stop.set()

    with gr.Blocks(title="inspector: backdoor scan for prompt-tuned CLIP") as app:
        state = gr.State(None)
        c: dict[str, Any] = {"state": state}
        gr.Markdown("## inspector · is there a hidden trigger in this prompt-tuned CLIP model?\nFor each class, "
                    "*inspector* reconstructs the smallest image-wide trigger that sends unrelated (OOD) images to "
                    "it; a backdoor's target class stands out: its trigger flips far more images.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                gr.Markdown("**1 · Model and OOD pool**")
                c["model_source"] = gr.Radio(["demo zoo", "upload", "path"], value="demo zoo", label="Model from",
                                             elem_id="model-source")
                names = zoo_names()
                c["zoo_model"] = gr.Dropdown(names, value=_first_backdoored(names), label="Demo zoo model",
                                               elem_id="zoo-model")
                c["model_upload"] = gr.File(label="Prompt learner (.safetensors)", file_types=[".safetensors"],
                                            visible=False, elem_id="model-upload")
                c["model_path"] = gr.Textbox(label="Model file path", visible=False,
                                             placeholder="runs/…/model.safetensors")
                c["model_info"] = gr.Markdown(elem_id="model-info")
                c["pool_source"] = gr.Radio(["shipped OOD pool", "upload a zip", "folder path"],
                                            value="shipped OOD pool", label="OOD pool", elem_id="pool-source")
                c["pool_upload"] = gr.File(label="Zip of images", file_types=[".zip"], visible=False,
                                           elem_id="pool-upload")
                c["pool_folder"] = gr.Textbox(label="Image folder path", visible=False)
                c["pool_info"] = gr.Markdown("OOD pool: **shipped**, 1,200 unlabelled images", elem_id="pool-info")
                with gr.Accordion("Your own data: labelled task and clean reference", open=False,
                                  elem_id="own-data"):
                    gr.Markdown("Repair and the clean reference need the **labelled task** the model was tuned on: "
                                "a zip or folder `T/train/<class>/…` and `T/test/<class>/…` (folder names are the "
                                "class names; `T/classes.txt` gives their order). The **clean reference** is what "
                                "a scan finds in clean learners you tune yourself on that task: classes prompt "
                                "tuning makes easy to reach then do not pass for a backdoor.")
                    c["task_source"] = gr.Radio(["shipped pocket task", "upload a zip", "folder path"],
                                                value="shipped pocket task", label="Labelled task",
                                                elem_id="task-source")
                    c["task_upload"] = gr.File(label="Zip of the labelled task", file_types=[".zip"], visible=False,
                                               elem_id="task-upload")
                    c["task_folder"] = gr.Textbox(label="Labelled task folder path", visible=False)
                    c["task_info"] = gr.Markdown("Labelled task: the shipped pocket task", elem_id="task-info")
                    c["reference_choice"] = gr.Radio(list(handlers.REFERENCE_CHOICES),
                                                     value="auto (the shipped one when it fits)",
                                                     label="Clean reference", elem_id="reference-choice")
                    c["reference_upload"] = gr.File(label="Reference (.json from `reference build`)",
                                                    file_types=[".json"], visible=False, elem_id="reference-upload")
                    c["reference_info"] = gr.Markdown(elem_id="reference-info")
                    with gr.Row():
                        c["reference_learners"] = gr.Slider(1, 8, value=6, step=1, label="Clean learners",
                                                            info="each is tuned and scanned: about a minute for "
                                                                 "CoOp on a small task, several for CoCoOp")
                    with gr.Row():
                        c["reference_button"] = gr.Button("Build reference", elem_id="reference-button")
                        c["reference_stop"] = gr.Button("Stop", variant="stop", interactive=False,
                                                        elem_id="reference-stop")
                    c["reference_status"] = gr.Markdown(elem_id="reference-status", elem_classes="job-line")
                with gr.Accordion("Scan settings", open=False):
                    c["method"] = gr.Radio(list(METHODS), value="inspector", label="Method",
                                           info="inspector: additive trigger; baselines: neural-cleanse (mask + "
                                                "pattern), pixel-backdoor (positive + negative pattern)")
                    c["epsilon"] = gr.Slider(1, 32, value=14, step=0.5, label="ε (trigger bound, /255)",
                                             info="default: 4/255 at 224 px, scaled to the model's input size")
                    c["pool_size"] = gr.Slider(64, 1200, value=1000, step=16, label="OOD images used",
                                               info="80 % fit the trigger, 20 % measure its flip rate")
                    c["schedule"] = gr.Radio(list(SCHEDULES), value=ScanConfig.schedule, label="Schedule",
                                             info=SCHEDULE_INFO)
                    c["epochs"] = gr.Slider(1, 5, value=1, step=1, label="Epochs per class (faithful schedule)")
                    c["classes"] = gr.Dropdown([], multiselect=True, allow_custom_value=True,  # checked by the engine
                                                label="Candidate classes (empty: all)")
                    c["threshold"] = gr.Slider(0.5, 10, value=2, step=0.1, label="Anomaly threshold",
                                               info="moved on a finished scan, it decides again at once",
                                               elem_id="threshold")
                    c["min_flip"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Minimum flip rate (inspector method)",
                                              info="a class is flagged only if its trigger flips at least this share "
                                                   "of the held-out OOD images; re-decides at once too",
                                              elem_id="min-flip")
                    c["blend"] = gr.Checkbox(False, label="Also look for a blended picture (blend family)",
                                             info="a pattern mixed into the whole image, as Blended backdoors do; "
                                                  "off by default: some clean models' blends reach a class as "
                                                  "often as a backdoor's (benchmarks/blend_choice.md)")
                with gr.Row():
                    c["scan_button"] = gr.Button("Scan", variant="primary", elem_id="scan-button")
                    c["stop_button"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-button")
            with gr.Column(scale=2):
                c["result_stamp"] = gr.HTML(elem_id="result-stamp")
                c["verdict"] = gr.HTML(elem_id="verdict")
                c["progress"] = gr.Markdown(elem_id="progress", elem_classes="job-line")
                with gr.Row(equal_height=True):
                    with gr.Column(scale=1, min_width=200):
                        c["trigger_picture"] = gr.Image(label="Trigger (amplified)", type="pil", height=170,
                                                        width=170, buttons=OFFLINE_BUTTONS, interactive=False,
                                                        elem_id="trigger-picture", format="png",
                                                        elem_classes="trigger-img")
                        c["trigger_true"] = gr.Image(label="Trigger (true scale)", type="pil", height=170, width=170,
                                                     buttons=OFFLINE_BUTTONS,
                                                     interactive=False, elem_id="trigger-true", format="png",
                                                     elem_classes="trigger-img")
                    with gr.Column(scale=3):
                        c["bar_view"] = gr.Radio([("flip rate", "flip_rate"), ("anomaly index", "anomaly")],
                                                 value="flip_rate", label="Chart", elem_id="bar-view")
                        c["bars"] = gr.Plot(label="Per class", show_label=False, elem_id="bars")
                c["trigger_caption"] = gr.Markdown(elem_id="trigger-caption")
        tabs: dict[str, Any] = {}
        c["class_picker"] = gr.Dropdown([], label="Inspect a class: its trigger above, and in each tab below",
                                        elem_id="class-picker")
        with gr.Tabs(elem_id="steps") as c["steps"]:
            with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect") as tabs["inspect"]:
                gr.Markdown("**Before / after**: held-out OOD images, clean (top) and with the reconstructed "
                            "trigger (bottom), with the model's prediction under each.")
                c["clean_examples"] = gr.Gallery(label="clean: the model's prediction", columns=8, height=175,
                                                 object_fit="contain", elem_id="clean-examples",
                                                 buttons=OFFLINE_BUTTONS)
                c["triggered_examples"] = gr.Gallery(label="with the trigger: the model's prediction (→ changed)",
                                                     columns=8, height=175, object_fit="contain",
                                                     elem_id="triggered-examples", buttons=OFFLINE_BUTTONS)
                c["report_files"] = gr.File(label="Report (HTML, JSON, trigger tensors)", file_count="multiple",
                                            interactive=False)
            with gr.Tab("Where it sends images", id="effects", elem_id="tab-effects") as tabs["effects"]:
                gr.Markdown("What the inspected class's reconstructed trigger does to the scan's **held-out OOD "
                            "images**: which class each one is predicted as, clean (rows) and with the trigger "
                            "(columns); and their image features, clean and triggered, with each class's text "
                            "feature, on the two axes along which those images vary most. A backdoor's trigger "
                            "sends nearly every row to one column and pulls the images onto its target.")
                c["effects_status"] = gr.Markdown(elem_id="effects-status")
                with gr.Row(equal_height=True):
                    c["effects_heatmap"] = gr.Plot(show_label=False, elem_id="effects-heatmap")
                    c["effects_map"] = gr.Plot(show_label=False, elem_id="effects-map")
            with gr.Tab("Try your image", id="picture", elem_id="tab-picture") as tabs["picture"]:
                with gr.Row():
                    with gr.Column(scale=1, min_width=240):
                        # a file, not gr.Image: the engine's checks read it, not the browser's or Gradio's decoder
                        c["picture_upload"] = gr.File(label="Your picture (any photo or drawing)",
                                                      file_types=["image"], elem_id="picture-upload")
                        gr.Markdown("The model's top classes for your picture without a trigger and with the "
                                    "inspected class's reconstructed trigger (and, once revealed in the teaching "
                                    "mode, the attacker's real one). The picture stays in this browser's session; "
                                    "nothing is saved.")
                    with gr.Column(scale=3):
                        c["picture_status"] = gr.Markdown(elem_id="picture-status")
                        c["picture_tiles"] = gr.HTML(elem_id="picture-tiles")
                        c["picture_plot"] = gr.Plot(show_label=False, elem_id="picture-plot")
            with gr.Tab("Compare scans", id="compare", elem_id="tab-compare") as tabs["compare"]:
                gr.Markdown("Two finished scans of this session side by side, class by class: the delivered model "
                            "and its repaired copy, or any two models.")
                with gr.Row():
                    c["compare_a"] = gr.Dropdown([], label="Scan A", elem_id="compare-a")
                    c["compare_b"] = gr.Dropdown([], label="Scan B", elem_id="compare-b")
                    c["compare_view"] = gr.Radio([("flip rate", "flip_rate"), ("anomaly index", "anomaly")],
                                                 value="flip_rate", label="Compare", elem_id="compare-view")
                c["compare_status"] = gr.Markdown(elem_id="compare-status")
                c["compare_plot"] = gr.Plot(show_label=False, elem_id="compare-plot")
            with gr.Tab("Repair", id="repair", elem_id="tab-repair") as tabs["repair"]:
                gr.Markdown("Fine-tune the prompt learner on the task's labelled images (with their true labels) "
                            "and on copies stamped with the class's reconstructed triggers (every family the scan "
                            "found), taught that they are **not** that class, so the trigger stops working. The "
                            "result is a new file; the delivered model is never changed.")
                defaults = RepairConfig()
                with gr.Row():
                    c["repair_target"] = gr.Dropdown([], label="Repair against the trigger of")
                    c["repair_epochs"] = gr.Slider(1, 60, value=defaults.epochs, step=1, label="Epochs",
                                                   info=f"{defaults.epochs}: the measured recipe; 10 for a quick "
                                                        "demo (half the steps, slightly weaker)",
                                                   elem_id="repair-epochs")
                    c["repair_lr"] = gr.Number(value=defaults.lr, label="Learning rate")
                with gr.Row():
                    c["repair_button"] = gr.Button("Repair", variant="primary", interactive=False,
                                                   elem_id="repair-button")
                    c["repair_stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="repair-stop")
                    c["load_repaired"] = gr.Button("Scan the repaired model next", visible=False)
                c["repair_status"] = gr.Markdown(elem_id="repair-status", elem_classes="job-line")
                c["repair_plot"] = gr.Plot(label="Repair curves", elem_id="repair-plot")
                c["repair_table"] = gr.Markdown(elem_id="repair-table")
                c["repaired_file"] = gr.File(label="Repaired prompt learner", interactive=False,
                                             elem_id="repaired-file")
            with gr.Tab("Teach", id="teach", elem_id="tab-teach") as tabs["teach"]:
                gr.Markdown(TEACH_INTRO)
                with gr.Row():
                    c["teach_base"] = gr.Dropdown([n for n in names if n.startswith("clean")], value="clean-coop",
                                                  label="Clean model")
                    c["teach_attack"] = gr.Dropdown(list(ATTACKS), value="blended", label="Attack")
                    c["teach_target"] = gr.Dropdown([handlers.SURPRISE], value=handlers.SURPRISE,
                                                    label="Target class")
                    c["teach_seed"] = gr.Number(value=0, precision=0, label="Seed")
                with gr.Row():
                    c["implant_button"] = gr.Button("Implant", variant="primary", elem_id="implant-button")
                    c["implant_stop"] = gr.Button("Stop", variant="stop", interactive=False, elem_id="implant-stop")
                    c["reveal_button"] = gr.Button("Reveal the ground truth", visible=False, elem_id="reveal-button")
                c["teach_status"] = gr.Markdown(elem_id="teach-status", elem_classes="job-line")
                c["truth"] = gr.HTML(elem_id="truth")

        wire = _Wiring(c, new_workspace)
        model_inputs = ["model_source", "zoo_model", "model_upload", "model_path"]
        for name in ("zoo_model", "model_upload"):
            wire.on(c[name].change, handlers.choose_model, model_inputs, "model_info", api_name=False)
        wire.on(c["model_path"].submit, handlers.choose_model, model_inputs, "model_info", api_name=False)
        c["model_source"].change(_show_model_source, c["model_source"],
                                 [c["zoo_model"], c["model_upload"], c["model_path"]], api_name=False)
        wire.on(c["model_source"].input, handlers.choose_model, model_inputs, "model_info", api_name=False)
        pool_inputs = ["pool_source", "pool_upload", "pool_folder", "pool_size"]
        c["pool_source"].change(_show_pool_source, c["pool_source"], [c["pool_upload"], c["pool_folder"]],
                                api_name=False)
        wire.on(c["pool_upload"].change, handlers.choose_pool, pool_inputs, "pool_info", api_name=False)
        wire.on(c["pool_folder"].submit, handlers.choose_pool, pool_inputs, "pool_info", api_name=False)
        wire.on(c["pool_source"].change, handlers.choose_pool, pool_inputs, "pool_info", api_name=False)
        task_inputs = ["task_source", "task_upload", "task_folder"]
        c["task_source"].change(_show_pool_source, c["task_source"], [c["task_upload"], c["task_folder"]],
                                api_name=False)
        wire.on(c["task_upload"].change, handlers.choose_task, task_inputs, "task_info", api_name=False)
        wire.on(c["task_folder"].submit, handlers.choose_task, task_inputs, "task_info", api_name=False)
        wire.on(c["task_source"].change, handlers.choose_task, task_inputs, "task_info", api_name=False)
        reference_inputs = ["reference_choice", "reference_upload"]
        c["reference_choice"].change(lambda choice: gr.update(visible=choice == "upload a reference"),
                                     c["reference_choice"], c["reference_upload"], api_name=False)
        wire.on(c["reference_choice"].input, handlers.choose_reference, reference_inputs, "reference_info",
                api_name=False)
        wire.on(c["reference_upload"].change, handlers.choose_reference, reference_inputs, "reference_info",
                api_name=False)
        wire.job(c["reference_button"].click, _build_reference_with_inputs,
                 [*model_inputs, *pool_inputs, *task_inputs, "reference_learners", "epsilon"], "reference_status",
                 api_name="page_build_reference", live=[])
        pickers = [*model_inputs, *pool_inputs[:3]]  # the pool size comes with the scan settings
        wire.job(c["scan_button"].click, _scan_with_inputs,
                 [*pickers, "method", "schedule", "epsilon", "pool_size", "epochs", "classes", "threshold", "blend",
                  "bar_view", "min_flip"], "progress", api_name="page_scan",
                 live=["reference_info", "trigger_picture", "trigger_true", "trigger_caption", "bars", "verdict",
                       "steps"])
        scan_settings = ["method", "schedule", "epsilon", "pool_size", "epochs", "classes", "blend"]
        for name in scan_settings:
            wire.on(c[name].input, handlers.settings_changed, scan_settings, "progress", api_name=False)
        for name in ("threshold", "min_flip"):
            wire.on(c[name].change, handlers.rethreshold, ["threshold", "bar_view", "min_flip"], "progress",
                    api_name=False)
        wire.on(c["stop_button"].click, handlers.stop, [], "progress", api_name="page_stop")
        for button, status in (("reference_stop", "reference_status"), ("repair_stop", "repair_status"),
                               ("implant_stop", "teach_status")):
            wire.on(c[button].click, handlers.stopper(status), [], status, api_name=False)
        wire.on(c["bar_view"].change, handlers.redraw_bars, ["bar_view"], "progress", api_name=False)
        wire.on(c["class_picker"].input, handlers.pick_class, ["class_picker"], "progress",
                api_name="page_inspect_class")
        wire.on(c["reveal_button"].click, handlers.reveal, [], "truth", api_name="page_reveal")
        for view, tab in tabs.items():
            wire.on(tab.select, handlers.opened(view), [], "effects_status" if view == "effects" else "progress",
                    api_name=False)
        wire.on(c["picture_upload"].change, handlers.try_picture, ["picture_upload"], "picture_status",
                api_name=False)
        for name in ("compare_a", "compare_b", "compare_view"):
            wire.on(c[name].input, handlers.compare_scans, ["compare_a", "compare_b", "compare_view"],
                    "compare_status", api_name=False)
        wire.job(c["repair_button"].click, _repair_with_inputs,
                 [*task_inputs, "repair_target", "repair_epochs", "repair_lr"], "repair_status", api_name="page_repair",
                 live=["repair_plot"])
        wire.on(c["load_repaired"].click, handlers.load_repaired, [], "repair_status", api_name=False)
        wire.job(c["implant_button"].click, handlers.run_implant,
                 ["teach_base", "teach_attack", "teach_target", "teach_seed"], "teach_status", api_name="page_implant",
                 live=[])
        api.endpoints(lambda: Workspace(runs_root=runs_root, allowed_roots=roots, device=settings.device))
        app.load(_on_load(new_workspace), None, [state, *(c[n] for n in _LOAD_OUTPUTS)], api_name=False)
        app.unload(closed_tab)
    views.prepare_charts()
    return app


def _scan_with_inputs(ws: Workspace, source: str, zoo_name: str, upload: str | None, path: str | None,
                      pool_source: str, pool_upload: str | None, pool_folder: str | None, method: str, schedule: str,
                      epsilon: float, pool_size: float, *settings: Any) -> Iterator[handlers.Updates]:
    """Scan what the pickers show right now (a change event may still be on its way)."""
    for updates in handlers.choose_model(ws, source, zoo_name, upload, path):
        yield {key: updates[key] for key in ("model_info", "state")}
    yield from handlers.choose_pool(ws, pool_source, pool_upload, pool_folder, pool_size, require=True)
    yield from handlers.run_scan(ws, method, schedule, epsilon, pool_size, *settings)


def _repair_with_inputs(ws: Workspace, task_source: str, task_upload: str | None, task_folder: str | None,
                        *settings: Any) -> Iterator[handlers.Updates]:
    """Repair on the labelled task the picker shows right now."""
    yield from handlers.choose_task(ws, task_source, task_upload, task_folder, require=True)
    yield from handlers.run_repair(ws, *settings)


def _build_reference_with_inputs(ws: Workspace, source: str, zoo_name: str, upload: str | None, path: str | None,
                                 pool_source: str, pool_upload: str | None, pool_folder: str | None,
                                 pool_size: float, task_source: str, task_upload: str | None,
                                 task_folder: str | None, learners: float,
                                 epsilon: float) -> Iterator[handlers.Updates]:
    """Build the reference for what the pickers show right now: the model's kind, the task and the pool."""
    for updates in handlers.choose_model(ws, source, zoo_name, upload, path):
        yield {key: updates[key] for key in ("model_info", "state")}
    yield from handlers.choose_pool(ws, pool_source, pool_upload, pool_folder, pool_size, require=True)
    yield from handlers.choose_task(ws, task_source, task_upload, task_folder, require=True)
    yield from handlers.run_reference_build(ws, learners, epsilon, pool_size)


_LOAD_OUTPUTS = ["model_info", "classes", "repair_target", "teach_target", "epsilon", "bars", "task_info",
                 "reference_info"]


def _on_load(new_workspace: Callable[[gr.Request], Workspace]) -> Callable[..., list[Any]]:
    def load(request: gr.Request) -> list[Any]:
        ws = new_workspace(request)
        names = zoo_names()
        try:
            ws.open_model(_first_backdoored(names))
            updates = handlers.model_updates(ws)
            return [ws, *(updates[n] for n in _LOAD_OUTPUTS)]
        except Exception as exc:  # the page must still come up
            logging.getLogger("inspector.ui").exception("loading the default model failed")
            return [ws, handlers.problem(str(exc)), *(gr.skip() for _ in _LOAD_OUTPUTS[1:])]

    return load


def _first_backdoored(names: list[str]) -> str | None:
    """The app opens on a backdoored demo model, so the first Scan shows a detection."""
    for name in names:
        if not name.startswith("clean"):
            return name
    return names[0] if names else None


def _show_model_source(source: str) -> list[Any]:
    return [gr.update(visible=source == "demo zoo"), gr.update(visible=source == "upload"),
            gr.update(visible=source == "path")]


def _show_pool_source(source: str) -> list[Any]:
    """The upload box or the path box of a pool or task picker, whichever the radio asks for."""
    return [gr.update(visible=source == "upload a zip"), gr.update(visible=source == "folder path")]


def as_outputs(updates: Iterator[handlers.Updates], names: list[str], ws: Workspace | None) -> Iterator[list[Any]]:
    """Each non-empty ``{name: value}`` dict as a value per output, the others skipped; at least one list, since
    Gradio blanks every output of a generator event that yields nothing."""
    sent = False
    for update in updates:
        if not update:
            continue
        sent = True
        yield [update.get(n, ws if n == "state" else gr.skip()) for n in names]
    if not sent:
        yield [ws if n == "state" else gr.skip() for n in names]


def _kwargs(api_name: str | bool, engine: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"concurrency_id": "engine", "concurrency_limit": 1} if engine else \
        {"concurrency_limit": None}
    if api_name:  # the page's own events: callable by position, kept out of the documented API (ui/api.py)
        kwargs["api_name"], kwargs["api_visibility"] = api_name, "undocumented"
    else:
        kwargs["api_visibility"] = "private"
    return kwargs


class _Wiring:
    """Connects a handler that yields {name: value} dicts to the components of those names."""

    def __init__(self, components: dict[str, Any], new_workspace: Callable[[gr.Request], Workspace]) -> None:
        self.c, self.new_workspace = components, new_workspace
        self.outputs = list(components)

    def on(self, listener: Callable[..., Any], fn: Callable[..., Iterator[handlers.Updates]], inputs: list[str],
           message_to: str, api_name: str | bool) -> Any:
        names = self.outputs
        safe = handlers.guarded(fn, message_to)

        def run(request: gr.Request, ws: Workspace | None, *args: Any) -> Iterator[list[Any]]:
            ws = ws or self.new_workspace(request)
            yield from as_outputs(safe(ws, *args), names, ws)

        run.__name__ = fn.__name__
        return listener(run, [self.c["state"], *(self.c[n] for n in inputs)], [self.c[n] for n in names],
                        show_progress="hidden", **_kwargs(api_name, False))

    def job(self, listener: Callable[..., Any], fn: Callable[..., Iterator[handlers.Updates]], inputs: list[str],
            message_to: str, api_name: str, live: list[str]) -> Any:
        """An engine job as three chained events (ui/stages.py): its start on every output, the engine's stream in
        the one engine slot on ``live`` (with the message line and the job buttons), what that kept back on every
        output. Called by a client, they are ``api_name``, ``api_name``_live and ``api_name``_end in turn."""
        names = self.outputs
        live_names = list(dict.fromkeys([message_to, *live, *handlers.JOB_BUTTONS, *handlers.STOP_BUTTONS,
                                         "repair_button"]))
        safe = handlers.guarded(fn, message_to)

        def start(request: gr.Request, ws: Workspace | None, *args: Any) -> Iterator[list[Any]]:
            ws = ws or self.new_workspace(request)
            if ws.job is not None:
                ws.job.close()
            ws.job = JobStages(safe(ws, *args))
            yield from as_outputs(ws.job.start(), names, ws)

        def stream(ws: Workspace | None) -> Iterator[list[Any]]:
            yield from as_outputs(ws.job.live(live_names) if ws and ws.job else iter(()), live_names, ws)

        def end(ws: Workspace | None) -> Iterator[list[Any]]:
            job = ws.job if ws else None
            if ws is not None:
                ws.job = None
            yield from as_outputs(job.end() if job else iter(()), names, ws)

        start.__name__, stream.__name__, end.__name__ = fn.__name__, f"{fn.__name__}_live", f"{fn.__name__}_end"
        state = self.c["state"]
        first = listener(start, [state, *(self.c[n] for n in inputs)], [self.c[n] for n in names],
                         show_progress="hidden", **_kwargs(api_name, False))
        second = first.then(stream, [state], [self.c[n] for n in live_names], show_progress="minimal",
                            show_progress_on=self.c[message_to], **_kwargs(f"{api_name}_live", True))
        return second.then(end, [state], [self.c[n] for n in names], show_progress="hidden",
                           **_kwargs(f"{api_name}_end", False))
