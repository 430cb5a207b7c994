"""onnxruntime-web in a real headless Chromium: the ``web`` target of ``check`` and ``profile``.

The pieces are well-kept ones: the machine's own Chromium (:func:`find_browser`: ``--browser PATH``,
``$EDGESHIP_BROWSER``, then ``chromium``, ``chromium-browser``, ``google-chrome`` on PATH), driven by
Playwright's Python package against that executable (no browser download); onnxruntime-web, pinned
to :data:`ORT_WEB_VERSION`, fetched once with ``npm pack`` into a cache (:func:`runtime_dir`;
``edgeship web-runtime --fetch`` prefetches it). A :class:`WebPage` serves the harness page
(``web_harness.html``), onnxruntime-web's files and the verified variant bytes from a local HTTP
server on 127.0.0.1 (a random port, only those files) and keeps one page open; a :class:`WebRunner`
is one InferenceSession in that page (execution provider ``wasm``, or ``webgpu`` where the browser
has an adapter), fed the golden inputs from Python. Tensors cross as base64 of their bytes, so
outputs come back with their exact dtype (int64 included) and the parity machinery judges them as
it judges every other runner. Torch-free; playwright is imported only when a page opens.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import logging
import math
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import InferenceTimeout, SpecError, TargetUnavailableError, brief
from edgeship.runtimes.base import Runner
from edgeship.runtimes.deadline import current as current_deadline
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

ORT_WEB_VERSION = "1.31.1"  # the one pinned onnxruntime-web release (npm)
RUNTIME = "onnxruntime-web"
PROVIDERS = ("wasm", "webgpu")
PREFETCH = "edgeship web-runtime --fetch"
STARTUP = "onnxruntime-web's start-up in the browser"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# a headless Chromium on a closed network: no background connections it would retry (its sandbox: sandboxed())
BROWSER_ARGS = ("--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync")
# WebGPU: auto uses the browser's own adapter where it has one (a GPU); swiftshader gives it Chromium's
# CPU implementation of WebGPU (SwiftShader: slow, but it runs onnxruntime-web's WebGPU kernels on a
# machine without a GPU); off checks wasm only
WEBGPU_MODES = ("auto", "swiftshader", "off")
WEBGPU_ARGS = {"auto": (), "off": ("--disable-gpu",),
               "swiftshader": ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader")}
# what the harness loads of onnxruntime-web's dist/: the ES module and the wasm builds it picks from
DIST_FILES = ("ort.min.mjs",)
DIST_PREFIX = "ort-wasm-simd-threaded"
# an unreachable registry: npm gives up after 30 s and one retry (its default retries take minutes)
NPM_FETCH = ("--fetch-timeout=30000", "--fetch-retries=1")
NPM_TIMEOUT_S = 300  # the whole fetch (the package is ~100 MB unpacked; a slow link, not an absent one)
OPEN_TIMEOUT_MS = 60_000  # the page and onnxruntime-web's start-up
POLL_MS = 10  # how often the page is asked whether a call it runs is done
# a call into the harness runs in the page on its own (page.evaluate would await it without any time
# limit); its result or error lands in window.edgeshipCalls[key], which Python waits for with a timeout
START_CALL = """([key, method, args]) => {
  const calls = (window.edgeshipCalls ??= {});
  calls[key] = null;
  setTimeout(() => Promise.resolve().then(() => window.edgeship[method](...args)).then(
    (value) => { calls[key] = { value }; },
    (e) => { calls[key] = { error: String(e?.message ?? e) }; }), 0);
}"""
CALL_DONE = "(key) => window.edgeshipCalls[key] !== null"
TAKE_RESULT = "(key) => { const r = window.edgeshipCalls[key]; delete window.edgeshipCalls[key]; return r; }"

_NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
          "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
          "uint64": np.uint64, "bool": np.bool_}


# ----------------------------------------------------------------------------- onnxruntime-web: the cache
def cache_root() -> Path:
    """``$XDG_CACHE_HOME/edgeship/web`` (``~/.cache/edgeship/web`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeship" / "web"


def runtime_path(version: str = ORT_WEB_VERSION) -> Path:
    """Where onnxruntime-web ``version``'s files are cached (whether or not they are there yet)."""
    return cache_root() / f"onnxruntime-web-{version}"


def cached(version: str = ORT_WEB_VERSION) -> bool:
    d = runtime_path(version)
    return all((d / f).is_file() for f in DIST_FILES) and any(d.glob(f"{DIST_PREFIX}*.wasm"))


def runtime_dir(version: str = ORT_WEB_VERSION, fetch: bool = True) -> Path:
    """onnxruntime-web's cached dist folder, fetched with npm the first time (``fetch``).

    Raises:
        TargetUnavailableError: not cached, and npm is missing or cannot reach its registry.
    """
    if cached(version):
        return runtime_path(version)
    if not fetch:
        raise TargetUnavailableError(f"onnxruntime-web {version} is not in {runtime_path(version)}; fetch it once "
                                     f"with `{PREFETCH}` (npm and its registry needed).")
    return fetch_runtime(version)


def fetch_runtime(version: str = ORT_WEB_VERSION) -> Path:
    """``npm pack onnxruntime-web@version`` (npm checks the package's integrity), then its dist files
    (:data:`DIST_FILES`, the wasm builds) and licence into :func:`runtime_path`. Returns that folder.

    Raises:
        TargetUnavailableError: npm is missing, or it could not fetch the package (offline).
    """
    dest = runtime_path(version)
    npm = shutil.which("npm")
    if npm is None:
        raise TargetUnavailableError(
            f"the web target needs onnxruntime-web {version}, fetched once with npm into {dest}; npm is not on PATH. "
            f"Install Node.js and npm, then run `{PREFETCH}` (or copy that folder from a machine that has it).")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.warning("fetching onnxruntime-web %s with npm into %s (once)", version, dest)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        try:
            done = subprocess.run([npm, "pack", f"onnxruntime-web@{version}", "--pack-destination", tmp, "--loglevel=error",
                                   *NPM_FETCH], capture_output=True, text=True, timeout=NPM_TIMEOUT_S, cwd=tmp)
        except subprocess.TimeoutExpired:
            done = None
        tarballs = list(Path(tmp).glob("onnxruntime-web-*.tgz"))
        if done is None or done.returncode != 0 or len(tarballs) != 1:
            why = f"it took over {NPM_TIMEOUT_S // 60} minutes" if done is None else _npm_reason(done.stderr)
            raise TargetUnavailableError(
                f"could not fetch onnxruntime-web {version} with npm ({why}). The web target needs it once, cached in "
                f"{dest}: run `{PREFETCH}` where the npm registry is reachable (or copy that folder here).")
        out = Path(tmp) / "out"
        _extract(tarballs[0], out)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(dest)
        os.replace(out, dest)
    log.warning("onnxruntime-web %s: cached in %s", version, dest)  # stderr: stdout may carry --json -
    return dest


def _npm_reason(stderr: str) -> str:
    """npm's reason in one line: its FetchError (the registry unreachable) or first error line."""
    lines = [ln.removeprefix("npm error").removeprefix("npm ERR!").strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    return next((ln for ln in lines if "FetchError" in ln or "reason:" in ln), lines[0] if lines else "no tarball came back")


def _extract(tarball: Path, out: Path) -> None:
    """The harness's files of the package's dist/ (and its LICENSE), flat into ``out``."""
    out.mkdir()
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            base = name.rsplit("/", 1)[-1]
            wanted = name == "LICENSE" or (name.startswith("dist/") and "/" not in name[5:] and (
                base in DIST_FILES or (base.startswith(DIST_PREFIX) and base.endswith((".mjs", ".wasm")))))
            if not wanted or not member.isfile():
                continue
            src = tar.extractfile(member)
            if src is not None:
                (out / base).write_bytes(src.read())


# ----------------------------------------------------------------------------- the browser
def find_browser(path: str | os.PathLike[str] | None = None) -> Path:
    """The Chromium to drive: ``path`` (``--browser``), else ``$EDGESHIP_BROWSER``, else the first of
    :data:`BROWSER_NAMES` on PATH.

    Raises:
        TargetUnavailableError: none found, or the given one is not an executable file.
    """
    given = path or os.environ.get("EDGESHIP_BROWSER")
    if given:
        p = Path(given)
        if not (p.is_file() and os.access(p, os.X_OK)):
            src = "--browser" if path else "EDGESHIP_BROWSER"
            raise TargetUnavailableError(f"{src} {given}: not an executable file; give the path of a Chromium or "
                                         "Chrome executable (e.g. /usr/bin/chromium).")
        return p
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise TargetUnavailableError(
        "the web target runs onnxruntime-web in a headless Chromium, and none was found (looked for "
        f"{', '.join(BROWSER_NAMES)} on PATH and $EDGESHIP_BROWSER). Install one (Debian/Ubuntu: `apt-get install "
        "chromium`) or pass --browser PATH.")


