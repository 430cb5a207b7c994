"""The web target: ``check``/``profile --target web`` run the bundle's variants in onnxruntime-web inside
the machine's headless Chromium (edgeship.runtimes.web), judged by the same parity machinery.

Tests marked ``web`` need Playwright's Python package, a Chromium and onnxruntime-web in the cache
(``make test`` installs the first two where it can and prefetches the third with
``edgeship web-runtime --fetch``); without one of them they skip, saying which. The error paths
need none of them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import arch
from test_schemas import valid

from edgeship.errors import SpecError, TargetUnavailableError
from edgeship.runtimes import web

ROOT = Path(__file__).resolve().parents[1]
WEB_RUNNER = "onnxruntime-web-wasm"
# tighter than any float32 runtime can hold: every element within 1e-12 of the eager output
TIGHT = ("--tolerance", "atol=1e-12", "--tolerance", "rtol=0", "--tolerance", "max_outlier_frac=0",
         "--tolerance", "atol_scale=0")
ATOL_ONLY = ("--tolerance", "atol=1e-12")  # the spelling: an explicit atol is enforced element-wise on int8 too


def _why_no_web() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install 'edgeship[web]')"
    try:
        web.find_browser()
    except TargetUnavailableError as e:
        return str(e)
    if not web.cached():
        return (f"onnxruntime-web {web.ORT_WEB_VERSION} is not cached in {web.runtime_path()} "
                f"(fetch it with `{web.PREFETCH}` where the npm registry is reachable)")
    return None


@pytest.fixture(scope="module")
def need_web():
    why = _why_no_web()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def simplenet(tmp_path_factory, need_web):
    """examples/simplenet's bundle, built as `make demo` builds it."""
    d = tmp_path_factory.mktemp("simplenet")
    for f in ("model.py", "train.py"):
        shutil.copy(ROOT / "examples" / "simplenet" / f, d / f)
    subprocess.run([sys.executable, "train.py", "--epochs", "20"], cwd=d, check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "edgeship", "export", "simplenet_state.pt", "--arch", "model.py:SimpleNet",
                        "--input", "x:1x10", "--dynamic-batch", "-o", "simplenet.edgeship", "-q"],
                       cwd=d, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    return d / "simplenet.edgeship"


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory, need_web):
    """A MobileNetV3-style bundle (depthwise convs, squeeze-excite, hardswish) with both int8 variants
    (dynamic: DynamicQuantizeLinear/MatMulInteger; static: QDQ) and fp16."""
    import models
    import torch

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    d = tmp_path_factory.mktemp("mobilenet")
    torch.save(models.trained(models.MobileNetish()).state_dict(), d / "m.pt")
    cfg = ExportConfig(model=d / "m.pt", output=d / "mb.edgeship", inputs=("x:1x3x32x32",),
                       load=LoadOptions(arch=arch("MobileNetish")), exporter="torchscript", torchscript=False,
                       quantize=("dynamic", "static", "fp16"))
    return export(cfg).bundle


# ----------------------------------------------------------------------------- in the browser
@pytest.mark.web
def test_simplenet_passes_in_the_browser_and_the_report_names_runtime_and_browser(cli, simplenet, tmp_path):
    code, out = cli("check", simplenet, "--target", "web", "--table", "--json", tmp_path / "r.json",
                    "--junit", tmp_path / "r.xml")
    assert code == 0, out
    doc = valid(tmp_path / "r.json", "parity")
    manifest = json.loads((simplenet / "manifest.json").read_text())
    assert doc["passed"] is True
    assert {r["variant"] for r in doc["summary"]} == set(manifest["variants"])  # every variant, in the browser
    assert {c["runner"] for c in doc["checks"]} == {WEB_RUNNER}
    what = doc["runners"][WEB_RUNNER]
    assert f"onnxruntime-web {web.ORT_WEB_VERSION} (wasm" in what and "Chromium" in what and "headless" in what
    assert what in out and WEB_RUNNER in out and "check passed" in out
    if "onnxruntime-web-webgpu" not in doc["runners"]:  # no adapter here: said, not silently left out
        assert "WebGPU" in doc["skipped"]["onnxruntime-web-webgpu"]
    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "r.xml").iter("property")}
    assert props[f"runner.{WEB_RUNNER}"] == what


