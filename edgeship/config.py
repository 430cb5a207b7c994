"""Frozen settings for each stage; the CLI builds them from its options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LoadOptions:
    """How to turn the file into a module (the CLI's loading flags)."""

    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    trust_pickle: bool = False
    trust_ops: bool = False  # run an ExportedProgram's ops outside the pure aten/prims allow-list
    imports: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    task: str | None = None  # a Hugging Face folder's task (--task); None: guessed from its config.json

@dataclass(frozen=True)
class ExportConfig:
    """Everything ``edgeship export`` needs.

    Attributes:
        model: the model file (format detected from its content).
        output: bundle path; ``.zip`` gives a zipped bundle. Default ``./<model stem>.edgeship``.
        inputs: ``NAME:SHAPE[:DTYPE]`` specs, in the order the model takes them.
        example_inputs: an .npz of example inputs (names as keys); its arrays fix the spec too.
        dynamic: ``NAME:AXIS[=SYMBOL]`` symbolic axes.
        dynamic_batch: mark axis 0 of every input as the symbolic ``batch``.
        output_names: names for the model's outputs (default: dict keys, else output/output_N).
        load: how to load the file (``--arch``, ``--trust-pickle``, ...).
        exporter: ``auto`` (dynamo, TorchScript-based fallback), ``dynamo`` or ``torchscript``.
        opset: ONNX opset; default 20 for dynamo (onnxruntime fuses its Gelu), 17 for the TorchScript-based exporter.
        targets: where to check parity: ``cpu``, ``cuda``; ``auto`` adds CUDA when present.
        atol, rtol: fp32 tolerances (default 1e-4, 1e-3).
        samples: golden samples at the example's sizes (one more per dynamic size change).
        seed: seed for generated golden inputs.
        torchscript: run the TorchScript stage and ship the frozen module.
        quantize: variants to build: any of fp32, dynamic, static, fp16, int4, or auto (dynamic int8;
            static int8 when calibration data is given; fp16 where CUDA is a target; int4 for a
            decoder LM).
        int4_block_size: weights per int4 scale (along the MatMul's K axis): a power of two >= 16.
        int4_scheme: ``sym`` (symmetric, no zero point) or ``asym`` (a zero point per block).
        decoder_graph: a causal LM's fp32 graph: ``auto`` (build torch.onnx's and onnxruntime-genai's
            where installed, ship the faster that passes), ``torch.onnx`` or ``onnxruntime-genai`` (build
            only that one: half the export's time and disk on a large model; no fallback).
        calibration: .npz, folder of .npz/.npy, or module:function yielding feeds (static int8).
        calibration_method: minmax, entropy or percentile.
        calibration_samples: at most this many calibration samples.
        eval_data: held-out inputs for the parity gates, in --calibration's formats (an .npz with a
            leading sample axis, or arrays of the inputs' own rank split into batch-1 samples; a folder
            of .npz/.npy; module:function yielding feeds). Every variant must pass its tolerance on
            them as well as on the golden samples; they are not stored in the bundle.
        eval_samples: at most this many held-out samples.
        eval_split: without eval_data, the fraction of the --calibration samples held out for the
            gates (static int8 calibrates on the rest), e.g. 0.25; 0 (the default) holds none out.
            Needs at least 4 samples.
        fallback: keep the most harmful nodes in fp32 until an int8 variant passes.
        tolerances: scoped overrides, e.g. {"int8": {"min_cosine": 0.98}, "int8/logits": {"min_top1": 0.95}}.
        profile: profile every variant on every target before packaging; the results go into
            report.json and report.html inside the bundle.
        tune: on the cpu target, measure onnxruntime's session options (threads, spinning, graph
            optimisation level) and OpenVINO (where installed) as candidates too, not only each variant
            on onnxruntime's defaults.
    """

    model: Path
    output: Path | None = None
    name: str | None = None
    inputs: tuple[str, ...] = ()
    example_inputs: Path | None = None
    dynamic: tuple[str, ...] = ()
    dynamic_batch: bool = False
    output_names: tuple[str, ...] = ()
    load: LoadOptions = field(default_factory=LoadOptions)
    exporter: str = "auto"
    opset: int | None = None
    targets: tuple[str, ...] = ("auto",)
    atol: float | None = None
    rtol: float | None = None
    samples: int = 2
    seed: int = 0
    torchscript: bool = True
    quantize: tuple[str, ...] = ("auto",)
    int4_block_size: int = 32
    int4_scheme: str = "sym"
    decoder_graph: str = "auto"
    calibration: str | None = None
    calibration_method: str = "minmax"
    calibration_samples: int = 64
    eval_data: str | None = None
    eval_samples: int = 256
    eval_split: float = 0.0
    fallback: bool = True
    tolerances: dict = field(default_factory=dict)
    profile: bool = False
    tune: bool = True

    @property
    def bundle_name(self) -> str:
        if self.name:
            return self.name
        if self.output:
            return Path(self.output).name.removesuffix(".zip").removesuffix(".edgeship") or Path(self.model).stem
        return Path(self.model).stem

    @property
    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path.cwd() / f"{self.bundle_name}.edgeship"

@dataclass(frozen=True)
class ProfileConfig:
    """What ``edgeship profile`` measures: every target × variant × threads × batch.

    Attributes:
        targets: ``cpu``, ``cuda``, ``tensorrt``, ``mobile`` (a bundle's ORT-format variants only), a provider
            name, or ``auto`` (cpu, plus cuda where present);
            ``web``: each variant in onnxruntime-web (wasm) in a headless Chromium, timed in the page.
        variants: variant names to profile; empty means every variant of the bundle.
        threads: intra-op thread counts; ``None`` means one per core.
        batches: sizes of the symbolic batch axis; ``None`` means the golden sample's size
            (1 for an .onnx file), or the fixed size of a model without a batch axis.
        warmup: untimed calls before the timed ones.
        iterations: timed calls per configuration (default 200 when ``duration`` is not given).
        duration: seconds of timed calls per configuration, in place of ``iterations``.
        per_op: also run onnxruntime's profiler and aggregate its JSON per op type and node.
        per_op_runs: profiled inferences for ``per_op`` (after ``min(warmup, 5)`` unprofiled ones).
        top: rows kept in the per-op tables.
        compare_torch: a PyTorch model file; adds eager PyTorch rows.
        run_bundled_torchscript: also time the bundle's torchscript/model.pt (TorchScript is code,
            and a bundle is never trusted to name code to run: off unless asked for).
        load: how to load ``compare_torch`` (``--arch`` etc.); the bundle's recorded ``--arch`` is
            only quoted in the error for a state_dict, never imported.
        runtimes: ``onnxruntime`` and/or ``openvino`` (cpu target; rows named ``VARIANT@openvino``,
            and ``fp32@openvino-bf16`` where the CPU has bf16).
        candidates: profile the bundle's candidates as its manifest records them (runtime,
            precision, options, threads) instead of variants × threads; ``variants`` and
            ``runtimes`` still filter them, ``threads`` does not apply.
        cold_start: ``fresh``: each configuration's cold start (session creation + first call) in a
            Python process of its own, so each pays the runtime's one-time process start-up alike
            (the runtime's import excluded); ``off``: not measured (None), for quicker runs.
        browser: with the ``web`` target, the Chromium executable (default: found on the machine).
    """

    targets: tuple[str, ...] = ("cpu",)
    runtimes: tuple[str, ...] = ("onnxruntime",)
    variants: tuple[str, ...] = ()
    threads: tuple[int | None, ...] = (None,)
    batches: tuple[int | None, ...] = (None,)
    warmup: int = 10
    iterations: int | None = None
    duration: float | None = None
    per_op: bool = False
    per_op_runs: int = 50
    top: int = 10
    compare_torch: Path | None = None
    load: LoadOptions | None = None
    run_bundled_torchscript: bool = False
    cold_start: str = "fresh"
    candidates: bool = False
    browser: str | None = None  # the Chromium executable of the web target (default: found on the machine)
