"""The decoder export's stages: load, onnx, optimize, builder, graph, quantize, parity, package
(``edgeship export DIR`` for a causal LM: :func:`export_folder` hands it to :func:`export_causal_lm`;
the graphs are :mod:`edgeship.exporters.hf_decoder`'s and :mod:`edgeship.exporters.genai_builder`'s).

What it reuses: transformers' model built by :mod:`edgeship.exporters.hf_model` (local files only), the tokenizer
and task records of :mod:`edgeship.exporters.hf_model` / :mod:`edgeship.hf.preprocess`, dynamic int8 from
:mod:`edgeship.exporters.quantize`, the tolerances and metrics of :mod:`edgeship.parity`, the atomic
bundle writer and the manifest's fields. What differs from the pipeline of other models: parity is
generation (greedy tokens and per-step logits of golden prompts, :mod:`edgeship.parity.decoder`); two
candidate fp32 graphs (torch.onnx, and onnxruntime-genai's model builder's where installed:
:mod:`edgeship.exporters.genai_builder`) are judged by it and the faster passing one is kept; and
the default variant is fp32 (a quantized variant is shipped when it passes its tolerance; selection by
tokens/s is left to ``edgeship tune``/profile).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.bundle.golden import Sample, save_samples
from edgeship.bundle.manifest import VariantResult
from edgeship.config import ExportConfig
from edgeship.errors import ExportError, ParityError, QuantizationError, SpecError, brief
from edgeship.exporters.hf_decoder import (
    DEFAULT_NEW_TOKENS,
    GOLDEN_FILE,
    PRECISION,
    eager_generation,
    export_decoder_onnx,
    fuse_norms,
    golden_prompts,
    load_causal_lm,
    single_step_golden,
    spec_of,
)
from edgeship.hf.folder import HFFolder
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.pipeline.context import StageResult, Variant
from edgeship.spec import IOSpec

KIND = {"fp32": "fp32", "int8_dynamic": "dynamic", "int4": "int4"}
QUANTIZE = {"fp32": (), "auto": ("int8_dynamic", "int4"), "dynamic": ("int8_dynamic",), "int4": ("int4",)}
OPSET = 18
INT4_ACCURACY_LEVEL = 4  # MatMulNBits on int8 activations: B9 decode 789 -> 428 µs/token, same tokens; gated as before
TORCH = "torch.onnx"
BUILDER = "onnxruntime-genai"
GRAPHS = ("auto", TORCH, BUILDER)  # --decoder-graph
TORCH_MARGIN = 1.05  # B9 measured the builder graph faster (1.39x vs 0.97x genai's tokens/s); ties go to it
MIN_CONTEXT = 8  # the export traces past 4 + sequence 3 positions; golden generation needs room for new tokens
TIMING_ROUNDS, TIMING_TOKENS = 5, 32  # the graph choice's decode timing: interleaved rounds × greedy tokens


def _variants(quantize: tuple[str, ...]) -> list[str]:
    out = ["fp32"]
    for q in quantize:
        if q not in QUANTIZE:
            raise SpecError(f"--quantize {q}: a causal LM is exported as {', '.join(QUANTIZE)} "
                            "(fp32 plus dynamic int8 and/or weight-only int4; auto = all three).")
        out += [v for v in QUANTIZE[q] if v not in out]
    return out


class _Stages:
    """Times each stage and reports it to the CLI's progress callback, as the pipeline's runner does."""

    def __init__(self, progress: Callable | None):
        self.progress = progress
        self.done: list[StageResult] = []

    def run(self, name: str, fn: Callable[[], Any], detail: Callable[[Any], str] = lambda _: "") -> Any:
        if self.progress:
            self.progress("start", name, None)
        t = time.perf_counter()
        out = fn()
        result = StageResult(name, "ok", round(time.perf_counter() - t, 3), detail(out))
        self.done.append(result)
        if self.progress:
            self.progress("end", name, result)
        return out


def export_folder(config: ExportConfig, progress: Callable | None) -> Any:
    """The dispatch point of ``edgeship export DIR``: None unless ``config.model`` is a save_pretrained
    folder whose task (guessed, or ``--task``) is causal-lm; then :func:`export_causal_lm` exports it."""
    from edgeship.hf.folder import CAUSAL_LM, read_folder

    folder = read_folder(config.model, config.load.task, config.load.trust_pickle)
    return export_causal_lm(folder, config, progress) if folder.task == CAUSAL_LM else None


def export_causal_lm(folder: HFFolder, config: ExportConfig, progress: Callable | None = None) -> Any:
    """Export ``folder``'s causal LM to the bundle ``config.output_path``; see the module docstring.

    Returns:
        The pipeline's ``ExportResult``.

    Raises:
        SpecError: a --quantize the decoder export does not build; ModelLoadError, ExportError;
        ParityError: the fp32 graph misses generation parity with transformers.
    """
    from edgeship.pipeline import ExportResult

    variants = _variants(tuple(config.quantize))
    if "int4" in variants:
        from edgeship.exporters.quantize import check_int4_settings

        check_int4_settings(config.int4_block_size, config.int4_scheme)
    if config.opset is not None and config.opset < 18:
        raise SpecError(f"--opset {config.opset}: the decoder export needs opset 18 or later.")
    want = config.decoder_graph
    if want not in GRAPHS:
        raise SpecError(f"--decoder-graph {str(want)[:40]!r}: use one of {', '.join(GRAPHS)}.")
    if want == BUILDER and config.opset is not None:
        raise SpecError(f"--decoder-graph {BUILDER} with --opset {config.opset}: the builder picks its own opset; "
                        "drop --opset, or use --decoder-graph torch.onnx.")
    opset = config.opset or OPSET
    st = _Stages(progress)
    model = st.run("load", lambda: load_causal_lm(folder),
                   lambda m: f"{type(m).__name__}, {sum(p.numel() for p in m.parameters()):,} parameters")
    text = model.config.get_text_config(decoder=True)
    vocab = _vocab(model, text)
    eos_list, pad, bos = _special_ids(model, text, vocab)
    context = _context_length(text)
    prompts, new = _fit_context(golden_prompts(folder.tokenizer, vocab, config.seed), context, folder)
    ref_tokens, ref_logits = eager_generation(model, prompts, new, eos_list, pad if pad is not None else 0)
    notes = [f"causal LM: {folder.architectures[0] if folder.architectures else folder.model_type} as one ONNX graph "
             "with a KV cache (prefill and decode); parity is greedy generation of "
             f"{len(prompts)} golden prompts × {new} tokens against transformers"]
    with tempfile.TemporaryDirectory(prefix="edgeship-lm-") as tmp:
        work = Path(tmp)
        graphs: dict[str, tuple[Path, IOSpec]] = {}
        if want != BUILDER:
            graphs[TORCH] = _torch_graph(st, model, work, opset, notes)
        if want != TORCH:
            st.run("builder", lambda: _builder_graph(folder, model, work, graphs, notes, config.opset),
                   lambda g: f"{BUILDER} graph: {', '.join(g)}" if BUILDER in graphs else "not used (see the notes)")
        else:
            notes.append(f"graph: {TORCH} (--decoder-graph {TORCH}); onnxruntime-genai's model builder not used")
        if not graphs:  # --decoder-graph onnxruntime-genai, and the builder could not build it
            raise ExportError(f"--decoder-graph {BUILDER}: {notes[-1].removeprefix('graph: torch.onnx; ')}. Use "
                              f"--decoder-graph auto (torch.onnx's graph where the builder cannot) or {TORCH}.")
        golden = (prompts, ref_tokens, ref_logits)
        choice = st.run("graph", lambda: _choose_graph(graphs, golden, eos_list, pad, notes, context),
                        _graph_detail)
        file, spec = graphs[choice["exporter"]]
        file.replace(work / "fp32.onnx")
        single = single_step_golden(model, prompts[0], spec)
        built = {"fp32": work / "fp32.onnx"}
        rejected: dict[str, dict] = {}
        if len(variants) > 1:
            st.run("quantize", lambda: _quantize(work, variants, built, rejected, config),
                   lambda _: ", ".join(built) + (f"; failed: {', '.join(rejected)}" if rejected else ""))
        gates: dict[str, dict] = {}
        report = st.run("parity", lambda: _parity(built, spec, golden, eos_list, pad, config, gates),
                        _parity_detail)
        for v in list(built):
            bad = [c for c in report.checks if c.variant == v and not c.passed]
            if bad and v == "fp32":
                raise ParityError(f"the fp32 decoder graph misses generation parity with transformers: "
                                  f"[{bad[0].sample}] {bad[0].reason}. Nothing was written to {config.output_path}.")
            if bad:
                rejected[v] = {"reason": f"[{bad[0].sample}] {bad[0].reason}"}
                notes.append(f"variant {v} not shipped: [{bad[0].sample}] {bad[0].reason}")
                del built[v]
        bundle, shipped = st.run("package", lambda: _package(work, folder, config, spec, built, report, golden, single,
                                                             eos_list, pad, bos, context, new, notes, opset, st.done,
                                                             gates, choice),
                                 lambda out: str(out[0]))
    return ExportResult(bundle=bundle, stages=tuple(st.done), parity=report, defaults={"cpu": "fp32"},
                        notes=tuple(notes), spec=spec, variants=shipped)


def _torch_graph(st: _Stages, model: Any, work: Path, opset: int, notes: list[str]) -> tuple[Path, IOSpec]:
    """The torch.onnx graph (the ``onnx`` and ``optimize`` stages): its file and its IOSpec, read after
    onnxruntime's optimizer, which prunes inputs the graph never reads (Bloom's ALiBi reads no position_ids)."""
    path = work / "torch.onnx"
    spec = st.run("onnx", lambda: export_decoder_onnx(model, path, opset),
                  lambda s: f"torch.onnx (dynamo), opset {opset}, "
                            f"{sum(1 for t in s.inputs if t.name.startswith('past_'))} cache inputs")
    fused = st.run("optimize", lambda: fuse_norms(path),
                   lambda f: ", ".join(f"{n}× {op}" for op, n in f.items()) or "nothing fused")
    if fused is None:
        notes.append("onnxruntime's transformer optimizer failed on the graph; the unfused graph is shipped")
        return path, spec
    return path, spec_of(path)


def _builder_graph(folder: HFFolder, model: Any, work: Path, graphs: dict[str, tuple[Path, IOSpec]],
                   notes: list[str], opset: int | None) -> list[str]:
    """onnxruntime-genai's builder graph into ``graphs`` (where it is installed and builds the model);
    otherwise (or with an explicit --opset, which the builder does not take) a note says why. Returns
    the onnxruntime contrib ops it holds (GroupQueryAttention, ...)."""
    from edgeship.exporters.genai_builder import BuilderUnavailable, build_decoder_onnx, builder_version, graph_ops
    from edgeship.exporters.hf_decoder import cache_shape

    if opset is not None:
        notes.append(f"graph: torch.onnx; onnxruntime-genai's model builder not used: --opset {opset} was asked "
                     "and the builder picks its own opset")
        return []
    try:
        version = builder_version()
        spec = build_decoder_onnx(folder.path, work / "builder.onnx", cache_shape(model)[2])
        from edgeship.generate import decoder_layout

        decoder_layout(spec)  # the names and cache shapes the loop needs
    except (BuilderUnavailable, SpecError) as e:
        notes.append(f"graph: torch.onnx; onnxruntime-genai's model builder not used: {e}")
        return []
    graphs[BUILDER] = (work / "builder.onnx", spec)
    notes.append(f"onnxruntime-genai {version}'s model builder built a candidate graph (fp32, cpu)")
    ops = graph_ops(work / "builder.onnx")
    return [op for op in ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "RotaryEmbedding") if op in ops]


def _choose_graph(graphs: dict[str, tuple[Path, IOSpec]], golden: tuple, eos: list[int], pad: int | None,
                  notes: list[str], context: int | None = None) -> dict[str, Any]:
    """Judge each candidate fp32 graph by the generation parity gate (greedy tokens identical to
    transformers', per-step logits within the fp32 tolerance); of those that pass, keep the one with the
    most greedy tokens/s, the torch.onnx graph only when it beats the builder's by over 5% (edgeship's
    loop as ``Model.generate`` runs each graph, :data:`TIMING_ROUNDS` interleaved rounds of :data:`TIMING_TOKENS` tokens on the first golden
    prompt, median). Returns the manifest's ``generation.graph`` record."""
    import onnxruntime as ort

    from edgeship.generate import decoder_layout
    from edgeship.parity.decoder import prompt_checks

    sessions: dict[str, tuple[Any, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, (file, spec) in graphs.items():
        try:
            s = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            checks = prompt_checks(s, decoder_layout(spec), golden, eos, pad if pad is not None else 0, "fp32", "fp32")
        except Exception as e:  # the builder's graph may not run here (a GroupQueryAttention it cannot size)
            if name == TORCH:
                raise
            out[name] = {"passed": False, "tokens_per_s": None, "reason": f"onnxruntime cannot run it: {brief(e, 300)}"}
            continue
        bad = [c for c in checks if not c.passed]
        out[name] = {"passed": not bad, "tokens_per_s": None,
                     **({"reason": f"[{bad[0].sample}] {bad[0].reason}"} if bad else {})}
        if not bad:
            sessions[name] = (s, decoder_layout(spec))
    if len(sessions) > 1:
        prompt = golden[0][0]
        tokens = TIMING_TOKENS if context is None else max(1, min(TIMING_TOKENS, context - len(prompt)))
        speed = _tokens_per_s(sessions, prompt, pad if pad is not None else 0, tokens)
        for name, tps in speed.items():
            out[name]["tokens_per_s"] = tps
        # the torch.onnx graph must beat the builder's by more than the timing noise of a short run
        chosen = TORCH if speed[TORCH] > TORCH_MARGIN * speed[BUILDER] else BUILDER
        other = next(n for n in sessions if n != chosen)
        notes.append(f"graph: {chosen} ({out[chosen]['tokens_per_s']:,.0f} greedy tokens/s) over {other} "
                     f"({out[other]['tokens_per_s']:,.0f}); both pass generation parity")
    else:  # one passes, or none: the torch graph (where built), which the parity stage then reports
        chosen = next(iter(sessions), TORCH if TORCH in graphs else next(iter(graphs)))
        for name, row in out.items():
            if not row["passed"] and name != chosen:
                notes.append(f"graph: the {name} graph misses generation parity ({row['reason']}); "
                             f"the {chosen} graph is shipped")
    return {"exporter": chosen, "candidates": out}


def _graph_detail(choice: dict[str, Any]) -> str:
    """``onnxruntime-genai graph (28,687 tokens/s; torch.onnx 13,304)``, ``torch.onnx graph (onnxruntime-genai
    misses parity)`` and the like."""
    c = choice["candidates"]
    chosen = choice["exporter"]
    others = "; ".join(f"{k} {v['tokens_per_s']:,.0f}" if v["passed"] and v["tokens_per_s"] else f"{k} misses parity"
                       for k, v in c.items() if k != chosen)
    speed = f"{c[chosen]['tokens_per_s']:,.0f} tokens/s" if c.get(chosen, {}).get("tokens_per_s") else ""
    inner = "; ".join(x for x in (speed, others) if x)
    return f"{chosen} graph" + (f" ({inner})" if inner else "")


def _tokens_per_s(sessions: dict[str, tuple[Any, Any]], prompt: list[int], pad: int,
                  tokens: int = TIMING_TOKENS) -> dict[str, float]:
    """Greedy tokens/s of each (session, layout) with edgeship's loop on ``prompt``: one warm-up run each,
    then :data:`TIMING_ROUNDS` interleaved rounds of :data:`TIMING_TOKENS` tokens, the median."""
    from edgeship.generate import run_loop

    times: dict[str, list[float]] = {n: [] for n in sessions}
    # each graph stepped as Model.generate will step it: the builder's GroupQueryAttention graph with its
    # cache in one shared buffer, the torch graph with numpy feeds
    shared = {name: name == BUILDER for name in sessions}
    for name, (s, layout) in sessions.items():  # warm-up: the first runs allocate
        run_loop(s, layout, [prompt], tokens, (), pad, shared_cache=shared[name])
    for _ in range(TIMING_ROUNDS):
        for name, (s, layout) in sessions.items():
            t = time.perf_counter()
            run_loop(s, layout, [prompt], tokens, (), pad, shared_cache=shared[name])
            times[name].append(time.perf_counter() - t)
    return {name: round(tokens / float(np.median(ts)), 1) for name, ts in times.items()}


def _parity_detail(report: ParityReport) -> str:
    """``fp32 3/3, int8_dynamic 3/3, int4 0/3 golden prompts pass``."""
    by: dict[str, list[bool]] = {}
    for c in report.checks:
        by.setdefault(c.variant, []).append(c.passed)
    return ", ".join(f"{v} {sum(ok)}/{len(ok)}" for v, ok in by.items()) + " golden prompts pass"


def _quantize(work: Path, variants: list[str], built: dict[str, Path], rejected: dict[str, dict],
              config: ExportConfig) -> None:
    from edgeship.exporters.quantize import build_dynamic, build_int4

    if "int8_dynamic" in variants:
        try:
            built["int8_dynamic"] = build_dynamic(work / "fp32.onnx", work / "int8_dynamic.onnx")
        except QuantizationError as e:
            rejected["int8_dynamic"] = {"reason": str(e)}
    if "int4" in variants:
        try:
            built["int4"] = build_int4(work / "fp32.onnx", work / "int4.onnx", config.int4_block_size, config.int4_scheme,
                                       accuracy_level=INT4_ACCURACY_LEVEL)
        except QuantizationError as e:
            rejected["int4"] = {"reason": str(e)}


def _parity(built: dict[str, Path], spec: IOSpec, golden: tuple, eos: list[int], pad: int | None,
            config: ExportConfig, gates: dict[str, dict]) -> ParityReport:
    """fp32: greedy tokens and logits as transformers'; quantized variants: the teacher-forced generation
    gate (``gates`` gets each one's :class:`edgeship.parity.generation.GenerationReport` as a dict)."""
    import onnxruntime as ort

    from edgeship.generate import decoder_layout
    from edgeship.parity.decoder import prompt_checks, quantized_checks
    from edgeship.parity.generation import configured_tolerance
    from edgeship.parity.tolerances import effective_tolerances, tolerance_for

    layout = decoder_layout(spec)
    checks: list[OutputCheck] = []
    tolerances = {}
    for v, file in built.items():
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        p = PRECISION[v]
        if p == "fp32":
            checks += prompt_checks(session, layout, golden, eos, pad if pad is not None else 0, v, p)
            tolerances[v] = {"generation": tolerance_for(p).to_dict()}
            continue
        tol = configured_tolerance(effective_tolerances(config).get(p, "generation"), p)
        rows, gate = quantized_checks(session, layout, golden, eos, pad if pad is not None else 0, v, p, tol)
        checks += rows
        gates[v] = gate.to_dict()
        tolerances[v] = {"generation": tol.to_dict()}  # what judges it: the gate's criteria only
    return ParityReport(tuple(checks), tolerances)


def _vocab(model: Any, text: Any) -> int:
    """The logits' width: the output embedding's rows (the config's vocab_size where the model has none)."""
    weight = getattr(model.get_output_embeddings(), "weight", None)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else int(text.vocab_size)


def _token_ids(value: Any, vocab: int) -> list[int]:
    """The token ids in ``value`` (an id or a list of them, as configs hold) that index the logits,
    [0, vocab): old configs say -1 for none, and some list ids past the vocabulary."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out: list[int] = []
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab and v not in out:
            out.append(v)
    return out


def _special_ids(model: Any, text: Any, vocab: int) -> tuple[list[int], int | None, int | None]:
    """(eos ids, pad id, bos id) of the generation config (the text config's where it has none in
    range), each kept only where it is a token id in [0, vocab): what the manifest records and generate
    accepts."""
    gen = model.generation_config

    def pick(key: str) -> list[int]:
        return _token_ids(getattr(gen, key, None), vocab) or _token_ids(getattr(text, key, None), vocab)

    pad, bos = pick("pad_token_id"), pick("bos_token_id")
    return pick("eos_token_id"), (pad[0] if pad else None), (bos[0] if bos else None)


def _fit_context(prompts: list[list[int]], context: int | None, folder: HFFolder) -> tuple[list[list[int]], int]:
    """The golden prompts and new tokens within the model's context: prompt + new tokens at most
    ``context`` positions (a model with learned positions, GPT-2's, cannot index past them), prompts cut
    to half the context where they do not fit with :data:`DEFAULT_NEW_TOKENS`.

    Raises:
        ModelLoadError: a context under :data:`MIN_CONTEXT` positions (the export traces the graph at 7).
    """
    if context is None or max(len(p) for p in prompts) + DEFAULT_NEW_TOKENS <= context:
        return prompts, DEFAULT_NEW_TOKENS
    if context < MIN_CONTEXT:
        from edgeship.errors import ModelLoadError

        raise ModelLoadError(f"{folder.path / 'config.json'}: max_position_embeddings is {context}; the decoder export "
                             f"needs a context of at least {MIN_CONTEXT} positions (it traces the graph with a cache). "
                             "Fix config.json if the model was trained with a longer context.")
    cut = [p[:context // 2] for p in prompts]
    return cut, min(DEFAULT_NEW_TOKENS, context - max(len(p) for p in cut))


def _context_length(text: Any) -> int | None:
    """The model's context in tokens: the (text) config's max_position_embeddings, where it is a
    positive whole number below transformers' "no limit" placeholder."""
    from edgeship.exporters.hf_model import MAX_POSITIONS

    v = getattr(text, "max_position_embeddings", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v < MAX_POSITIONS else None


def _summary(report: ParityReport, v: str, gate: dict | None = None) -> dict:
    rows = [c for c in report.checks if c.variant == v]
    return {"passed": all(c.passed for c in rows), "max_abs": max(c.metrics["max_abs"] for c in rows),
            "min_cosine": min(c.metrics["cosine"] for c in rows),
            "token_agreement": float(np.mean([c.metrics["token_agreement"] for c in rows])),
            "tokens_identical": all(c.metrics["token_agreement"] == 1.0 for c in rows),
            **({"teacher_forced": gate} if gate is not None else {})}


def _package(work: Path, folder: HFFolder, config: ExportConfig, spec: IOSpec, built: dict[str, Path],
             report: ParityReport, golden: tuple, single: list, eos: list[int], pad: int | None, bos: int | None,
             context: int | None, new: int, notes: list[str], opset: int, stages: list[StageResult], gates: dict[str, dict],
             choice: dict[str, Any]) -> tuple[Path, dict[str, VariantResult]]:
    import onnx

    from edgeship import jsonout, schemas
    from edgeship.bundle.layout import sha256_file
    from edgeship.bundle.write import write_bundle
    from edgeship.exporters.hf_model import task_record
    from edgeship.exporters.quantize import weight_bytes
    from edgeship.host import host_info
    from edgeship.pipeline.package import tool_versions
    from edgeship.runtimes.registry import requirements

    opset = next((o.version for o in onnx.load(str(built["fp32"]), load_external_data=False).opset_import
                  if o.domain in ("", "ai.onnx")), opset)

    files = {f"models/{v}.onnx": f for v, f in built.items()}
    files[GOLDEN_FILE] = _save_golden(work / "generation.npz", *golden)
    files["golden/inputs.npz"], files["golden/outputs.npz"] = _save_single(work, single)
    summaries = {v: _summary(report, v, gates.get(v)) for v in {c.variant for c in report.checks}}
    shipped = {v: VariantResult(name=v, file=f"models/{v}.onnx", precision=PRECISION[v], size=f.stat().st_size,
                                passed={"cpu": summaries[v]["passed"]}, max_abs=summaries[v]["max_abs"],
                                min_cosine=summaries[v]["min_cosine"], tolerance={"logits": report.tolerances[v]["generation"]})
               for v, f in built.items()}
    meta: dict[str, Any] = {"task": task_record(folder)}
    if folder.tokenizer is not None:
        from tokenizers import Tokenizer

        from edgeship.errors import ModelLoadError
        from edgeship.exporters.hf_model import tokenizer_info
        from edgeship.hf.preprocess import TOKENIZER_FILE, guarded

        path = str(folder.tokenizer)
        tok = tokenizer_info(folder, ["input_ids", "attention_mask"],
                             guarded(lambda: Tokenizer.from_file(path), ModelLoadError,
                                     f"{path} is not a tokenizer.json it reads; fix or re-save the tokenizer "
                                     "(tokenizer.save_pretrained(dir))"))
        meta["preprocess"] = {"tokenizer": tok.to_dict()}
        files[TOKENIZER_FILE] = folder.tokenizer
    candidates = [{"id": v, "runtime": "onnxruntime", "variant": v, "precision": PRECISION[v], "options": {}, "p50_ms": None,
                   "parity": {"passed": True, "max_abs": shipped[v].max_abs, "min_cosine": shipped[v].min_cosine},
                   "requires": requirements("onnxruntime", PRECISION[v])} for v in built]
    source: dict[str, Any] = {"file": folder.path.name, "sha256": sha256_file(folder.weights), "format": "hf_folder", "arch": None,
              "arch_kwargs": {}, "opset": opset,
              "exporter": "onnxruntime-genai model builder" if choice["exporter"] == BUILDER else "dynamo"}
    report_doc = {**schemas.header("report"), "name": config.bundle_name, "source": source,
                  "stages": [s.to_dict() for s in stages], "notes": list(notes), "parity": report.to_dict(),
                  "defaults": {"cpu": "fp32"}, "candidates": {"cpu": candidates}, "selection": {},
                  "variants": {v: Variant(v, f, PRECISION[v], KIND[v], passed={"cpu": True}, weight_bytes=weight_bytes(f),
                                          settings={"block_size": config.int4_block_size, "scheme": config.int4_scheme}
                                          if v == "int4" else None).summary() for v, f in built.items()},
                  "rejected": {}, "latency_ms": {}, "calibration": None, "held_out": None, "gates": {}, "divergence": {},
                  "generation": summaries}
    (work / "report.json").write_text(jsonout.dumps(report_doc, indent=2))
    files["report.json"] = work / "report.json"
    manifest = {
        "name": config.bundle_name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "io": spec.to_dict(),
        "variants": {v: r.to_dict() for v, r in shipped.items()},
        "defaults": {"cpu": "fp32"},
        "candidates": {"cpu": candidates},
        "selection": {},
        "golden": {"inputs": "golden/inputs.npz", "outputs": "golden/outputs.npz",
                   "samples": [{"label": "prefill", "sizes": {}, "about": "the first golden prompt, past of length 0"},
                               {"label": "decode", "sizes": {}, "about": "one greedy token after it, with its cache"}]},
        "generation": {"eos_token_id": eos, **({"pad_token_id": pad} if pad is not None else {}),
                       **({"bos_token_id": bos} if bos is not None else {}),
                       **({"context_length": context} if context is not None else {}),
                       "golden": GOLDEN_FILE, "max_new_tokens": new, "parity": summaries,
                       "graph": choice, "padded_batches": choice["exporter"] != BUILDER},
        **meta,
        "torchscript": None,
        "source": source,
        "host": host_info(),
        "notes": list(notes),
    }
    return write_bundle(config.output_path, files, manifest), shipped


def _save_single(work: Path, single: list[tuple[dict, dict]]) -> tuple[Path, Path]:
    samples = [Sample(label, feeds, {}) for label, (feeds, _) in zip(("prefill", "decode"), single)]
    outs = {id(s): o for s, (_, o) in zip(samples, single)}
    save_samples(work / "inputs.npz", samples, lambda s: s.feeds)
    save_samples(work / "outputs.npz", samples, lambda s: outs[id(s)])
    return work / "inputs.npz", work / "outputs.npz"


def _save_golden(path: Path, prompts: list[list[int]], tokens: list[list[int]], logits: list[np.ndarray]) -> Path:
    data: dict[str, Any] = {}
    for i, (p, t, lg) in enumerate(zip(prompts, tokens, logits)):
        data[f"{i}/prompt"] = np.array(p, np.int64)
        data[f"{i}/tokens"] = np.array(t, np.int64)
        data[f"{i}/logits"] = lg.astype(np.float32)
    with open(path, "wb") as f:
        np.savez(f, **data)
    return path
