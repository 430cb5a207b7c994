"""Stage 8, ``profile`` (with ``--profile``): latency of every variant on every target, into the bundle.

It runs after select and before package, not after package as a ninth step: its results go
into report.json and a report.html, and those must be listed in the manifest with their
sha256 like every other file, in the one atomic write of the bundle. Profiling after packaging
would need a second write of the bundle, or leave unlisted files that ``open_bundle`` refuses.
The profiled models are the very files package copies into the bundle.

Settings: the export's targets, every variant, one thread per core, the golden sample's batch,
10 warm-up and 200 timed calls, per-op breakdown on. ``edgeship profile`` measures more.

Cold start is not measured here (the report says so): an honest figure needs a Python process per
configuration (:mod:`edgeship.profiling.coldstart`), which cost 0.25-0.43 s per variant here, 16-42%
of an in-process export with ``--profile`` of ResNetish or SimpleNet (two variants each). In the
export's own process every variant would skip the onnxruntime start-up that parity and select had
already paid. ``edgeship profile BUNDLE`` measures it, each configuration in a fresh process.
"""

from __future__ import annotations

from edgeship.pipeline.context import Context, required


def profile_stage(ctx: Context) -> str:
    """Reads ``spec``, ``samples``, ``variants``, ``targets``; adds ``profile``."""
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import profile
    from edgeship.profiling.source import Source
    from edgeship.profiling.stats import format_ms

    files = {n: str(v.file) for n, v in ctx.variants.items()}
    src = Source(ctx.config.bundle_name, "export", str(ctx.config.output_path), required(ctx.spec, "spec"),
                 tuple(files), files.__getitem__, dict(ctx.samples[0].feeds) if ctx.samples else None,
                 defaults=dict(ctx.defaults), candidates={t: list(cs) for t, cs in ctx.candidates.items()})
    report = ctx.profile = profile(src, ProfileConfig(targets=tuple(ctx.targets) or ("cpu",), per_op=True, cold_start="off"))
    return "; ".join(f"{r.target}/{r.variant} p50 {format_ms(r.stats.p50)} (batch {r.batch}, {r.threads} threads)"
                     for r in report.results)
