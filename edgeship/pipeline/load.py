"""Stage 1, load: the model, its IOSpec, the golden inputs and the eager reference outputs.

Reads the config; adds ``loaded``, ``spec``, ``samples``, ``references`` and (for torch models)
``example_args``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeship.bundle.golden import Sample, make_samples, random_feeds, resample, second_sizes
from edgeship.bundle.limits import read_npz
from edgeship.errors import EdgeshipError, ModelLoadError, SpecError, brief
from edgeship.exporters.loading import EXPORTED_PROGRAM, HF_FOLDER, ONNX, LoadedModel, load_model
from edgeship.pipeline.context import NONDETERMINISTIC, Context, required
from edgeship.pipeline.heldout import add_rows, load_held_out
from edgeship.runtimes.torch_eager import Binding, bind_inputs
from edgeship.spec import (
    INPUT_SYNTAX,
    IOSpec,
    TensorSpec,
    apply_dynamic,
    check_name,
    check_numeric,
    format_shape,
    parse_dynamic,
    parse_input,
)

log = logging.getLogger(__name__)
OWN_EXAMPLE = (EXPORTED_PROGRAM, HF_FOLDER)  # formats that bring their own inputs, example and dynamic axes


def load_stage(ctx: Context) -> str:
    cfg = ctx.config
    ctx.loaded = loaded = load_model(cfg.model, cfg.load)
    for n in loaded.notes:
        ctx.note(n)
    example = _read_example(cfg.example_inputs) if cfg.example_inputs else None
    if loaded.format == ONNX and example is None:
        inputs = _inputs_from_onnx(loaded.path)
        if cfg.inputs:  # --input fixes the example's sizes; the graph keeps its symbolic axes
            example = _example_for_onnx(inputs, [parse_input(t) for t in cfg.inputs], cfg.seed)
    else:
        inputs = _input_specs(cfg, example, loaded)
        if example is None and not cfg.inputs and loaded.format in OWN_EXAMPLE and loaded.example_inputs:
            # the program's own example values (real ids and masks) are the first golden sample
            example = {t.name: v.detach().cpu().numpy() for t, v in zip(inputs, loaded.example_inputs)}
    concrete = inputs
    inputs = apply_dynamic(inputs, _program_dynamic(loaded, inputs, cfg.dynamic, cfg.dynamic_batch) + list(cfg.dynamic),
                           cfg.dynamic_batch)
    ranges = {sym: (lo, hi) for sym, lo, hi in loaded.ranges}
    if loaded.format == ONNX:
        reference = _onnx_reference(loaded.path, inputs)
    else:
        if loaded.format != EXPORTED_PROGRAM:  # a program's inputs are its own placeholders, in order
            ctx.binding = bind_inputs(loaded.module, [t.name for t in inputs])
            if ctx.binding.note:
                ctx.note(ctx.binding.note)
        reference = _eager_reference(loaded.module, ctx.binding or Binding((None,) * len(inputs)))
    samples = make_samples(inputs, example, seed=cfg.seed, count=cfg.samples, sizes=_given_sizes(concrete, inputs),
                           ranges=ranges)
    pairs, failed = _run_reference(reference, samples, inputs)
    tied = _tie_equal_axes(inputs, samples[0].sizes)
    why = ctx.tie_reason or (f"the eager model fails with them apart ({brief(failed[1], 120)})"
                             if failed is not None and failed[0].label.startswith("dynamic") else None)
    if tied is not None and why is not None:
        tied_inputs, groups = tied
        tied_samples = make_samples(tied_inputs, example, seed=cfg.seed, count=cfg.samples,
                                    sizes=_given_sizes(concrete, tied_inputs), ranges=ranges)
        tied_pairs, still = _run_reference(reference, tied_samples, tied_inputs)
        if still is None or ctx.tie_reason:
            inputs, samples, pairs, failed = tied_inputs, tied_samples, tied_pairs, still
            for sym, axes in groups.items():
                ctx.note(f"{', '.join(axes)} must be equal: exported as one symbol {sym!r} ({why})")
    elif tied is not None:
        ctx.apart = tied[1]  # a later stage that fails where they differ makes the runner tie them
    if failed is not None and failed[0].label.startswith("dynamic"):
        raise _static_axis_error(reference, inputs, example, samples, failed, cfg.seed)
    if failed is not None:
        s, e = failed
        raise SpecError(f"running the model on the golden sample {s.label} ({_describe(s.feeds)}) failed: "
                        f"{brief(e)}. Check --input shapes and dtypes.") from e
    ctx.samples = samples
    if loaded.format != ONNX:
        ctx.example_args = to_torch(samples[0].feeds, inputs)
    first = pairs[0]
    names = list(cfg.output_names) or [n for n, _ in first]
    if len(names) != len(first):
        raise SpecError(
            f"--output-names gives {len(names)} names ({', '.join(names)}), but the model returns "
            f"{len(first)} outputs."
        )
    for n in names:
        check_name(n, "output")
    if len(set(names)) != len(names):
        raise SpecError(f"output names must be unique; got {', '.join(names)}.")
    ctx.references = [dict(zip(names, (a for _, a in ref))) for ref in pairs]
    ctx.spec = IOSpec(inputs, _output_specs(names, ctx.samples, ctx.references))
    if loaded.format != ONNX:
        _check_deterministic(ctx, reference, inputs)
    add_rows(ctx, reference, inputs, names)
    load_held_out(ctx, reference, inputs, names)
    held = f"; {len(ctx.eval_samples)} held-out sample(s)" if ctx.eval_samples else ""
    return f"{loaded.format}; inputs {_spec_text(inputs)}; outputs {_spec_text(ctx.spec.outputs)}{held}"


def _program_dynamic(loaded: LoadedModel, inputs: tuple[TensorSpec, ...], flags: tuple[str, ...], batch: bool) -> list[str]:
    """An ExportedProgram's own dynamic axes as --dynamic entries (the flags add to them); a flag
    on an axis the program fixed is refused, since the exported graph cannot follow it.

    Raises:
        SpecError: a --dynamic flag names an axis the .pt2 fixed.
    """
    if loaded.format == HF_FOLDER:  # derived from the folder's config and tokenizer; flags add to them
        return [f"{name}:{axis}={sym}" for name, axis, sym in loaded.dynamic_axes]
    if loaded.format != EXPORTED_PROGRAM:
        return []
    own = {(name, axis) for name, axis, _ in loaded.dynamic_axes}
    if batch:  # --dynamic-batch means axis 0 of every input
        flags = flags + tuple(f"{t.name}:0" for t in inputs)
    for flag in flags:
        name, axis, _ = parse_dynamic(flag)
        if (name, axis) not in own:
            raise SpecError(
                f"--dynamic {flag} (or --dynamic-batch): the .pt2 itself fixed {name}:{axis} (torch.export specialised that size when the "
                f"program was exported); its dynamic axes are {', '.join(f'{n}:{a}' for n, a in sorted(own)) or 'none'}. "
                "Re-export the program with a torch.export.Dim for that axis, or drop the flag.")
    return [f"{name}:{axis}={sym}" for name, axis, sym in loaded.dynamic_axes]


Reference = Callable[[dict, tuple[TensorSpec, ...]], list[tuple[str, np.ndarray]]]


def _run_reference(reference: Reference, samples: list[Sample], inputs: tuple[TensorSpec, ...]
                   ) -> tuple[list[list[tuple[str, np.ndarray]]], tuple[Sample, Exception] | None]:
    """The reference's (name, array) outputs per sample, or the first sample it failed on."""
    pairs = []
    for s in samples:
        try:
            pairs.append(reference(s.feeds, inputs))
        except EdgeshipError:
            raise
        except Exception as e:
            return pairs, (s, e)
    return pairs, None


