"""The one context the export stages share, and what each stage reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeship.config import ExportConfig
from edgeship.parity import ParityReport
from edgeship.spec import IOSpec


@dataclass(frozen=True)
class StageResult:
    """How one stage ended: ``ok``, ``failed`` (optional stage) or ``skipped``."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    """Mutable state threaded through the stages, in order."""

    config: ExportConfig
    workdir: Path
    loaded: object = None             # exporters.loading.LoadedModel
    spec: IOSpec | None = None
    example_args: tuple = ()          # torch tensors of sample 0, for tracing and export
    samples: list = field(default_factory=list)      # golden.Sample
    references: list = field(default_factory=list)   # eager outputs per sample
    torchscript_path: Path | None = None
    onnx_export: object = None        # exporters.onnx.OnnxExport
    variants: dict = field(default_factory=dict)     # name -> {"file": Path, "precision": ...}
    defaults: dict = field(default_factory=dict)     # target -> variant name
    rejected: dict = field(default_factory=dict)     # variant name -> why it is not shipped
    divergence: dict = field(default_factory=dict)   # variant name -> first divergent node
    latency: dict = field(default_factory=dict)      # (variant, target) -> p50 ms at selection
    calibration: object = None                       # calibration.Calibration
    manifest_variants: dict = field(default_factory=dict)  # what package wrote for each variant
    targets: list = field(default_factory=list)
    parity: ParityReport = field(default_factory=lambda: ParityReport(()))
    stages: list = field(default_factory=list)       # StageResult
    notes: list = field(default_factory=list)
    bundle_path: Path | None = None
    profile: object = None            # profiler.ProfileReport, with --profile

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
