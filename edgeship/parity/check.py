"""``edgeship check``: re-check a bundle against its golden outputs, as it runs on this host.

By default it checks what ``edgeship.load`` runs here (:func:`edgeship.bundle.choose.open_candidate`: the
same candidate, skipping what this host cannot run and falling back the same way, with the same
runtime, precision and options) and the fp32 variant on onnxruntime, the reference every other
candidate is judged beside; ``candidates="all"`` checks every candidate this host can run (and
names those it cannot); ``variants`` or ``runtimes`` check variants on runtimes' defaults instead.
Every row names its candidate. Needs onnxruntime and numpy only; ``against=model.pt`` also re-runs
the PyTorch model on the golden inputs (and needs torch).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.bundle.choose import matching_candidates, open_candidate, open_variant, plain_candidate, why_not_here
from edgeship.bundle.golden import Sample, load_npz_samples, read_bundle_npz
from edgeship.bundle.limits import read_npz
from edgeship.bundle.manifest import Candidate, VariantResult, variants_of
from edgeship.bundle.read import open_bundle
from edgeship.errors import BundleError, ExportError, SpecError, TargetUnavailableError, brief
from edgeship.parity.evaluate import reference_outputs, run_parity
from edgeship.parity.localize import explain_models
from edgeship.parity.report import ParityReport
from edgeship.parity.tolerances import TOLERANCE_KEYS, Tolerance, Tolerances, tolerance_for
from edgeship.runtimes.base import Runner
from edgeship.runtimes.deadline import deadline
from edgeship.runtimes.external_data import refuse_external_data
from edgeship.runtimes.ort import MOBILE, OrtRunner, providers_for
from edgeship.runtimes.registry import ORT, make_runner
from edgeship.spec import IOSpec, validate_feeds

if TYPE_CHECKING:
    from edgeship.config import LoadOptions

log = logging.getLogger(__name__)


CANDIDATES = ("default", "all")
WEB = "web"  # the target that runs onnxruntime-web in a headless Chromium


def check(bundle: str | os.PathLike[str], targets: tuple[str, ...] = ("cpu",), variants: tuple[str, ...] = (),
          against: str | os.PathLike[str] | None = None, load_options: LoadOptions | None = None,
          tolerances: dict[str, Any] | None = None, inputs: str | os.PathLike[str] | None = None,
          localise: bool = True, runtimes: tuple[str, ...] = (), candidates: str = "default",
          timeout: float | None = None, browser: str | os.PathLike[str] | None = None,
          webgpu: str = "auto") -> ParityReport:
    """Check what runs on this host (or the named variants) on every target over the golden inputs.

    Args:
        bundle: the bundle folder or zip.
        targets: onnxruntime targets (``cpu``, ``cuda``, a provider name), and ``web``: every variant
            (or the named ones) in onnxruntime-web in a headless Chromium (:func:`_check_web`).
        variants: variant names, checked on ``runtimes`` (onnxruntime by default) instead of candidates.
        candidates: with no ``variants`` nor ``runtimes``: ``default`` checks the candidate ``load``
            takes here and the fp32 variant on onnxruntime; ``all`` every candidate this host can run,
            and every variant that no candidate runs on onnxruntime's defaults.
        against: a model file to re-run with PyTorch as the reference too.
        load_options: ``LoadOptions`` for ``against`` (``--arch`` etc.). The bundle's recorded
            ``--arch`` is never used on its own: the error for a state_dict quotes it.
        tolerances: scoped overrides, e.g. ``{"fp32": {"atol": 1e-3}, "int8/logits": {"min_top1": 0.95}}``;
            they win over the tolerances recorded in the bundle.
        inputs: an .npz of your own inputs (one array per input name, or ``<i>/<name>`` keys for
            several samples) used in place of the golden inputs; the reference outputs then come
            from ``against`` (required).
        localise: for a failing quantized/fp16 variant, name the first node where it leaves the
            bundle's fp32 variant (needs the onnx package; skipped without it).
        runtimes: ``onnxruntime`` and/or ``openvino`` (with ``variants`` or alone): OpenVINO runs each
            variant at its own precision on the cpu target, and the OpenVINO candidates the manifest
            lists at another precision (bf16) with that precision's tolerance.
        timeout: seconds all the check's inference may take together (onnxruntime and OpenVINO;
            a crafted graph can run as long as it says); None: no limit. The CLI's default is 600.
            The web target's calls are awaited with a timeout at the deadline (the browser is closed).
        browser: the Chromium executable of the ``web`` target (default: found on the machine).
        webgpu: the ``web`` target's WebGPU: ``auto`` (where the browser has an adapter), ``swiftshader``
            (Chromium's CPU implementation of WebGPU, on any machine) or ``off`` (wasm only).

    Raises:
        BundleError: the bundle is corrupt or tampered with.
        TargetUnavailableError: a target's provider is not installed; for ``web``: no Chromium, no
            Playwright, or onnxruntime-web neither cached nor fetchable.
        SpecError: ``candidates`` is neither default nor all, or ``timeout`` is not above 0.
        InferenceTimeout: the inference did not finish within ``timeout``.
    """
    with deadline(timeout, "timeout"):
        return _check(bundle, targets, variants, against, load_options, tolerances, inputs, localise, runtimes, candidates,
                      browser, webgpu)


def _check(bundle, targets, variants, against, load_options, tolerances, inputs, localise, runtimes,
           candidates, browser=None, webgpu="auto") -> ParityReport:
    if candidates not in CANDIDATES:
        raise SpecError(f"--candidates {candidates!r}: use default (what load runs here, and fp32) or all.")
    web = WEB in targets
    targets = tuple(t for t in targets if t != WEB)
    page = _web_page(browser, webgpu) if web else None  # no browser: refused before any work
    b = open_bundle(bundle)
    m = b.manifest
    spec = IOSpec.from_dict(m["io"])
    report = ParityReport(())
    if inputs is not None:
        if against is None:
            raise SpecError(f"--inputs {inputs}: reference outputs for your own inputs come from the PyTorch "
                            "model; pass --against model.pt too.")
        samples = [Sample(f"inputs-{i}", feeds, {}) for i, feeds in enumerate(read_inputs(inputs, spec))]
        outputs = _reference_outputs(spec, samples, against, load_options, b)
    else:
        samples, outputs = golden_samples(b, spec)
        if against is not None:
            report = report.merged(_check_reference(b, spec, samples, outputs, against, load_options))
    shipped = variants_of(m)
    overrides = Tolerances.from_dict(tolerances or {})
    if page is not None:
        report = report.merged(_check_web(b, spec, page, variants, samples, outputs, overrides, localise,
                                          generation=inputs is None))
        if not targets:
            return report
    if not variants and not runtimes:
        if MOBILE in (m.get("defaults") or {}) and MOBILE not in targets:  # the bundle ships for phones too
            targets = (*targets, MOBILE)
        for t in targets:
            report = report.merged(_check_candidates(b, spec, t, candidates, samples, outputs, overrides, localise))
        return _with_generation(b, spec, report, inputs)
    for name in list(variants) or list(shipped):
        if name not in shipped:
            raise BundleError(f"variant {name!r} is not in bundle {b.path}; it has {', '.join(shipped)}.")
        v = shipped[name]
        tol = _tolerance(v, overrides)
        data = b.read(v.file)
        runners: list[Runner] = [open_variant(b, OrtRunner(spec, data, target=t, name=f"onnxruntime-{t}"), v.file, v.format)
                                 for t in targets] if "onnxruntime" in (runtimes or ("onnxruntime",)) else []
        variant_report = run_parity(runners, samples, outputs, tol, name) if runners else ParityReport(())
        for r in runners:
            r.close()
        if "openvino" in runtimes:
            for precision in _openvino_precisions(m, v):
                ov = open_variant(b, make_runner(spec, data, "openvino", precision=precision, name=f"openvino-{precision}",
                                                 what=v.file), v.file, v.format)
                with ov:
                    variant_report = variant_report.merged(
                        run_parity([ov], samples, outputs, variant_tolerance(v, precision, overrides), name))
        report = report.merged(_localised(b, name, variant_report, samples, tol) if localise else variant_report)
    return _with_generation(b, spec, report, inputs)


def _with_generation(b, spec: IOSpec, report: ParityReport, inputs) -> ParityReport:
    """A decoder bundle's golden generation re-run on the variants checked (:mod:`edgeship.parity.decoder`).
    Its quantized variants are judged on generation alone (the teacher-forced gate, as at export), not
    on one prefill/decode step's logits and cache, which weight quantization moves by design."""
    if b.manifest.get("generation") is None or inputs is not None:
        return report
    from dataclasses import replace

    from edgeship.parity.decoder import generation_checks

    checked = sorted({c.variant for c in report.checks})
    quantized = {n for n, v in variants_of(b.manifest).items() if v.precision != "fp32"}
    kept = tuple(c for c in report.checks if c.variant not in quantized)
    keys = {c.candidate or c.variant for c in kept}
    report = replace(report, checks=kept, tolerances={k: t for k, t in report.tolerances.items() if k in keys},
                     divergence={k: d for k, d in report.divergence.items() if k not in quantized})
    return report.merged(generation_checks(b, spec, checked))


def _web_page(browser, webgpu: str):
    """The web target's page, not yet open (it opens on the first variant); no browser: refused now."""
    from edgeship.runtimes.web import WebPage

    return WebPage(browser, webgpu)


def _check_web(b, spec: IOSpec, page, variants: tuple[str, ...], samples: list[Sample], outputs: list[dict],
               overrides: Tolerances, localise: bool, generation: bool = True) -> ParityReport:
    """Every variant (or the named ones) in onnxruntime-web, in one headless Chromium page: on wasm,
    and on WebGPU where the browser has an adapter (else named as not checked). A variant the web
    runtime cannot open (an operator it lacks) fails its rows with onnxruntime-web's reason.

    A decoder bundle's quantized variants are judged on generation alone (:func:`_with_generation`,
    with the golden inputs: ``generation``), which the browser does not run: they are skipped there
    with that reason, not judged on one step's raw logits and cache."""
    from edgeship.runtimes.web import PROVIDERS, RUNTIME, WebRunner

    shipped = variants_of(b.manifest)
    names = list(variants) or list(shipped)
    missing = [n for n in names if n not in shipped]
    if missing:
        raise BundleError(f"variant {missing[0]!r} is not in bundle {b.path}; it has {', '.join(shipped)}.")
    report = ParityReport(())
    if generation and b.manifest.get("generation") is not None:
        quantized = [n for n in names if shipped[n].precision != "fp32"]
        names = [n for n in names if n not in quantized]
        report = ParityReport((), skipped={
            f"{RUNTIME} {n}": (f"a decoder's {shipped[n].precision} variant is judged on generation (the teacher-forced "
                               "gate), which the web target does not run; check it with --target cpu")
            for n in quantized})
        if not names:
            return report
    with page:
        info = page.info
        providers = [p for p in PROVIDERS if p == "wasm" or info.webgpu]
        if not info.webgpu:
            why = ("--webgpu off" if page.webgpu == "off" else f"{info.browser} {info.version} has no WebGPU adapter "
                   "here (--webgpu swiftshader: Chromium's CPU implementation of WebGPU)")
            report = report.merged(ParityReport((), skipped={f"{RUNTIME}-webgpu": f"{why}; checked on wasm"}))
        for name in names:
            v = shipped[name]
            # ONNX or ORT-format bytes (the mobile twins; onnxruntime-web reads both): walked for external data
            refuse_external_data(b.read(v.file), v.file, BundleError, where=f"bundle {b.path}: ")
            tol = _tolerance(v, overrides)
            for provider in providers:
                runner = WebRunner(spec, b.read(v.file), provider, page=page)
                try:
                    with contextlib.suppress(RuntimeError):  # it did not open: every row fails with why
                        runner.load()
                    problems = runner.io_problems() if runner.outputs else []
                    if problems:
                        raise BundleError(f"bundle {b.path}: {v.file} does not match manifest.json's io spec "
                                          f"({'; '.join(problems)}); re-export the bundle.")
                    one = run_parity([runner], samples, outputs, tol, name)
                finally:
                    runner.close()
                one = replace(one, runners={runner.name: runner.describe})
                report = report.merged(_localised(b, name, one, samples, tol) if localise else one)
    return report


def _localised(b, name: str, report: ParityReport, samples: list[Sample], tol: Callable[[str], Tolerance]) -> ParityReport:
    """``report`` with the first node where variant ``name`` leaves the fp32 variant, when it failed."""
    shipped = variants_of(b.manifest)
    if report.passed or name == "fp32" or "fp32" not in shipped or shipped[name].format != "onnx":
        return report  # (an ORT-format file is not ONNX: the node-by-node comparison needs onnx's graph)
    bad = report.failures()[0]
    sample = next((s for s in samples if s.label == bad.sample), samples[0])
    where = explain_models(b.read(shipped["fp32"].file), b.read(shipped[name].file), [sample.feeds],
                           shipped[name].precision, tol(bad.output))
    return report.with_divergence(name, where)


def _check_candidates(b, spec: IOSpec, target: str, which: str, samples: list[Sample], outputs: list[dict],
                      overrides: Tolerances, localise: bool) -> ParityReport:
    """The candidates of ``target`` this check covers (module docstring), each run as ``load`` runs it;
    one a runtime cannot open on this host is named with why, as ``load`` would pass over it."""
    providers = providers_for(target)
    shipped = variants_of(b.manifest)
    if target == MOBILE and not any(v.format == "ort" for v in shipped.values()):
        raise TargetUnavailableError(f"check --target mobile: bundle {b.path} has no ORT-format variants; re-export it "
                                     "with --target mobile, or check it on cpu.")
    plan: list[tuple[Candidate, Runner | None]] = []  # a runner already open (load's own pick), else None
    skipped: dict[str, str] = {}
    if which == "default" and target == MOBILE:  # every ORT-format file: the app picks the one it ships
        plan += [(c, None) for c in matching_candidates(b.manifest, target)]
    elif which == "default":
        runner, chosen, _ = open_candidate(b, spec, target, providers)
        plan.append((chosen, runner))
        if "fp32" in shipped and not (chosen.plain and chosen.variant == "fp32"):
            plan.append((plain_candidate(shipped["fp32"], ORT, target), None))
    else:
        listed = matching_candidates(b.manifest, target)
        covered = {c.variant for c in listed if c.plain}
        for c in listed + [plain_candidate(v, ORT, target) for n, v in shipped.items()
                           if n not in covered and (target != MOBILE or v.format == "ort")]:
            why = why_not_here(c, target)
            if why is None:
                plan.append((c, None))
            else:
                skipped[c.id] = why
    report = ParityReport((), skipped=skipped)
    for c, runner in plan:
        v = shipped[c.variant]
        tol = variant_tolerance(v, c.precision, overrides)
        try:
            if runner is None:
                runner = open_variant(b, make_runner(spec, b.read(v.file), c.runtime, target=target, precision=c.precision,
                                                     options=c.options, name=f"{c.runtime}-{target}", what=v.file,
                                                     **({"providers": providers} if c.runtime == ORT else {})), v.file, v.format)
            with runner:
                one = run_parity([runner], samples, outputs, tol, v.name)
        except (TargetUnavailableError, BundleError) as e:
            if not isinstance(e, TargetUnavailableError) and not isinstance(e.__cause__, ExportError):
                raise  # the bundle disagrees with itself: corrupt, whatever runs here
            report = report.merged(ParityReport((), skipped={c.id: f"it did not open ({brief(e)})"}))
            continue
        if localise and c.precision == v.precision:
            one = _localised(b, v.name, one, samples, tol)
        report = report.merged(one.of_candidate(c.id))
    return report


def _openvino_precisions(manifest: dict, v: VariantResult) -> list[str]:
    """The precisions OpenVINO is checked at for ``v``: its own (fp32, int8), then any other that
    an OpenVINO candidate of the manifest runs it at (bf16)."""
    from edgeship.bundle.manifest import candidates_of

    if v.format != "onnx":  # ONNX Runtime Mobile's format: onnxruntime only
        return []
    out = [v.precision] if v.precision in ("fp32", "int8") else []
    for cands in candidates_of(manifest).values():
        out += [c.precision for c in cands if c.runtime == "openvino" and c.variant == v.name]
    return list(dict.fromkeys(out))


def golden_samples(b, spec: IOSpec) -> tuple[list[Sample], list[dict]]:
    """A verified bundle's golden samples (labelled, with their sizes) and reference outputs.

    Raises:
        BundleError: they do not pair up or do not fit the bundle's io spec.
    """
    m = b.manifest
    golden_in = read_bundle_npz(b, m["golden"]["inputs"])
    outputs = read_bundle_npz(b, m["golden"]["outputs"])
    if len(golden_in) != len(outputs) or not golden_in:
        raise BundleError(f"bundle {b.path}: golden inputs and outputs do not pair up.")
    _check_golden(b, spec, golden_in, outputs)
    labels = [s.get("label", str(i)) for i, s in enumerate(m["golden"].get("samples", []))]
    labels += [str(i) for i in range(len(labels), len(golden_in))]
    sizes = [s.get("sizes", {}) for s in m["golden"].get("samples", [])] + [{}] * len(golden_in)
    return [Sample(labels[i], feeds, sizes[i]) for i, feeds in enumerate(golden_in)], outputs


def variant_tolerance(variant: VariantResult, precision: str | None = None,
                      overrides: Tolerances | None = None) -> Callable[[str], Tolerance]:
    """Per output: the tolerance ``variant`` was exported with (or, for a candidate running it at
    another precision class such as bf16, that class's default), then ``overrides``."""
    if precision is not None and precision != variant.precision:
        return lambda output: (overrides or Tolerances()).get(precision, output)
    return _tolerance(variant, overrides or Tolerances())


def read_inputs(path: str | os.PathLike, spec: IOSpec) -> list[dict]:
    """Samples from an .npz: plain input names (one sample) or ``<i>/<name>`` keys (several)."""
    arrays = read_npz(Path(path), f"--inputs {path}", SpecError)
    if arrays and all("/" in k for k in arrays):
        samples = load_npz_samples(arrays)
    else:
        samples = [arrays]
    for i, feeds in enumerate(samples):
        try:
            validate_feeds(spec.inputs, feeds)
        except SpecError as e:
            raise SpecError(f"--inputs {path}, sample {i}: {e}") from e
    return samples


def _reference_outputs(spec, samples, against, load_options, b) -> list[dict]:
    from edgeship.runtimes.torch_eager import TorchEagerRunner

    module = _load_against(b, against, load_options)
    runner = TorchEagerRunner(spec, module, name="torch-eager")
    return reference_outputs(runner, samples)


def _check_golden(b, spec: IOSpec, inputs: list[dict], outputs: list[dict]) -> None:
    """Golden samples must fit the io spec; NaN/Inf in them is left to parity, which reports it."""
    names = spec.output_names
    for i, (feeds, refs) in enumerate(zip(inputs, outputs)):
        try:
            validate_feeds(spec.inputs, feeds)
        except SpecError as e:
            raise BundleError(f"bundle {b.path}: golden sample {i} does not fit the bundle's inputs: {e}") from e
        if sorted(refs) != sorted(names):
            raise BundleError(
                f"bundle {b.path}: golden sample {i} has outputs {sorted(refs)}, the bundle's outputs are {names}."
            )
        nonfinite = [k for k, a in feeds.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
        if nonfinite:
            log.warning("bundle %s: golden sample %d has NaN/Inf in %s", b.path, i, ", ".join(nonfinite))


def _tolerance(variant: VariantResult, overrides: Tolerances) -> Callable[[str], Tolerance]:
    """Per output: the tolerance the bundle was exported with, then the caller's overrides."""
    precision = variant.precision
    stored = variant.tolerance

    def tol_of(output: str) -> Tolerance:
        values = stored.get(output) if isinstance(stored.get(output), dict) else None
        base = Tolerance(**{k: v for k, v in values.items() if k in TOLERANCE_KEYS}) if values else tolerance_for(precision)
        return overrides.apply(base, precision, output)

    return tol_of


def _check_reference(b, spec, samples, outputs, against, load_options) -> ParityReport:
    """Re-run the PyTorch model on the golden inputs and compare with the stored outputs.

    The ``--arch`` recorded in the manifest is only quoted, never imported or called: the
    manifest is not signed, and an edited one could name any callable (``os:system``).
    """
    from edgeship.runtimes.torch_eager import TorchEagerRunner

    runner = TorchEagerRunner(spec, _load_against(b, against, load_options), name="torch-eager")
    return run_parity([runner], samples, outputs, tolerance_for("fp32"), "reference")


def _load_against(b, against, load_options):
    from edgeship.exporters.loading import load_reference

    src = b.manifest.get("source")
    return load_reference(Path(against), load_options, src if isinstance(src, dict) else {})