def sandboxed() -> bool:
    """Whether Chromium runs with its sandbox (it runs model bytes a bundle carries): yes, except as root,
    where Chromium refuses to start with it (Playwright then passes --no-sandbox), or where
    ``$EDGESHIP_NO_SANDBOX=1`` says the machine cannot give it one (a container without user namespaces)."""
    if os.environ.get("EDGESHIP_NO_SANDBOX") == "1":
        return False
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or geteuid() != 0


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise TargetUnavailableError("the web target drives Chromium with Playwright's Python package, which is not "
                                     "installed: pip install 'edgeship[web]' (no browser download is needed).") from e
    return sync_playwright


class _Files(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that serves only ``files`` (URL path -> bytes or a file), and only
    to requests whose Host is 127.0.0.1:PORT (403 otherwise)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes | Path]):
        self.files = files
        super().__init__(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self.server_address[1]}"  # the one Host header it answers


class _Handler(http.server.BaseHTTPRequestHandler):
    TYPES = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
             ".wasm": "application/wasm"}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        # only the page edgeship opened: a page of another site that a DNS name rebound to 127.0.0.1
        # names its own host in Host, and the paths start with a random token no other page knows
        if self.headers.get("Host") != self.server.host:  # type: ignore[attr-defined]
            self.send_error(403)
            return
        body = self.server.files.get(self.path.split("?", 1)[0])  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        data = body if isinstance(body, bytes) else body.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.TYPES.get(Path(self.path).suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        # cross-origin isolation: onnxruntime-web's wasm threads need SharedArrayBuffer
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("web server: " + format, *args)


@dataclass(frozen=True)
class BrowserInfo:
    """What ran: the browser's name and version, onnxruntime-web's, and whether WebGPU is there."""

    browser: str
    version: str
    ort: str
    webgpu: bool
    threads: int | None
    adapter: str = ""  # the WebGPU adapter, in words, where there is one

    def describe(self, provider: str) -> str:
        threads = f", {self.threads} thread{'s' * (self.threads != 1)}" if provider == "wasm" and self.threads else ""
        on = f" on {self.adapter}" if provider == "webgpu" and self.adapter else ""
        return f"onnxruntime-web {self.ort} ({provider}{threads}{on}) in {self.browser} {self.version} (headless)"


class WebPage:
    """A headless Chromium with the harness page open, served from 127.0.0.1; one per check.

    Raises (on :meth:`open`): TargetUnavailableError: no browser, no Playwright, no onnxruntime-web.
    """

    def __init__(self, browser: str | os.PathLike[str] | None = None, webgpu: str = "auto"):
        if webgpu not in WEBGPU_MODES:
            raise SpecError(f"--webgpu {webgpu}: use {', '.join(WEBGPU_MODES)}.")
        self.webgpu = webgpu
        self.executable = find_browser(browser)
        self._files: dict[str, bytes | Path] = {}
        self._server: _Files | None = None
        self._pw: Any = None
        self._browser: Any = None
        self.page: Any = None
        self.info: BrowserInfo | None = None
        self._models = 0
        self._calls = 0
        # every served path starts with it: a page of another site cannot guess the models' URLs
        self._prefix = "/" + secrets.token_urlsafe(16)

    def open(self) -> WebPage:
        if self.page is not None:
            return self
        sync_playwright = _playwright()
        dist = runtime_dir()
        harness = resources.files("edgeship.runtimes").joinpath("web_harness.html").read_bytes()
        self._files = {f"{self._prefix}/index.html": harness}
        for f in sorted(dist.iterdir()):
            if f.name in DIST_FILES or f.name.startswith(DIST_PREFIX):
                self._files[f"{self._prefix}/ort/{f.name}"] = f
        self._server = _Files(self._files)
        threading.Thread(target=self._server.serve_forever, name="edgeship-web-server", daemon=True).start()
        try:
            try:
                self._pw = sync_playwright().start()
            except Exception as e:
                loop = ("; Playwright's sync API cannot start inside a running asyncio loop (Jupyter, an async app): "
                        "run the check from a plain script or the CLI, or in a worker thread"
                        if "asyncio" in str(e) else "")
                raise TargetUnavailableError(f"Playwright did not start: {brief(e)}{loop}.") from e
            try:
                self._browser = self._pw.chromium.launch(executable_path=str(self.executable), headless=True,
                                                         chromium_sandbox=sandboxed(),
                                                         args=[*BROWSER_ARGS, *WEBGPU_ARGS[self.webgpu]])
            except Exception as e:
                sandbox = (" If it says its sandbox cannot start (a container without user namespaces), "
                           "EDGESHIP_NO_SANDBOX=1 runs it without one: only for bundles you trust."
                           if sandboxed() else "")
                raise TargetUnavailableError(f"{self.executable} did not start as a headless Chromium: {brief(e)}; "
                                             f"pass another with --browser PATH.{sandbox}") from e
            errors: list[str] = []
            port = self._server.server_address[1]
            try:
                self.page = self._browser.new_page()
                self.page.set_default_timeout(OPEN_TIMEOUT_MS)
                self.page.on("pageerror", lambda e: errors.append(str(e)))
                self.page.goto(f"http://127.0.0.1:{port}{self._prefix}/index.html")
            except Exception as e:
                raise TargetUnavailableError(f"{self.executable} did not open the harness page: {brief(e)}; pass "
                                             "another browser with --browser PATH.") from e
            try:
                self._wait("() => window.edgeshipReady === true", None, STARTUP, OPEN_TIMEOUT_MS)
            except TimeoutError as e:
                raise TargetUnavailableError(f"onnxruntime-web from {dist} did not load in {self.executable}: "
                                             f"{'; '.join(errors) or brief(e)}. Fetch it again: `{PREFETCH}`.") from e
            try:  # WebGPU's requestAdapter() is the browser's: bounded even without a deadline
                got = self.call("info", what=STARTUP, limit_ms=OPEN_TIMEOUT_MS)
            except (TimeoutError, RuntimeError) as e:
                raise TargetUnavailableError(f"onnxruntime-web in {self.executable} did not describe itself: {e}. "
                                             "Try --webgpu off (the browser's GPU disabled).") from e
            name = self.executable.name.lower()
            self.info = BrowserInfo("Chrome" if "chrome" in name and "chromium" not in name else "Chromium",
                                    str(self._browser.version), str(got.get("ort") or "?"),
                                    bool(got.get("webgpu")), got.get("threads"), self._adapter(got.get("adapter")))
        except BaseException:
            self.close()
            raise
        return self

    def _adapter(self, info: object) -> str:
        if self.webgpu == "swiftshader":
            return "SwiftShader, Chromium's CPU implementation of WebGPU"
        parts = [str(v) for v in (info or {}).values() if v] if isinstance(info, dict) else []
        return " ".join(parts) or ("an unnamed adapter" if info is not None else "")

    def add_model(self, data: bytes) -> str:
        """Serve verified model bytes at a fresh URL path; returns it."""
        self._models += 1
        path = f"{self._prefix}/model/{self._models}.onnx"
        self._files[path] = data
        return path

    def drop(self, path: str) -> None:
        self._files.pop(path, None)

    def call(self, method: str, *args: Any, what: str = "onnxruntime-web in the browser", limit_ms: float = 0) -> Any:
        """``edgeship.METHOD(*args)`` in the page; a JavaScript error comes back as RuntimeError.

        The call is started in the page and awaited with :meth:`_wait`, which Playwright times out
        at the check's deadline (``page.evaluate`` would wait for ever on a call that never ends).

        Raises:
            InferenceTimeout: the deadline passed first; the browser is closed (it may still be
                running the call).
            TimeoutError: ``limit_ms`` (0: none) passed first.
        """
        if self.page is None:
            raise RuntimeError("the web page is not open")
        self._calls += 1
        key = str(self._calls)
        self._evaluate(START_CALL, [key, method, list(args)])
        self._wait(CALL_DONE, key, what, limit_ms)
        got = self._evaluate(TAKE_RESULT, key)
        if "error" in got:
            raise RuntimeError(str(got["error"]).removeprefix("Error: ").split("\n    at ", 1)[0])
        return got.get("value")

    def _evaluate(self, expression: str, arg: Any) -> Any:
        try:
            return self.page.evaluate(expression, arg)
        except Exception as e:
            if type(e).__module__.startswith("playwright"):
                text = str(e).removeprefix("Page.evaluate: ").removeprefix("Error: ").split("\n    at ", 1)[0]
                raise RuntimeError(text.split("Call log:", 1)[0].strip()) from e
            raise

    def _wait(self, condition: str, arg: Any, what: str, limit_ms: float = 0) -> None:
        """Until ``condition`` holds in the page, at most until the check's deadline (and ``limit_ms``,
        where given; 0: no other limit). Playwright enforces the timeout outside the page, so it
        holds when the page itself is stuck.

        Raises:
            InferenceTimeout: the deadline passed; the browser is closed.
            TimeoutError: ``limit_ms`` passed first.
        """
        d = current_deadline()
        left_ms = None if d is None else d.left() * 1e3
        if left_ms is not None and left_ms <= 0:
            self.close()
            raise self._timeout(d, what)
        timeout = min(x for x in (left_ms, limit_ms or None, math.inf) if x is not None)
        try:
            self.page.wait_for_function(condition, arg=arg, polling=POLL_MS,
                                        timeout=0 if timeout == math.inf else max(1.0, timeout))
        except Exception as e:
            if type(e).__name__ != "TimeoutError" or not type(e).__module__.startswith("playwright"):
                raise
            if d is not None and (limit_ms == 0 or left_ms is not None and left_ms <= limit_ms):
                self.close()
                raise self._timeout(d, what) from e
            raise TimeoutError(str(e).split("Call log:", 1)[0].strip()) from e

    @staticmethod
    def _timeout(d: Any, what: str) -> InferenceTimeout:
        return InferenceTimeout(f"the check's inference did not finish within {d.what} s ({what}); edgeship closed "
                                "the browser. A graph can run as long as it says: if the model is yours and this slow "
                                "here, raise it with --timeout; otherwise do not run it.")

    def close(self) -> None:
        for close in (lambda: self._browser and self._browser.close(), lambda: self._pw and self._pw.stop()):
            with contextlib.suppress(Exception):
                close()
        self._browser = self._pw = self.page = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebPage:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------- tensors across the page
def encode(a: np.ndarray) -> dict:
    """A feed as the page takes it: onnxruntime-web's type name, dims, base64 of the little-endian bytes."""
    a = np.asarray(a)
    name = "bool" if a.dtype == np.bool_ else a.dtype.name
    if name not in _NUMPY:
        raise SpecError(f"the web target cannot pass a {a.dtype} input to onnxruntime-web; it takes "
                        f"{', '.join(_NUMPY)}.")
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"type": name, "dims": [int(d) for d in a.shape], "data": base64.b64encode(data).decode("ascii")}


