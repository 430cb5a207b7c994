"""``edgeship compare A B``: two ONNX models or bundles on the same inputs (yesterday's release
vs today's build). A is the reference (on onnxruntime); B is judged with the same metrics and
tolerances as parity, on each runtime asked for (onnxruntime, OpenVINO at B's own precision), and a
failure names the first node where B leaves A (when their tensor names match).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.bundle.golden import Sample, make_samples
from edgeship.errors import ModelLoadError, SpecError
from edgeship.parity.evaluate import reference_outputs, run_parity
from edgeship.parity.localize import explain_models
from edgeship.parity.report import ParityReport
from edgeship.parity.tolerances import Tolerances
from edgeship.runtimes.ort import OrtRunner
from edgeship.runtimes.registry import ORT, make_runner, runtime_name
from edgeship.spec import IOSpec, TensorSpec, check_numeric


@dataclass(frozen=True)
class Side:
    """One model to compare: its bytes, io spec, a label and (for bundles) golden samples."""

    label: str
    data: bytes | str
    spec: IOSpec
    precision: str
    samples: tuple = ()


def _side(path: Path, variant: str) -> Side:
    from edgeship.bundle.choose import choose_variant
    from edgeship.bundle.golden import read_bundle_npz
    from edgeship.bundle.inspect import graph_precision, onnx_for_session, onnx_io
    from edgeship.bundle.limits import read_regular_file
    from edgeship.bundle.read import is_bundle, open_bundle

    if not path.exists():
        raise SpecError(f"{path} does not exist; pass a bundle or an .onnx file.")
    if is_bundle(path, ModelLoadError):  # by content: a zipped bundle under any name, an .onnx named .zip
        b = open_bundle(path)
        v = choose_variant(b.manifest, "cpu", variant)
        golden = read_bundle_npz(b, b.manifest["golden"]["inputs"])
        samples = tuple(Sample(f"golden-{i}", feeds, {}) for i, feeds in enumerate(golden))
        return Side(f"{path.name}:{v.name}", b.read(v.file), IOSpec.from_dict(b.manifest["io"]), v.precision, samples)
    data = onnx_for_session(path)  # bytes, or the path of a model whose external data was checked
    io = onnx_io(data, str(path))
    check_numeric(io.inputs, str(path))
    check_numeric(io.outputs, str(path), "output")
    # a raw int8 .onnx is judged with int8 tolerances
    precision = graph_precision(data if isinstance(data, bytes) else read_regular_file(path, "ONNX input", ModelLoadError)) or "fp32"
    return Side(path.name, data, IOSpec(io.inputs, tuple(TensorSpec(t.name, t.dtype) for t in io.outputs)), precision)


def compare(a: str | os.PathLike[str], b: str | os.PathLike[str], *, variant_a: str = "auto", variant_b: str = "auto",
            inputs: str | os.PathLike[str] | None = None, tolerances: dict[str, Any] | None = None, seed: int = 0,
            localise: bool = True, runtimes: tuple[str, ...] = (ORT,)) -> ParityReport:
    """Run A and B on the same inputs and judge B against A.

    Inputs: ``inputs`` (.npz), else A's golden inputs when A is a bundle, else B's, else seeded
    random feeds from A's input spec (symbolic axes at 1 and 2). A runs on onnxruntime; B runs
    on each of ``runtimes`` (``onnxruntime``, ``openvino``: at B's own precision, fp32 or int8).

    Raises:
        SpecError: the two models do not take the same inputs, or the inputs do not fit; an
            unknown runtime, or B in a form OpenVINO cannot take (fp16, external data).
        TargetUnavailableError: OpenVINO is asked for and not installed.
    """
    runtimes = tuple(dict.fromkeys(runtime_name(r) for r in runtimes)) or (ORT,)
    left, right = _side(Path(a), variant_a), _side(Path(b), variant_b)
    if any(r != ORT for r in runtimes):
        if right.precision not in ("fp32", "int8"):
            raise SpecError(f"{right.label} is {right.precision}: OpenVINO runs fp32 and int8 models here; "
                            "compare it on onnxruntime.")
        if not isinstance(right.data, bytes):
            raise SpecError(f"{right.label} keeps its weights as external data, which OpenVINO is not given; "
                            "compare it on onnxruntime.")
    if [(t.name, t.dtype) for t in left.spec.inputs] != [(t.name, t.dtype) for t in right.spec.inputs]:
        raise SpecError(
            f"{left.label} and {right.label} take different inputs: "
            f"{[(t.name, t.dtype) for t in left.spec.inputs]} vs {[(t.name, t.dtype) for t in right.spec.inputs]}."
        )
    if inputs is not None:
        from edgeship.parity.check import read_inputs

        samples = [Sample(f"inputs-{i}", f, {}) for i, f in enumerate(read_inputs(inputs, left.spec))]
    else:
        samples = list(left.samples or right.samples) or make_samples(left.spec.inputs, seed=seed)
    ref_runner = OrtRunner(IOSpec(left.spec.inputs), left.data, target="cpu", name=left.label)
    with ref_runner:
        references = reference_outputs(ref_runner, samples)
    names = list(references[0])
    cand_spec = IOSpec(right.spec.inputs, tuple(TensorSpec(n) for n in names))
    tols = Tolerances.from_dict(tolerances or {})
    precision = right.precision if right.precision != "fp32" else left.precision
    report = ParityReport(())
    for rt in runtimes:
        name = right.label if rt == ORT else f"{right.label}@{rt}"
        with make_runner(cand_spec, right.data, rt, precision=right.precision, name=name, what=right.label) as cand:
            report = report.merged(run_parity([cand], samples, references, tols.for_precision(precision), right.label))
    if localise and not report.passed and isinstance(left.data, bytes) and isinstance(right.data, bytes):
        bad = report.failures()[0]
        sample = next((s for s in samples if s.label == bad.sample), samples[0])
        report = report.with_divergence(right.label, explain_models(left.data, right.data, [sample.feeds], precision,
                                                              tols.get(precision, bad.output)))
    return report

