"""The running app under several users at once (issue 7), on loopback through ``gradio_client``.

Six clients start small scans at the same moment: each is queued for the one engine slot, none
errors, each gets its own run folder and exactly the numbers a solo CLI run gives. Around them: a
cancelled scan frees the slot and leaves no half-written run, an over-size upload is refused with
413, a request naming a server file instead of an upload is refused, and the app keeps serving.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from inspector.cli import main as cli_main
from inspector.data import load_task
from tests.app_server import running_app

MODEL = "clean-coop"
CLASS_SETS = (["star", "arrow", "clock"], ["map", "balloon", "file icon", "button"])
POOL_SIZE = 96


def progress_line(outputs: tuple) -> str:
    """The progress line among /scan's outputs (every component's value, in the layout's order)."""
    return next((o for o in outputs if isinstance(o, str) and o.startswith("Scan")), "")


def report_json(outputs: tuple) -> str:
    """The report.json path among /scan's outputs (the report files component's list)."""
    return next(path for value in outputs if isinstance(value, list) for path in value
                if isinstance(path, str) and path.endswith("report.json"))


KEYS = ("name", "flip_rate", "anomaly", "loss")


def scan_inputs(classes: list[str], pool: str = "shipped OOD pool", upload: object = None) -> list[object]:
    """The /scan endpoint's inputs: model pickers, pool pickers, then the scan settings."""
    return ["demo zoo", MODEL, None, "", pool, upload, "", "inspector", "fast", 14, POOL_SIZE, 1, classes, 2, False,
            "flip_rate"]


def _classes(report_path: str | Path) -> list[dict]:
    report = json.loads(Path(report_path).read_text())
    return [{k: c[k] for k in KEYS} for c in report["classes"]]


def _peak_rss_mib(pid: int) -> float | None:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict]]:
    """What a solo run of each class set gives: the CLI, in this process."""
    numbers = {}
    for i, classes in enumerate(CLASS_SETS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main(["--device", "cpu", "scan", MODEL, "--classes", ",".join(classes), "--pool-size",
                             str(POOL_SIZE), "--out", str(tmp_path_factory.mktemp("solo") / "scan"), "--json"])
        assert code == 0
        numbers[i] = [{k: c[k] for k in KEYS} for c in json.loads(out.getvalue())["classes"]]
    return numbers


def test_concurrent_clients_are_queued_isolated_and_match_a_solo_run(tmp_path, solo):
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_app(runs, "--max-upload", "1mb") as (url, process, log):
        # a scan that is cancelled mid-way must free the engine and leave no half-written run: it scans
        # every class, and is cancelled once it streams, so it is surely mid-way on any machine
        canceller = Client(url, verbose=False)
        job = canceller.submit(*scan_inputs(list(load_task().class_names)), api_name="/scan")
        deadline = time.time() + 120
        while not job.outputs():
            assert not job.done() and time.time() < deadline, "the cancelled scan never started streaming"
            time.sleep(0.1)
        job.cancel()

        def one_client(i: int) -> tuple[int, str, list[dict], float]:
            client = Client(url, verbose=False)
            started = time.time()
            outputs = client.predict(*scan_inputs(CLASS_SETS[i % 2]), api_name="/scan")
            return i, progress_line(outputs), _classes(report_json(outputs)), time.time() - started

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one_client, range(6)))

        for i, progress, classes, _ in results:
            assert progress.startswith("Scan finished"), (progress, log.read_text()[-2000:])
            assert classes == solo[i % 2], f"client {i} differs from the solo run"
        folders = sorted(p for p in runs.iterdir() if p.is_dir())
        assert len(folders) == 6 and all((f / "report.json").is_file() and (f / "report.html").is_file()
                                         for f in folders)  # one complete folder each; the cancelled run wrote none
        assert not [p for p in runs.rglob("*") if "partial" in p.name]

        too_big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("pool.zip", b"\0" * 1_100_000)})
        assert too_big.status_code == 413

        smuggled = {"path": str(Path(__file__)), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.zip"}
        call = httpx.post(f"{url}/gradio_api/call/scan",
                          json={"data": scan_inputs(CLASS_SETS[0], "upload a zip", smuggled)})
        with httpx.stream("GET", f"{url}/gradio_api/call/scan/{call.json()['event_id']}", timeout=60) as stream:
            events = "".join(stream.iter_text())
        assert "event: error" in events and "not uploaded by a user" in log.read_text()

        last = Client(url, verbose=False).predict(*scan_inputs(CLASS_SETS[0]), api_name="/scan")
        assert progress_line(last).startswith("Scan finished")  # still serving after all that
        peak = _peak_rss_mib(process.pid)
        if peak is not None:
            assert peak < 3 * 1024, f"app peak memory {peak:.0f} MiB"
