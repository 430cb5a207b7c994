"""The typed context the export stages share, what each stage reports, and the built variants.

Each stage is ``stage(ctx) -> str`` (a one-line detail for the progress line and the report);
its docstring says which context fields it reads and which it adds. Fields a later stage
needs are read through :func:`required`, so a stage run out of order fails loudly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from edgeship.bundle.golden import Sample
from edgeship.bundle.manifest import Candidate, VariantResult
from edgeship.config import ExportConfig
from edgeship.parity.report import ParityReport
from edgeship.spec import IOSpec

if TYPE_CHECKING:
    from edgeship.exporters.calibration import Calibration
    from edgeship.exporters.loading import LoadedModel
    from edgeship.exporters.onnx import OnnxExport
    from edgeship.profiling.profiler import ProfileReport
    from edgeship.runtimes.torch_eager import Binding

T = TypeVar("T")
NONDETERMINISTIC = "model is nondeterministic"  # the start of the load stage's note, matched by parity
Outputs = dict[str, np.ndarray]


class Skip(Exception):
    """Raised by a stage that does not apply; its message says why."""


class Degraded(Exception):
    """Raised by an optional stage that finished but did not build all it was asked to (a quantized
    variant that failed to build or missed parity); its message says what was built and what not.
    The stage's work stays in the context; the stage line is a warning, never a ✓."""


def required(value: T | None, what: str) -> T:
    """``value``, which an earlier stage must have set."""
    if value is None:
        raise RuntimeError(f"pipeline bug: {what} is not set; a stage ran out of order")
    return value


@dataclass(frozen=True)
class StageResult:
    """How one stage ended: ``ok``, ``warning`` (optional stage, part of it failed), ``failed`` (optional
    stage) or ``skipped``."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Variant:
    """One built model file: fp32 or a quantized/fp16 variant of it, in the work folder.

    ``passed`` (target -> parity passed there) is added by the parity stage; the package stage
    turns each shipped variant into the manifest's :class:`VariantResult`.
    """

    name: str
    file: Path
    precision: str
    kind: str = "fp32"
    excluded_nodes: tuple[str, ...] = ()
    error_before_fallback: dict | None = None
    error: dict | None = None
    passed: dict[str, bool] = field(default_factory=dict)
    weight_bytes: int | None = None    # bytes of its initializers (quantize)
    settings: dict | None = None       # how it was built, where the user chose it (int4: block_size, scheme)
    format: str = "onnx"  # or "ort": an ORT-format twin for ONNX Runtime Mobile (pipeline.mobile)
    source: str | None = None  # the variant an ORT-format twin was converted from

    def summary(self) -> dict:
        """What report.json records of a variant (no work-folder path)."""
        d = asdict(self)
        d.pop("file")
        if self.format == "onnx":  # format and source only for an ORT-format twin
            d.pop("format")
            d.pop("source")
        return d


@dataclass
class Context:
    """Mutable state threaded through the stages, in order."""

    config: ExportConfig
    workdir: Path
    loaded: LoadedModel | None = None                  # load
    spec: IOSpec | None = None                         # load
    example_args: tuple = ()                           # load: torch tensors of sample 0
    binding: Binding | None = None                     # load: how inputs reach forward() (torch models)
    tie_reason: str | None = None                      # set by the runner's retry: tie equal unnamed axes, and why
    apart: dict[str, list[str]] = field(default_factory=dict)  # load: equal unnamed axes kept apart (symbol -> axes)
    apart_failed: str | None = None                    # a stage that failed where those axes took different sizes
    samples: list[Sample] = field(default_factory=list)         # load
    references: list[Outputs] = field(default_factory=list)     # load: eager outputs per sample
    row_samples: list[Sample] = field(default_factory=list)     # load: sample 0's rows, each on its own (not shipped)
    row_references: list[Outputs] = field(default_factory=list)  # load: eager outputs per row
    eval_samples: list[Sample] = field(default_factory=list)    # load: held-out samples for the gates (not shipped)
    eval_references: list[Outputs] = field(default_factory=list)  # load: eager outputs per held-out sample
    eval_source: str | None = None                     # load: where the held-out samples came from
    gates: dict[str, dict] = field(default_factory=dict)  # parity: variant -> worst figures and margins per sample group
    torchscript_path: Path | None = None               # torchscript
    onnx_export: OnnxExport | None = None              # onnx
    targets: list[str] = field(default_factory=list)   # quantize or parity
    variants: dict[str, Variant] = field(default_factory=dict)  # optimize, quantize; parity drops failures
    rejected: dict[str, dict] = field(default_factory=dict)     # variant -> why it is not shipped
    divergence: dict[str, dict] = field(default_factory=dict)   # variant -> first divergent node
    calibration: Calibration | None = None             # quantize (static int8)
    parity: ParityReport = field(default_factory=lambda: ParityReport(()))
    latency: dict[tuple[str, str], float] = field(default_factory=dict)  # select: (variant, target) -> p50 ms
    defaults: dict[str, str] = field(default_factory=dict)      # select: target -> variant
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # select: target -> passing, default first
    selection: dict[str, dict] = field(default_factory=dict)  # select: target -> timing noise and lossy margin
    mobile: dict | None = None                         # mobile (--target mobile): operators_config (Path), operators
    profile: ProfileReport | None = None               # profile (with --profile)
    manifest_variants: dict[str, VariantResult] = field(default_factory=dict)  # package
    bundle_path: Path | None = None                    # package
    stages: list[StageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def export_module(self) -> object:
        """What tracing and the ONNX exporters take: the loaded model, wrapped when its inputs
        bind to forward() by name (see runtimes.torch_eager.bind_inputs) or when forward() has
        parameters the spec does not feed (they keep their defaults: see by_name_module)."""
        from edgeship.runtimes.torch_eager import by_name_module

        loaded = required(self.loaded, "loaded")
        if self.binding is None:
            return loaded.source
        return by_name_module(loaded.source, self.binding, required(self.spec, "spec").input_names)

    def gate_samples(self) -> tuple[list[Sample], list[Outputs]]:
        """The samples every variant is judged on, and their references: the golden ones, the first
        one's rows each on its own (for quantized variants), then the held-out ones (``--eval-data``
        or a split of ``--calibration``)."""
        return (self.samples + self.row_samples + self.eval_samples,
                self.references + self.row_references + self.eval_references)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def ensure_room(self, nbytes: int, what: str) -> None:
        """Refuse a write of about ``nbytes`` in the work folder when its disk has no room for it
        (``DiskFullError``: see :func:`edgeship.pipeline.workdir.ensure_room`)."""
        from edgeship.pipeline import workdir

        workdir.ensure_room(self.workdir, nbytes, what, f"Nothing was written to {self.config.output_path}.")
