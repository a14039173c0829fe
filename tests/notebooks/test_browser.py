"""The quickstart in a real JupyterLab, run by a real Chromium: the live widget's
timeline, a diff and the plotly timing charts must be in the page.

JupyterLab is started by the test (127.0.0.1, a free port, a token, its own root and
config folders) and stopped by its PID; Chromium is Debian's, driven by Selenium through
Debian's chromedriver. The screenshot is kept in test-reports/notebook-browser/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "test-reports" / "notebook-browser"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab serving a folder with the quickstart notebook; yields (url, token)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root)
    settings = tmp_path / "lab-settings"
    # every cell in the DOM (no windowing), so the page can be checked and photographed
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    news = settings / "@jupyterlab" / "apputils-extension"  # no "news?" popup over the page
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "IPYTHONDIR": str(tmp_path / "ipython"), "ANTRIEB_CACHE": str(tmp_path / "cache")}
    log = open(tmp_path / "jupyterlab.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n" +
                                (tmp_path / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()  # by PID: the server shuts its kernels down on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        REPORTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "jupyterlab.log", REPORTS / "jupyterlab.log")


@pytest.fixture
def chromium() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: ./dev setup installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,3200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _menu(driver: object, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(  # type: ignore[attr-defined]
        By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{menu}']").click()
    driver.find_element(  # type: ignore[attr-defined]
        By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']").click()


def test_quickstart_widget_renders_in_jupyterlab(jupyterlab: tuple[str, str],
                                                 chromium: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium
    url, token = jupyterlab
    driver.get(f"{url}/lab/tree/quickstart.ipynb?token={token}&reset")  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 180, poll_frequency=0.5)
    REPORTS.mkdir(parents=True, exist_ok=True)
    try:
        # the kernel is up when the status says Idle
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook")))
        wait.until(lambda d: "Idle" in d.find_element(
            By.CSS_SELECTOR, ".jp-StatusBar-Component, #jp-main-statusbar").text)
        _menu(driver, "Run", "Run All Cells")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".antrieb-run-widget")))
        # every cell ran: the last one prints the final script
        wait.until(lambda d: "# ---- lb" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text)
        widget = driver.find_element(By.CSS_SELECTOR, ".antrieb-run-widget")  # type: ignore[attr-defined]
        # the playback ended with the run converged: header, three iterations, the proof
        assert "converged" in widget.find_element(By.CSS_SELECTOR, ".antrieb-header").text
        iterations = widget.find_elements(By.CSS_SELECTOR, ".antrieb-timeline .antrieb-iteration")
        assert len(iterations) == 3
        assert "retry" in iterations[0].text and "FAIL" in iterations[0].text
        adds = widget.find_elements(By.CSS_SELECTOR, ".antrieb-diff-add")
        assert any("server web2:80;" in a.text for a in adds)  # the typo's fix, as a diff
        assert "idempotent" in widget.find_element(By.CSS_SELECTOR, ".antrieb-final").text
        # plotly drew both timing charts inside the widget: one bar per segment and iteration
        wait.until(lambda d: len(d.find_elements(
            By.CSS_SELECTOR, ".antrieb-charts .js-plotly-plot svg.main-svg")) >= 2)
        wait.until(lambda d: len(d.find_elements(
            By.CSS_SELECTOR, ".antrieb-charts .js-plotly-plot g.trace.bars path")) >= 3)
        titles = [t.text for t in widget.find_elements(By.CSS_SELECTOR, ".antrieb-charts .gtitle")]
        assert "Time per iteration (s)" in titles and "Time per node (s)" in titles
        # where the widget lives, its static copy (for nbconvert, code hosts) is hidden
        copies = driver.find_elements(By.CSS_SELECTOR, ".antrieb-static-copy")  # type: ignore[attr-defined]
        assert copies and not any(c.is_displayed() for c in copies)
        driver.execute_script("arguments[0].scrollIntoView()", widget)  # type: ignore[attr-defined]
        time.sleep(1)
        widget.screenshot(str(REPORTS / "quickstart-widget.png"))
    finally:
        driver.save_screenshot(str(REPORTS / "quickstart-page.png"))  # type: ignore[attr-defined]
        (REPORTS / "quickstart-page.html").write_text(driver.page_source)  # type: ignore[attr-defined]
        (REPORTS / "browser-console.json").write_text(json.dumps(
            driver.get_log("browser"), indent=1))  # type: ignore[attr-defined]
