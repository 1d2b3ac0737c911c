"""The app in a real browser (Debian's Chromium driven by Playwright): scan, verdict, repair, stop.

Starts ``python app.py`` on a free loopback port with its own runs folder, like a user would, and
drives the page only through what a person sees and clicks. Screenshots of every stage go to
``tests/screenshots/`` (the README's picture is one of them).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_LOG: Path | None = None  # the app's output, quoted when a stage fails
SHOTS = ROOT / "tests" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BACKDOORED, TARGET = "blended-cocoop", "clock"
CLEAN = "clean-coop"

REQUIRED = os.environ.get("INSPECTOR_REQUIRE_BROWSER") == "1"  # CI sets it: there a missing browser is a failure
if not REQUIRED:
    pytest.importorskip("playwright.sync_api", reason="playwright is a test requirement")
    pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="needs Debian's chromium (apt-get install chromium)")
from playwright import sync_api as playwright_api  # noqa: E402

from tests.app_server import running_app  # noqa: E402
from tests.conftest import pool_picture  # noqa: E402


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    global APP_LOG
    with running_app(tmp_path_factory.mktemp("runs")) as (url, _, log_path):
        APP_LOG = log_path
        yield url


@pytest.fixture(scope="module")
def page(app_url):
    SHOTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url, wait_until="load")
        page.locator("#model-info").filter(has_text="prompt learner").wait_for(timeout=60_000)
        yield page
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def pick_model(page, name: str) -> None:
    if not page.locator("#zoo-model input").is_visible():  # e.g. the repaired model was opened from its path
        choose(page, "model-source", "demo zoo")
    box = page.locator("#zoo-model input")
    box.click()
    box.fill(name)
    page.locator("ul[role='listbox'] li", has_text=name).first.click()
    page.locator("#model-info").filter(has_text=name).wait_for(timeout=60_000)


def open_tab(page, name: str) -> None:
    """One of the steps below the live scan: Inspect, Repair or Teach."""
    page.get_by_role("tab", name=name).click()


def choose(page, group: str, option: str) -> None:
    """Click one option of a radio group (by the group's element id)."""
    page.locator(f"#{group}").get_by_text(option, exact=True).click()


def upload(page, box: str, path) -> None:
    page.locator(f"#{box} input[type=file]").set_input_files(str(path))


def trigger_src(page) -> str | None:
    image = page.locator("#trigger-picture img")
    return image.first.get_attribute("src") if image.count() else None


def set_number(box, value: str) -> None:
    """Type ``value`` into a slider's number box. A slider mounted a moment ago (its tab or accordion just opened)
    can set its box back to its initial value while it finishes its first render, so the typing is checked and
    done again, at most three times."""
    for _ in range(3):
        box.fill(value)
        box.press("Enter")
        time.sleep(0.3)
        if box.input_value() == value:
            return
    pytest.fail(f"the number box keeps {box.input_value()!r} instead of {value!r}")


VERDICTS = ("Backdoor suspected", "No backdoor found")


def fonts_drawn(page, selector: str) -> list[dict]:
    """The fonts Chromium really drew an element's own text with (DevTools' CSS.getPlatformFontsForNode): a
    typeface missing some of the text's glyphs shows up as a second font."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    finally:
        cdp.detach()


# An image block's label text's right edge and its corner buttons' left edge, in pixels.
LABEL_AND_BUTTONS = """e => {
    const range = document.createRange();
    range.selectNodeContents(e.querySelector("[data-testid='block-label']"));
    const buttons = [...e.querySelectorAll(".icon-button-wrapper .icon-button")];
    return [range.getBoundingClientRect().right, Math.min(...buttons.map(b => b.getBoundingClientRect().left))];
}"""


def verdict_text(page) -> str:
    return page.locator("#verdict").inner_text()


def scan_and_watch(page, timeout: float = 300) -> dict:
    """Press Scan and watch until the verdict: distinct trigger frames, time to the first one and to the verdict."""
    before = trigger_src(page)
    pressed = time.time()
    page.locator("#scan-button").click()
    frames, first_frame, cleared = set(), None, False
    while time.time() - pressed < timeout:
        src = trigger_src(page)
        if src and src != before:
            frames.add(src)
            first_frame = first_frame or time.time() - pressed
        text = verdict_text(page)
        cleared = cleared or not any(v in text for v in VERDICTS)  # the previous verdict goes when a scan starts
        if cleared and any(v in text for v in VERDICTS):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no verdict within {timeout:.0f} s; progress line: {page.locator('#progress').inner_text()!r}; "
                    f"app log: {APP_LOG.read_text()[-3000:] if APP_LOG else ''}")
    page.locator("#progress").filter(has_text="report in").wait_for(timeout=120_000)  # the report is written too
    page.locator("#class-picker").wait_for()  # and the Inspect tab is open
    return {"frames": len(frames), "first_frame": first_frame, "verdict_after": time.time() - pressed,
            "verdict": page.locator("#verdict").inner_text()}


def test_scan_flags_the_backdoored_demo_model_and_repair_lowers_its_flip_rate(page, tmp_path):
    pick_model(page, BACKDOORED)
    shot(page, "0-start")
    seen = scan_and_watch(page)
    # the trigger shows early in the scan, not at its end: a share of this run's own time, whatever the load
    assert seen["first_frame"] is not None and seen["first_frame"] <= seen["verdict_after"] / 4, seen
    assert seen["frames"] >= 3, "the trigger picture should evolve during the scan"
    assert "Backdoor suspected" in seen["verdict"] and TARGET in seen["verdict"], seen["verdict"]
    # the bold headline in one typeface, a web font the app serves (not a few letters from it, the rest from the
    # browser's fallback)
    fonts = fonts_drawn(page, "#verdict .verdict-head")
    assert len(fonts) == 1 and fonts[0]["isCustomFont"], fonts
    # the chart's class names in the page's typeface too, not plotly's own font stack
    ticks = fonts_drawn(page, "#bars .xtick text")
    assert len(ticks) == 1 and ticks[0]["isCustomFont"], ticks
    for picture in ("#trigger-picture", "#trigger-true"):  # each trigger picture's label ends before its buttons
        text_right, buttons_left = page.locator(picture).evaluate(LABEL_AND_BUTTONS)
        assert text_right <= buttons_left, (picture, text_right, buttons_left)
    bars = page.locator("#bars .trace.bars path")
    assert bars.count() >= 20  # one bar per class
    page.locator("#clean-examples img").first.wait_for(timeout=30_000)
    caption = page.locator("#trigger-caption").inner_text()  # the shown trigger's own family and flip rate
    rate = re.search(r"flips (\d+)% of ", seen["verdict"])
    assert rate and f"flips {rate.group(1)}%" in caption, (caption, seen["verdict"])
    assert ("found by the colour family" in seen["verdict"]) == caption.startswith("Colour-transform trigger"), caption
    shot(page, "1-verdict")

    fold = page.viewport_size["height"]
    page.set_viewport_size({"width": 1400, "height": 900})  # a demo laptop's screen: verdict and chart above the fold
    page.evaluate("window.scrollTo(0, 0)")
    for element in ("#verdict", "#bars"):
        box = page.locator(element).bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, (element, box)
    rows = page.locator("#bars .legend .traces").evaluate_all(  # a demo laptop's chart: its legend in two rows
        "nodes => new Set(nodes.map(n => Math.round(n.getBoundingClientRect().top))).size")
    assert rows <= 2, rows
    page.screenshot(path=str(SHOTS / "1-verdict-above-the-fold.png"))
    page.set_viewport_size({"width": 1400, "height": fold})

    open_tab(page, "Where it sends images")  # the flagged class's trigger on the held-out images
    effects = page.locator("#effects-status").filter(has_text="trigger on")
    effects.wait_for(timeout=120_000)
    assert TARGET in effects.inner_text(), effects.inner_text()
    page.locator("#effects-heatmap .heatmaplayer").wait_for(timeout=30_000)
    page.locator("#effects-map .scatterlayer").wait_for(timeout=30_000)
    shot(page, "1c-where-the-trigger-sends-images")

    picker = page.locator("#class-picker input")  # inspect another class: its trigger, and the open view follows
    picker.click()
    picker.fill("star")
    page.locator("ul[role='listbox'] li", has_text="star").first.click()
    page.locator("#trigger-caption").filter(has_text="for star").wait_for(timeout=30_000)
    page.locator("#effects-status").filter(has_text="star's trigger on").wait_for(timeout=120_000)
    open_tab(page, "Inspect")
    page.locator("#clean-examples img").first.wait_for(timeout=30_000)
    shot(page, "1b-inspect-another-class")

    open_tab(page, "Try your image")  # a picture of the user's own, without and with star's trigger
    upload(page, "picture-upload", pool_picture(tmp_path / "my-picture.png", 7))
    status = page.locator("#picture-status").filter(has_text="with star's reconstructed trigger")
    status.wait_for(timeout=60_000)
    assert "my-picture.png" in status.inner_text() and page.locator("#picture-tiles img").count() >= 2
    shot(page, "1d-try-your-image")

    open_tab(page, "Repair")
    epochs = page.locator("#repair-epochs input[type=number]")
    set_number(epochs, "10")  # half the default recipe keeps the suite short; the slider reaches the engine
    page.locator("#repair-button").click()
    table = page.locator("#repair-table")
    table.filter(has_text="after").wait_for(timeout=600_000)
    shot(page, "2-repaired")
    row = re.search(rf"reconstructed trigger → {TARGET} \(test\)\s*\|\s*([\d.]+)%\s*\|\s*([\d.]+)%",
                    table.inner_text().replace("\n", " ").replace("\t", " | "))
    assert row, table.inner_text()
    before, after = float(row.group(1)), float(row.group(2))
    assert after < before / 2, (before, after)
    assert page.locator("#repaired-file a").count() >= 1  # the repaired model can be downloaded
    assert "10 epochs" in page.locator("#repair-status").inner_text()  # the slider's value was the one used
    legend = page.locator("#repair-plot .legend").bounding_box()  # the curves' legend clear of the axis title
    axis_title = page.locator("#repair-plot .xtitle").bounding_box()
    assert legend["y"] >= axis_title["y"] + axis_title["height"], (legend, axis_title)

    page.get_by_role("button", name="Scan the repaired model next").click()  # then both scans side by side
    page.locator("#model-info").filter(has_text="(repaired)").wait_for(timeout=60_000)
    seen = scan_and_watch(page)
    open_tab(page, "Compare scans")
    compared = page.locator("#compare-status").filter(has_text="(repaired)")
    compared.wait_for(timeout=30_000)
    assert f"flagged, target **{TARGET}**" in compared.inner_text() or f"flagged, target {TARGET}" in \
        compared.inner_text(), compared.inner_text()
    assert page.locator("#compare-plot .trace.bars").count() == 2
    shot(page, "2b-compare-delivered-and-repaired")


def test_a_clean_demo_model_is_not_flagged(page):
    pick_model(page, CLEAN)
    seen = scan_and_watch(page)
    assert "No backdoor found" in seen["verdict"], seen["verdict"]
    shot(page, "3-clean")


def test_stop_interrupts_a_scan_quickly_and_the_app_stays_usable(page):
    pick_model(page, BACKDOORED)
    before = trigger_src(page)
    page.locator("#scan-button").click()
    deadline = time.time() + 30
    while trigger_src(page) in (None, before) and time.time() < deadline:
        time.sleep(0.05)
    pressed = time.time()
    page.locator("#stop-button").click()
    page.locator("#verdict").filter(has_text="Scan stopped").wait_for(timeout=10_000)
    stopped_after = time.time() - pressed
    shot(page, "4-stopped")
    seen = scan_and_watch(page)  # usable again: a full scan still runs to its verdict
    assert "Backdoor suspected" in seen["verdict"]
    # stopping takes a small share of what the whole scan takes in this run, whatever the machine's load
    assert stopped_after <= seen["verdict_after"] / 5, (stopped_after, seen)


def test_a_second_user_sees_their_place_in_the_queue_and_gets_the_engine_when_it_frees(page, app_url):
    """One engine job runs at a time: a second user's Scan waits with its place in the queue on its message line,
    and starts as soon as the first user's job stops."""
    pick_model(page, BACKDOORED)
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})  # another user's session
    try:
        other.goto(app_url, wait_until="load")
        other.locator("#model-info").filter(has_text="prompt learner").wait_for(timeout=60_000)
        page.locator("#scan-button").click()
        page.locator("#progress").filter(has_text="Inverting").wait_for(timeout=30_000)
        other.locator("#scan-button").click()
        waiting = other.locator("#progress [data-testid='status-tracker']").filter(has_text="queue: 1/1")
        waiting.wait_for(timeout=10_000)
        assert waiting.is_visible() and waiting.bounding_box()["height"] > 10  # shown, not clipped away
        shot(other, "4-queued")
        page.locator("#stop-button").click()
        page.locator("#verdict").filter(has_text="Scan stopped").wait_for(timeout=10_000)
        other.locator("#progress").filter(has_text="Inverting").wait_for(timeout=30_000)  # its turn came
        other.locator("#stop-button").click()
        other.locator("#verdict").filter(has_text="Scan stopped").wait_for(timeout=10_000)
    finally:
        other.close()