@pytest.mark.web
def test_webgpu_runs_on_swiftshader_where_no_gpu_and_off_leaves_it_out(cli, simplenet, tmp_path):
    """--webgpu swiftshader gives headless Chromium its CPU implementation of WebGPU, so onnxruntime-web's
    WebGPU kernels are checked too (a row per variant, named as such); --webgpu off says it left them out."""
    code, out = cli("check", simplenet, "--target", "web", "--webgpu", "swiftshader", "--json", tmp_path / "g.json")
    assert code == 0, out
    doc = valid(tmp_path / "g.json", "parity")
    runners = {(r["runner"], r["variant"]) for r in doc["summary"]}
    variants = set(json.loads((simplenet / "manifest.json").read_text())["variants"])
    assert runners == {(f"onnxruntime-web-{p}", v) for p in ("wasm", "webgpu") for v in variants}
    assert "(webgpu on SwiftShader" in doc["runners"]["onnxruntime-web-webgpu"] and not doc["skipped"]
    code, out = cli("check", simplenet, "--target", "web", "--webgpu", "off", "--json", tmp_path / "o.json")
    assert code == 0, out
    doc = valid(tmp_path / "o.json", "parity")
    assert {r["runner"] for r in doc["summary"]} == {WEB_RUNNER}
    assert doc["skipped"]["onnxruntime-web-webgpu"].startswith("--webgpu off")


@pytest.mark.web
def test_the_check_deadline_stops_the_web_runner(simplenet):
    from edgeship.errors import InferenceTimeout
    from edgeship.parity.check import check

    with pytest.raises(InferenceTimeout, match="onnxruntime-web.*--timeout"):
        check(simplenet, ("web",), timeout=0.001)  # the browser takes longer than that to start


HANG = """() => {
  window.edgeship.hang = () => new Promise(() => {});  // a call that never ends, the page still responsive
  window.edgeship.spin = () => { for (;;) {} };         // a call that holds the page's only thread for ever
}"""


@pytest.mark.web
@pytest.mark.parametrize("method", ["hang", "spin"])
def test_a_call_that_never_ends_in_the_page_times_out_and_closes_the_browser(need_web, method):
    """page.evaluate awaits a call with no time limit; the call in the page is awaited with a timeout
    Playwright enforces from outside, so even a page stuck in a loop raises InferenceTimeout."""
    from edgeship.errors import InferenceTimeout
    from edgeship.runtimes.deadline import deadline

    page = web.WebPage().open()
    try:
        page.page.evaluate(HANG)
        with deadline(0.5, "--timeout"), pytest.raises(InferenceTimeout, match=r"within --timeout 0.5 s \(stuck\)"):
            page.call(method, what="stuck")
        assert page.page is None  # closed: the browser may still be running the call
    finally:
        page.close()


@pytest.mark.web
def test_a_call_with_its_own_limit_and_no_deadline_raises_timeout_error(need_web):
    """The page's own start-up calls (edgeship.info(): WebGPU's requestAdapter) are bounded without a
    check deadline too (profile): TimeoutError, which open() reports as TargetUnavailableError."""
    page = web.WebPage().open()
    try:
        page.page.evaluate(HANG)
        with pytest.raises(TimeoutError):
            page.call("hang", what="stuck", limit_ms=200)
    finally:
        page.close()


@pytest.mark.web
def test_a_tightened_tolerance_fails_the_web_runner_with_exit_1(cli, simplenet, tmp_path):
    code, out = cli("check", simplenet, "--target", "web", *ATOL_ONLY, "--json", tmp_path / "r.json")
    assert code == 1, out
    doc = valid(tmp_path / "r.json", "parity")
    failed = [r for r in doc["summary"] if not r["passed"]]
    assert failed and {r["runner"] for r in failed} == {WEB_RUNNER}
    assert f"{WEB_RUNNER} {failed[0]['variant']} output" in out and "check FAILED" in out


