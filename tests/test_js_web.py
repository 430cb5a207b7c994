"""The JavaScript loader in a real browser: examples/web/ runs the SimpleNet bundle with
onnxruntime-web in headless Chromium (outputs as the bundle's golden outputs), and shows the
refusal of a bundle with one changed byte. Skips without Chromium, Playwright or js/node_modules
(`make test` installs them; the node tests of the loader are `npm test --prefix js`)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORT_WEB = ROOT / "js" / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium; make test installs it where it can)"),
    pytest.mark.skipif(not ORT_WEB.is_file(), reason="no js/node_modules (npm ci --prefix js; make test runs it)"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The repository served on 127.0.0.1, with /bundles/ a folder holding the SimpleNet bundle
    (exported as `make demo` does) and a copy with one changed byte in its fp32 model."""
    pytest.importorskip("playwright.sync_api", reason="no playwright (pip install playwright; make test installs it)")
    bundles = tmp_path_factory.mktemp("bundles")
    for name in ("model.py", "train.py"):
        shutil.copy(ROOT / "examples" / "simplenet" / name, bundles / name)
    run = dict(cwd=bundles, check=True, capture_output=True)
    subprocess.run([sys.executable, "train.py", "--epochs", "5"], **run)
    subprocess.run([sys.executable, "-m", "edgeship", "export", "simplenet_state.pt", "--arch", "model.py:SimpleNet",
                    "--input", "x:1x10", "--dynamic-batch", "-o", "simplenet.edgeship"], **run)
    bad = shutil.copytree(bundles / "simplenet.edgeship", bundles / "changed.edgeship")
    model = bad / "models" / "fp32.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0x01
    model.write_bytes(bytes(data))
    for name in ("simplenet", "changed"):  # zipped as `edgeship export -o NAME.edgeship.zip` writes them
        with zipfile.ZipFile(bundles / f"{name}.edgeship.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
            for p in sorted((bundles / f"{name}.edgeship").rglob("*")):
                if p.is_file():
                    z.write(p, p.relative_to(bundles / f"{name}.edgeship").as_posix())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path):
            if path.startswith("/bundles/"):
                return str(bundles / path.split("?", 1)[0][len("/bundles/"):])
            return super().translate_path(path)

        def log_message(self, *args):
            pass

    Handler.extensions_map = {**Handler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(ROOT)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bundles
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's, never a downloaded one), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    p = sync_playwright().start()
    try:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
    finally:
        p.stop()


def _open(browser, site_url: str, bundle: str) -> tuple[dict, str]:
    """The page's result (window.edgeshipResult) and status line for ?bundle=..."""
    page = browser.new_page()
    try:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{site_url}/examples/web/index.html?bundle=/bundles/{bundle}")
        page.wait_for_selector("body:not([data-state='loading'])", timeout=60_000)
        assert not errors, errors
        return page.evaluate("window.edgeshipResult"), page.inner_text("#status")
    finally:
        page.close()


@pytest.mark.parametrize("bundle", ["simplenet.edgeship/", "simplenet.edgeship.zip"])
def test_example_page_runs_simplenet_as_the_golden_outputs(site, browser, bundle):
    url, bundles = site
    result, status = _open(browser, url, bundle)
    assert "error" not in result, result
    assert result["bundle"] == f"{url}/bundles/{bundle}"
    manifest = json.loads((bundles / "simplenet.edgeship" / "manifest.json").read_text())
    assert result["variant"] == manifest["defaults"]["cpu"] and result["runtime"].startswith("onnxruntime-web 1.30")
    tol = manifest["variants"][result["variant"]]["tolerance"]["output"]
    rows = result["rows"]
    assert [r["sample"] for r in rows] == [s["label"] for s in manifest["golden"]["samples"]]
    for r in rows:
        assert len(r["values"]) == len(r["golden"]) == r["dims"][0]
        for got, want in zip(r["values"], r["golden"]):
            assert abs(got - want) <= tol["atol"] + tol["rtol"] * abs(want), r
    assert result["max_abs"] < 1e-5
    assert f"variant {result['variant']} on onnxruntime-web" in status


@pytest.mark.parametrize("bundle", ["changed.edgeship/", "changed.edgeship.zip"])
def test_example_page_refuses_one_changed_byte(site, browser, bundle):
    url, _ = site
    result, status = _open(browser, url, bundle)
    assert result["name"] == "BundleError" and result["code"] == "digest", result
    assert "models/fp32.onnx does not match its sha256/size in manifest.json" in result["error"]
    assert status == "refused: BundleError (digest)"
