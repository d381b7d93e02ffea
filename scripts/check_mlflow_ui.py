"""Check in a real browser that MLflow's UI shows a sweep's runs as a user would see them.

MLflow 3.17 opens an experiment on its GenAI overview, keeps the runs table under "Model
training", shows nested runs collapsed under their parent and shows no param or metric
column until the user picks one. This script serves a *copy* of a sqlite tracking store with
``mlflow server`` on 127.0.0.1, drives headless Chromium (Debian's ``chromium``) through its
DevTools protocol, opens the runs table with the sweep's saved view, expands the parent run
the way a user does (a click on its expander), screenshots the table and one child run's
page, and checks from the DOM that the parent run, its child runs and the key columns are
on screen. Then, by mouse clicks counted from the same URL, it opens the trade-off figure in
the parent run's artifacts (``report/pareto.png``, logged by ``run`` when it ends) and a
child run's training curve (``train_loss`` on its **Model metrics** tab), checks that the
figure is drawn at its own size and the curve as a line through more than one point, and
screenshots both. Point counts and the figure's files come from the server's REST API.

What the URL can and cannot carry (read from MLflow 3.17.2's UI bundle,
``mlflow/server/js/build/static/js``):

- ``#/experiments/<id>/runs`` is the runs table (route ``experimentPageTabbed``, tab
  ``runs``), whatever the experiment's kind.
- ``?viewStateShareKey=<key>`` loads a saved view: the experiment tag
  ``mlflow.sharedViewState.<key>`` holding ``{"name", "createdAt", "updatedAt", "state"}``,
  ``state`` being JSON of the search facets (``searchFilter``, ``orderByKey``,
  ``orderByAsc``, ...) and the table state (``selectedColumns``, ``columnOrder``,
  ``groupBy``, ...). The "Views" menu above the table lists the same views by name.
- Expanded parents (``runsExpanded``) are explicitly left out of saved views and live only
  in the browser's localStorage, so no URL expands a parent: the user clicks its expander.
- ``?workflowType=machine_learning`` switches the sidebar to "Model training" (Runs, Models,
  Traces) instead of the GenAI one; it overrides the choice stored in the browser. The
  experiment tag ``mlflow.experimentKind`` does not: 3.17 takes the kind from this switch.
  Without the saved view's tag the same URL lands on the GenAI overview.
- ``#/experiments/<id>/runs/<run>/artifactPath/<path>`` opens a run's Artifacts tab with the
  file at ``<path>`` shown (the URL ``run`` prints after "see the frontier:").

Usage::

    python scripts/check_mlflow_ui.py --tracking-uri sqlite:///mlflow.db --experiment quickstart \\
        --out ui_check/

Exit status: 0 when every check passes, 1 with one line per failed check, 2 on bad input
(nothing is started). The store itself is never written: the server runs on a copy, and the
saved view is written into that copy.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting.study import REPORT_ARTIFACT_PATH
from skipnet_sweep.sweep.mlflow_ui import (  # noqa: F401 (the URL helpers, re-exported)
    SAVED_VIEW_TAG_PREFIX,
    SWEEP_VIEW_KEY,
    SWEEP_VIEW_NAME,
    VIEW_METRICS,
    VIEW_PARAMS,
    VIEW_TAGS,
    artifact_page_url,
    run_page_url,
    runs_view_url,
    sweep_view_tags,
)

# Headers that must be on screen after the parent is expanded.
KEY_COLUMNS = (M.PARAM_ALPHA, M.PARAM_GATE, M.TOP1, M.TEST_TOP1, M.FLOPS_MEAN)
# Where `run` logs the trade-off figure in the parent run (skipnet_sweep.reporting.sweep_figures):
# top-1 against MACs, ``pareto.png`` for one dataset (``pareto_<dataset>.png`` for several).
FIGURE_FOLDER = REPORT_ARTIFACT_PATH
FRONTIER_FIGURE = "pareto.png"
# A training curve every stage logs every few steps (skipnet_sweep.stages.loop).
CURVE_METRIC = M.TRAIN_LOSS

PARENT_TAG = "mlflow.parentRunId"
HEADER_GRACE_S = 20.0  # seconds the key columns may lag behind the rows
SCROLL_PAUSE_S = 1.0  # seconds between screens when scrolling to a chart
VIEWPORT = (2400, 1300)  # wide enough that the key columns are rendered without scrolling


class BadInput(ValueError):
    """The tracking URI, the experiment or the store's content is not a sweep we can show."""