@pytest.mark.web
@pytest.mark.slow
def test_mobilenet_int8_and_fp16_variants_pass_in_wasm_as_onnxruntime_runs_them(cli, mobilenet, tmp_path):
    """Both int8 forms (and fp16) open and pass in onnxruntime-web's wasm provider; their outputs are
    those of onnxruntime in Python (the same kernels, compiled to WebAssembly); fp32 under the tight
    tolerance fails, naming the web runner."""
    import onnxruntime as ort

    from edgeship.bundle.golden import read_bundle_npz
    from edgeship.bundle.read import open_bundle
    from edgeship.spec import IOSpec

    code, out = cli("check", mobilenet, "--target", "web", "--json", tmp_path / "r.json")
    assert code == 0, out
    doc = valid(tmp_path / "r.json", "parity")
    assert {r["variant"] for r in doc["summary"]} == {"fp32", "int8_dynamic", "int8_static", "fp16"}
    b = open_bundle(mobilenet)
    spec = IOSpec.from_dict(b.manifest["io"])
    feeds = read_bundle_npz(b, b.manifest["golden"]["inputs"])[0]
    with web.WebPage() as page:
        for name in ("int8_dynamic", "int8_static", "fp16"):
            data = b.read(f"models/{name}.onnx")
            with web.WebRunner(spec, data, page=page) as runner:
                got = runner.infer(feeds)
            want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            assert got["output"].dtype == want.dtype and got["output"].shape == want.shape
            assert np.allclose(got["output"], want, rtol=1e-4, atol=1e-4), (name, np.abs(got["output"] - want).max())
    code, out = cli("check", mobilenet, "--target", "web", "--variant", "fp32", *TIGHT)
    assert code == 1 and f"{WEB_RUNNER} fp32 output" in out, out


