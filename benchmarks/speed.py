"""Speed of the fast schedule against the faithful one (issue 6), measured in one run on this machine.

    .venv/bin/python benchmarks/speed.py [--zoos benchmarks/zoos/dev,...] [--threads 2] [--faithful-missing skip|run]
        [--parts schedules,interactive]

1. Schedules. Every demo-zoo model is scanned with both schedules, one after the other in this process:
   image-encoder passes, wall time, verdict and target. Every zoo model's two verdicts come from detection.py's
   cached scans (a missing faithful scan is run and cached with ``--faithful-missing run``), decided with the
   shipped reference and rule; one cached faithful scan per kind and zoo is made again from scratch here, to
   check what the cache stands for (``recheck``).
2. Memory, each in a process of its own, read from the kernel (peak resident set): a default CLI scan
   of every demo model; scans of 5, 10 and 20 candidate classes; and the app serving one scan
   (started as ``python app.py``, the scan driven through its API with gradio_client).

3. Interactive use (issue 20), each timed as a user meets it, in this run: the default CLI scan of each demo model
   as a whole process (start to exit; the same processes as the memory figures); the app serving the default scan
   of a CoCoOp and a CoOp demo model through its API (gradio_client): whole scan, first trigger picture, first
   chart on which every candidate class has a bar or an estimate, against the CLI's time for the same model; the
   CLI's default repair of the CoCoOp model against that CLI scan's report; the teaching mode's implant in the app
   for a CoOp and a CoCoOp base, with the mystery model measured afterwards against the lab's bar.

Writes benchmarks/speed.md and benchmarks/speed.json (``--parts`` with some of them: speed-<parts>.md / .json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.data import load_shipped_pool  # noqa: E402
from inspector.detect import QUICK_FAMILIES  # noqa: E402
from inspector.invert import ScanConfig, run_scan  # noqa: E402
from inspector.lab.truth import read_ground_truth  # noqa: E402
from inspector.prompts import open_model  # noqa: E402
from inspector.reference import Reference, reference_for, shipped_reference_path  # noqa: E402
from inspector.zoo import list_zoo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("schedules", "interactive")
DEFAULT_ZOOS = ",".join(f"benchmarks/zoos/{z}" for z in ("dev", "test", "test2", "test3", "test4"))
APP_MODELS = ("badclip-cocoop", "clean-coop")  # the app's default-scan timings: a CoCoOp and a CoOp demo model
PAIRS = 2  # then a CLI scan right before each app scan, twice per model: the ratio side by side on a noisy machine
# the teaching mode's implants (base, attack, target, seed): the page's defaults (a hidden target drawn from the seed)
TEACHING = tuple((base, "blended", "surprise me (hidden)", 0) for base in ("clean-coop", "clean-cocoop"))


def scan_row(path: Path, schedule: str, pool: torch.Tensor) -> dict[str, Any]:
    """One scan as the CLI runs it by default: with the shipped clean reference when it fits."""
    model = open_model(path, device="cpu")
    config = ScanConfig(schedule=schedule)
    reference, _ = reference_for(model, config, load_shipped_pool())
    started = time.perf_counter()
    result = run_scan(model, pool, replace(config, reference=reference))
    seconds = time.perf_counter() - started
    v = result.verdict
    return {"schedule": schedule, "seconds": round(seconds, 2), "image_passes": result.image_passes,
            "steps": sum(c["steps"] for c in result.classes), "flagged": v.flagged, "target": v.target_name,
            "suspect": v.suspect_name, "max_anomaly": v.max_anomaly,
            "family_flip_rates": {c["name"]: [c[f"{family}_flip_rate"] for family in QUICK_FAMILIES
                                              if f"{family}_flip_rate" in c] for c in result.classes}}


def cli_process(args: list[str], threads: int, tree: Path = ROOT) -> dict[str, Any]:
    """``python -m inspector <args> --json`` in a fresh process, run from the checkout ``tree``: wall time start to
    exit, peak resident memory and the JSON it printed."""
    code = ("import json, resource, sys; from inspector.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args, "--json"], cwd=tree, capture_output=True, text=True,
                          env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    *printed, peak = done.stdout.strip().splitlines()
    return {"seconds": round(seconds, 2), "peak_gib": round(int(peak.split()[1]) / 2**20, 2),
            "json": json.loads("\n".join(printed))}


def cli_scan(model: str, classes: str | None, threads: int, out: Path) -> dict[str, Any]:
    """One default CLI scan as a whole process: wall time, peak memory, verdict."""
    args = ["scan", model, "--out", str(out)] + (["--classes", classes] if classes else [])
    run = cli_process(args, threads)
    summary = run.pop("json")
    return {**run, "flagged": summary["flagged"], "target": summary["target"], "report": summary["report"]}


@contextlib.contextmanager
def app_process(threads: int, runs: Path) -> Iterator[tuple[Any, int]]:
    """``python app.py`` on a free loopback port: (gradio_client.Client, pid) until the block ends."""
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs", str(runs)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):
            try:
                client = Client(f"http://127.0.0.1:{port}", verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        else:
            raise SystemExit("the app did not start within 2 minutes")
        yield client, app.pid
    finally:
        app.terminate()
        app.wait(timeout=30)


def peak_gib_of(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 2**20, 2)


def _is_picture(value: Any) -> bool:
    """A streamed image output (the page's scan event returns every component of the page, positionally): a dict
    with its address, or the local file gradio_client downloaded it to."""
    if isinstance(value, str):
        return value.lower().endswith((".png", ".webp", ".jpg", ".jpeg"))
    return isinstance(value, dict) and bool(value.get("url") or value.get("path")) and "plot" not in value


def _is_chart(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.get("plot"))


def _every_class_drawn(plot: Any) -> bool:
    """Whether a streamed chart has a bar or an estimate for every class it lists (none "not scanned yet")."""
    if not isinstance(plot, dict) or not plot.get("plot"):
        return False
    figure = json.loads(plot["plot"])
    texts = [t for trace in figure.get("data", []) for t in (trace.get("hovertext") or [])]
    return bool(texts) and not any("not scanned yet" in str(t) for t in texts)


def page_job(client: Any, api_name: str, inputs: list[Any],
             watch: Callable[[list[Any], float], None] | None = None) -> tuple[list[list[Any]], float]:
    """A job of the page as the browser runs it (layout._Wiring.job): its start, its live stream and its end, the
    three events in turn in one session; ``watch`` sees every update with its seconds since the request. Returns
    every update and the seconds from the request to the end's last one."""
    started = time.perf_counter()
    updates: list[list[Any]] = []
    for stage, args in ((api_name, inputs), (f"{api_name}_live", []), (f"{api_name}_end", [])):
        job = client.submit(*args, api_name=f"/{stage}")
        seen = 0
        while True:
            done = job.done()
            outputs = job.outputs()
            for values in outputs[seen:]:
                updates.append(list(values))
                if watch is not None:
                    watch(list(values), time.perf_counter() - started)
            seen = len(outputs)
            if done:
                break
            time.sleep(0.02)
    return updates, time.perf_counter() - started


def app_scan(client: Any, model: str) -> dict[str, Any]:
    """The app's default scan of a demo model through the page's Scan events, streamed: total wall time, the first
    trigger picture and the first chart with every class drawn, each in seconds after the request was sent."""
    inputs = ["demo zoo", model, None, "", "shipped OOD pool", None, "", "inspector", ScanConfig.schedule, 14.0,
              1000, 1, [], 2.0, False, "flip_rate", 0.5]
    seen: dict[str, float] = {}

    def watch(values: list[Any], now: float) -> None:
        if "picture" not in seen and any(_is_picture(v) for v in values):
            seen["picture"] = now
        if "every" not in seen and any(_is_chart(v) and _every_class_drawn(v) for v in values):
            seen["every"] = now

    updates, seconds = page_job(client, "page_scan", inputs, watch)  # the page's own events: what a user watches
    if not any(isinstance(v, str) and v.startswith("Scan finished") for values in updates for v in values):
        raise SystemExit(f"the app's scan of {model} did not finish: {updates[-1:]}")
    return {"model": model, "seconds": round(seconds, 2), "first_picture_s": _round(seen.get("picture")),
            "every_class_s": _round(seen.get("every")), "updates": len(updates)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def app_implant(client: Any, base: str, attack: str, target: str, seed: int, threads: int) -> dict[str, Any]:
    """The teaching mode's implant through the page's Implant event, timed; then the mystery model measured against
    the lab's bar (the app does not measure it, to stay quick)."""
    from inspector.lab.implant import is_working

    updates, seconds = page_job(client, "page_implant", [base, attack, target, seed])  # the teaching tab's button
    outputs = [v for values in updates for v in values]
    mystery = next((v for v in outputs if isinstance(v, str) and v.endswith(".safetensors")), None)
    if mystery is None:
        raise SystemExit(f"the app's implant into {base} wrote no model: {outputs}")
    measured = cli_process(["eval", mystery], threads)["json"]
    base_accuracy = cli_process(["eval", base], threads)["json"]["accuracy"]
    record = {**measured, "clean_base_accuracy": base_accuracy, "attack": attack}
    status = next((v for v in outputs if isinstance(v, str) and v.startswith("Done")), "")
    return {"base": base, "attack": attack, "target": target, "seconds": round(seconds, 2), "page_said": status,
            "asr": measured["asr"], "ood_asr": measured["ood_asr"], "accuracy": measured["accuracy"],
            "clean_base_accuracy": base_accuracy, "meets_lab_bar": is_working(record)}


def cli_repair(model: str, report: str, threads: int, out: Path) -> dict[str, Any]:
    """The CLI's default repair against a scan's report, as a whole process."""
    run = cli_process(["repair", model, "--report", report, "--out", str(out)], threads)
    summary = run.pop("json")
    return {**run, "model": model, "before": summary["before"], "after": summary["after"]}


def zoo_scans(path: Path, pool: torch.Tensor, run: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """detection.py's cached scans of a zoo model with both schedules, decided as each scan decides now with the
    shipped reference and rule (the faithful one scanned and cached when missing and ``run``; None when missing).
    The default's is its verdict as detection.md gives it (every quick family the default runs now); the faithful
    one is ``scan --schedule faithful`` with the same families, its quick families' records the default scan's
    (``with_fast_families``)."""
    from benchmarks.detection import _folder, calibrated, colour_tag, scan_model, with_default_families

    scans = {variant: path.parent / "scans" / (_folder(variant) + colour_tag(True)) / f"{path.stem}.json"
             for variant in ("inspector + reference", "inspector-faithful + reference", "inspector-faithful")}
    default = with_default_families(scan_model(path, "inspector + reference", scans["inspector + reference"], pool,
                                               None, "cpu", True), path)
    reference = Reference.read(shipped_reference_path("pocket-clip", default["kind"]))
    fast = calibrated(default, reference)
    variant = next((v for v in ("inspector-faithful + reference", "inspector-faithful") if scans[v].exists()),
                   "inspector-faithful + reference")  # a faithful scan's steps do not read the reference
    if not scans[variant].exists() and not run:
        return fast, None
    faithful = scan_model(path, variant, scans[variant], pool, None, "cpu", True)
    return fast, calibrated({**with_fast_families(faithful, default), "method": "inspector-faithful"}, reference)


def with_fast_families(faithful: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """A cached faithful scan with the default scan's quick-family records in place of its own: both schedules now
    draw the families' images from the fast schedule's batches (``invert.family_batches_of``), so these are what a
    faithful scan measures today; scans cached before that drew them from its own batches of 32. Its additive
    records stand (a quick family changes no additive trajectory). ``recheck`` confirms both on fresh scans."""
    families = tuple(f"{family}_" for family in QUICK_FAMILIES)
    by_name = {c["name"]: c for c in default["classes"]}
    return {**faithful, "classes": [{**{k: v for k, v in c.items() if not k.startswith(families)},
                                     **{k: v for k, v in by_name[c["name"]].items() if k.startswith(families)}}
                                    for c in faithful["classes"]]}


def summary_of(row: dict[str, Any], schedule: str) -> dict[str, Any]:
    """A decided zoo scan, as the table shows it."""
    return {"schedule": schedule, "seconds": row["seconds"], "image_passes": row["image_passes"],
            "steps": sum(c["steps"] for c in row["classes"]), "flagged": row["flagged"],
            "target": row["predicted_target"], "suspect": row["suspect"], "max_anomaly": row["max_anomaly"],
            "from": "detection.py"}


def recheck(path: Path, pool: torch.Tensor) -> dict[str, Any]:
    """A zoo model scanned afresh with the faithful schedule, as ``scan --schedule faithful`` does, beside what
    ``zoo_scans`` makes of its cached scans: the same additive records, the same quick-family flip rates, the same
    verdict (or not)."""
    _, composed = zoo_scans(path, pool, run=False)
    assert composed is not None
    model = open_model(path, device="cpu")
    config = ScanConfig(schedule="faithful", colour=True)
    reference, _ = reference_for(model, config, load_shipped_pool())
    fresh = run_scan(model, pool, replace(config, reference=reference))
    additive = ("flip_rate", "flips", "eligible", "loss", "steps")
    families = [f"{family}_flip_rate" for family in QUICK_FAMILIES if f"{family}_flip_rate" in fresh.classes[0]]
    v = fresh.verdict
    return {"model": path.stem, "group": path.parent.name, "seconds": fresh.seconds,
            "additive_same": [{k: c[k] for k in additive} for c in fresh.classes]
            == [{k: c[k] for k in additive} for c in composed["classes"]],  # the cached scan's own
            "families_same": [[c[k] for k in families] for c in fresh.classes]
            == [[c[k] for k in families] for c in composed["classes"]],
            "families": families, "fresh": [v.flagged, v.target_name, v.max_anomaly],
            "composed": [composed["flagged"], composed["predicted_target"], composed["max_anomaly"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoos", default=DEFAULT_ZOOS,
                        help="zoo folders whose models' fast and faithful verdicts are compared "
                             "(detection.py's caches)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--faithful-missing", choices=["skip", "run"], default="skip",
                        help="a zoo model with no cached faithful scan: leave it out of the agreement, or scan it "
                             "(about 2 minutes per CoCoOp model on 2 cores)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="schedules: fast vs faithful on the demo models and zoos; interactive: memory and the "
                             "timings of section 3 (comma-separated; default: both)")
    parser.add_argument("--recheck", default=None,
                        help="the zoos (of --zoos) of which one cached faithful scan per kind is made again from "
                             "scratch (comma-separated; default: every zoo)")
    parser.add_argument("--render", default=None, help="draw the page of a recorded run's JSON again, nothing else")
    args = parser.parse_args()
    if args.render:
        recorded = Path(args.render)
        render(json.loads(recorded.read_text()), recorded.with_suffix(".md"))
        return
    torch.set_num_threads(args.threads)
    pool = load_shipped_pool().pixels
    rows: list[dict[str, Any]] = []
    demo = [(entry.name, Path(entry.path), "demo") for entry in list_zoo()]
    zoos = [ROOT / zoo for zoo in args.zoos.split(",") if zoo]  # relative to the checkout, wherever it runs from
    bench = [(m["file"][:-len(".safetensors")], zoo / m["file"], zoo.name)
             for zoo in zoos if (zoo / "manifest.json").exists()
             for m in json.loads((zoo / "manifest.json").read_text())["models"]]
    unscanned: list[str] = []
    parts = set(args.parts.split(","))
    for name, path, group in (demo + bench) if "schedules" in parts else []:
        truth = read_ground_truth(path)
        if group == "demo":
            fast, faithful = scan_row(path, "fast", pool), scan_row(path, "faithful", pool)
        else:
            decided = zoo_scans(path, pool, run=args.faithful_missing == "run")
            fast = summary_of(decided[0], "fast")
            faithful = summary_of(decided[1], "faithful") if decided[1] is not None else None
        if faithful is None:
            unscanned.append(f"{group}/{name}")
            continue
        row = {"model": name, "group": group, "truth": truth.target_name if truth else None,
               "fast": fast, "faithful": faithful}
        if group == "demo":  # both scanned here: the same quick-family measurement in both schedules
            row["families_same"] = fast["family_flip_rates"] == faithful["family_flip_rates"]
        rows.append(row)
        print(f"{name:<34} fast {fast['seconds']:6.1f} s {fast['image_passes']:6d} passes "
              f"{str(fast['target']):<14} | faithful {faithful['seconds'] or 0:6.1f} s "
              f"{faithful['image_passes']:6d} passes {faithful['target']}", flush=True)
    rechecks = []
    if "schedules" in parts:  # one cached faithful scan per kind and zoo, made again from scratch in this run
        rechecked = zoos if args.recheck is None else [ROOT / zoo for zoo in args.recheck.split(",") if zoo]
        for zoo in rechecked:
            for kind in ("coop", "cocoop"):
                first = next((p for _, p, g in bench if g == zoo.name and f"_{kind}_" in p.stem
                              and f"{g}/{p.stem}" not in unscanned), None)
                if first is not None:
                    rechecks.append(recheck(first, pool))
                    print("recheck", rechecks[-1], flush=True)
    memory: dict[str, Any] = {}
    interactive: dict[str, Any] = {}
    if "interactive" in parts:
        with tempfile.TemporaryDirectory() as work:
            work_dir = Path(work)
            cli = {name: cli_scan(name, None, args.threads, work_dir / name) for name, _, _ in demo}
            memory["demo_scans_gib"] = {name: run["peak_gib"] for name, run in cli.items()}
            memory["by_classes_gib"] = {
                n: cli_scan("badclip-cocoop", ",".join(str(k) for k in range(n)), args.threads,
                            work_dir / f"classes-{n}")["peak_gib"] for n in (5, 10, 20)}
            interactive["cli_scans"] = cli
            for name, run in cli.items():
                print(f"CLI scan of {name}: {run['seconds']} s, {run['peak_gib']} GiB", flush=True)
            interactive["repair"] = cli_repair(APP_MODELS[0], cli[APP_MODELS[0]]["report"], args.threads,
                                               work_dir / "repaired.safetensors")
            print(f"CLI repair of {APP_MODELS[0]}: {interactive['repair']['seconds']} s", flush=True)
            runs = work_dir / "app-runs"
            runs.mkdir()
            with app_process(args.threads, runs) as (client, pid):
                interactive["app_scans"] = [app_scan(client, model) for model in APP_MODELS]
                interactive["pairs"] = [{"cli": cli_scan(model, None, args.threads, work_dir / f"pair-{model}-{i}"),
                                         "app": app_scan(client, model)}
                                        for i in range(PAIRS) for model in APP_MODELS]
                memory["app_with_one_scan"] = {"model": APP_MODELS[0], "peak_gib": peak_gib_of(pid),
                                               "seconds": interactive["app_scans"][0]["seconds"]}
                interactive["implants"] = [app_implant(client, *teaching, args.threads) for teaching in TEACHING]
            for run in interactive["app_scans"] + interactive["implants"]:
                print(run, flush=True)
    write(rows, memory, interactive, unscanned, args, rechecks)


def passes_counted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose two scans both count every image-encoder pass of today's default: a zoo model's recorded fast
    scan may predate a quick family that ``with_default_families`` measured alone, its passes not in the record."""
    return [r for r in rows if r["fast"].get("from") != "detection.py"]


def _ratio(rows: list[dict[str, Any]], key: str) -> float:
    fast = sum(r["fast"][key] for r in rows)
    return round(sum(r["faithful"][key] for r in rows) / fast, 2) if fast else float("nan")


def write(rows: list[dict[str, Any]], memory: dict[str, Any], interactive: dict[str, Any], unscanned: list[str],
          args: argparse.Namespace, rechecks: list[dict[str, Any]]) -> None:
    timed = [r for r in rows if r["faithful"]["seconds"] is not None and r["group"] == "demo"]
    counted = passes_counted(rows)
    same_verdict = [r for r in rows if r["fast"]["flagged"] == r["faithful"]["flagged"]]
    flagged = [r for r in rows if r["faithful"]["flagged"]]
    same_target = [r for r in flagged if r["fast"]["flagged"] and r["fast"]["target"] == r["faithful"]["target"]]
    groups = sorted({r["group"] for r in rows})
    agreement = {g: f"{sum(r in same_verdict for r in rows if r['group'] == g)}/{sum(r['group'] == g for r in rows)}"
                 for g in groups}
    summary = {"models": len(rows), "timed_models": len(timed), "pass_ratio": _ratio(counted, "image_passes"),
               "pass_ratio_models": len(counted),
               "verdict_agreement_by_group": agreement, "unscanned_faithful": len(unscanned),
               "time_ratio": _ratio(timed, "seconds") if timed else None,
               "verdict_agreement": round(len(same_verdict) / len(rows), 4) if rows else None,
               "target_agreement_on_flagged": f"{len(same_target)}/{len(flagged)}",
               "target_agreement_on_both_flagged": f"{len(same_target)}/{sum(r['fast']['flagged'] for r in flagged)}",
               "fast_seconds_demo_max": max((r["fast"]["seconds"] for r in rows if r["group"] == "demo"), default=None),
               "threads": args.threads, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "memory": memory, "interactive": interactive, "max_rss_this_process_gib": round(
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    zoos = ("" if args.zoos == DEFAULT_ZOOS else f" --zoos {args.zoos}") + (
        f" --recheck {args.recheck}" if args.recheck is not None else "")
    summary["command"] = (f"python benchmarks/speed.py --threads {args.threads} --faithful-missing "
                          f"{args.faithful_missing} --parts {args.parts}{zoos}")
    data = {"summary": summary, "rows": rows, "unscanned": unscanned, "rechecks": rechecks}
    (HERE / f"{_stem(args)}.json").write_text(json.dumps(data, indent=1) + "\n")
    render(data, HERE / f"{_stem(args)}.md")


def render(data: dict[str, Any], out: Path) -> None:
    """The page of a run from its recorded JSON (``--render`` draws it again from a run's file)."""
    summary, rows, unscanned = data["summary"], data["rows"], data["unscanned"]
    memory, interactive = summary["memory"], summary["interactive"]
    timed = [r for r in rows if r["faithful"]["seconds"] is not None and r["group"] == "demo"]
    same_verdict = [r for r in rows if r["fast"]["flagged"] == r["faithful"]["flagged"]]
    agreement = summary["verdict_agreement_by_group"]
    command = summary.get("command") or f"python benchmarks/speed.py --parts {out.stem.removeprefix('speed-')}"
    lines = ["# Speed: fast vs faithful schedule, memory, and the interactive paths (issues 6 and 20)", "",
             f"`{command}`, one run, {summary['threads']} threads, CPU ({summary['cpu']}), torch {summary['torch']}.",
             ""]
    lines += interactive_lines(interactive)
    lines += [] if not rows else [
              f"- image-encoder passes, {passes_models(summary, rows)}: faithful / fast = **{summary['pass_ratio']}x**",
              f"- wall time, the {len(timed)} demo models scanned with both schedules in this run (in this process): "
              f"faithful / fast = **{summary['time_ratio']}x**",
              f"- same verdict: **{len(same_verdict)}/{len(rows)}** ("
              + ", ".join(f"{g}: {v}" for g, v in agreement.items()) + "); same target on the faithful schedule's "
              f"flagged models: **{summary['target_agreement_on_flagged']}**"
              + (f"; on the models both schedules flag: **{summary['target_agreement_on_both_flagged']}**"
                 if "target_agreement_on_both_flagged" in summary else ""),
              f"- where the two verdicts differ (flag or target), the one the ground truth bears out: "
              f"{disagreements(rows)}",
              f"- zoo models with no faithful scan recorded, left out above: **{len(unscanned)}**"
              + (" (`--faithful-missing run` scans them)" if unscanned else ""),
              *recheck_lines(rows, data.get("rechecks", [])),
              f"- slowest fast scan of a shipped demo model (in this process): "
              f"**{summary['fast_seconds_demo_max']} s**",
              ""]
    if memory:
        lines += ["Peak resident memory (each in a fresh process):", "",
                  "| what | peak |", "|---|---|"]
        lines += [f"| default CLI scan of {k} | {v} GiB |" for k, v in memory["demo_scans_gib"].items()]
        lines += [f"| scan of badclip-cocoop, {k} candidate classes | {v} GiB |"
                  for k, v in memory["by_classes_gib"].items()]
        app = memory["app_with_one_scan"]
        lines += [f"| the app (python app.py) after serving a scan of {app['model']} ({app['seconds']} s) | "
                  f"{app['peak_gib']} GiB |", ""]
    lines += [] if not rows else [
        "| model | group | truth | fast: s | passes | verdict | faithful: s | passes | verdict | same |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, g = r["fast"], r["faithful"]
        same = "yes" if f["flagged"] == g["flagged"] and (not g["flagged"] or f["target"] == g["target"]) else "**no**"
        faithful_seconds = f"{g['seconds']:.1f}" if g["seconds"] is not None else "-"
        lines.append(f"| {r['model']} | {r['group']} | {r['truth'] or 'clean'} | {f['seconds']:.1f} | "
                     f"{f['image_passes']:,} | {f['target'] or '-'} | {faithful_seconds} | {g['image_passes']:,} | "
                     f"{g['target'] or '-'} | {same} |")
    out.write_text("\n".join(lines) + "\n")


def recheck_lines(rows: list[dict[str, Any]], rechecks: list[dict[str, Any]]) -> list[str]:
    """How the zoo models' faithful verdicts were made, and what this run checked of it."""
    demo = [r for r in rows if "families_same" in r]
    lines = [f"- quick-family flip rates the same in both schedules, demo models scanned with both in this run: "
             f"**{sum(r['families_same'] for r in demo)}/{len(demo)}**"] if demo else []
    if rechecks:
        n = len(rechecks)
        lines.append(
            "- a zoo model's faithful verdict: its cached faithful scan's additive records with the default scan's "
            "quick-family records (both schedules draw the families' images from the same batches now), decided "
            f"with the shipped reference. Scanned again from scratch in this run, {n} models ("
            + ", ".join(f"{r['group']}/{r['model']}" for r in rechecks) + "): additive records the same on "
            f"**{sum(r['additive_same'] for r in rechecks)}/{n}**, family flip rates on "
            f"**{sum(r['families_same'] for r in rechecks)}/{n}**, verdict and index on "
            f"**{sum(r['fresh'] == r['composed'] for r in rechecks)}/{n}**")
    return lines


def right(scan: dict[str, Any], truth: str | None) -> bool:
    """Flagged with the attack's target for a backdoor, not flagged for a clean model."""
    return scan["flagged"] == (truth is not None) and (not scan["flagged"] or scan["target"] == truth)


def disagreements(rows: list[dict[str, Any]]) -> str:
    """The models whose fast and faithful verdicts differ, counted by which schedule was right, in words."""
    differ = [r for r in rows if (r["fast"]["flagged"], r["fast"]["target"]) !=
              (r["faithful"]["flagged"], r["faithful"]["target"])]
    if not differ:
        return "none differ"
    counts = {name: sum(right(r[name], r["truth"]) for r in differ) for name in ("fast", "faithful")}
    return (f"**{len(differ)}** differ: the fast schedule right on **{counts['fast']}**, the faithful on "
            f"**{counts['faithful']}**, neither on {len(differ) - counts['fast'] - counts['faithful']}")


def passes_models(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Which models the pass ratio is over, in words (runs recorded before ``passes_counted``: all of them)."""
    counted = summary.get("pass_ratio_models", len(rows))
    return f"all {counted} models" if counted == len(rows) else f"the {counted} models scanned with both in this run"


def _stem(args: argparse.Namespace) -> str:
    """speed.md for a whole run; a run of some parts writes beside it (speed-interactive.md), never over it."""
    parts = sorted(set(args.parts.split(",")))
    return "speed" if parts == sorted(PARTS) else "speed-" + "-".join(parts)


def interactive_lines(interactive: dict[str, Any]) -> list[str]:
    """The interactive timings as the page's reader needs them: each with what it is compared with, in this run."""
    if not interactive:
        return []
    cli = interactive["cli_scans"]
    lines = ["Interactive use, timed in this run:", "", "| what | seconds | compared with (this run) |",
             "|---|---|---|"]
    lines += [f"| CLI scan of {name}, whole process | {run['seconds']:.1f} | verdict "
              f"{run['target'] or 'clean'}, peak {run['peak_gib']} GiB |" for name, run in cli.items()]
    for run in interactive["app_scans"]:
        base = cli[run["model"]]["seconds"]
        lines.append(f"| the app's scan of {run['model']} (request to last update) | {run['seconds']:.1f} | "
                     f"app / CLI = {run['seconds'] / base:.2f}x; first trigger picture at {run['first_picture_s']} s, "
                     f"every class on the chart at {run['every_class_s']} s |")
    for model in APP_MODELS:
        pairs = [p for p in interactive.get("pairs", []) if p["app"]["model"] == model]
        if pairs:
            ratios = ", ".join(f"{p['app']['seconds']:.1f} / {p['cli']['seconds']:.1f} = "
                               f"{p['app']['seconds'] / p['cli']['seconds']:.2f}x" for p in pairs)
            app_seconds = ", ".join(f"{p['app']['seconds']:.1f}" for p in pairs)
            lines.append(f"| {model}: a CLI scan, then the app's, {len(pairs)} times | {app_seconds} | app / CLI side "
                         f"by side: {ratios} |")
    repair = interactive["repair"]
    before, after = repair["before"], repair["after"]
    real = f", the implanted trigger's ASR {before['asr']:.1%} -> {after['asr']:.1%}" if "asr" in before else ""
    lines.append(f"| CLI repair of {repair['model']}, default recipe, whole process | {repair['seconds']:.1f} | "
                 f"reconstructed trigger's flip rate {before['trigger_asr']:.1%} -> {after['trigger_asr']:.1%}"
                 f"{real}, accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%} |")
    for run in interactive["implants"]:
        bar = "meets the lab's bar" if run["meets_lab_bar"] else "**misses the lab's bar**"
        lines.append(f"| teaching implant in the app: {run['attack']} into {run['base']} | {run['seconds']:.1f} | "
                     f"ASR {run['asr']:.1%}, OOD ASR {run['ood_asr']:.1%}, accuracy {run['accuracy']:.1%} "
                     f"(clean {run['clean_base_accuracy']:.1%}): {bar} |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