@dataclass(frozen=True)
class Run:
    run_id: str
    name: str


@dataclass(frozen=True)
class SweepRuns:
    """What the check expects on screen: one sweep's parent run and its child runs."""

    experiment_id: str
    parent: Run
    children: tuple[Run, ...]


def sqlite_path(tracking_uri: str) -> Path:
    """The database file of a ``sqlite:///`` tracking URI; BadInput for anything else."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        raise BadInput(f"--tracking-uri must be sqlite:///<path>, got {tracking_uri!r}")
    path = Path(tracking_uri[len(prefix) :])
    if not path.is_file():
        raise BadInput(f"--tracking-uri: no sqlite file at {path}")
    return path


def read_sweep(tracking_uri: str, experiment: str) -> SweepRuns:
    """Find the newest sweep parent run (tag ``stage=sweep``) of an experiment and its children.

    Args:
        tracking_uri: a tracking URI the MLflow client can open (the check passes its copy).
        experiment: experiment name.
    Returns:
        the parent and its children, oldest child first.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise BadInput(f"--experiment: no experiment {experiment!r}; the store has {names}")
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.{M.TAG_STAGE} = '{M.SWEEP_STAGE}'",
        order_by=["attributes.start_time DESC"],
    )
    if not parents:
        raise BadInput(
            f"--experiment {experiment!r}: no sweep parent run (tag {M.TAG_STAGE}={M.SWEEP_STAGE})"
        )
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    if not children:
        raise BadInput(
            f"--experiment {experiment!r}: sweep run {parent.info.run_name!r} has no child runs"
        )
    return SweepRuns(
        experiment_id=exp.experiment_id,
        parent=Run(parent.info.run_id, parent.info.run_name),
        children=tuple(Run(c.info.run_id, c.info.run_name) for c in children),
    )


def write_view_tags(tracking_uri: str, experiment_id: str) -> None:
    """Set :func:`sweep_view_tags` on an experiment (the check does it on its copy only)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in sweep_view_tags(int(time.time() * 1000)).items():
        client.set_experiment_tag(experiment_id, key, value)


# ---------------------------------------------------------------------------------------------
# Processes: each started in its own session and stopped by its process-group id, because
# `mlflow server` and Chromium both fork workers that a signal to the first PID would orphan.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(
    cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode}")
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(db: Path, workdir: Path, timeout: float) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 at a free port over ``db``; yields its base URL."""
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{db}"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No job runner: the UI pages checked here start no job, and the runner is seven more
    # Python processes (huey consumers) plus a folder in /dev/shm that outlives the server.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with _process(cmd, workdir / "mlflow_server.log", env) as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_until(lambda: _http_ok(base + "/health"), timeout, "mlflow server", proc)
        yield base


