"""``edgeship export``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, one_stdout, setup_logging, to_stdout
from edgeship.config import LoadOptions
from edgeship.errors import EdgeshipError


@app.command()
@opt.with_load_options
def export(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="The model file: TorchScript, ExportedProgram (.pt2), state_dict/checkpoint (with --arch), pickled module (with --trust-pickle), ONNX, or a Hugging Face save_pretrained folder. Detected by content.")],
    task: Annotated[Optional[str], typer.Option("--task", help="A Hugging Face folder's task: feature-extraction, sequence-classification, token-classification, image-classification, question-answering, fill-mask or causal-lm (default: guessed from config.json's architectures).")] = None,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", metavar="TEXT", help="Input spec NAME:SHAPE[:DTYPE], e.g. x:1x3x224x224 or ids:1x128:int64 (repeatable, in forward() order; dtype defaults to float32).")] = None,
    example_inputs: Annotated[Optional[Path], typer.Option("--example-inputs", help=".npz with one array per input name: the example (and first golden sample).")] = None,
    dynamic: Annotated[Optional[list[str]], typer.Option("--dynamic", metavar="TEXT", help="Symbolic axis NAME:AXIS[=SYMBOL], e.g. ids:1=seq (repeatable).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Make axis 0 of every input the symbolic 'batch' axis.")] = False,
    output_names: Annotated[Optional[list[str]], typer.Option("--output-names", metavar="TEXT", help="Names for the outputs, comma-separated (default: dict keys, else output / output_N).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Bundle path (default ./<model name>.edgeship; end it in .zip for a zipped bundle).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Bundle name (default: the model file's stem).")] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="ONNX exporter: auto (dynamo, then the TorchScript-based one), dynamo or torchscript.")] = "auto",
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default 20 for dynamo, where onnxruntime fuses Gelu; 17 for the TorchScript-based exporter).")] = None,
    target: opt.TargetOpt = ["auto"],  # noqa: B006 - typer needs a literal default
    atol: Annotated[Optional[float], typer.Option("--atol", help="fp32 absolute tolerance (default 1e-4).")] = None,
    rtol: Annotated[Optional[float], typer.Option("--rtol", help="fp32 relative tolerance (default 1e-3).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Golden samples at the example's sizes (one more is added at second sizes of dynamic axes).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated golden inputs.")] = 0,
    no_torchscript: Annotated[bool, typer.Option("--no-torchscript", help="Skip the TorchScript stage.")] = False,
    quantize: Annotated[list[str], typer.Option("--quantize", metavar="TEXT", help="Variants, comma-separated: fp32, dynamic, static, fp16, int4 (weight-only, MatMulNBits), or auto (dynamic int8; static int8 when --calibration is given; fp16 where CUDA is a target; int4 for a decoder LM). Each is parity-checked; per target the fastest passing one is the default.")] = ["auto"],  # noqa: B006
    int4_block_size: opt.Int4BlockOpt = 32, int4_scheme: opt.Int4SchemeOpt = "sym", decoder_graph: opt.DecoderGraphOpt = "auto",
    calibration: opt.CalibOpt = None, calibration_method: opt.CalibMethodOpt = "minmax", calibration_samples: opt.CalibSamplesOpt = 64,
    eval_data: opt.EvalOpt = None, eval_samples: opt.EvalSamplesOpt = 256, eval_split: opt.EvalSplitOpt = 0.0,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Do not keep harmful nodes in fp32 when an int8 variant misses its tolerance.")] = False,
    tolerance: opt.TolOpt = None,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="On the cpu target, also measure onnxruntime's session options (threads, spinning, optimisation level) and OpenVINO where installed as candidates; --no-tune times each variant on onnxruntime's defaults only.")] = True,
    profile: Annotated[bool, typer.Option("--profile", help="Profile every variant on every target before packaging; adds the results to report.json and a report.html with charts to the bundle.")] = False,
    json_out: opt.JsonOpt = None, junit: opt.JunitOpt = None, quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
    load: Optional[LoadOptions] = None,
) -> None:
    """Export MODEL to a self-verifying bundle: load, TorchScript, ONNX, optimise, parity, package."""
    setup_logging(verbose, quiet)
    one_stdout(json=json_out, junit=junit)
    from edgeship.config import ExportConfig
    from edgeship.pipeline import export as run_export

    cfg = ExportConfig(
        model=model, output=output, name=name, inputs=tuple(input or ()), example_inputs=example_inputs,
        dynamic=tuple(dynamic or ()), dynamic_batch=dynamic_batch, output_names=tuple(opt.split(output_names)),
        load=replace(load or LoadOptions(), task=task), exporter=exporter, opset=opset,
        targets=tuple(opt.split(target)), atol=atol, rtol=rtol, samples=samples, seed=seed,
        torchscript=not no_torchscript, quantize=tuple(opt.split(quantize)), calibration=calibration,
        int4_block_size=int4_block_size, int4_scheme=int4_scheme, decoder_graph=decoder_graph,
        calibration_method=calibration_method, calibration_samples=calibration_samples, fallback=not no_fallback,
        eval_data=eval_data, eval_samples=eval_samples, eval_split=eval_split,
        profile=profile, tune=tune, tolerances=opt.tolerances(tolerance),
    )
    from edgeship.cli import render

    stderr = to_stdout(json_out, junit)
    out = console(stderr, quiet)
    with render.StageProgress(out) as progress:
        try:
            result = run_export(cfg, progress)
        except EdgeshipError as e:
            if e.report is not None:
                render.parity_table(out, e.report, failures_only=True)
                opt.write_reports(e.report, json_out, junit, out)
            raise
    render.parity_table(out, result.parity)
    render.tolerance_table(out, result.parity)
    render.variant_table(out, result.variants, result.defaults)
    if result.profile is not None:
        render.profile_table(out, result.profile)
    render.notes(out, result.notes)
    opt.write_reports(result.parity, json_out, junit, out)
    defaults = ", ".join(f"{t}={v}" for t, v in result.defaults.items())
    console(stderr).print(f"{'' if quiet else chr(10)}Bundle: {Path(result.bundle).resolve()}  (default variant: {defaults})", markup=False)