def _auto_symbol(t: TensorSpec, axis: int, sym: str) -> bool:
    """Whether ``sym`` is the name --dynamic NAME:AXIS gives an axis when no symbol is named."""
    return sym == f"{t.name}_dim{axis}"


def _tie_equal_axes(inputs: tuple[TensorSpec, ...], sizes: dict[str, int]
                    ) -> tuple[tuple[TensorSpec, ...], dict[str, list[str]]] | None:
    """Unnamed dynamic axes that had one size in the example, tied to one symbol per size
    (``input_ids:1`` and ``attention_mask:1`` of a BERT must grow together). Returns the new
    specs and {symbol: ["input:axis", ...]}, or None when no two unnamed axes share a size."""
    by_size: dict[int, list[tuple[str, int, str]]] = {}
    for t in inputs:
        for axis, sym in t.dynamic_axes.items():
            if _auto_symbol(t, axis, sym):
                by_size.setdefault(sizes[sym], []).append((t.name, axis, sym))
    taken = {sym for t in inputs for sym in t.dynamic_axes.values()}
    rename: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for members in by_size.values():
        if len(members) < 2:
            continue
        axes = {axis for _, axis, _ in members}
        name = {0: "batch", 1: "seq"}.get(next(iter(axes)), "") if len(axes) == 1 else ""
        if not name or name in taken:
            name = members[0][2]
        taken.add(name)
        for _, _, sym in members:
            rename[sym] = name
        groups[name] = [f"{n}:{axis}" for n, axis, _ in members]
    if not rename:
        return None
    tied = tuple(replace(t, shape=tuple(rename.get(d, d) if isinstance(d, str) else d for d in t.shape)) for t in inputs)
    return tied, groups