@pytest.mark.web
def test_every_dtype_crosses_the_page_bit_for_bit(need_web):
    """int64 beyond 2^53 (BigInt64Array), bool, uint8, float64 and float16 come back exactly as onnxruntime in
    Python returns them."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgeship.spec import IOSpec

    types = {"i": TensorProto.INT64, "b": TensorProto.BOOL, "u": TensorProto.UINT8, "d": TensorProto.DOUBLE,
             "h": TensorProto.FLOAT16}
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in types]
    nodes.append(helper.make_node("Neg", ["i"], ["neg"]))
    graph = helper.make_graph(nodes, "dtypes", [helper.make_tensor_value_info(n, t, [2, 3]) for n, t in types.items()],
                              [helper.make_tensor_value_info(f"{n}_out", t, [2, 3]) for n, t in types.items()]
                              + [helper.make_tensor_value_info("neg", TensorProto.INT64, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    onnx.checker.check_model(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"i": np.array([[2**62 + 1, -(2**60) - 3, 0], [1, -1, 2**53 + 1]], np.int64),
             "b": rng.random((2, 3)) > 0.5, "u": rng.integers(0, 255, (2, 3), dtype=np.uint8),
             "d": rng.standard_normal((2, 3)), "h": rng.standard_normal((2, 3)).astype(np.float16)}
    spec = IOSpec.from_dict({"inputs": [{"name": n, "shape": [2, 3], "dtype": str(a.dtype)} for n, a in feeds.items()],
                             "outputs": [{"name": o.name, "shape": [2, 3], "dtype": "float32"}
                                         for o in session.get_outputs()]})
    with web.WebRunner(spec, data) as runner:
        got = runner.infer(feeds)
        assert runner.io_problems() == []
    for o, want in zip(session.get_outputs(), session.run(None, feeds)):
        assert got[o.name].dtype == want.dtype and np.array_equal(got[o.name], want), o.name


@pytest.mark.web
def test_a_model_onnxruntime_web_cannot_open_fails_with_its_reason(need_web):
    from onnx import TensorProto, helper

    from edgeship.spec import IOSpec

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    spec = IOSpec.from_dict({"inputs": [{"name": "x", "shape": [2], "dtype": "float32"}],
                             "outputs": [{"name": "y", "shape": [2], "dtype": "float32"}]})
    runner = web.WebRunner(spec, model.SerializeToString())
    try:
        with pytest.raises(RuntimeError, match=r"could not create a session \(wasm\): Can't create a session.*NoSuchOp"):
            runner.infer({"x": np.zeros(2, np.float32)})
    finally:
        runner.close()
    assert runner.page.page is None  # its own page: closed with it


@pytest.mark.web
def test_profile_web_times_each_variant_in_the_page(cli, simplenet, tmp_path):
    code, out = cli("profile", simplenet, "--target", "web", "-n", "5", "--warmup", "1", "--cold-start", "off",
                    "--json", tmp_path / "p.json")
    assert code == 0, out
    doc = valid(tmp_path / "p.json", "profile")
    manifest = json.loads((simplenet / "manifest.json").read_text())
    rows = [r for r in doc["results"] if r["target"] == "web"]
    assert {r["variant"] for r in rows} == set(manifest["variants"]) and len(rows) == len(doc["results"])
    assert all(r["runtime"] == "onnxruntime-web" and r["stats"]["count"] == 5 and r["stats"]["p50"] > 0
               and r["peak_rss_mb"] is None and r["session_ms"] > 0 for r in rows)
    assert any("performance.now()" in n and f"onnxruntime-web {web.ORT_WEB_VERSION}" in n for n in doc["notes"])
    assert "web/fp32" in out and "onnxruntime-web" in out


# ----------------------------------------------------------------------------- errors (no browser needed)
def test_no_browser_is_a_clear_exit_2(cli, mlp_bundle, monkeypatch, tmp_path):
    monkeypatch.delenv("EDGESHIP_BROWSER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    code, out = cli("check", mlp_bundle, "--target", "web")
    assert code == 2, out
    assert "none was found" in out and "apt-get install chromium" in out and "--browser PATH" in out
    code, out = cli("profile", mlp_bundle, "--target", "web")
    assert code == 2 and "none was found" in out, out


def test_an_unknown_webgpu_mode_is_refused(cli, mlp_bundle):
    code, out = cli("check", mlp_bundle, "--target", "web", "--webgpu", "metal")
    assert code == 2 and "--webgpu metal: use auto, swiftshader, off" in out, out


def test_a_browser_path_that_is_no_executable_is_refused(cli, mlp_bundle, tmp_path, monkeypatch):
    code, out = cli("check", mlp_bundle, "--target", "web", "--browser", tmp_path / "nope")
    assert code == 2 and "--browser" in out and "not an executable file" in out, out
    monkeypatch.setenv("EDGESHIP_BROWSER", str(tmp_path))
    with pytest.raises(TargetUnavailableError, match="EDGESHIP_BROWSER .*not an executable file"):
        web.find_browser()
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert web.find_browser(fake) == fake
    monkeypatch.delenv("EDGESHIP_BROWSER")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert web.find_browser() == fake  # found on PATH by name


def test_without_onnxruntime_web_the_error_names_the_prefetch_command(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert web.runtime_path() == tmp_path / "cache" / "edgeship" / "web" / f"onnxruntime-web-{web.ORT_WEB_VERSION}"
    with pytest.raises(TargetUnavailableError, match="edgeship web-runtime --fetch"):
        web.runtime_dir(fetch=False)
    code, out = cli("web-runtime")
    assert code == 2 and "is not cached" in out and web.PREFETCH in out, out
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    with pytest.raises(TargetUnavailableError, match="npm is not on PATH.*edgeship web-runtime --fetch"):
        web.runtime_dir()
    npm = tmp_path / "npm"  # an npm that cannot reach its registry
    npm.write_text("#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\n"
                   "echo 'npm error FetchError: request to https://registry.npmjs.org/onnxruntime-web failed, reason: "
                   "getaddrinfo ENOTFOUND registry.npmjs.org' >&2\necho 'npm error     at x.js:1' >&2\nexit 1\n")
    npm.chmod(0o755)
    offline = r"could not fetch .*\(FetchError: request to .* ENOTFOUND registry.npmjs.org\).*edgeship web-runtime --fetch"
    with pytest.raises(TargetUnavailableError, match=offline):
        web.runtime_dir()
    assert not web.runtime_path().exists()


def test_fetch_keeps_only_the_harness_files_of_the_npm_package(monkeypatch, tmp_path):
    """``npm pack``'s tarball (a fake npm writes one): the dist entry module, the wasm builds and the
    licence, flat; nothing else, and no name that climbs out of the cache."""
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, body in {"package/dist/ort.min.mjs": b"export {}", "package/dist/ort-wasm-simd-threaded.wasm": b"\0asm",
                           "package/dist/ort-wasm-simd-threaded.mjs": b"//", "package/dist/ort.node.min.js": b"x",
                           "package/LICENSE": b"MIT", "package/dist/../../escape.mjs": b"no",
                           "package/dist/sub/ort.min.mjs": b"no", "package/lib/index.ts": b"no"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n'
                   f'{shutil.which("cp")} {tgz} "$4/onnxruntime-web-{web.ORT_WEB_VERSION}.tgz"\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(npm.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    got = web.fetch_runtime()
    assert got == web.runtime_path() and web.cached()
    assert sorted(p.name for p in got.iterdir()) == ["LICENSE", "ort-wasm-simd-threaded.mjs",
                                                     "ort-wasm-simd-threaded.wasm", "ort.min.mjs"]
    assert (got / "ort.min.mjs").read_bytes() == b"export {}"
    assert not list(tmp_path.rglob("escape.mjs"))
    args = (tmp_path / "args").read_text().split()  # an offline machine: npm gives up in 30 s, not minutes
    assert "--fetch-timeout=30000" in args and "--fetch-retries=1" in args


def test_without_playwright_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    with pytest.raises(TargetUnavailableError, match=r"pip install 'edgeship\[web\]'"):
        web._playwright()


def test_tensors_cross_as_typed_bytes():
    a = np.array([[2**62 + 7, -3]], np.int64)
    t = web.encode(a)
    assert t["type"] == "int64" and t["dims"] == [1, 2]
    back = web.decode(t)
    assert back.dtype == np.int64 and np.array_equal(back, a)
    assert web.decode(web.encode(np.array([True, False]))).dtype == np.bool_
    big = np.arange(6, dtype=">f4").reshape(2, 3)  # big-endian in: little-endian on the wire, same values
    assert np.array_equal(web.decode(web.encode(big)), big)
    with pytest.raises(SpecError, match="cannot pass a <U1 input"):
        web.encode(np.array(["a"]))
    with pytest.raises(RuntimeError, match="string tensor"):
        web.decode({"type": "string", "dims": [1], "data": ""})


def test_an_unknown_web_provider_is_refused(tmp_path, monkeypatch):
    from edgeship.spec import IOSpec

    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    spec = IOSpec.from_dict({"inputs": [{"name": "x", "shape": [1], "dtype": "float32"}],
                             "outputs": [{"name": "y", "shape": [1], "dtype": "float32"}]})
    with pytest.raises(SpecError, match="use wasm or webgpu"):
        web.WebRunner(spec, b"", "webgl", browser=fake)


def _fake_chromium(tmp_path: Path) -> Path:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    return fake


class _PlaywrightError(Exception):
    """Stands for playwright's Error (what sync_playwright().start() raises inside a running asyncio loop)."""


