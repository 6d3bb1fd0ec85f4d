"""The real WebUI in the tests: built from ``../shared/webui`` into ``cache/`` (git-ignored, reused; a
changed ``../shared/webui`` is rebuilt by its own build script), this checkout copied into its
``extensions/`` as a user's ``git clone`` would put it, started with the command the build script
prints, and talked to over HTTP.

Nothing here imports the WebUI: it runs in its own process and its own environment.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import free_port

REPO = Path(__file__).resolve().parent.parent
SHARED_WEBUI = REPO.parent / "shared" / "webui"


def _cache_folder() -> Path:
    """``cache/`` in the checkout. Gradio serves no file under a folder whose name starts with a dot (the
    page's scripts would be refused), so a checkout inside such a folder builds under the temp folder."""
    chosen = Path(os.environ.get("HNEXT_WEBUI_CACHE", REPO / "cache"))
    if any(part.startswith(".") for part in chosen.resolve().parts):
        chosen = Path(tempfile.gettempdir()) / "hypernetwork-ext-webui-cache"
    return chosen


CACHE = _cache_folder()
EXTENSION_NAME = "hypernetwork-ext"
PROBE = Path(__file__).parent / "real_webui_probe"  # a test-only extension that reports the WebUI's patch state
BUILD_SCRIPTS = {"a1111": "build.sh", "reforge": "build-reforge.sh", "forge": "build-forge.sh"}
STARTUP_TIMEOUT_S = 300


@dataclass
class WebUIBuild:
    kind: str
    root: Path  # the build folder (DEST of the build script)
    webui: Path  # the WebUI's own folder, where it is started
    env: dict[str, str]
    command: list[str]

    @property
    def hypernetwork_dir(self) -> Path:
        return self.webui / "models" / "hypernetworks"


class Build:
    """The build script running in the background (a few minutes the first time, about a second after
    that), started when the real-WebUI tests are collected so that it overlaps the other tests. A build
    given ``after`` starts when that one has finished: one at a time leaves a core to the other tests."""

    def __init__(self, kind: str, after: "Build | None" = None):
        self.kind = kind
        self.script = SHARED_WEBUI / BUILD_SCRIPTS[kind]
        self.dest = CACHE / f"webui-{kind}"
        self.process = None
        self._stopped = threading.Event()
        self._started = threading.Thread(target=self._start, args=(after,), daemon=True)
        if self.script.exists():
            self.dest.mkdir(parents=True, exist_ok=True)
            self.output = open(CACHE / f"build-{kind}.log", "w+")
            self._started.start()

    def _start(self, after: "Build | None") -> None:
        if after is not None:
            after.wait()
        if not self._stopped.is_set():
            self.process = subprocess.Popen(["bash", str(self.script), str(self.dest)], stdout=self.output,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self) -> int | None:
        if self._started.ident is not None:
            self._started.join()
        return self.process.wait() if self.process is not None else None

    def stop(self) -> None:
        """A run that ends before its real-WebUI tests leaves no build running (the next one redoes it)."""
        self._stopped.set()
        if self._started.ident is not None:
            self._started.join()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def result(self) -> WebUIBuild:
        """Waits for the script and reads the start command it prints last:
        ``cd WEBUI && env VAR=... PYTHON launch.py FLAGS``."""
        if not self.script.exists():
            pytest.fail(f"{self.script} is missing: the real-WebUI tests need ../shared/webui beside the checkout",
                        pytrace=False)
        code = self.wait()
        self.output.seek(0)
        printed = self.output.read()
        if code != 0:
            pytest.fail(f"{self.script.name} failed (exit {code}):\n{printed[-5000:]}", pytrace=False)
        last = printed.strip().splitlines()[-1]
        cd_part, run_part = last.split(" && ", 1)
        words = shlex.split(run_part)
        assert words[0] == "env", last
        env = {}
        words = words[1:]
        while "=" in words[0]:
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        return WebUIBuild(self.kind, self.dest, Path(cd_part.removeprefix("cd ").strip()), env, words)


def _copy_tree(files: list[str], source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    for name in files:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination)


def install_extension(webui: WebUIBuild) -> Path:
    """A copy of the working tree (tracked and new files, not ignored ones), as a clone would have it."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    names = [name for name in listed if name and (REPO / name).is_file()]
    extensions = webui.webui / "extensions"
    if extensions.exists():
        shutil.rmtree(extensions)  # nothing but what this run installs (the folder belongs to the test cache)
    target = extensions / EXTENSION_NAME
    _copy_tree(names, REPO, target)
    probe_names = [str(p.relative_to(PROBE)) for p in PROBE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    _copy_tree(probe_names, PROBE, extensions / "aa-hnext-test-probe")
    return target


def fresh_state(webui: WebUIBuild) -> Path:
    """Default settings and page values (no config.json or ui-config.json left by an earlier run: the WebUI
    would show the values an older checkout had as defaults) and an empty hypernetwork folder."""
    for name in ("config.json", "ui-config.json"):
        (webui.webui / name).unlink(missing_ok=True)
    folder = webui.hypernetwork_dir
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


@dataclass
class RunningWebUI:
    build: WebUIBuild
    process: subprocess.Popen
    port: int
    log_path: Path
    probe_log: Path
    started_at: int = 0  # log offset where the current start began (a UI reload starts again)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, route: str, payload=None, timeout: float = 600):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + route, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                return error.code, json.loads(body)
            except ValueError:
                return error.code, body.decode(errors="replace")

    def get(self, route: str):
        status, body = self.request("GET", route)
        assert status == 200, (route, status, body)
        return body

    def post(self, route: str, payload):
        status, body = self.request("POST", route, payload)
        assert status == 200, (route, status, body, self.log()[-3000:])
        return body

    def txt2img(self, prompt: str, **overrides) -> tuple[np.ndarray, dict, str]:
        """(pixels, generation info, the PNG as base64) for a small, fast, deterministic generation."""
        payload = {"prompt": prompt, "negative_prompt": "", "seed": 1234, "steps": 2, "width": 64, "height": 64,
                   "sampler_name": "Euler", "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
        payload.update(overrides)
        body = self.post("/sdapi/v1/txt2img", payload)
        png = body["images"][0]
        return decode_image(png), json.loads(body["info"]), png

    def set_options(self, **options) -> None:
        self.post("/sdapi/v1/options", options)

    def probe(self) -> dict:
        return self.get("/hnext-probe/state")

    def unload_reports(self) -> list[dict]:
        if not self.probe_log.exists():
            return []
        return [json.loads(line) for line in self.probe_log.read_text().splitlines() if line.strip()]

    def wait_for_startup(self, after: int = 0, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """The WebUI adds its API after the server is up; a request before ``Startup time:`` breaks that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Startup time:" in self.log()[after:]:
                return
            if self.process.poll() is not None:
                pytest.fail(f"the WebUI exited (code {self.process.returncode}) before it started:\n"
                            f"{self.log()[-5000:]}", pytrace=False)
            time.sleep(0.5)
        pytest.fail(f"the WebUI did not start within {timeout:.0f} s:\n{self.log()[-5000:]}", pytrace=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def start(webui: WebUIBuild, *extra_args: str, log_name: str) -> RunningWebUI:
    """Starts the WebUI in its own process group and waits for ``Startup time:``."""
    port = free_port()
    command = list(webui.command)
    if "--port" in command:
        command[command.index("--port") + 1] = str(port)
    else:
        command += ["--port", str(port)]
    command += list(extra_args)
    artifacts = REPO / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    log_path = artifacts / f"{log_name}.log"
    probe_log = artifacts / f"{log_name}.probe.jsonl"
    probe_log.unlink(missing_ok=True)
    env = {**os.environ, **webui.env, "HNEXT_PROBE_LOG": str(probe_log)}
    for variable in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST"):
        env.pop(variable, None)  # the WebUI runs in its own environment, not the project's
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=webui.webui, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    running = RunningWebUI(webui, process, port, log_path, probe_log)
    try:
        running.wait_for_startup()
    except BaseException:
        running.stop()
        raise
    return running


def decode_image(png_base64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_base64))).convert("RGB")).astype(np.int16)


def largest_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a - b).max())


@dataclass
class Figures:
    """Figures the tests print at the end of the session (pixel differences and timings)."""
    rows: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.rows.append(text)
        print(f"[real-webui] {text}")