def _static_axis_error(reference: Reference, inputs: tuple[TensorSpec, ...], example: dict | None,
                       samples: list[Sample], failed: tuple[Sample, Exception], seed: int) -> SpecError:
    """The reference fails when dynamic axes change size: find the axis that cannot change on
    its own (each symbol alone at its second size) and say which one to drop."""
    base = samples[0].sizes
    rng = np.random.default_rng(seed)
    for sym, size in base.items():
        alt = {**base, sym: second_sizes({sym: size})[sym]}
        feeds = resample(inputs, example, base, alt, rng) if example is not None else random_feeds(inputs, alt, rng)
        try:
            reference(feeds, inputs)
        except EdgeshipError:
            raise
        except Exception as e:
            axes = [f"{t.name}:{axis}" for t in inputs for axis, s in t.dynamic_axes.items() if s == sym]
            return SpecError(
                f"the model fails when only {', '.join(axes)} (symbol {sym!r}) changes size ({size} -> {alt[sym]}): "
                f"{brief(e)}. That axis is not dynamic in the model itself; drop it from --dynamic "
                "(or give axes that must stay equal one symbol: --dynamic NAME:AXIS=SYMBOL).")
    sample, error = failed
    return SpecError(f"running the model on the golden sample {sample.label} ({sample.describe()}) failed: {brief(error)}; "
                     "every dynamic axis runs on its own, so some must change together: give those one symbol "
                     "(--dynamic NAME:AXIS=SYMBOL).")


def _given_sizes(concrete, dynamic) -> dict[str, int]:
    """The --input size of each symbolic axis; one symbol must have one size."""
    sizes: dict[str, int] = {}
    for c, d in zip(concrete, dynamic):
        for axis, sym in d.dynamic_axes.items():
            size = c.shape[axis]
            if not isinstance(size, int):
                continue
            if sizes.setdefault(sym, size) != size:
                raise SpecError(
                    f"dynamic axis {sym!r} has size {sizes[sym]} in one input and {size} in {c.name!r}; "
                    "axes that share a symbol must share a size in --input."
                )
    return sizes


def _spec_text(specs) -> str:
    return ", ".join(f"{t.name}:{t.dtype}{format_shape(t.shape)}" for t in specs)