def find_chromium() -> str | None:
    """Path of Debian's ``chromium`` (or another Chromium/Chrome on PATH), None if absent."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A Chrome DevTools protocol session over one page's websocket (RFC 6455, stdlib only:
    the project carries no websocket client and must download nothing at run time)."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        url = urllib.parse.urlparse(ws_url)
        self._sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self._sock.sendall(request.encode())
        self._buf = b""
        head = self._read_until(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools websocket refused: {head[:200]!r}")
        self._next_id = 0

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_until(self, sep: bytes) -> bytes:
        while sep not in self._buf:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools websocket closed")
            self._buf += chunk
        out, _, self._buf = self._buf.partition(sep)
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        n = len(payload)
        # Client frames must be masked (RFC 6455 §5.3).
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(head + mask + body)

    def _recv_message(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read_exact(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read_exact(8))
            payload = self._read_exact(n)  # server frames are unmasked
            if opcode == 0x8:
                raise ConnectionError("DevTools websocket closed by the browser")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events in between are dropped."""
        self._next_id += 1
        self._send_frame(
            0x1, json.dumps({"id": self._next_id, "method": method, "params": params}).encode()
        )
        while True:
            msg = json.loads(self._recv_message())
            if msg.get("id") == self._next_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        """Evaluate a JavaScript expression in the page and return its JSON value."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


@contextlib.contextmanager
def chromium_page(chromium: str, workdir: Path, timeout: float) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile; yields a DevTools session on its first page."""
    profile = workdir / "chromium-profile"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    # Nothing but the local server is reached: no updates, sync or background requests.
    cmd += ["--disable-quic", "--disable-background-networking", "--disable-component-update"]
    cmd += ["--disable-sync"]
    cmd += [f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    with _process(cmd, workdir / "chromium.log") as proc:
        # Chromium writes the port it picked to DevToolsActivePort in the profile.
        active = profile / "DevToolsActivePort"
        _wait_until(
            lambda: active.is_file() and active.read_text().strip(), timeout, "chromium", proc
        )
        port = int(active.read_text().split()[0])

        def page_ws():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        devtools = DevTools(_wait_until(page_ws, timeout, "chromium page", proc), timeout)
        try:
            width, height = VIEWPORT
            devtools.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield devtools
        finally:
            devtools.close()


# ---------------------------------------------------------------------------------------------
# Page probes (JavaScript evaluated in the page). "Visible" means rendered with a non-empty box
# inside the viewport: AG Grid renders only the rows and columns in view.

_JS_VISIBLE = """
(el) => { const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0
    && r.top < window.innerHeight && r.left < window.innerWidth; }
"""


def _js_run_link(experiment_id: str, run_id: str) -> str:
    # Links may carry a query (?workflowType=...), so match the path, not the end of the href.
    return f"document.querySelector('a[href*=\"#/experiments/{experiment_id}/runs/{run_id}\"]')"


def _visible_run_names(page: DevTools, experiment_id: str, runs: Sequence[Run]) -> dict[str, bool]:
    checks = ", ".join(
        f"{json.dumps(r.run_id)}: (l => !!l && ({_JS_VISIBLE})(l) && l.innerText.trim() === {json.dumps(r.name)})"
        f"({_js_run_link(experiment_id, r.run_id)})"
        for r in runs
    )
    return page.evaluate(f"({{{checks}}})")


def _visible_headers(page: DevTools) -> list[str]:
    return page.evaluate(
        f"[...document.querySelectorAll('[role=columnheader]')].filter({_JS_VISIBLE})"
        ".map(h => h.innerText.trim()).filter(t => t)"
    )


def _expander_js(experiment_id: str, run_id: str) -> str:
    # The expander is the button in the run-name cell (RunNameCellRenderer, "Expander-<id>").
    link = _js_run_link(experiment_id, run_id)
    return f"(l => l && l.closest('[role=gridcell]')?.querySelector('button'))({link})"


def _tab_js(tab: str) -> str:
    # The run page's tabs are Radix tabs: "<id>-trigger-<tab>" (model-metrics, artifacts, ...).
    return f"document.querySelector('[role=tab][id$=\"-trigger-{tab}\"]')"


def _artifact_node_js(name: str) -> str:
    # A node of the Artifacts tab's file tree, by its base name (ArtifactView's tree).
    return f"document.querySelector('[data-testid=artifact-tree-node][artifact-name={json.dumps(name)}]')"


class Clicks:
    """Mouse clicks on page elements, counted: what a user does between a URL and a view."""

    def __init__(self, page: DevTools):
        self.page = page
        self.made: list[str] = []

    def click(self, element_js: str, label: str) -> bool:
        """Click the centre of the element that ``element_js`` evaluates to, as the mouse does
        (press and release: Radix tabs react to the press, not to ``element.click()``).

        Returns:
            False when there is no such element (nothing is clicked or counted).
        """
        centre = self.page.evaluate(
            f"(e => {{ if (!e) return null; e.scrollIntoView({{block: 'center'}});"
            f" const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];"
            f" }})({element_js})"
        )
        if not centre:
            return False
        x, y = centre
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.page.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )
        self.made.append(label)
        return True

    def click_when_shown(self, element_js: str, label: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the element, then click it; False if it never came."""
        try:
            _wait_until(lambda: self.page.evaluate(f"!!({element_js})"), timeout, label)
        except TimeoutError:
            return False
        return self.click(element_js, label)

    def path(self) -> str:
        return " -> ".join(self.made)


def check_table(
    sweep: SweepRuns, base_url: str, page: DevTools, out: Path, timeout: float
) -> list[str]:
    """The runs table and a child run's page; one line per failed check (empty: all pass).

    Writes ``runs_table.png`` (the runs table, parent expanded) and ``run_page.png`` (the
    first child run's page) into ``out``.
    """
    failures: list[str] = []
    eid = sweep.experiment_id
    page.call("Page.navigate", url=runs_view_url(base_url, eid))

    parent_shown = lambda: _visible_run_names(page, eid, [sweep.parent])[sweep.parent.run_id]  # noqa: E731
    try:
        _wait_until(parent_shown, timeout, "runs table")
    except TimeoutError:
        page.screenshot(out / "runs_table.png")
        return [
            f"parent run {sweep.parent.name!r} not visible in the runs table within {timeout:.0f} s"
        ]

    # Nested children start collapsed: none may be on screen before the click.
    early = [c.name for c in sweep.children if _visible_run_names(page, eid, [c])[c.run_id]]
    if early:
        failures.append(f"child runs {early} shown before expanding the parent: not nested")
    if not Clicks(page).click(_expander_js(eid, sweep.parent.run_id), "+"):
        failures.append(f"parent run {sweep.parent.name!r} has no expander button")

    def children_shown():
        seen = _visible_run_names(page, eid, sweep.children)
        return seen if all(seen.values()) else None

    try:
        _wait_until(children_shown, timeout, "child runs")
    except TimeoutError:
        seen = _visible_run_names(page, eid, sweep.children)
        failures += [
            f"child run {c.name!r} not visible after expanding the parent"
            for c in sweep.children
            if not seen[c.run_id]
        ]
    # Headers render with the rows; a short grace absorbs a slow (shared, loaded) machine.
    with contextlib.suppress(TimeoutError):
        _wait_until(
            lambda: set(KEY_COLUMNS) <= set(_visible_headers(page)), HEADER_GRACE_S, "headers"
        )
    headers = _visible_headers(page)
    failures += [
        f"column {k!r} not visible in the runs table (headers: {headers})"
        for k in KEY_COLUMNS
        if k not in headers
    ]
    page.screenshot(out / "runs_table.png")

    child = sweep.children[0]
    page.call("Page.navigate", url=run_page_url(base_url, eid, child.run_id))

    def run_page_ready():
        # Its name, a param and a metric, and the link to the parent run ("Parent run" row).
        text = page.evaluate("document.body.innerText")
        parent_link = page.evaluate(f"!!{_js_run_link(eid, sweep.parent.run_id)}")
        return child.name in text and M.FLOPS_MEAN in text and M.PARAM_ARCH in text and parent_link

    try:
        _wait_until(run_page_ready, timeout, "run page")
    except TimeoutError:
        failures.append(
            f"run page of {child.name!r} does not show its name, {M.PARAM_ARCH!r}, {M.FLOPS_MEAN!r}"
            f" and a link to the parent run {sweep.parent.name!r}"
        )
    page.screenshot(out / "run_page.png")
    return failures


# ---------------------------------------------------------------------------------------------
# The study's figure in the parent run and a child run's training curves, each reached by
# clicks from the printed URL. Counts of points and the figure's files are read through the
# server's REST API, as the UI reads them.


def _rest(base_url: str, endpoint: str, **query) -> dict:
    url = f"{base_url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def curve_points(base_url: str, run_id: str, key: str) -> int:
    """How many values of metric ``key`` the run logged (``metrics/get-history``)."""
    return len(
        _rest(base_url, "metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
    )


def figure_files(base_url: str, run_id: str) -> list[str]:
    """The PNG files in the run's ``FIGURE_FOLDER`` (``artifacts/list``), by base name."""
    files = _rest(base_url, "artifacts/list", run_id=run_id, path=FIGURE_FOLDER).get("files", [])
    names = [f["path"].rsplit("/", 1)[-1] for f in files if not f.get("is_dir")]
    return sorted(n for n in names if n.endswith(".png"))


def tradeoff_figure(names: Sequence[str]) -> str | None:
    """The top-1 against MACs figure among ``figure_files``: ``pareto.png``, else the first
    ``pareto_<dataset>.png`` (a sweep over several datasets); None when there is none."""
    if FRONTIER_FIGURE in names:
        return FRONTIER_FIGURE
    stem = FRONTIER_FIGURE.removesuffix(".png")
    per_dataset = [n for n in names if n.startswith(stem + "_") and n != f"{stem}_latency.png"]
    return per_dataset[0] if per_dataset else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


def _figure_shown_js(width: int, height: int) -> str:
    # The artifact preview draws the file as an <img> of its own size (a blob URL).
    return (
        f"[...document.querySelectorAll('img')].some(i => ({_JS_VISIBLE})(i)"
        f" && i.naturalWidth === {width} && i.naturalHeight === {height})"
    )


@dataclass
class UiCheck:
    """What :func:`check_ui` found: one line per failed check, and lines for the user (the
    clicks from the printed URL to each view, the curves' points)."""

    failures: list[str]
    notes: list[str]


def check_figure(
    sweep: SweepRuns, base_url: str, page: DevTools, out: Path, timeout: float, notes: list[str]
) -> list[str]:
    """From the printed URL to the trade-off figure in the parent run's artifacts, by clicks:
    the sweep run's name, **Artifacts**, the ``report`` folder, the figure; then the figure's
    own URL (``run`` prints it), with no click. Writes ``frontier_figure.png``.

    Returns:
        one line per failed check.
    """
    eid, parent = sweep.experiment_id, sweep.parent
    names = figure_files(base_url, parent.run_id)
    figure = tradeoff_figure(names)
    if figure is None:
        return [
            f"parent run {parent.name!r} has no trade-off figure {FIGURE_FOLDER}/{FRONTIER_FIGURE}"
            f" in its artifacts (PNGs in {FIGURE_FOLDER}/: {names})"
        ]
    path = f"{FIGURE_FOLDER}/{figure}"
    query = urllib.parse.urlencode({"path": path, "run_uuid": parent.run_id})
    with urllib.request.urlopen(f"{base_url}/get-artifact?{query}", timeout=30) as r:
        size = _png_size(r.read())
    if size is None:
        return [f"{path} of parent run {parent.name!r} is not a PNG"]

    clicks = Clicks(page)
    page.call("Page.navigate", url=runs_view_url(base_url, eid))
    steps = [
        (_js_run_link(eid, parent.run_id), parent.name),
        (_tab_js("artifacts"), "Artifacts"),
        (_artifact_node_js(FIGURE_FOLDER), FIGURE_FOLDER),
        (_artifact_node_js(figure), figure),
    ]
    failures: list[str] = []
    for element, label in steps:
        if not clicks.click_when_shown(element, label, timeout):
            failures.append(
                f"trade-off figure: no {label!r} to click after {len(clicks.made)} clicks"
                f" ({clicks.path() or 'the printed URL'})"
            )
            break
    else:
        try:
            _wait_until(lambda: page.evaluate(_figure_shown_js(*size)), timeout, path)
            # The other figures (the latency frontier) are listed beside it.
            listed = page.evaluate(
                f"[{', '.join(_artifact_node_js(n) for n in names)}].map(e => !!e)"
            )
            missing = [n for n, shown in zip(names, listed, strict=True) if not shown]
            if missing:
                failures.append(f"figures {missing} not listed under {FIGURE_FOLDER}/ in Artifacts")
            notes.append(
                f"clicks from the printed URL to the trade-off figure: {len(clicks.made)}"
                f" ({clicks.path()}); figures in {FIGURE_FOLDER}/: {', '.join(names)}"
            )
        except TimeoutError:
            failures.append(
                f"{path} ({size[0]}x{size[1]}) not shown after the clicks {clicks.path()}"
            )
    page.screenshot(out / "frontier_figure.png")

    url = artifact_page_url(base_url, eid, parent.run_id, path)
    page.call("Page.navigate", url=url)
    try:
        _wait_until(lambda: page.evaluate(_figure_shown_js(*size)), timeout, path)
        notes.append(f"the figure's own URL (printed by run) shows it with no click: {url}")
    except TimeoutError:
        failures.append(f"the figure's URL (artifactPath/{path}) does not show it")
    return failures


def _chart_js(key: str) -> str:
    # A chart card of the Model metrics tab, by its title (the metric's name).
    return (
        "[...document.querySelectorAll('[data-testid=experiment-view-compare-runs-card]')]"
        f".find(c => c.innerText.split('\\n')[0].trim() === {json.dumps(key)})"
    )


def _scroll_to_chart_js(key: str) -> str:
    # The tab renders only the rows of charts in view (virtualized-chart-row; a run logs some
    # 60 metrics, in name order), so scroll down as a user does, a screen at a time (back to
    # the top at the end), until the chart exists; then centre it. True once it is there.
    return (
        f"(() => {{ const card = {_chart_js(key)};"
        " if (card) { card.scrollIntoView({block: 'center'}); return true; }"
        " const any = document.querySelector('[data-testid=experiment-view-compare-runs-card]');"
        " let e = any && any.parentElement;"
        " while (e && !(e.scrollHeight > e.clientHeight + 1"
        " && /auto|scroll/.test(getComputedStyle(e).overflowY))) e = e.parentElement;"
        " if (e) e.scrollTop = e.scrollTop + e.clientHeight >= e.scrollHeight - 1"
        " ? 0 : e.scrollTop + 0.8 * e.clientHeight;"
        " return false; })()"
    )


def _line_points_js(key: str) -> str:
    # Plotly draws a metric of several steps as a line (path.js-line, "M..L..") with a marker
    # per point (path.point); a metric of one value is a bar chart, with no line.
    return (
        f"(c => {{ if (!c) return null; const line = c.querySelector('.scatterlayer path.js-line');"
        f" const d = line ? line.getAttribute('d') || '' : '';"
        f" return {{vertices: (d.match(/[ML]/g) || []).length,"
        f" markers: c.querySelectorAll('.scatterlayer path.point').length}}; }})({_chart_js(key)})"
    )


def check_curves(
    sweep: SweepRuns, base_url: str, page: DevTools, out: Path, timeout: float, notes: list[str]
) -> list[str]:
    """Every child run logged a training curve of more than one point (``CURVE_METRIC``); the
    run with the fewest points is opened by clicks from the printed URL (the sweep run's
    ``+``, the run's name, **Model metrics**) and its chart must draw a line through more
    than one point. Writes ``run_curves.png``.

    Returns:
        one line per failed check.
    """
    eid = sweep.experiment_id
    points = {c: curve_points(base_url, c.run_id, CURVE_METRIC) for c in sweep.children}
    flat = [c.name for c, n in points.items() if n < 2]
    if flat:
        counts = {c.name: n for c, n in points.items()}
        return [
            f"training curves: {CURVE_METRIC!r} has fewer than 2 points in child runs {flat}"
            f" (points per run: {counts})"
        ]
    run = min(sweep.children, key=lambda c: points[c])

    clicks = Clicks(page)
    page.call("Page.navigate", url=runs_view_url(base_url, eid))
    steps = [
        (_expander_js(eid, sweep.parent.run_id), "+"),
        (_js_run_link(eid, run.run_id), run.name),
        (_tab_js("model-metrics"), "Model metrics"),
    ]
    for element, label in steps:
        if not clicks.click_when_shown(element, label, timeout):
            page.screenshot(out / "run_curves.png")
            return [
                f"training curves: no {label!r} to click after {len(clicks.made)} clicks"
                f" ({clicks.path() or 'the printed URL'})"
            ]

    def drawn():
        if not page.evaluate(_scroll_to_chart_js(CURVE_METRIC)):
            time.sleep(SCROLL_PAUSE_S)  # let the rows in view render before the next screen
            return None
        got = page.evaluate(_line_points_js(CURVE_METRIC))
        return got if got and got["vertices"] > 1 else None

    failures: list[str] = []
    try:
        got = _wait_until(drawn, timeout, "chart")
        notes.append(
            f"clicks from the printed URL to the training curves of {run.name!r}: "
            f"{len(clicks.made)} ({clicks.path()}); {CURVE_METRIC!r}: {points[run]} points logged"
            f", the fewest of the {len(points)} child runs (most: {max(points.values())}),"
            f" {got['markers']} drawn"
        )
    except TimeoutError:
        failures.append(
            f"training curves: the {CURVE_METRIC!r} chart of {run.name!r} draws no line of more"
            f" than one point ({points[run]} points logged; chart: "
            f"{page.evaluate(_line_points_js(CURVE_METRIC))})"
        )
    page.screenshot(out / "run_curves.png")
    return failures


SCREENSHOTS = ("runs_table.png", "run_page.png", "frontier_figure.png", "run_curves.png")


def check_ui(sweep: SweepRuns, base_url: str, page: DevTools, out: Path, timeout: float) -> UiCheck:
    """Drive the UI: the runs table and a run's page (:func:`check_table`), the trade-off
    figure (:func:`check_figure`) and the training curves (:func:`check_curves`); writes
    ``SCREENSHOTS`` into ``out``."""
    page.call("Page.enable")
    notes: list[str] = []
    failures = check_table(sweep, base_url, page, out, timeout)
    failures += check_figure(sweep, base_url, page, out, timeout, notes)
    failures += check_curves(sweep, base_url, page, out, timeout, notes)
    return UiCheck(failures, notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tracking-uri", required=True, help="sqlite:///<path> of the sweep's store"
    )
    parser.add_argument("--experiment", required=True, help="experiment name (the space's)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    parser.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        # Generous: waits end as soon as the page is ready, and on a loaded 2-core machine
        # `mlflow server` alone once took over 120 s to answer /health.
        help="seconds to wait for the server, the browser and each page",
    )
    args = parser.parse_args(argv)

    chromium = find_chromium()
    work = Path(tempfile.mkdtemp(prefix="check_mlflow_ui-"))
    try:
        db = sqlite_path(args.tracking_uri)
        # Work on a copy: the MLflow client may migrate a store's schema, and the saved view is
        # written into the store the server reads.
        copy = work / "mlflow.db"
        shutil.copy2(db, copy)
        sweep = read_sweep(f"sqlite:///{copy}", args.experiment)
        if chromium is None:
            raise BadInput("chromium is not installed (Debian: apt-get install -y chromium)")
    except BadInput as e:
        shutil.rmtree(work, ignore_errors=True)
        print(f"check_mlflow_ui: {e}", file=sys.stderr)
        return 2

    try:
        write_view_tags(f"sqlite:///{copy}", sweep.experiment_id)
        args.out.mkdir(parents=True, exist_ok=True)
        with (
            mlflow_server(copy, work, args.timeout) as base,
            chromium_page(chromium, work, args.timeout) as page,
        ):
            print(f"open: {runs_view_url(base, sweep.experiment_id)}")
            result = check_ui(sweep, base, page, args.out, args.timeout)
    except (RuntimeError, OSError) as e:  # the server, the browser or the REST API failed
        result = UiCheck([f"{e} (logs in {work})"], [])
    else:
        shutil.rmtree(work, ignore_errors=True)
    for line in result.notes:
        print(line)
    for line in result.failures:
        print(f"FAILED: {line}")
    if not result.failures:
        n = len(sweep.children)
        print(
            f"ok: parent {sweep.parent.name!r}, {n} child runs and columns {list(KEY_COLUMNS)}"
            f" visible; the trade-off figure and training curves drawn"
        )
        print(f"screenshots: {', '.join(str(args.out / name) for name in SCREENSHOTS)}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