def decode(t: dict) -> np.ndarray:
    """An output from the page back to numpy, with its exact dtype."""
    dtype = _NUMPY.get(t.get("type"))  # type: ignore[arg-type]
    if dtype is None:
        raise RuntimeError(f"onnxruntime-web returned a {t.get('type')} tensor, which edgeship cannot read back")
    return np.frombuffer(base64.b64decode(t["data"]), dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(
        [int(d) for d in t["dims"]])


class WebRunner(Runner):
    """One variant in onnxruntime-web in a headless Chromium: an InferenceSession in ``page`` (its own
    page, opened and closed with the runner, when none is given), on ``provider`` (``wasm`` or ``webgpu``).

    ``describe`` (after :meth:`load`) names what ran: onnxruntime-web's version and the browser's.
    """

    runtime = RUNTIME

    def __init__(self, spec: IOSpec, model: bytes, provider: str = "wasm", page: WebPage | None = None,
                 name: str | None = None, browser: str | os.PathLike[str] | None = None, webgpu: str = "auto"):
        super().__init__(spec)
        if provider not in PROVIDERS:
            raise SpecError(f"onnxruntime-web provider {provider!r}: use {' or '.join(PROVIDERS)}.")
        self.model = model
        self.provider = provider
        self.name = name or f"{RUNTIME}-{provider}"
        self._own = page is None
        self.page = page if page is not None else WebPage(browser, webgpu)
        self._session: int | None = None
        self._url: str | None = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    @property
    def describe(self) -> str:
        info = self.page.info
        return info.describe(self.provider) if info else f"{RUNTIME} {ORT_WEB_VERSION} ({self.provider})"

    def _load(self) -> None:
        self.page.open()
        assert self.page.info is not None
        if self.provider == "webgpu" and not self.page.info.webgpu:
            raise TargetUnavailableError(f"{self.page.info.browser} {self.page.info.version} has no WebGPU adapter "
                                         "here; the wasm provider runs everywhere (--webgpu swiftshader: Chromium's "
                                         "CPU implementation of WebGPU).")
        self._url = self.page.add_model(self.model)
        try:
            opened = self.page.call("open", self._url, self.provider, what=f"{self.name}: creating the session")
        except RuntimeError as e:
            self.page.drop(self._url)
            raise RuntimeError(f"onnxruntime-web {self.page.info.ort} could not create a session ({self.provider}): "
                               f"{e}") from e
        self._session = int(opened["id"])
        if isinstance(opened.get("threads"), int):  # onnxruntime-web settles its thread count on the first session
            self.page.info = replace(self.page.info, threads=opened["threads"])
        self.inputs, self.outputs = list(opened["inputs"]), list(opened["outputs"])

    def io_problems(self) -> list[str]:
        """Where the session's input/output names disagree with the spec; empty when they agree."""
        problems = []
        for label, want, got in (("input", self.spec.input_names, self.inputs), ("output", self.spec.output_names,
                                                                               self.outputs)):
            if sorted(want) != sorted(got):
                problems.append(f"{label}s are {got} in the model, {list(want)} in the spec")
        return problems

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = self.page.call("run", self._session, {k: encode(v) for k, v in feeds.items()}, what=self.name)
        return {name: decode(got[name]) for name in self.outputs if name in got}

    def time_in_page(self, feeds: dict[str, np.ndarray], warmup: int, iterations: int) -> list[float]:
        """Milliseconds per call as the page measures them (performance.now() around session.run)."""
        self.load()
        return [float(ms) for ms in self.page.call("time", self._session, {k: encode(v) for k, v in feeds.items()},
                                                   warmup, iterations, what=self.name)]

    def _close(self) -> None:
        if self._session is not None and self.page.page is not None:
            with contextlib.suppress(Exception):
                self.page.call("close", self._session)
        if self._url:
            self.page.drop(self._url)
        self._session = self._url = None

    def close(self) -> None:
        """Release the session; its own page (none was given) closes too, even when the session never opened."""
        super().close()
        if self._own:
            self.page.close()
