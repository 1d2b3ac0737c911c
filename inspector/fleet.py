"""Vetting a fleet: many delivered models, one Ray task each running the engine's scan job unchanged (issue 22).

``fleet_scan`` is a generator of typed events like every job. It reads the fleet (a folder of learner files or a
manifest), skips what an earlier run in the same output folder finished, starts a local Ray runtime or joins a
cluster, keeps a bounded number of scans in flight and, as each one returns, appends its line to
``DIR/fleet.jsonl`` and redraws ``DIR/fleet.html``. Each model's report lands in ``DIR/<model>/`` the staged way,
so a killed worker or an interrupted run leaves finished reports whole and nothing half-written; a re-run scans
only the rest. A model that cannot be scanned (a bad file, another backbone) becomes one error line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from inspector.backbone import file_sha256
from inspector.errors import InputError, cut
from inspector.invert import ScanConfig, parse_classes
from inspector.report import REPORT
from inspector.runs import atomic_file, check_output_folder, slug, sweep_stale

JOURNAL = "fleet.jsonl"
PAGE = "fleet.html"
SETTINGS = "fleet.json"
LEARNER_SUFFIX = ".safetensors"
MANIFEST_SUFFIXES = (".json", ".csv")


# --- the fleet ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetModel:
    """One delivered model of the fleet: ``name`` is its folder under the output folder."""

    name: str
    path: Path
    weights: str | None = None
    reference: str | None = None  # this model's clean reference (else the fleet's)


def read_fleet(source: Path) -> list[FleetModel]:
    """A folder (its ``*.safetensors`` files, subfolders included) or a manifest (.json list / .csv rows of
    ``path``, optional ``weights``, optional ``reference``; relative paths from the manifest's folder)."""
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.rglob(f"*{LEARNER_SUFFIX}")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
        if not found:
            raise InputError(f"{source} holds no {LEARNER_SUFFIX} learner files",
                             hint="give a folder of delivered learner files or a manifest (.json / .csv)")
        entries = [{"path": str(p)} for p in found]
        base = source
    elif source.is_file() and source.suffix.lower() in MANIFEST_SUFFIXES:
        entries, base = _manifest_entries(source), source.parent
    elif source.is_file():
        raise InputError(f"{source} is neither a folder nor a manifest", hint="give a folder of learner files, "
                         "or a .json / .csv manifest with a path column")
    else:
        raise InputError(f"{source} does not exist", hint="check the fleet's path")
    return _named([(base, entry) for entry in entries], source)


def _manifest_entries(manifest: Path) -> list[dict[str, str]]:
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest {manifest} ({cut(str(exc))})",
                         hint="give a UTF-8 .json or .csv file") from exc
    if manifest.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"manifest {manifest} is not valid JSON (line {exc.lineno}: {exc.msg})",
                             hint='give a list like [{"path": "a.safetensors"}, …]') from exc
        rows = data.get("models") if isinstance(data, dict) else data
        rows = [{"path": r} if isinstance(r, str) else r for r in rows] if isinstance(rows, list) else None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"manifest {manifest} lists no models", hint='give a list of {"path": …} entries (JSON) or '
                                                                     "rows under a header with a path column (CSV)")
    entries = []
    for line, row in enumerate(rows, start=1):
        path = row.get("path")
        if not isinstance(path, str) or not path.strip():
            raise InputError(f"manifest {manifest}, entry {line}: no path", hint="every entry needs a path")
        for key in ("weights", "reference"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise InputError(f"manifest {manifest}, entry {line}: {key} is not text",
                                 hint=f"give {key} as a path (or leave it out)")
        entries.append({key: str(row[key]).strip() for key in ("path", "weights", "reference", "name")
                        if row.get(key) not in (None, "")})
    return entries


def _named(entries: list[tuple[Path, dict[str, str]]], source: Path) -> list[FleetModel]:
    """Each entry with a folder name of its own (its file's stem, or the name given; repeats get -2, -3, …)."""
    models, taken = [], set()
    for base, entry in entries:
        path = Path(entry["path"])
        path = (path if path.is_absolute() else base / path).resolve()
        stem = slug(entry.get("name") or path.name.removesuffix(LEARNER_SUFFIX))
        name, n = stem, 1
        while name.lower() in taken or name in (JOURNAL, PAGE, SETTINGS):
            n += 1
            name = f"{stem}-{n}"
        taken.add(name.lower())
        models.append(FleetModel(name, path, _located(entry.get("weights"), base, tag_allowed=True),
                                 _located(entry.get("reference"), base)))
    if not models:
        raise InputError(f"{source} lists no models", hint="give at least one learner file")
    return models


def _located(value: str | None, base: Path, tag_allowed: bool = False) -> str | None:
    """A manifest's weights or reference: a file, read from the manifest's folder when relative, or kept as it is
    when it is a keyword (auto, none) or, for weights, an open_clip tag (no suffix)."""
    if value is None or value in ("auto", "none") or tag_allowed and not Path(value).suffix:
        return value
    return str(Path(value) if Path(value).is_absolute() else (base / value).resolve())


# --- what every scan of the fleet uses -----------------------------------------------------------------
@dataclass(frozen=True)
class FleetSettings:
    """The scan options of the whole fleet, as the user gave them (classes by name: models may differ)."""

    config: ScanConfig = field(default_factory=ScanConfig)
    classes: str | None = None
    ood: str | None = None
    pool_size: int | None = None
    reference: str = "auto"
    weights: str | None = None  # CLIP weights for every model (a manifest's weights column overrides it)
    device: str | None = None

    def words(self) -> str:
        """The settings a reader of the fleet page needs, in a line."""
        c = self.config
        epsilon = f"{c.epsilon * 255:g}/255" if c.epsilon is not None else "the default ε"
        return (f"method {c.method}, {c.schedule} schedule, {epsilon}, classes {self.classes or 'all'}, OOD pool "
                f"{self.ood or 'shipped'}, reference {self.reference}, threshold {c.threshold:g}, seed {c.seed}")

    def key(self) -> dict[str, Any]:
        """What must match for an earlier run's results to count as this run's."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("reference", "reference_from")}
        return {"config": json.loads(json.dumps(config, default=str)), "classes": self.classes, "ood": self.ood,
                "pool_size": self.pool_size, "reference": self.reference, "weights": self.weights}


def scan_model(model: FleetModel, settings: FleetSettings, out: Path, threads: int) -> dict[str, Any]:
    """Run in a Ray worker: the engine's scan job on one model -> its fleet line (an error line when the model
    cannot be scanned; the reason in the user's words)."""
    import torch

    from inspector.backbone import shared_backbone
    from inspector.pipeline import ReportWritten, open_delivered, open_pool, scan_job

    torch.set_num_threads(max(1, threads))
    started = time.time()
    line: dict[str, Any] = {"model": model.name, "path": str(model.path), "worker": _worker()}
    try:
        delivered = open_delivered(model.path, label=model.name, weights=model.weights or settings.weights,
                                   device=settings.device,
                                   backbone_loader=shared_backbone)
        pool = open_pool(settings.ood, delivered.model.backbone.image_size, settings.pool_size)
        config = replace(settings.config, classes=parse_classes(settings.classes, delivered.model.class_names))
        written = None
        for event in scan_job(delivered, pool, config, out / model.name, model.reference or settings.reference,
                              overwrite=True):
            if isinstance(event, ReportWritten):
                written = event
        assert written is not None
        line.update(finished_line(written.report, model))
    except InputError as exc:
        line.update({"verdict": "error", "error": exc.message, "hint": exc.hint})
    except Exception as exc:  # noqa: BLE001 - an engine bug: one line for this model, the others go on
        first = str(exc).splitlines()[0] if str(exc) else ""
        line.update({"verdict": "error", "error": cut(f"unexpected {type(exc).__name__}: {first}"),
                     "hint": "scan this model alone with --debug for the traceback and report it"})
    line["seconds"] = round(time.time() - started, 2)
    return line


def finished_line(report: dict[str, Any], model: FleetModel) -> dict[str, Any]:
    """A model's fleet line from its scan report (with the suspect's trigger picture, for the page)."""
    suspect = next((c for c in report["classes"] if c.get("index") == report["suspect_index"]), {})
    return {"verdict": "flagged" if report["flagged"] else "not flagged", "flagged": bool(report["flagged"]),
            "target": report["target"], "suspect": report["suspect"], "family": report.get("suspect_family"),
            "max_anomaly": report["max_anomaly"], "suspect_flip_rate": report["suspect_flip_rate"],
            "probability": report.get("probability"), "sha256": report["model"].get("sha256"),
            "scan_seconds": report["seconds"], "report": f"{model.name}/{REPORT}",
            "trigger_png": f"{model.name}/{suspect['trigger_png']}" if "trigger_png" in suspect else None}


def _worker() -> str:
    """host:pid of this worker, and its Ray node (several nodes may share a host)."""
    try:
        import ray

        node = f" node {ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001 - outside Ray (a direct call): no node
        node = ""
    return f"{socket.gethostname()}:{os.getpid()}{node}"


# --- resuming -------------------------------------------------------------------------------------------
def read_journal(folder: Path) -> dict[str, dict[str, Any]]:
    """The last line per model of ``fleet.jsonl`` (a line torn by a kill is skipped)."""
    lines: dict[str, dict[str, Any]] = {}
    try:
        text = (folder / JOURNAL).read_text(encoding="utf-8")
    except FileNotFoundError:
        return lines
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("model"), str):
            lines[line["model"]] = line
    return lines