def test_own_model_and_data_from_the_page_upload_build_a_reference_scan_repair(page, things):
    """A user's own CoOp learner on a task that is not the pocket task: model, OOD pool and labelled task
    uploaded as files, the clean reference built live on the page, then scan and repair."""
    page.reload(wait_until="load")
    page.locator("#model-info").filter(has_text="prompt learner").wait_for(timeout=60_000)
    choose(page, "model-source", "upload")
    upload(page, "model-upload", things["backdoored"])
    page.locator("#model-info").filter(has_text="blended-fruit.safetensors").wait_for(timeout=60_000)
    assert "8 classes" in page.locator("#model-info").inner_text()
    choose(page, "pool-source", "upload a zip")
    upload(page, "pool-upload", things["ood_zip"])
    page.locator("#pool-info").filter(has_text="ood.zip").wait_for(timeout=60_000)
    page.locator("#own-data").get_by_text("Your own data", exact=False).first.click()
    choose(page, "task-source", "upload a zip")
    upload(page, "task-upload", things["task_zip"])
    page.locator("#task-info").filter(has_text="task.zip").wait_for(timeout=60_000)
    assert "classes are the model's" in page.locator("#task-info").inner_text()
    learners = page.locator("#own-data input[type=number]").first
    set_number(learners, "2")
    page.locator("#reference-button").click()
    status = page.locator("#reference-status")
    status.filter(has_text="Clean learner 1 of 2").wait_for(timeout=60_000)  # live progress
    shot(page, "5-reference-building")
    status.filter(has_text="Reference built").wait_for(timeout=600_000)
    assert "2 clean coop learners" in page.locator("#reference-info").inner_text() or \
        "built here" in page.locator("#reference-info").inner_text()
    seen = scan_and_watch(page)
    assert "Backdoor suspected" in seen["verdict"] and "fruit" in seen["verdict"], seen["verdict"]
    assert "2 clean coop learners tuned with varied recipes on task task.zip" in seen["verdict"]
    shot(page, "6-own-data-verdict")
    open_tab(page, "Repair")
    epochs = page.locator("#repair-epochs input[type=number]")
    set_number(epochs, "10")
    page.locator("#repair-button").click()
    table = page.locator("#repair-table")
    table.filter(has_text="after").wait_for(timeout=600_000)
    text = table.inner_text().replace("\n", " ").replace("\t", " | ")
    row = re.search(r"real trigger \(ground truth ASR\)\s*\|\s*([\d.]+)%\s*\|\s*([\d.]+)%", text)
    assert row and float(row.group(2)) <= float(row.group(1)) / 2, text
    assert "task.zip" in page.locator("#repair-status").inner_text()
    shot(page, "7-own-data-repaired")


