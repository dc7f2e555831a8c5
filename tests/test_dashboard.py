"""The browser dashboard, in a real headless Chromium (selenium + chromedriver)
against a real shim and daemon running the bundled SmolLM2.

Skipped, with the reason, where Chromium or its driver is not installed
(.ci/run installs Debian's ``chromium`` and ``chromium-driver``).
``IMPETUS_DASHBOARD_SCREENSHOT=PATH`` also saves the screenshot there (the
README's docs/dashboard.png is taken that way).
"""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import DaemonProcess, ShimProcess, wait_until

MODEL = "smollm2-135m"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the 'test' extra)")
if not (CHROMIUM and DRIVER):
    pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("dash")).start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def shim(daemon: DaemonProcess) -> Iterator[ShimProcess]:
    s = ShimProcess(daemon).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800", "--force-color-profile=srgb"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def health(daemon: DaemonProcess) -> dict:
    with daemon.connect() as conn:
        return conn.call("daemon.health")["result"]


def model_in_flight(daemon: DaemonProcess) -> int:
    with daemon.connect() as conn:
        return sum(m["in_flight"] for m in conn.call("models.loaded")["result"]["models"] if m["name"] == MODEL)


def loaded_names(daemon: DaemonProcess) -> list[str]:
    with daemon.connect() as conn:
        return [m["name"] for m in conn.call("models.loaded")["result"]["models"]]


