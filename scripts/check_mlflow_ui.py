"""Check in a real browser that MLflow's UI shows a sweep's runs as a user would see them.

MLflow 3.17 opens an experiment on its GenAI overview, keeps the runs table under "Model
training", shows nested runs collapsed under their parent and shows no param or metric
column until the user picks one. This script serves a *copy* of a sqlite tracking store with
``mlflow server`` on 127.0.0.1, drives headless Chromium (Debian's ``chromium``) through its
DevTools protocol, opens the runs table with the sweep's saved view, expands the parent run
the way a user does (a click on its expander), screenshots the table and one child run's
page, and checks from the DOM that the parent run, its child runs and the key columns are
on screen.

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
from skipnet_sweep.sweep.mlflow_ui import (  # noqa: F401 (the URL helpers, re-exported)
    SAVED_VIEW_TAG_PREFIX,
    SWEEP_VIEW_KEY,
    SWEEP_VIEW_NAME,
    VIEW_METRICS,
    VIEW_PARAMS,
    VIEW_TAGS,
    run_page_url,
    runs_view_url,
    sweep_view_tags,
)

# Headers that must be on screen after the parent is expanded.
KEY_COLUMNS = (M.PARAM_ALPHA, M.PARAM_GATE, M.TOP1, M.FLOPS_MEAN)

PARENT_TAG = "mlflow.parentRunId"
HEADER_GRACE_S = 20.0  # seconds the key columns may lag behind the rows
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
def _process(cmd: Sequence[str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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
    with _process(cmd, workdir / "mlflow_server.log") as proc:
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


def _click_expander(page: DevTools, experiment_id: str, run_id: str) -> bool:
    # The expander is the button in the run-name cell (RunNameCellRenderer, "Expander-<id>").
    return page.evaluate(
        f"(l => {{ const b = l && l.closest('[role=gridcell]')?.querySelector('button');"
        f" if (!b) return false; b.click(); return true; }})({_js_run_link(experiment_id, run_id)})"
    )


def check_ui(
    sweep: SweepRuns, base_url: str, page: DevTools, out: Path, timeout: float
) -> list[str]:
    """Drive the UI and return one line per failed check (empty when all pass).

    Writes ``runs_table.png`` (the runs table, parent expanded) and ``run_page.png`` (the
    first child run's page) into ``out``.
    """
    failures: list[str] = []
    eid = sweep.experiment_id
    page.call("Page.enable")
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
    if not _click_expander(page, eid, sweep.parent.run_id):
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
            failures = check_ui(sweep, base, page, args.out, args.timeout)
    except (RuntimeError, TimeoutError, ConnectionError) as e:
        failures = [f"{e} (logs in {work})"]
    else:
        shutil.rmtree(work, ignore_errors=True)
    for line in failures:
        print(f"FAILED: {line}")
    if not failures:
        n = len(sweep.children)
        print(
            f"ok: parent {sweep.parent.name!r}, {n} child runs and columns {list(KEY_COLUMNS)} visible"
        )
        print(f"screenshots: {args.out / 'runs_table.png'}, {args.out / 'run_page.png'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
