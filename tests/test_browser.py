"""Lesson 05 in a real browser: JupyterLab + headless Chromium (Debian's), driven by Playwright.

Starts JupyterLab on 127.0.0.1 with a random token in a temporary root that holds a copy of the
lesson (outputs cleared), runs all cells, moves the temperature slider with the keyboard, and checks
that the explorer's picture changes, that no error or stderr output appears, and how long a key press
takes to change the picture (printed; the target is 100 ms).

Chromium: /usr/bin/chromium, installed with apt-get when missing and allowed (root, apt-get present).
The test skips only when Chromium or Playwright truly cannot be had, and fails instead when the
environment variable CI is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from clipcourse.paths import NOTEBOOKS_DIR

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = "05_the_temperature_dial.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ALL_TIMEOUT_S = 900          # the lesson trains a small model; slow, shared CI machines need time
LATENCY_TARGET_MS = 100.0
KEY_PRESSES = 7


def _unavailable(reason: str):
    """Skip, or fail under CI, where the browser test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}")
    pytest.skip(reason)


def _apt_install_chromium() -> str:
    """Try `apt-get install -y chromium` (after `apt-get update` if the first try fails)."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not running as root, so apt-get cannot install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode == 0 and Path(CHROMIUM).exists():
        return ""
    subprocess.run(["apt-get", "update"], env=env, capture_output=True)
    out = subprocess.run(install, env=env, capture_output=True, text=True)
    if out.returncode == 0 and Path(CHROMIUM).exists():
        return ""
    return f"apt-get install chromium failed: {out.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        problem = _apt_install_chromium()
        if problem:
            _unavailable(f"{CHROMIUM} is missing and could not be installed ({problem})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the Python package playwright is not installed (pip install playwright)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def jupyterlab_command(port: int, token: str, root: Path) -> list[str]:
    """The JupyterLab server the test starts: on 127.0.0.1 only (never other machines), with a token."""
    if not token:
        raise ValueError("token must not be empty: without one, anyone on this machine can run code in the kernel")
    return [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None", "--ServerApp.port_retries=0"]


@contextlib.contextmanager
def jupyterlab(notebook: Path, base: Path):
    """Run JupyterLab on 127.0.0.1 with a random token, in base/root holding a copy of `notebook`
    (outputs cleared); yield its url, token and number of code cells; always shut it down."""
    import nbformat

    root, home = base / "root", base / "home"
    root.mkdir(parents=True)
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:                                 # start clean: "done" means run here
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / notebook.name)
    n_code_cells = sum(c.cell_type == "code" for c in nb.cells)

    settings = home / "lab-settings"
    # no "Would you like to get notified about Jupyter news?" toast, no update checks
    _write_json(settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})
    # every cell in the DOM, so the test can see all prompts and outputs
    _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    # the kernel runs this very Python (the one with clipcourse installed)
    _write_json(home / "share/kernels/python3/kernel.json",
                {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                 "display_name": "Python 3 (ipykernel)", "language": "python"})
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_TOKEN")}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_PATH=str(home / "share"), IPYTHONDIR=str(home / "ipython"))
    port, token = _free_port(), secrets.token_hex(24)
    cmd = jupyterlab_command(port, token, root)
    log_path = base / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise RuntimeError(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield {"url": url, "token": token, "notebook": notebook.name, "n_code_cells": n_code_cells,
                   "log": log_path}
        finally:
            try:  # shut kernels and server down cleanly, then make sure
                req = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST", data=b"")
                urllib.request.urlopen(req, timeout=10).close()
                server.wait(timeout=30)
            except Exception:
                pass
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait(timeout=15)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium):
    with jupyterlab(NOTEBOOKS_DIR / NOTEBOOK, tmp_path_factory.mktemp("lab")) as server:
        yield server


# A checksum of the canvas pixels, the key press's timestamp, and the moment the picture changes:
# checked whenever ipympl draws into the canvas (drawImage), with a slow poll as a fallback.
MONITOR_JS = """
(canvas) => {
  const ctx = canvas.getContext('2d');
  const sum = () => {
    const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 4) h = (Math.imul(h, 31) + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) | 0;
    return h;
  };
  const m = window.__tauMonitor = {baseline: sum(), keyAt: null, changedAt: null, stop: false};
  const check = () => {
    if (m.keyAt !== null && m.changedAt === null && sum() !== m.baseline) m.changedAt = performance.now();
  };
  if (!ctx.__tauPatched) {
    const draw = ctx.drawImage.bind(ctx);
    ctx.drawImage = (...args) => { draw(...args); if (window.__tauMonitor) window.__tauMonitor.check(); };
    ctx.__tauPatched = true;
  }
  m.check = check;
  document.addEventListener('keydown', () => { if (m.keyAt === null) m.keyAt = performance.now(); },
                            {capture: true, once: true});
  const poll = () => { if (!m.stop) { check(); setTimeout(poll, 50); } };
  poll();
}
"""


def _errors_on_page(page) -> list[str]:
    found = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
    found += [t for t in page.locator(".jupyter-widgets").all_inner_texts() if "Error displaying widget" in t]
    return found


def drive_explorer(lab: dict, chromium: str) -> dict:
    """Open the notebook, run all cells, press arrow keys on the explorer's τ slider; return what happened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console_errors = []
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(f"{lab['url']}/lab/tree/{lab['notebook']}?token={lab['token']}")
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
            # the kernel must be up before "Run All Cells"
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-StatusBar-TextItem, .jp-Toolbar-kernelStatus')]"
                ".some(e => /Idle/i.test(e.textContent || '') || /idle/i.test(e.getAttribute('title') || ''))",
                timeout=120_000)

            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            t_run = time.monotonic()
            page.wait_for_function(
                """(n) => {
                     const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                     return prompts.length === n && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                   }""", arg=lab["n_code_cells"], timeout=RUN_ALL_TIMEOUT_S * 1000)
            run_all_s = time.monotonic() - t_run
            errors_after_run = _errors_on_page(page)

            # the temperature explorer: its τ slider (label exactly "τ") and its canvas
            label = page.locator(".widget-label", has_text=re.compile(r"^τ$"))
            slider = page.locator(".widget-hslider", has=label).first
            slider.scroll_into_view_if_needed()
            box = slider.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
            canvas = box.locator(".jupyter-matplotlib-canvas-div canvas").first
            canvas.wait_for(timeout=60_000)
            page.wait_for_function("(c) => c.width > 100 && c.height > 100", arg=canvas.element_handle(),
                                   timeout=60_000)
            readout = slider.locator(".widget-readout")
            handle = slider.locator(".noUi-handle").first
            time.sleep(1.0)                                  # let the first full picture settle

            before_png = canvas.screenshot()
            latencies, tau_readouts = [], [readout.inner_text()]
            for k in range(KEY_PRESSES):
                canvas.evaluate(MONITOR_JS)
                handle.focus()
                page.keyboard.press("ArrowLeft")                     # τ falls one step
                page.wait_for_function("() => window.__tauMonitor.changedAt !== null", timeout=15_000)
                m = page.evaluate("() => { const m = window.__tauMonitor; m.stop = true; "
                                  "return [m.keyAt, m.changedAt]; }")
                latencies.append(m[1] - m[0])
                tau_readouts.append(readout.inner_text())
                time.sleep(0.4)                              # let the kernel go idle between presses
            after_png = canvas.screenshot()

            return {"run_all_s": run_all_s, "errors_after_run": errors_after_run,
                    "errors_after_keys": _errors_on_page(page), "console_errors": console_errors,
                    "latencies_ms": latencies, "tau_readouts": tau_readouts,
                    "picture_changed": before_png != after_png}
        finally:
            browser.close()