def wait_for(browser: WebDriver, predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """``predicate``'s first truthy value; a page that re-renders between finding an element
    and reading it (a stale element) is asked again."""
    return WebDriverWait(browser, timeout, poll_frequency=0.2, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        lambda d: predicate(d)
    )


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def png_colours(path: Path) -> int:
    """Distinct pixel values in an 8-bit RGB/RGBA PNG (what Chromium writes), read without Pillow."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, prev, seen = zlib.decompress(idat), width * channels, bytearray(width * channels), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # undo the PNG row filters
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            seen.update(bytes(line[x : x + 3]) for x in range(0, stride, channels * 4))
        prev = line
    return len(seen)


def canvas_ink(browser: WebDriver, canvas_id: str) -> int:
    """How many pixels of the canvas something was drawn on."""
    script = "const c = document.getElementById(arguments[0]); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;"
    return int(browser.execute_script(script, canvas_id))


def test_root_still_answers_ollama_clients_and_sends_browsers_to_the_dashboard(shim: ShimProcess) -> None:
    assert httpx.get(shim.base + "/").text == "Ollama is running"
    redirect = httpx.get(shim.base + "/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert redirect.status_code == 307 and redirect.headers["location"] == "/dashboard"
    page = httpx.get(shim.base + "/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "default-src 'self'" in page.headers["content-security-policy"]


def test_a_cross_origin_post_to_the_dashboard_routes_is_refused(shim: ShimProcess, daemon: DaemonProcess) -> None:
    r = httpx.post(shim.base + "/v1/dashboard/load", json={"model": MODEL}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin_request"
    r = httpx.post(shim.base + "/v1/dashboard/load", content=b'{"model": "smollm2-135m"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert MODEL not in loaded_names(daemon)


def test_the_dashboard_loads_chats_stops_and_unloads(shim: ShimProcess, daemon: DaemonProcess, browser: WebDriver, tmp_path: Path) -> None:
    browser.get(shim.base + "/")  # a browser's Accept: redirected to /dashboard
    assert browser.current_url.endswith("/dashboard")
    row = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, f'#models tr[data-model="{MODEL}"]'))
    assert "Load" in row.text
    time.sleep(1.5)  # a poll or two later the same row is still there (rebuilt only on change): focus and clicks survive
    assert row.is_displayed()
    assert wait_for(browser, lambda d: d.find_element(By.ID, "status").text in ("ok", "degraded"))

    # load: the model shows up loaded, with its memory bar against the budget
    row.find_element(By.XPATH, ".//button[text()='Load']").click()
    card = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#loaded .model[data-model="{MODEL}"]'), timeout=180)[0]
    bar = card.find_element(By.CSS_SELECTOR, "progress.memory")
    assert float(bar.get_attribute("value") or 0) > 0 and float(bar.get_attribute("max") or 0) >= float(bar.get_attribute("value") or 0)
    assert MODEL in loaded_names(daemon)

    # the playground streams an answer; the request feed shows it from the daemon's events
    assert Select(browser.find_element(By.ID, "chat-model")).first_selected_option.text == MODEL  # follows the loaded model
    Select(browser.find_element(By.ID, "chat-model")).select_by_value(MODEL)
    browser.find_element(By.ID, "prompt").send_keys("Which city is the capital of France?")
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("24")
    browser.find_element(By.ID, "send").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "send").is_enabled() and d.find_element(By.ID, "chat-stats").text, timeout=180)
    assert "error" not in browser.find_element(By.ID, "chat-stats").text, browser.find_element(By.ID, "chat-stats").text
    assert "Paris" in browser.find_element(By.ID, "answer").text
    assert "tok/s" in browser.find_element(By.ID, "chat-stats").text
    feed = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#feed tr"), timeout=30)
    assert MODEL in feed[0].text
    # the per-model tok/s chart got the finished request: a legend entry and ink on its canvas
    legend = wait_for(browser, lambda d: d.find_element(By.ID, "tps-legend").text, timeout=30)
    assert MODEL in legend and "tok/s" in legend
    assert canvas_ink(browser, "tps-chart") > 0

    # compare: the same prompt into two columns at once, each with its own TTFT and tok/s
    Select(browser.find_element(By.ID, "chat-model2")).select_by_value(MODEL)
    browser.find_element(By.ID, "send").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "send").is_enabled() and d.find_element(By.ID, "chat-stats").text.count("tok/s") == 2, timeout=180)
    assert browser.find_element(By.ID, "answer2").is_displayed()
    assert "Paris" in browser.find_element(By.ID, "answer").text and "Paris" in browser.find_element(By.ID, "answer2").text
    Select(browser.find_element(By.ID, "chat-model2")).select_by_value("")

    # the screenshot: always into the test's tmp dir, and where the env var asks
    time.sleep(2.5)  # a hardware sample or two for the charts
    shot = tmp_path / "dashboard.png"
    assert browser.get_screenshot_as_file(str(shot))
    assert png_size(shot) == (1280, 800)
    assert png_colours(shot) > 16, "the screenshot is (nearly) blank"
    if target := os.environ.get("IMPETUS_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shot, target)

    # stop: a long answer is cancelled in the daemon when the page aborts its fetch
    browser.find_element(By.ID, "prompt").clear()
    browser.find_element(By.ID, "prompt").send_keys("Count from 1 to 1000, separated by commas.")
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("1000")
    idle = health(daemon)["in_flight"]  # the page's own events subscription is a request in flight too
    browser.find_element(By.ID, "send").click()
    wait_for(browser, lambda d: len(d.find_element(By.ID, "answer").text) > 10 or "error" in d.find_element(By.ID, "chat-stats").text, timeout=120)
    assert health(daemon)["in_flight"] == idle + 1 and model_in_flight(daemon) == 1, browser.find_element(By.ID, "chat-stats").text
    browser.find_element(By.ID, "stop").click()
    assert wait_until(lambda: model_in_flight(daemon) == 0 and health(daemon)["in_flight"] == idle, timeout=30)
    assert "stopped" in browser.find_element(By.ID, "chat-stats").text
    cancelled = wait_for(browser, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#feed tr") if "cancelled" in r.text], timeout=30)
    assert MODEL in cancelled[0].text  # the daemon's own account of the request, relayed over SSE

    # unload: gone from the daemon and from the page
    card = browser.find_element(By.CSS_SELECTOR, f'#loaded .model[data-model="{MODEL}"]')
    card.find_element(By.XPATH, ".//button[text()='Unload']").click()
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, f'#loaded .model[data-model="{MODEL}"]'), timeout=60)
    assert MODEL not in loaded_names(daemon)

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_with_an_api_key_the_page_asks_for_it(daemon: DaemonProcess, browser: WebDriver) -> None:
    s = ShimProcess(daemon, "--api-key", "s3cret").start()
    try:
        assert httpx.get(s.base + "/v1/dashboard/state").status_code == 401
        browser.get(s.base + "/dashboard")
        wait_for(browser, lambda d: d.find_element(By.ID, "key-form").is_displayed())
        browser.find_element(By.ID, "key").send_keys("s3cret")
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#models tr[data-model="{MODEL}"]'))
        assert browser.execute_script("return sessionStorage.getItem('impetus.apiKey')") == "s3cret"
    finally:
        s.stop()


def test_pull_shows_its_progress_and_lists_the_model(tmp_path_factory: pytest.TempPathFactory, browser: WebDriver) -> None:
    from fake_hub import FakeHub
    from gguf_factory import write_tiny_llama

    root = tmp_path_factory.mktemp("dashpull")
    payload = write_tiny_llama(root / "tiny-F32.gguf", "F32", hidden=64).read_bytes()
    with FakeHub() as hub:
        hub.add_repo("test/tiny-GGUF", {"tiny-F32.gguf": payload})
        hub.faults.slow("tiny-F32.gguf", max(len(payload) // 3, 1))  # about three seconds, so the bar moves
        d = DaemonProcess(root, HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        d.env.pop("HF_TOKEN", None)
        d.start()
        s = ShimProcess(d).start()
        try:
            browser.get(s.base + "/dashboard")
            wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#models tr"))
            browser.find_element(By.ID, "pull-name").send_keys("test/tiny-GGUF")
            browser.find_element(By.CSS_SELECTOR, "#pull-form button").click()
            seen: set[float] = set()

            def progressed(b: WebDriver) -> bool:
                value = b.execute_script("const p = document.getElementById('pull-progress'); return p.hidden ? null : p.position")
                if value is not None and value >= 0:
                    seen.add(round(value, 2))
                return b.find_element(By.ID, "pull-status").text in ("pulled", "already_registered") or "error" in b.find_element(By.ID, "error").text

            wait_for(browser, progressed, timeout=120)
            assert browser.find_element(By.ID, "pull-status").text == "pulled", browser.find_element(By.ID, "error").text
            assert len([v for v in seen if 0 < v < 1]) >= 2, seen  # the bar moved while the bytes came
            assert wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, '#models tr[data-model="test/tiny-GGUF"], #models tr[data-model^="tiny"]'), timeout=10)
        finally:
            s.stop()
            d.stop()


def test_theme_toggle_and_keyboard_reach(shim: ShimProcess, browser: WebDriver) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(shim.base + "/dashboard")
    wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#models tr"))
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    browser.find_element(By.ID, "theme").click()
    assert browser.execute_script("return document.documentElement.dataset.theme") in ("dark", "light")
    assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") != background
    # Tab alone reaches every control that is shown and enabled
    browser.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    body = browser.find_element(By.TAG_NAME, "body")
    reached: set[str] = set()
    for _ in range(60):
        body.send_keys(Keys.TAB) if not reached else browser.switch_to.active_element.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        reached.add(active.get_attribute("id") or f"{active.tag_name}:{active.text}")
    for wanted in ("theme", "pull-name", "chat-model", "temperature", "max-tokens", "system", "prompt", "send", "button:Load", "button:Remove"):
        assert wanted in reached, (wanted, reached)


def test_registered_compute_nodes_are_shown_with_the_models_using_them(shim: ShimProcess, daemon: DaemonProcess, browser: WebDriver) -> None:
    """A real rpc-server on loopback and an address nobody listens on: the Nodes table
    shows each (state, memory, latency), then the model split across the first."""
    import socket
    import subprocess
    import sys

    from impetus_llamacpp.nodes import Node, probe

    rpc_server = os.environ.get("IMPETUS_RPC_SERVER") or str(Path(sys.prefix) / "libexec" / "impetus" / "rpc-server")
    assert os.access(rpc_server, os.X_OK), f"no rpc-server at {rpc_server}: run scripts/setup"
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
    node = subprocess.Popen([rpc_server, "--host", "127.0.0.1", "--port", str(ports[0])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: probe(Node("n", "127.0.0.1", ports[0])).state == "ready", timeout=20)
        browser.get(shim.base + "/dashboard")
        wait_for(browser, lambda d: d.find_element(By.ID, "status").text in ("ok", "degraded"))
        assert not browser.find_element(By.ID, "nodes-section").is_displayed()  # no nodes: no section
        browser.get_log("browser")  # what pages of the earlier tests logged (their shims are gone)
        with daemon.connect() as conn:
            assert "result" in conn.call("nodes.add", {"name": "alpha", "address": f"127.0.0.1:{ports[0]}", "memory_limit_bytes": 2**30})
            assert "result" in conn.call("nodes.add", {"name": "gone", "address": f"127.0.0.1:{ports[1]}"})
        # the table is rebuilt at every probe round: the row and its cells are read in one step
        cells = wait_for(browser, lambda d: [c.text for c in d.find_element(By.CSS_SELECTOR, '#nodes tr[data-node="alpha"]').find_elements(By.TAG_NAME, "td")], timeout=30)
        assert cells[:3] == ["alpha", f"127.0.0.1:{ports[0]}", "ready"], cells
        assert "free of" in cells[3] and "cap 1.0 GB" in cells[3] and cells[4].endswith(" ms") and cells[5] == "–", cells
        gone_text, gone_title = wait_for(
            browser,
            lambda d: (
                (row := d.find_element(By.CSS_SELECTOR, '#nodes tr[data-node="gone"]')).text,
                row.find_element(By.CSS_SELECTOR, ".badge").get_attribute("title") or "",
            ),
        )
        assert "unreachable" in gone_text and "refused" in gone_title
        # a model split across alpha: the row names it (at the next probe round, within 10 s)
        with daemon.connect() as conn:
            loaded = conn.call("models.load", {"model": MODEL, "backend": "llamacpp", "keep_alive": -1, "nodes": ["alpha"]})
        assert "result" in loaded and loaded["result"]["model"]["engine"]["rpc_nodes"] == [f"127.0.0.1:{ports[0]}"], loaded
        try:
            wait_for(browser, lambda d: MODEL in d.find_element(By.CSS_SELECTOR, '#nodes tr[data-node="alpha"] td.used-by').text, timeout=30)
            assert "held" in wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, '#nodes tr[data-node="alpha"] td.memory').text)
        finally:
            with daemon.connect() as conn:
                conn.call("models.unload", {"model": MODEL})
        with daemon.connect() as conn:
            for name in ("alpha", "gone"):
                conn.call("nodes.remove", {"name": name})
        wait_for(browser, lambda d: not d.find_element(By.ID, "nodes-section").is_displayed(), timeout=30)
    finally:
        node.kill()
        node.wait()
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
