"""The running app under several users at once (issue 7), on loopback through ``gradio_client``.

Six clients start small scans at the same moment: each is queued for the one engine slot, none
errors, each gets its own run folder and exactly the numbers a solo CLI run gives. Around them: a
cancelled scan frees the slot and leaves no half-written run, an over-size upload is refused with
413, a request naming a server file instead of an upload is refused, and the app keeps serving; the
named API's /repair repairs from a /scan's report and refusals come back as the page's messages.
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
from gradio_client.exceptions import AppError

from inspector.cli import main as cli_main
from inspector.data import load_task
from tests.app_server import running_app

MODEL = "clean-coop"
CLASS_SETS = (["star", "arrow", "clock"], ["map", "balloon", "file icon", "button"])
POOL_SIZE = 96


KEYS = ("name", "flip_rate", "anomaly", "loss")


def scan_request(classes: list[str]) -> dict[str, object]:
    """The named /scan API's parameters for a small scan of the test's model."""
    return {"model": MODEL, "pool": "shipped", "epsilon": 14, "pool_size": POOL_SIZE, "classes": classes}


def page_scan_inputs(classes: list[str], pool: str, upload: object) -> list[object]:
    """The page's own Scan event's inputs (positional: model pickers, pool pickers, then the scan settings)."""
    return ["demo zoo", MODEL, None, "", pool, upload, "", "inspector", "fast", 14, POOL_SIZE, 1, classes, 2, False,
            "flip_rate", 0.5]


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
        job = canceller.submit(**scan_request(list(load_task().class_names)), api_name="/scan")
        deadline = time.time() + 120
        while not job.outputs():
            assert not job.done() and time.time() < deadline, "the cancelled scan never started streaming"
            time.sleep(0.1)
        job.cancel()

        def one_client(i: int) -> tuple[int, dict, list[dict], float]:
            client = Client(url, verbose=False)
            started = time.time()
            result = client.predict(**scan_request(CLASS_SETS[i % 2]), api_name="/scan")
            return i, result, _classes(result.get("report", "")), time.time() - started

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one_client, range(6)))

        for i, result, classes, _ in results:
            assert result["status"] == "finished", (result, log.read_text()[-2000:])
            assert classes == solo[i % 2], f"client {i} differs from the solo run"
            assert result["classes"] == classes and result["model"] == MODEL  # named results: the report's numbers
        folders = sorted(p for p in runs.iterdir() if p.is_dir())
        assert len(folders) == 6 and all((f / "report.json").is_file() and (f / "report.html").is_file()
                                         for f in folders)  # one complete folder each; the cancelled run wrote none
        assert not [p for p in runs.rglob("*") if "partial" in p.name]

        too_big = httpx.post(f"{url}/gradio_api/upload", files={"files": ("pool.zip", b"\0" * 1_100_000)})
        assert too_big.status_code == 413

        smuggled = {"path": str(Path(__file__)), "meta": {"_type": "gradio.FileData"}, "orig_name": "x.zip"}
        call = httpx.post(f"{url}/gradio_api/call/page_scan",
                          json={"data": page_scan_inputs(CLASS_SETS[0], "upload a zip", smuggled)})
        with httpx.stream("GET", f"{url}/gradio_api/call/page_scan/{call.json()['event_id']}", timeout=60) as stream:
            events = "".join(stream.iter_text())
        assert "event: error" in events and "not uploaded by a user" in log.read_text()

        client = Client(url, verbose=False)
        last = client.predict(**scan_request(CLASS_SETS[0]), api_name="/scan")
        assert last["status"] == "finished"  # still serving after all that
        repaired = client.predict(model=MODEL, report=last["report"], epochs=1, api_name="/repair")
        assert repaired["status"] == "finished" and repaired["target"] == last["suspect"]
        assert {"accuracy", "trigger_asr"} <= set(repaired["before"]) and Path(repaired["out"]).is_file()
        with pytest.raises(AppError, match="no-such-model"):  # a refusal is the page's message, not a stack trace
            client.predict(model="no-such-model", api_name="/scan")
        with pytest.raises(AppError, match="method 'strip' is not one of inspector, neural-cleanse, pixel-backdoor"):
            client.predict(model=MODEL, method="strip", api_name="/scan")
        with pytest.raises(AppError, match="outside the folders this app may read"):
            client.predict(model=MODEL, report="/etc/hostname", api_name="/repair")
        peak = _peak_rss_mib(process.pid)
        if peak is not None:
            assert peak < 3 * 1024, f"app peak memory {peak:.0f} MiB"