def test_lesson_05_slider_in_jupyterlab(lab, chromium):
    r = drive_explorer(lab, chromium)
    lat = r["latencies_ms"]
    print(f"\nrun all cells: {r['run_all_s']:.0f} s")
    print(f"τ readouts while pressing ArrowLeft: {r['tau_readouts']}")
    print("key press -> changed picture: " + ", ".join(f"{x:.0f}" for x in lat)
          + f" ms; median {statistics.median(lat):.0f} ms (target <= {LATENCY_TARGET_MS:.0f} ms)")
    assert r["errors_after_run"] == [], "error output while running the lesson"
    assert r["picture_changed"], "the explorer's picture did not change"
    assert len(set(r["tau_readouts"])) == len(r["tau_readouts"]), "the τ slider did not move on every key press"
    assert r["errors_after_keys"] == [], "error output appeared after moving the slider"
    assert r["console_errors"] == [], f"JavaScript errors: {r['console_errors']}"
    # a loose bound against a broken update path; the 100 ms target is printed above
    assert statistics.median(lat) < 2000


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_chromium_the_test_skips_but_fails_under_ci(monkeypatch, ci):
    monkeypatch.setattr(shutil, "which", lambda name: None)          # as on a machine without apt-get
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    assert _apt_install_chromium() == "apt-get is not available"
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception, match="chromium"):
        _unavailable("no chromium here")


def test_the_server_listens_on_127_0_0_1_only_and_requires_a_token(tmp_path):
    """No browser needed: the command line the test starts JupyterLab with. Binding another address
    (0.0.0.0, ::) or dropping the token would let other machines, or anyone, run code in the kernel."""
    token = secrets.token_hex(24)
    cmd = jupyterlab_command(8888, token, tmp_path)
    ips = [arg for arg in cmd if arg.startswith(("--ip", "--ServerApp.ip"))]
    assert ips == ["--ip=127.0.0.1"]
    tokens = [arg for arg in cmd if "token" in arg.lower()]
    assert tokens == [f"--IdentityProvider.token={token}"]
    assert not any(arg.startswith(("--ServerApp.password", "--ServerApp.disable_check_xsrf",
                                   "--ServerApp.allow_remote_access", "--ServerApp.allow_origin")) for arg in cmd)
    with pytest.raises(ValueError, match="token must not be empty"):
        jupyterlab_command(8888, "", tmp_path)