def _finished(model: FleetModel, line: dict[str, Any] | None, folder: Path, sha: str | None) -> bool:
    return (line is not None and line.get("verdict") != "error" and sha is not None and line.get("sha256") == sha
            and (folder / model.name / REPORT).is_file())


def _recovered(model: FleetModel, folder: Path, sha: str | None) -> dict[str, Any] | None:
    """A report a worker finished after the driver stopped listening: its line, made again from the report."""
    from inspector.report import read_report

    path = folder / model.name / REPORT
    if sha is None or not path.is_file():
        return None
    try:
        saved = read_report(path)
        report = json.loads(path.read_text(encoding="utf-8"))
    except (InputError, OSError, ValueError):
        return None
    if saved.model.get("sha256") != sha:
        return None
    return {"model": model.name, "path": str(model.path), **finished_line(report, model),
            "worker": "(an earlier run)", "seconds": report["seconds"], "recovered": True}


def _sha_or_none(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def check_settings(folder: Path, settings: FleetSettings, overwrite: bool) -> None:
    """An output folder is resumed only with the settings it was started with; a folder that is not a fleet's
    is left alone."""
    path = folder / SETTINGS
    check_output_folder(folder, overwrite=True)  # refuses a file in the way; a folder is looked at below
    if path.is_file() and not overwrite:
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier != settings.key():
            raise InputError(f"{folder} holds a fleet scanned with other settings",
                             hint="scan into a fresh --out folder, or pass --overwrite to scan every model again")
    elif not path.is_file() and folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"{folder} already exists and is not a fleet folder",
                         hint="choose a fresh --out folder for the fleet")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as staging:
        staging.write_text(json.dumps(settings.key(), indent=1))