def test_playwright_failing_to_start_or_open_the_page_is_a_clear_error_and_closes_the_server(monkeypatch, tmp_path):
    """Playwright's sync API inside a running asyncio loop (Jupyter) raises on start(); a browser that
    cannot open the page raises on new_page()/goto(): each is TargetUnavailableError (exit 2), and the
    local server is shut down."""
    monkeypatch.setattr(web, "runtime_dir", lambda: tmp_path)
    closed: list[str] = []

    class Page:
        def set_default_timeout(self, ms):
            pass

        def on(self, event, handler):
            pass

        def goto(self, url):
            raise _PlaywrightError("net::ERR_CONNECTION_REFUSED at " + url)

    class Browser:
        version = "1"

        def new_page(self):
            return Page()

        def close(self):
            closed.append("browser")

    class Started:
        chromium = type("C", (), {"launch": staticmethod(lambda **kw: Browser())})

        def stop(self):
            closed.append("playwright")

    class InLoop:
        def start(self):
            raise _PlaywrightError("It looks like you are using Playwright Sync API inside the asyncio loop.\n"
                                   "Please use the Async API instead.")

    monkeypatch.setattr(web, "_playwright", lambda: InLoop)
    page = web.WebPage(_fake_chromium(tmp_path))
    with pytest.raises(TargetUnavailableError, match="Playwright did not start: .*inside a running asyncio loop"):
        page.open()
    assert page._server is None and page.page is None
    monkeypatch.setattr(web, "_playwright", lambda: type("P", (), {"start": lambda self: Started()}))
    with pytest.raises(TargetUnavailableError, match="did not open the harness page: net::ERR_CONNECTION_REFUSED"):
        page.open()
    assert closed == ["browser", "playwright"] and page._server is None and page.page is None