def test_workshop_path_threshold_switch_model_nothing_stale_then_teach_implant_scan_reveal(page, tmp_path):
    """The teaching path from the page: move the threshold on a finished scan (decided again at once), switch the
    model (nothing of the last one stays), then Teach: implant a hidden backdoor, scan the mystery model, reveal."""
    page.reload(wait_until="load")
    page.locator("#model-info").filter(has_text="prompt learner").wait_for(timeout=60_000)
    pick_model(page, CLEAN)
    seen = scan_and_watch(page)
    assert "No backdoor found" in seen["verdict"]
    assert not page.locator("#reveal-button").is_visible()  # the ground truth is for teaching mode's model only
    page.get_by_text("Scan settings", exact=True).click()
    threshold = page.locator("#threshold input[type=number]")
    set_number(threshold, "1.5")
    threshold.blur()
    try:
        page.locator("#verdict").filter(has_text="decided again at threshold 1.5").wait_for(timeout=30_000)
    except playwright_api.TimeoutError:
        shot(page, "8-threshold-not-taken")
        pytest.fail(f"the verdict was not decided again: {verdict_text(page)!r}; threshold box "
                    f"{threshold.input_value()!r}; progress {page.locator('#progress').inner_text()!r}; app log: "
                    f"{APP_LOG.read_text()[-2000:] if APP_LOG else ''}")
    shot(page, "8-threshold-moved")

    pick_model(page, BACKDOORED)  # another model: no verdict, trigger, images or repair of the last one stays
    page.locator("#verdict").filter(has_text=re.compile(r"^\s*$")).wait_for(timeout=30_000)
    assert verdict_text(page).strip() == "" and trigger_src(page) is None
    assert page.locator("#clean-examples img").count() == 0
    shot(page, "9-switched-nothing-stale")

    open_tab(page, "Teach")
    page.locator("#implant-button").click()
    page.locator("#teach-status").filter(has_text="mystery model").wait_for(timeout=600_000)
    assert "mystery model" in page.locator("#model-info").inner_text()
    shot(page, "10-implanted")
    seen = scan_and_watch(page)
    shot(page, "11-mystery-verdict")
    open_tab(page, "Teach")
    page.locator("#reveal-button").click()
    truth = page.locator("#truth")
    truth.filter(has_text="Ground truth").wait_for(timeout=30_000)
    assert "blended" in truth.inner_text()
    shot(page, "12-revealed")
    open_tab(page, "Try your image")  # once revealed, a picture is also shown with the attacker's real trigger
    upload(page, "picture-upload", pool_picture(tmp_path / "workshop.png", 11))
    page.locator("#picture-status").filter(has_text="with the attacker's real trigger").wait_for(timeout=60_000)
    assert page.locator("#picture-tiles img").count() == 3
    shot(page, "13-picture-with-the-attackers-trigger")
    for name in ("8-threshold-moved", "9-switched-nothing-stale", "11-mystery-verdict", "12-revealed"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