# --- the job --------------------------------------------------------------------------------------------
@dataclass
class FleetPlanned:
    """What this run will do: ``to_scan`` of ``total`` models; the rest were finished by an earlier run."""

    total: int
    to_scan: int
    kept: int
    recovered: int
    runtime: str  # where the scans run, in words
    in_flight: int
    cpus_per_scan: float
    gpus_per_scan: float


@dataclass
class ModelDone:
    """One model's line, as appended to fleet.jsonl (an error line has ``verdict == "error"``)."""

    line: dict[str, Any]
    done: int
    total: int

    @property
    def failed(self) -> bool:
        return self.line.get("verdict") == "error"


@dataclass
class FleetWritten:
    folder: Path
    lines: list[dict[str, Any]]
    seconds: float
    interrupted: bool = False

    def summary(self) -> dict[str, Any]:
        lines = self.lines
        return {"models": len(lines), "flagged": sum(bool(x.get("flagged")) for x in lines),
                "errors": sum(x.get("verdict") == "error" for x in lines), "seconds": round(self.seconds, 1),
                "interrupted": self.interrupted, "journal": str(self.folder / JOURNAL),
                "page": str(self.folder / PAGE), "lines": lines}


FleetEvent = FleetPlanned | ModelDone | FleetWritten


@dataclass(frozen=True)
class Runtime:
    """Where the scans run: a local Ray runtime (``address`` None) or a cluster, and each scan's share."""

    address: str | None = None
    workers: int | None = None  # scans in flight at once (default: the runtime's CPUs / cpus_per_scan)
    cpus_per_scan: float | None = None  # default: local, all cores / workers; cluster, 2
    gpus_per_scan: float | None = None  # default: 1 when the runtime has GPUs, else 0