def _describe(feeds: dict) -> str:
    return ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())


def _read_example(path: Path) -> dict[str, np.ndarray]:
    """The --example-inputs arrays: sizes checked before reading, no empty axis (it would make
    every golden sample empty and parity vacuous)."""
    arrays = read_npz(Path(path), f"--example-inputs {path}", SpecError)
    for name, a in arrays.items():
        if a.size == 0:
            raise SpecError(
                f"--example-inputs {path}: array {name!r} has shape {list(a.shape)}, with an axis of size 0; "
                "every golden sample would be empty and parity would prove nothing. Give at least one row."
            )
    return arrays


def _input_specs(cfg, example: dict | None, loaded) -> tuple[TensorSpec, ...]:
    if cfg.inputs:
        specs = tuple(parse_input(t) for t in cfg.inputs)
        if len({s.name for s in specs}) != len(specs):
            raise SpecError(f"--input names must be unique; got {', '.join(s.name for s in specs)}.")
        specs = _program_order(specs, loaded)
        if example is not None:
            for s in specs:
                a = example.get(s.name)
                if a is None or a.dtype.name != s.dtype or tuple(a.shape) != s.shape:
                    got = f"{a.dtype}{list(a.shape)}" if a is not None else "nothing"
                    raise SpecError(
                        f"--example-inputs has {got} for input {s.name!r}, but --input says "
                        f"{s.dtype}{list(s.shape)}; make them agree or drop --input."
                    )
        return specs
    if example is not None:
        return _program_order(tuple(TensorSpec(check_name(k), a.dtype.name, tuple(a.shape)) for k, a in example.items()),
                              loaded)
    if loaded.format in OWN_EXAMPLE and loaded.example_inputs:  # positional and keyword, in the program's order
        return tuple(TensorSpec(n, str(t.dtype).removeprefix("torch."), tuple(t.shape))
                     for n, t in zip(loaded.input_names, loaded.example_inputs))
    raise SpecError(
        f"no input spec: pass --input {INPUT_SYNTAX} (once per input, in the order forward() takes "
        f"them{_forward_hint(loaded.module)}), or --example-inputs FILE.npz."
    )


def _program_order(specs: tuple[TensorSpec, ...], loaded: LoadedModel) -> tuple[TensorSpec, ...]:
    """An ExportedProgram takes its inputs in its own order (positional, then keyword): specs that
    name exactly its inputs are put in that order; others stay as given (bound by position)."""
    names = loaded.input_names
    if loaded.format != EXPORTED_PROGRAM or sorted(names) != sorted(s.name for s in specs):
        return specs
    by_name = {s.name: s for s in specs}
    return tuple(by_name[n] for n in names)


def _forward_hint(module) -> str:
    import inspect

    try:
        schema = getattr(module.forward, "schema", None)  # TorchScript methods
        params = ([a.name for a in schema.arguments if a.name != "self"] if schema is not None else
                  [p for p in inspect.signature(module.forward).parameters if p != "self"])
        return f"; this model's forward takes: {', '.join(params)}" if params else ""
    except (TypeError, ValueError, AttributeError):
        return ""


def _inputs_from_onnx(path) -> tuple[TensorSpec, ...]:
    """The graph's inputs: a declared size stays (0 included), an unnamed axis becomes a symbol.

    Raises:
        SpecError: an input that is not a tensor of a type edgeship can generate (a string,
            float8, sequence or optional input).
    """
    import onnx
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    specs = []
    for i in m.graph.input:
        if i.name in init:
            continue
        kind = i.type.WhichOneof("value")
        if kind != "tensor_type":
            raise SpecError(f"{path}: input {i.name!r} is a {kind or 'value of no type'}, not a tensor; edgeship exports "
                            "models whose inputs are tensors of bool, integer and float types.")
        tt = i.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = f"tensor({onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else 'undefined'})"
        check_numeric((TensorSpec(i.name, dtype),), str(path))
        shape = tuple(d.dim_param or (d.dim_value if d.WhichOneof("value") == "dim_value" and d.dim_value >= 0
                                      else f"{i.name}_dim{k}")
                      for k, d in enumerate(tt.shape.dim))
        specs.append(TensorSpec(i.name, dtype, shape))
    # symbolic axes take size 1 in the example and 2 in the second-size sample
    return tuple(specs)


