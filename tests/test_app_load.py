"""The running app under many users at once (issues 7, 23), on loopback through ``gradio_client``.

Twenty clients send scans, repairs and clean-reference builds at the same moment (tests/load.py): each is queued
for the one engine slot and shown its place in the queue, none errors, each gets exactly the numbers a solo CLI run
gives. Around them: a cancelled scan frees the slot and leaves no half-written run, a client killed mid-job frees
the slot and its job stops, an over-size upload is refused with 413, a request naming a server file instead of an
upload is refused, and the app keeps serving; refusals come back as the page's messages.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from inspector.data import load_task
from tests.app_server import memory_mib, running_app
from tests.load import CLASS_SETS, MODEL, POOL_SIZE, differences, mix, scan_request, serve_all, solo_runs

USERS = 20


def page_scan_inputs(classes: list[str], pool: str, upload: object) -> list[object]:
    """The page's own Scan event's inputs (positional: model pickers, pool pickers, then the scan settings)."""
    return ["demo zoo", MODEL, None, "", pool, upload, "", "inspector", "fast", 14, POOL_SIZE, 1, classes, 2, False,
            "flip_rate", 0.5]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What a solo CLI run of each request gives."""
    return solo_runs(tmp_path_factory.mktemp("solo"))


_LONG_CLIENT = """
from gradio_client import Client
job = Client({url!r}, verbose=False).submit(model="clean-cocoop", schedule="faithful", api_name="/scan")
import time
while len(job.outputs()) < 2:
    time.sleep(0.2)
print("streaming", flush=True)
time.sleep(600)
"""


def test_concurrent_clients_are_queued_isolated_and_match_a_solo_run(tmp_path, solo):
    runs = tmp_path / "runs"
    runs.mkdir()
    allowed = str(Path(solo["report"]).parent.parent)
    with running_app(runs, "--max-upload", "1mb", "--allow-path", allowed) as (url, process, log):
        # a scan that is cancelled mid-way must free the engine and leave no half-written run: it scans
        # every class, and is cancelled once it streams, so it is surely mid-way on any machine
        canceller = Client(url, verbose=False)
        job = canceller.submit(**scan_request(list(load_task().class_names)), api_name="/scan")
        deadline = time.time() + 120
        while not job.outputs():
            assert not job.done() and time.time() < deadline, "the cancelled scan never started streaming"
            time.sleep(0.1)
        job.cancel()

        served = serve_all(url, mix(USERS), solo["report"])
        wrong = differences(served, solo)
        assert not wrong, (wrong, log.read_text()[-2000:])
        waited = max((max(s.ranks) for s in served if s.ranks), default=-1)
        assert waited >= USERS // 2, [s.ranks for s in served]  # the queue positions were shown, far down the line
        scans = [s for s in served if s.kind.startswith("scan")]
        folders = sorted(p for p in runs.iterdir() if p.is_dir() and p.name != "references")
        assert len(folders) == len(scans) and all((f / "report.json").is_file() and (f / "report.html").is_file()
                                                  for f in folders)  # one complete folder each; the cancelled none
        assert not [p for p in runs.rglob("*") if "partial" in p.name]

        # a client killed mid-job (its connection drops): the app stops its job and serves the next at once
        killed = subprocess.Popen([sys.executable, "-c", _LONG_CLIENT.format(url=url)], stdout=subprocess.PIPE,
                                  text=True)
        assert killed.stdout is not None and killed.stdout.readline().strip() == "streaming"
        killed.kill()
        killed.wait()
        time.sleep(2)
        after = Client(url, verbose=False).predict(**scan_request(CLASS_SETS[0]), api_name="/scan")
        assert after["status"] == "finished" and after["classes"] == solo["scan 0"]
        cpu = _cpu_seconds(process.pid)
        time.sleep(3)
        assert _cpu_seconds(process.pid) - cpu < 1.0, "the killed client's job still runs"  # idle, not 2 busy cores

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
        peak = memory_mib(process.pid)["peak_mib"]
        assert peak < 3 * 1024, f"app peak memory {peak:.0f} MiB"