def test_chromium_runs_with_its_sandbox_except_as_root(monkeypatch, tmp_path):
    """The browser runs model bytes from a bundle: sandboxed, except as root (Chromium refuses the
    sandbox there) or where EDGESHIP_NO_SANDBOX=1 says the machine cannot give it one."""
    monkeypatch.delenv("EDGESHIP_NO_SANDBOX", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    assert web.sandboxed() and "--no-sandbox" not in web.BROWSER_ARGS
    launched: list[dict] = []

    def launch(**kw):
        launched.append(kw)
        raise _PlaywrightError("Failed to launch: No usable sandbox!")

    started = type("S", (), {"chromium": type("C", (), {"launch": staticmethod(launch)}), "stop": lambda self: None})
    monkeypatch.setattr(web, "_playwright", lambda: type("P", (), {"start": lambda self: started()}))
    monkeypatch.setattr(web, "runtime_dir", lambda: tmp_path)
    with pytest.raises(TargetUnavailableError, match="No usable sandbox.*EDGESHIP_NO_SANDBOX=1"):
        web.WebPage(_fake_chromium(tmp_path)).open()
    assert launched[0]["chromium_sandbox"] is True and "--no-sandbox" not in launched[0]["args"]
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert not web.sandboxed()
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    monkeypatch.setenv("EDGESHIP_NO_SANDBOX", "1")
    assert not web.sandboxed()
    monkeypatch.delenv("EDGESHIP_NO_SANDBOX")
    monkeypatch.delattr(os, "geteuid", raising=False)  # Windows: no root to fall back from
    assert web.sandboxed()


def test_the_local_server_serves_only_its_paths_and_only_to_its_own_host():
    """Models are served under a random path prefix, and a request whose Host is not 127.0.0.1:PORT
    (a page of another site whose DNS name was rebound to 127.0.0.1) gets 403."""
    import threading
    import urllib.error
    import urllib.request

    server = web._Files({"/tok/model/1.onnx": b"model bytes"})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    def get(path: str, host: str | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, b""

    try:
        assert get("/tok/model/1.onnx") == (200, b"model bytes")
        assert get("/model/1.onnx")[0] == 404  # the path without its prefix
        assert get("/tok/model/1.onnx", f"evil.example:{port}")[0] == 403
        assert get("/tok/model/1.onnx", f"localhost:{port}")[0] == 403
    finally:
        server.shutdown()
        server.server_close()


def test_every_page_serves_under_its_own_random_prefix(tmp_path):
    a, b = web.WebPage(_fake_chromium(tmp_path)), web.WebPage(_fake_chromium(tmp_path))
    pa, pb = a.add_model(b"x"), b.add_model(b"x")
    assert pa != pb and pa.endswith("/model/1.onnx") and len(pa) > len("/model/1.onnx") + 16


def test_profile_web_notes_a_variant_onnxruntime_web_cannot_open_instead_of_crashing(cli, mlp_bundle, monkeypatch,
                                                                                       tmp_path):
    """WebRunner raises RuntimeError when onnxruntime-web cannot create a session (stubbed here as it
    words it): that variant is 'not measured (why)' in the notes, the others are timed, and the exit is
    not 3 (a bug)."""
    from edgeship.profiling import profiler

    info = web.BrowserInfo("Chromium", "1", web.ORT_WEB_VERSION, False, 1)

    class Page:
        def __init__(self):
            self.info = info

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    class Runner:
        runtime = web.RUNTIME
        load_s = 0.01

        def __init__(self, spec, model, provider, page):
            self.model = model

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def time_in_page(self, feeds, warmup, iterations):
            if self.model == bad:
                raise RuntimeError(f"onnxruntime-web {web.ORT_WEB_VERSION} could not create a session (wasm): "
                                   "Can't create a session. ERROR_CODE: 9, ERROR_MESSAGE: Could not find an "
                                   "implementation for MatMulInteger")
            return [1.0 + i for i in range(iterations)]

    from edgeship.bundle.read import open_bundle

    bad = open_bundle(mlp_bundle).read("models/int8_dynamic.onnx")
    monkeypatch.setattr(profiler, "_web_page", lambda config: Page())
    monkeypatch.setattr(web, "WebRunner", Runner)
    code, out = cli("profile", mlp_bundle, "--target", "web", "-n", "3", "--warmup", "0", "--cold-start", "off",
                    "--json", tmp_path / "p.json")
    assert code == 0, out
    doc = valid(tmp_path / "p.json", "profile")
    assert {r["variant"] for r in doc["results"]} == {"fp32"}
    assert any(n.startswith("web/int8_dynamic: not measured (onnxruntime-web") and "MatMulInteger" in n
               for n in doc["notes"])
    assert "web/int8_dynamic: not measured" in out


def test_a_decoders_quantized_variants_are_skipped_on_web_with_the_reason(mlp_bundle, monkeypatch):
    """A decoder bundle's quantized variants are judged on generation alone (as on the CPU), which the
    browser does not run: check --target web skips them, saying why, instead of judging one step's raw
    logits and KV cache; its fp32 variant still runs there."""
    from edgeship.bundle.read import open_bundle
    from edgeship.parity import check as check_mod
    from edgeship.parity.tolerances import Tolerances
    from edgeship.spec import IOSpec

    golden_samples = check_mod.golden_samples
    real = open_bundle(mlp_bundle)

    class Decoder:  # the MLP bundle, its manifest saying it is a decoder's
        path = real.path
        manifest = {**real.manifest, "generation": {}}

        def read(self, name):
            return real.read(name)

    ran: list[str] = []

    class Page:
        info = web.BrowserInfo("Chromium", "1", web.ORT_WEB_VERSION, False, 1)
        webgpu = "off"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    class Runner(web.WebRunner):
        def _load(self):
            ran.append(self.model)
            raise RuntimeError("stop here")

        def _close(self):
            pass

    monkeypatch.setattr(web, "WebRunner", Runner)
    spec = IOSpec.from_dict(real.manifest["io"])
    samples, outputs = golden_samples(real, spec)
    page = Page()
    page.executable = None
    report = check_mod._check_web(Decoder(), spec, page, (), samples, outputs, Tolerances.from_dict({}), False)
    assert set(ran) == {real.read("models/fp32.onnx")}  # int8_dynamic never reached the browser
    why = report.skipped[f"{web.RUNTIME} int8_dynamic"]
    assert "judged on generation" in why and "--target cpu" in why
    assert {c.variant for c in report.checks} == {"fp32"}
    plain = check_mod._check_web(real, spec, page, ("int8_dynamic",), samples, outputs, Tolerances.from_dict({}), False)
    assert {c.variant for c in plain.checks} == {"int8_dynamic"} and not plain.skipped.get(f"{web.RUNTIME} int8_dynamic")
