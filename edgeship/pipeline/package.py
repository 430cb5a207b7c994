"""Stage 9, package: golden files, report.json and the manifest, written atomically.

Reads everything the earlier stages added; adds ``manifest_variants`` (one
:class:`~edgeship.bundle.manifest.VariantResult` per shipped variant) and ``bundle_path``.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from edgeship import jsonout, schemas
from edgeship.bundle.golden import describe_sample, save_samples
from edgeship.bundle.layout import sha256_file
from edgeship.bundle.manifest import VariantResult
from edgeship.bundle.write import write_bundle
from edgeship.host import host_info
from edgeship.pipeline.context import Context, Variant, required
from edgeship.pipeline.mobile import LOSSY_SIZE


def tool_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("edgeship", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def report_dict(ctx: Context, source: dict) -> dict:
    """report.json (its schema: ``edgeship/schemas/report.json``)."""
    return {
        **schemas.header("report"),
        "name": ctx.config.bundle_name,
        "source": source,
        "stages": [s.to_dict() for s in ctx.stages],
        "notes": list(ctx.notes),
        "parity": ctx.parity.to_dict(),
        "defaults": ctx.defaults,
        "candidates": {t: [c.to_dict() for c in cs] for t, cs in ctx.candidates.items()},
        "selection": ctx.selection,
        "variants": {n: v.summary() for n, v in ctx.variants.items()},
        "rejected": ctx.rejected,
        "latency_ms": {f"{n}@{t}": ms for (n, t), ms in ctx.latency.items()},
        "calibration": ctx.calibration.to_dict() if ctx.calibration else None,
        "held_out": {"source": ctx.eval_source, "samples": len(ctx.eval_samples)} if ctx.eval_samples else None,
        "gates": ctx.gates,
        "divergence": ctx.divergence,
        **({"profile": ctx.profile.to_dict()} if ctx.profile is not None else {}),
    }


def source_info(ctx: Context) -> dict:
    e = ctx.onnx_export
    model = Path(ctx.config.model)
    if model.is_dir():  # a Hugging Face folder: its weights file identifies it
        from edgeship.hf.folder import weights_file

        model = weights_file(model, trust_pickle=True)[0]
    return {
        "file": Path(ctx.config.model).name,
        "sha256": sha256_file(model),
        "format": required(ctx.loaded, "loaded").format,
        "arch": ctx.config.load.arch,
        "arch_kwargs": ctx.config.load.arch_kwargs,
        "exporter": e.exporter if e else None,
        "opset": e.opset if e else None,
    }


def package_stage(ctx: Context) -> str:
    source = source_info(ctx)  # hashes the user's model file: once
    golden = ctx.workdir / "golden"
    ctx.ensure_room(sum(a.nbytes for s in ctx.samples for a in s.feeds.values())
                    + sum(a.nbytes for refs in ctx.references for a in refs.values()), "the golden samples")
    golden.mkdir(exist_ok=True)
    save_samples(golden / "inputs.npz", ctx.samples, lambda s: s.feeds)
    refs = dict(zip((id(s) for s in ctx.samples), ctx.references))
    save_samples(golden / "outputs.npz", ctx.samples, lambda s: refs[id(s)])
    files: dict[str, Path] = {bundle_file(v): v.file for v in ctx.variants.values()}
    mobile = mobile_record(ctx, files)
    if ctx.torchscript_path:
        files["torchscript/model.pt"] = ctx.torchscript_path
    loaded = required(ctx.loaded, "loaded")
    files.update(loaded.bundle_files)  # a Hugging Face folder's tokenizer
    files["golden/inputs.npz"] = golden / "inputs.npz"
    files["golden/outputs.npz"] = golden / "outputs.npz"
    summary = ctx.parity.summary()  # once, not once per variant
    variants = {n: _variant_result(ctx, v, summary) for n, v in ctx.variants.items()}
    ctx.manifest_variants = variants
    report = ctx.workdir / "report.json"
    # the package stage's own timing is recorded by the runner after this; the report shows
    # every stage up to here
    report.write_text(jsonout.dumps(report_dict(ctx, source), indent=2))
    files["report.json"] = report
    if ctx.profile is not None:  # export --profile: the same report for people, with charts
        from edgeship.profiling.html import write_html

        export = {"stages": [s.to_dict() for s in ctx.stages], "parity": ctx.parity.summary()}
        shipped = replace(ctx.profile, variant_info=variants, defaults=dict(ctx.defaults))  # the summary's ★, size, parity
        files["report.html"] = write_html(ctx.workdir / "report.html", shipped, export=export)
    manifest = {
        "name": ctx.config.bundle_name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "io": required(ctx.spec, "spec").to_dict(),
        "variants": {n: v.to_dict() for n, v in variants.items()},
        "defaults": ctx.defaults,
        "candidates": {t: [c.to_dict() for c in cs] for t, cs in ctx.candidates.items()},
        "selection": ctx.selection,
        "golden": {"inputs": "golden/inputs.npz", "outputs": "golden/outputs.npz",
                   "samples": [{"label": s.label, "sizes": s.sizes, "about": describe_sample(s.label)}
                               for s in ctx.samples]},
        "torchscript": "torchscript/model.pt" if ctx.torchscript_path else None,
        **({"mobile": mobile} if mobile else {}),
        "source": source,
        "host": host_info(),
        "notes": list(ctx.notes),
        **loaded.bundle_meta,  # a Hugging Face folder's "task" and "preprocess"
    }
    ctx.bundle_path = write_bundle(ctx.config.output_path, files, manifest)
    return str(ctx.bundle_path)


def bundle_file(v: Variant) -> str:
    """Where a variant's file goes in the bundle: ``models/NAME.onnx``, or ``models/SOURCE.ort`` for the
    ORT-format twin of variant SOURCE."""
    return f"models/{v.source}.ort" if v.format == "ort" else f"models/{v.name}.onnx"


def mobile_record(ctx: Context, files: dict[str, Path]) -> dict | None:
    """The manifest's ``mobile`` section (its schema: ``edgeship/schemas/manifest.json``), adding the
    operator config to ``files``; None without ``--target mobile``."""
    from edgeship.exporters import ort_format
    from edgeship.runtimes.ort_format import ort_format_version

    if not ctx.mobile:
        return None
    rel = f"mobile/{ort_format.CONFIG}"
    files[rel] = ctx.mobile["operators_config"]
    ort = [v for v in ctx.variants.values() if v.format == "ort"]
    versions = sorted({ort_format_version(v.file.read_bytes()) or "" for v in ort})
    return {"operators_config": rel, "operators": ctx.mobile["operators"], "variants": [v.name for v in ort],
            "written_by": {"onnxruntime": metadata.version("onnxruntime"), "ort_format_version": ", ".join(versions)},
            "optimization": {"style": ort_format.STYLE.lower(), "level": ort_format.LEVEL,
                             "target_platform": ort_format.TARGET_PLATFORM},
            "default_rule": "the smallest passing file; an int8 one only with non-vacuous parity evidence, not calibrated "
                            f"on synthetic inputs, and at most {LOSSY_SIZE:.0%} of the fp32 file (this host is not a phone: "
                            "speed is not measured for mobile)"}


def _variant_result(ctx: Context, v: Variant, summary: list[dict]) -> VariantResult:
    rows = [r for r in summary if r["variant"] == v.name]
    return VariantResult(
        name=v.name, file=bundle_file(v), precision=v.precision, size=v.file.stat().st_size, format=v.format, source=v.source,
        passed=dict(v.passed), max_abs=max((r.get("max_abs", 0.0) for r in rows), default=None),
        min_cosine=min((r.get("cosine", 1.0) for r in rows), default=None),
        tolerance=ctx.parity.tolerances.get(v.name, {}),
        latency_ms={t: round(ctx.latency[(v.name, t)], 4) for t in ctx.targets if (v.name, t) in ctx.latency},
        excluded_nodes=v.excluded_nodes, error_before_fallback=v.error_before_fallback if v.excluded_nodes else None,
        error_after_fallback=v.error if v.excluded_nodes else None,
    )