def _example_for_onnx(graph_specs, given, seed: int) -> dict:
    by_name = {t.name: t for t in graph_specs}
    for g in given:
        t = by_name.get(g.name)
        fits = t is not None and t.dtype == g.dtype and len(t.shape) == len(g.shape) and all(
            isinstance(d, str) or d == s for d, s in zip(t.shape, g.shape))
        if not fits:
            want = f"{t.dtype}{list(t.shape)}" if t else f"one of {', '.join(by_name)}"
            raise SpecError(f"--input {g.name}:{'x'.join(map(str, g.shape))}:{g.dtype} does not fit the "
                            f"ONNX model, which expects {want} for it.")
    if {g.name for g in given} != set(by_name):
        raise SpecError(f"--input must name every input of the ONNX model: {', '.join(by_name)}.")
    return random_feeds(tuple(given), {}, np.random.default_rng(seed))


def to_torch(feeds: dict, inputs) -> tuple:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs)


def _eager_reference(module, binding: Binding):
    def run(feeds, inputs):
        import torch

        from edgeship.runtimes.torch_eager import flatten_outputs, to_numpy

        with torch.inference_mode():
            out = binding.call(module, to_torch(feeds, inputs))
        pairs = flatten_outputs(out)
        if not pairs:
            raise SpecError("the model returned no tensors; edgeship exports models that return tensors.")
        single = len(pairs) == 1
        return [(k or ("output" if single else f"output_{i}"), to_numpy(t)) for i, (k, t) in enumerate(pairs)]

    return run


def _onnx_reference(path, inputs):
    from edgeship.runtimes.ort import OrtRunner, io_specs

    runner = OrtRunner(IOSpec(inputs), path, target="cpu", name="onnx-source")

    def run(feeds, _inputs):
        return list(runner.infer(feeds).items())

    try:
        runner.load()
    except EdgeshipError as e:
        raise ModelLoadError(str(e)) from e
    check_numeric(io_specs(runner.session)[1], str(path), "output")
    return run


def _output_specs(names, samples, references) -> tuple[TensorSpec, ...]:
    """Output shapes: axes that change between golden sizes become symbols."""
    specs = []
    base = references[0]
    sym_sizes = samples[0].sizes
    alt = next(((s, r) for s, r in zip(samples, references) if s.sizes != sym_sizes), None)
    for n in names:
        shape = list(base[n].shape)
        if alt is not None:
            s, r = alt
            for ax, (a, b) in enumerate(zip(base[n].shape, r[n].shape)):
                if a != b:
                    match = [k for k, v in sym_sizes.items() if v == a and s.sizes.get(k) == b]
                    shape[ax] = match[0] if match else f"{n}_dim{ax}"
        specs.append(TensorSpec(n, base[n].dtype.name, tuple(shape)))
    return tuple(specs)


def _check_deterministic(ctx: Context, reference, inputs) -> None:
    """A second call on sample 0, compared output by output, by position (names may repeat before
    --output-names): only a real difference gets the nondeterminism note."""
    again = reference(ctx.samples[0].feeds, inputs)
    for name, (_, arr) in zip(required(ctx.spec, "spec").output_names, again):
        if not np.array_equal(arr, ctx.references[0][name], equal_nan=True):
            ctx.note(f"{NONDETERMINISTIC}: two identical eager calls gave different {name!r} "
                     "(dropout or random ops left on?); parity is measured against the first call")
            log.warning("the model is nondeterministic: two identical calls gave different %r", name)
            return