def fleet_scan(source: Path, out: Path, settings: FleetSettings, runtime: Runtime = Runtime(),
               overwrite: bool = False, should_stop: Callable[[], bool] | None = None) -> Iterator[FleetEvent]:
    """Scan every model of ``source`` into ``out`` on Ray; see the module's docstring. Interrupting the run (or
    ``should_stop``) cancels the scans in flight and still yields a ``FleetWritten`` of what finished."""
    started = time.time()
    if runtime.address is not None:
        _require_reachable(runtime.address)
    models = read_fleet(source)
    check_settings(out, settings, overwrite)
    sweep_stale(out)
    if overwrite:
        (out / JOURNAL).unlink(missing_ok=True)
    journal = read_journal(out)
    lines: dict[str, dict[str, Any]] = {}
    todo, recovered = [], 0
    for model in models:
        sha = _sha_or_none(model.path)
        earlier = journal.get(model.name)
        if _finished(model, earlier, out, sha):
            lines[model.name] = earlier
            continue
        again = _recovered(model, out, sha) if not overwrite else None
        if again is not None:
            lines[model.name] = again
            _append(out, again)
            recovered += 1
        else:
            todo.append(model)
    import ray

    if todo:
        words, cpus, gpus, in_flight = _start_ray(runtime, len(todo))
    else:  # every model finished earlier: no runtime to start
        words, cpus, gpus, in_flight = "nothing left to scan (every model finished in an earlier run)", 0.0, 0.0, 0
    yield FleetPlanned(len(models), len(todo), len(models) - len(todo) - recovered, recovered, words, in_flight,
                       cpus, gpus)
    about = f"{words}; {settings.words()}"  # for the page
    interrupted = False
    pending: dict[Any, FleetModel] = {}
    try:
        if todo:
            task = ray.remote(scan_model).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
            queue = list(todo)
            while queue or pending:
                while queue and len(pending) < in_flight:
                    model = queue.pop(0)
                    pending[task.remote(model, settings, out.resolve(), max(1, int(cpus)))] = model
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    model = pending.pop(ref)
                    line = _result(ref, model)
                    lines[model.name] = line
                    _append(out, line)
                    write_page(out, _ordered(models, lines), about)
                    yield ModelDone(line, len(lines), len(models))
                if should_stop is not None and should_stop():
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for ref in pending:  # left only when the run was interrupted
            ray.cancel(ref, force=True)
        _compact(out, _ordered(models, lines))
        write_page(out, _ordered(models, lines), about)
        if ray.is_initialized():
            ray.shutdown()
        sweep_stale(out)  # what cancelled scans were staging (their workers are gone now)
    yield FleetWritten(out, _ordered(models, lines), time.time() - started, interrupted)


def _result(ref: Any, model: FleetModel) -> dict[str, Any]:
    import ray
    from ray.exceptions import RayError

    try:
        return ray.get(ref)
    except RayError as exc:  # the worker died (killed, out of memory, a lost node), also after its one retry
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"model": model.name, "path": str(model.path), "verdict": "error",
                "error": cut(f"the worker scanning it was lost ({type(exc).__name__}: {reason})"),
                "hint": "run the fleet scan again: finished models are kept and this one is scanned again"}


def _start_ray(runtime: Runtime, to_scan: int) -> tuple[str, float, float, int]:
    """Start (or join) Ray; returns where in words, CPUs and GPUs per scan, and scans in flight."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves this machine
    import logging

    import ray

    local = runtime.address is None
    cores = os.cpu_count() or 1
    try:
        if local:
            ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     object_store_memory=100 * 1024 * 1024, configure_logging=True)
        else:
            ray.init(address=runtime.address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"cannot reach the Ray cluster at {runtime.address} ({cut(str(exc).splitlines()[0])})",
                         hint="start it with `ray start --head` and pass its address, or leave out --address to "
                              "scan on this machine") from exc
    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", cores))
    workers = runtime.workers
    cpus = runtime.cpus_per_scan or (max(1.0, float(cores // (workers or 1))) if local else min(2.0, total_cpus))
    gpus = runtime.gpus_per_scan if runtime.gpus_per_scan is not None else (1.0 if resources.get("GPU") else 0.0)
    in_flight = workers or max(1, int(total_cpus // cpus))
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    where = "a local Ray runtime" if local else f"the Ray cluster at {runtime.address}"
    words = (f"{where}: {nodes} node(s), {total_cpus:g} CPU(s), {resources.get('GPU', 0):g} GPU(s); up to "
             f"{in_flight} scan(s) at once, each {cpus:g} CPU(s){f' and {gpus:g} GPU(s)' if gpus else ''}")
    return words, cpus, gpus, max(1, min(in_flight, to_scan or 1))


def _require_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that answers, checked first: Ray itself would wait for minutes."""
    if address == "auto":
        return  # Ray finds the cluster started on this machine, or says at once that there is none
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address} is not HOST:PORT", hint="e.g. --address 10.0.0.5:6379, "
                         "--address ray://10.0.0.5:10001 or --address auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at {address} ({exc.strerror or exc})",
                         hint="start it with `ray start --head` and pass its address, or leave out --address to "
                              "scan on this machine") from exc


def _ordered(models: list[FleetModel], lines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [lines[m.name] for m in models if m.name in lines]


def _append(folder: Path, line: dict[str, Any]) -> None:
    """One line, written and flushed as it comes: a kill loses at most the line being written."""
    with open(folder / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(line) + "\n")
        journal.flush()
        os.fsync(journal.fileno())


def _compact(folder: Path, lines: list[dict[str, Any]]) -> None:
    """The journal again with one line per model (errors retried by this run are replaced by their outcome)."""
    with atomic_file(folder / JOURNAL) as staging:
        staging.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def write_page(folder: Path, lines: list[dict[str, Any]], runtime: str) -> None:
    from inspector.fleet_page import render_fleet_page

    with atomic_file(folder / PAGE) as staging:
        staging.write_text(render_fleet_page(folder, lines, runtime), encoding="utf-8")
