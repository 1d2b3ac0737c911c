"""Many users at once on one app (issue 23): scans, repairs and clean-reference builds submitted together through
the named API (``gradio_client`` on loopback), each compared with what a solo CLI run of the same request gives.

The app runs one engine job at a time, so the requests queue; each client polls its job's status while it waits
and records the queue positions it was shown. Used by tests/test_app_load.py and benchmarks/app_load.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradio_client import Client

from inspector.cli import main as cli_main

MODEL = "clean-coop"
CLASS_SETS = (["star", "arrow", "clock"], ["map", "balloon", "file icon", "button"])
POOL_SIZE = 96
REPAIR_TARGET, REPAIR_EPOCHS = "star", 1
REFERENCE_POOL_SIZE, REFERENCE_LEARNERS = 100, 1
SCAN_KEYS = ("name", "flip_rate", "anomaly", "loss")
REFERENCE_KEYS = ("seeds", "accuracies", "highest_mean_flip_rates", "learners", "kind", "epsilon", "pool_size")


def scan_request(classes: list[str]) -> dict[str, object]:
    """The named /scan API's parameters for a small scan of the test's model."""
    return {"model": MODEL, "pool": "shipped", "epsilon": 14, "pool_size": POOL_SIZE, "classes": classes}


def _cli_json(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["--device", "cpu", *argv, "--json"])
    assert code == 0, argv
    return json.loads(out.getvalue())


def numbers(kind: str, result: dict[str, Any]) -> Any:
    """What must equal between a solo run and a served one: a scan's per-class numbers, a repair's before and
    after, a reference's learners and mean flip rates."""
    if kind.startswith("scan"):
        return [{k: c[k] for k in SCAN_KEYS} for c in result["classes"]]
    if kind == "repair":
        return {"target": result["target"], "before": result["before"], "after": result["after"]}
    return {k: result[k] for k in REFERENCE_KEYS}


def solo_runs(folder: Path) -> dict[str, Any]:
    """Each request kind run alone through the CLI in this process: {kind: numbers}, and the report to repair from."""
    solo: dict[str, Any] = {}
    for i, classes in enumerate(CLASS_SETS):
        result = _cli_json("scan", MODEL, "--classes", ",".join(classes), "--pool-size", str(POOL_SIZE),
                           "--epsilon", "14", "--out", str(folder / f"solo-scan-{i}"))
        solo[f"scan {i}"] = numbers("scan", result)
    report = folder / "solo-scan-0" / "report.json"
    solo["repair"] = numbers("repair", _cli_json("repair", MODEL, "--report", str(report), "--target", REPAIR_TARGET,
                                                 "--epochs", str(REPAIR_EPOCHS),
                                                 "--out", str(folder / "solo-repaired.safetensors")))
    solo["reference"] = numbers("reference", _cli_json("reference", "build", "--kind", "coop", "--learners",
                                                       str(REFERENCE_LEARNERS), "--pool-size",
                                                       str(REFERENCE_POOL_SIZE), "--out",
                                                       str(folder / "solo-reference.json")))
    solo["report"] = str(report)
    return solo


def mix(users: int) -> list[str]:
    """Which request each user sends: of every ten, seven scans (two class sets), two repairs, one reference build."""
    kinds = ["scan 0", "scan 1", "scan 0", "repair", "scan 1", "scan 0", "reference", "scan 1", "repair", "scan 0"]
    return [kinds[i % len(kinds)] for i in range(users)]


@dataclass
class Served:
    """One user's request as the app served it."""

    user: int
    kind: str
    result: dict[str, Any] | None = None
    error: str | None = None
    ranks: list[int] = field(default_factory=list)  # queue positions shown while it waited (0: next)
    seconds: float = 0.0


def request(kind: str, report: str) -> tuple[dict[str, Any], str]:
    if kind.startswith("scan"):
        return scan_request(CLASS_SETS[int(kind[-1])]), "/scan"
    if kind == "repair":
        return {"model": MODEL, "report": report, "target": REPAIR_TARGET, "epochs": REPAIR_EPOCHS}, "/repair"
    return {"model": MODEL, "learners": REFERENCE_LEARNERS, "pool_size": REFERENCE_POOL_SIZE}, "/build_reference"


def serve_all(url: str, kinds: list[str], report: str) -> list[Served]:
    """Every user submits at the same moment and waits for its own result, watching its place in the queue."""

    def one(user: int) -> Served:
        served = Served(user, kinds[user])
        params, api_name = request(served.kind, report)
        started = time.perf_counter()
        try:
            job = Client(url, verbose=False).submit(**params, api_name=api_name)
            while not job.done():
                rank = job.status().rank
                if rank is not None and (not served.ranks or served.ranks[-1] != rank):
                    served.ranks.append(rank)
                time.sleep(0.2)
            served.result = job.result()
        except Exception as exc:  # noqa: BLE001 - any error is what the load test counts
            served.error = f"{type(exc).__name__}: {exc}"
        served.seconds = time.perf_counter() - started
        return served

    with ThreadPoolExecutor(len(kinds)) as pool:
        return list(pool.map(one, range(len(kinds))))


def differences(served: list[Served], solo: dict[str, Any]) -> list[str]:
    """Users who got an error, an unfinished job or other numbers than the solo run's."""
    wrong = []
    for s in served:
        if s.error or not s.result or s.result.get("status") != "finished":
            wrong.append(f"user {s.user} ({s.kind}): {s.error or s.result}")
        elif numbers(s.kind, s.result) != solo[s.kind]:
            wrong.append(f"user {s.user} ({s.kind}): {numbers(s.kind, s.result)} != solo {solo[s.kind]}")
    return wrong
