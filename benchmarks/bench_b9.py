"""edgeship benchmark B9 (see benchmarks/README.md): small causal LMs, edgeship vs Optimum and onnxruntime-genai.

    .venv/bin/python benchmarks/bench_b9.py [--quick] [--layers 4 --hidden 256 ...] [--out FILE.md]

One tiny-but-real-shaped decoder (Llama-style: 4 layers, hidden 256, 4 heads of 64 with 2 key/value
heads, SwiGLU 688, vocabulary 8192 from a byte-level BPE trained with ``tokenizers``; random weights,
seed 0; ``save_pretrained``) is exported by each engine its own way, and each engine then runs in its
own process (benchmarks/b9_worker.py), greedy, batch 1, a 64-token prompt and 256 new tokens with no
early stop:

  edgeship        ``edgeship export DIR`` (no other flag), ``edgeship.load(b).generate(ids, ...)``
  edgeship genai  the same bundle through benchmarks/b9_genai.py: onnxruntime-genai's C++ loop on the
                  bundle's own graph (parity-gated against edgeship's loop), run in the genai venv
  edgeship int4   the same bundle's int4 variant, when the bundle has one
  optimum         ``optimum-cli export onnx --task text-generation-with-past`` + ``ORTModelForCausalLM.generate``
                  (optimum-onnx 0.1.0 in a venv of its own: it needs transformers < 4.58)
  genai fp32/int4 onnxruntime-genai 0.18's model builder (``-p fp32`` / ``-p int4 -e cpu``) + ``og.Generator``
  hf              transformers eager (torch), the reference for the tokens and an information row

The anchor venvs are created on first use under ~/.cache/edgeship/bench/ from
benchmarks/requirements-b9-*.txt (pinned; torch is the CPU build). Each worker times blocks of pairs
of generations: one new token (the prefill: time to first token) and 256 new tokens; decode tokens/s
is 255 ÷ (t_256 - t_1) from the medians. Rounds run in a new random order after a pause; rounds in which
every engine ran >15% slow at once are dropped. An engine's figures count only when its greedy tokens
equal transformers' greedy tokens (int4 engines: reported, not required).

  B9   decode tokens/s: edgeship ÷ optimum and edgeship ÷ genai at the same precision (target ≥ 1.0)
  B9a  prefill latency ratios, model size on disk and peak RSS per engine (information)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "out" / "b9"
WORKER = Path(__file__).resolve().parent / "b9_worker.py"
VENVS = Path(os.environ.get("EDGESHIP_BENCH_CACHE", Path.home() / ".cache" / "edgeship" / "bench"))
REQUIREMENTS = {"optimum": Path(__file__).resolve().parent / "requirements-b9-optimum.txt",
                "genai": Path(__file__).resolve().parent / "requirements-b9-genai.txt"}
DISTURBED = 1.15
PY = sys.executable
if str(ROOT) not in sys.path:  # this checkout's edgeship, as the workers get it (PYTHONPATH)
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Shape:
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 688
    vocab: int = 8192
    prompt: int = 64
    new: int = 256


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] B9 {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the model
def build_tokenizer(vocab: int):
    """A byte-level BPE (``tokenizers``) trained on random words (seed 0) to ``vocab`` entries."""
    import numpy as np
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(3000)]
    corpus = [" ".join(rng.choice(words, 12)) for _ in range(4000)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def build_model(folder: Path, shape: Shape, seed: int = 0) -> Path:
    """A random Llama-style causal LM of ``shape`` with its tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(shape.vocab)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=2048,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # default init is tiny: widen it so greedy choices are decisive, not near-ties
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.08)
    model.eval()
    model.generation_config.pad_token_id = 0
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def prompt_ids(folder: Path, length: int) -> list[int]:
    """``length`` token ids of a fixed text, tokenized by the folder's own tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    words = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    text = " ".join(sorted(w for w in words if w.isalpha())[::7])
    ids = tok.encode(text).ids
    if len(ids) < length:
        raise ValueError(f"the prompt text gives {len(ids)} tokens, fewer than {length}")
    return ids[:length]


# ----------------------------------------------------------------------------- helpers (tested)
def decode_rate(t_first: float, t_all: float, new: int) -> float:
    """Decode tokens/s: the ``new - 1`` tokens after the first one, from the times of a 1-token and an
    ``new``-token generation of the same prompt (the difference is decode only)."""
    if new < 2 or t_all <= t_first:
        raise ValueError(f"decode rate needs new >= 2 and t_all > t_first; got {new}, {t_all}, {t_first}")
    return (new - 1) / (t_all - t_first)


def tree_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (a bundle or an export folder), or of the file itself."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_bytes(path: Path) -> int:
    """Bytes of the ONNX graphs and weights under ``path`` (``*.onnx``, ``*.onnx.data``, ``*.onnx_data``,
    ``*.data``), or of ``path`` itself when it is one file."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and (p.suffix in (".onnx", ".data", ".onnx_data") or p.name.endswith(".onnx.data")))


def kept_rounds(rounds: list[dict[str, float]], limit: float = DISTURBED) -> list[int]:
    """Indexes of rounds to keep: a round is dropped when every engine in it ran more than ``limit``
    times its own median at once (a slow spell of the shared machine, not a property of an engine)."""
    if not rounds:
        return []
    names = set(rounds[0])
    med = {k: statistics.median(r[k] for r in rounds) for k in names}
    return [i for i, r in enumerate(rounds) if not all(r[k] > limit * med[k] for k in names)]


def requirements_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def ensure_venv(name: str) -> Path:
    """The python of the anchor venv ``name`` (``optimum`` or ``genai``), created from its pinned
    requirements file on first use (or when the file changed) under ``VENVS``."""
    req = REQUIREMENTS[name]
    venv = VENVS / f"{name}-venv"
    py = venv / "bin" / "python"
    stamp = venv / "edgeship-requirements.sha256"
    want = requirements_hash(req)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    log(f"creating the {name} venv in {venv} from {req.name} (a few minutes, once) ...")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--extra-index-url", "https://download.pytorch.org/whl/cpu",
                    "-r", str(req)], check=True)
    stamp.write_text(want + "\n")
    return py


# ----------------------------------------------------------------------------- exports
def export_optimum(py: Path, folder: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    cli = py.parent / "optimum-cli"
    subprocess.run([str(cli), "export", "onnx", "--model", str(folder), "--task", "text-generation-with-past",
                    str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def export_genai(py: Path, folder: Path, out: Path, precision: str) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([str(py), "-m", "onnxruntime_genai.models.builder", "-m", str(folder), "-i", str(folder),
                    "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(out.parent / f".cache-{out.name}")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def export_edgeship(folder: Path, out: Path, int4_ungated: bool = False) -> Path:
    """``edgeship export DIR -o OUT``, no other flag (a fresh process, this checkout's edgeship); with
    ``int4_ungated``, ``--quantize int4 --tolerance int4:min_agreement=0``: random weights leave greedy
    margins so thin that int4 flips most tokens (onnxruntime-genai's own int4 too) and the gate would not
    ship it; B9 times its speed."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    extra = ["--quantize", "int4", "--tolerance", "int4:min_agreement=0"] if int4_ungated else []
    subprocess.run([PY, "-m", "edgeship", "export", str(folder), "-o", str(out), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return out


# ----------------------------------------------------------------------------- workers
@dataclass
class Engine:
    name: str
    kind: str
    python: Path
    path: Path
    precision: str
    size_path: Path
    variant: str = "auto"
    threads: int = 0  # an edgeship engine's intra-op threads; 0: the bundle's own
    proc: subprocess.Popen | None = None
    ready: dict = field(default_factory=dict)
    t1: list[float] = field(default_factory=list)
    tn: list[float] = field(default_factory=list)

    def start(self, ids: list[int], new: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([str(self.python), str(WORKER), self.kind, str(self.path),
                                      ",".join(map(str, ids)), str(new), self.variant,
                                      str(self.threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read("READY")

    def _read(self, tag: str) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        raise RuntimeError(f"engine {self.name} ended without {tag} (exit {self.proc.wait()})")

    def block(self, reps: int) -> tuple[float, float]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"block {reps}\n")
        self.proc.stdin.flush()
        got = self._read("BLOCK")
        self.t1 += got["t1"]
        self.tn += got["tn"]
        return statistics.median(got["t1"]), statistics.median(got["tn"])

    def stop(self) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        rss = self._read("STOP")["rss_kb"]
        self.proc.wait()
        return int(rss)


def measure(engines: list[Engine], ids: list[int], new: int, rounds: int, reps: int, pause: float = 0.2) -> dict:
    """Start every engine, check its tokens, then time ``rounds`` rounds in random order."""
    for e in engines:
        log(f"starting {e.name} ({e.kind}) ...")
        e.start(ids, new)
    ref = next(e.ready["tokens"] for e in engines if e.kind == "hf")
    ref_rss = {e.name: e.stop() for e in engines if e.kind == "hf"}  # the reference: tokens only, not timed
    engines = [e for e in engines if e.kind != "hf"]
    per_round: list[dict[str, tuple[float, float]]] = []
    rng = random.Random(0)
    for r in range(rounds):
        order = engines[:]
        rng.shuffle(order)
        got = {}
        for e in order:
            time.sleep(pause)
            got[e.name] = e.block(reps)
        per_round.append(got)
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {(new - 1) / max(b - a, 1e-9):.0f} tok/s, "
                                                    f"prefill {a * 1e3:.1f} ms" for k, (a, b) in got.items()))
    rss = {e.name: e.stop() for e in engines}
    keep = kept_rounds([{k: v[1] for k, v in rd.items()} for rd in per_round])
    res = {}
    for e in engines:
        t1 = statistics.median(per_round[i][e.name][0] for i in keep)
        tn = statistics.median(per_round[i][e.name][1] for i in keep)
        res[e.name] = {
            "desc": e.ready["desc"], "precision": e.precision, "kind": e.kind,
            "tokens_ok": e.ready["tokens"] == ref, "tokens": e.ready["tokens"],
            "agree": sum(a == b for a, b in zip(e.ready["tokens"], ref)) / len(ref),
            "prefill_ms": t1 * 1e3, "total_s": tn, "tok_s": decode_rate(t1, tn, new),
            "rss_mib": rss[e.name] / 1024, "size_mib": model_bytes(e.size_path) / 2**20,
            "disk_mib": tree_bytes(e.path) / 2**20,
            "load_s": e.ready["load_s"],
        }
    return {"engines": res, "reference_rss_mib": {k: v / 1024 for k, v in ref_rss.items()}, "kept": len(keep),
            "rounds": rounds, "reps": reps, "new": new, "prompt": len(ids)}


# ----------------------------------------------------------------------------- report
def rows(result: dict) -> list[str]:
    """Markdown table rows: B9 ratios (edgeship ÷ each anchor, same precision) and B9a details."""
    eng = result["engines"]
    out = []

    def fig(name: str) -> str:
        e = eng[name]
        return (f"{name} {e['tok_s']:.0f} tok/s, prefill {e['prefill_ms']:.2f} ms, model {e['size_mib']:.1f} MiB "
                f"(folder/bundle {e['disk_mib']:.1f} MiB), peak RSS {e['rss_mib']:.0f} MiB")

    pairs = [(m, a) for m in ("edgeship", "edgeship genai") for a in ("optimum", "genai fp32")]
    pairs += [(m, "genai int4") for m in ("edgeship int4", "edgeship genai int4")]
    for mine, anchor in pairs:
        if mine not in eng or anchor not in eng:
            continue
        a, b = eng[mine], eng[anchor]
        ratio = a["tok_s"] / b["tok_s"]
        gated = a["tokens_ok"] and b["tokens_ok"] or a["precision"] == "int4"
        # "edgeship genai": onnxruntime-genai's own loop over edgeship's bundle (b9_genai.py), an experiment
        # edgeship does not ship: information, not a target
        experiment = mine.startswith("edgeship genai")
        verdict = "info" if experiment else ("pass" if ratio >= 1.0 and gated else "**FAIL**")
        out.append(f"| {'B9x' if experiment else 'B9'} | decode tokens/s, {mine} ({a['desc']}) ÷ {anchor} ({b['desc']}), {a['precision']}: "
                   f"{fig(mine)}; {fig(anchor)}; tokens = transformers' greedy: {a['agree']:.2f} / {b['agree']:.2f} "
                   f"| {ratio:.3f} | {'—' if experiment else '≥ 1.0'} | {verdict} |")
        out.append(f"| B9a | prefill latency (time to first token, {result['prompt']}-token prompt), "
                   f"{anchor} {b['prefill_ms']:.2f} ms ÷ {mine} {a['prefill_ms']:.2f} ms (> 1: edgeship faster) "
                   f"| {b['prefill_ms'] / a['prefill_ms']:.3f} | — | info |")
    for name in (n for n in eng if n.startswith("x ") and "genai fp32" in eng):  # experiments: info only
        a, b = eng[name], eng["genai fp32"]
        out.append(f"| B9x | experiment, decode tokens/s: {name} ÷ genai fp32: {fig(name)}; tokens = transformers' "
                   f"greedy {a['agree']:.2f} | {a['tok_s'] / b['tok_s']:.3f} | — | info |")
    for name, e in eng.items():
        out.append(f"| B9a | {name}: {e['desc']}, {e['precision']}: {fig(name)}; load {e['load_s']:.2f} s; "
                   f"tokens = transformers' greedy {e['agree']:.2f} | {e['tok_s']:.1f} | — | info |")
    return out


def table(result: dict) -> str:
    return "\n".join(["| id | figure | measured | target | result |", "|---|---|---|---|---|", *rows(result)])


def note(result: dict) -> str:
    return (f"B9: {result['prompt']}-token prompt, {result['new']} new tokens, greedy, batch 1; "
            f"{result['kept']}/{result['rounds']} rounds kept, {result['reps']} pairs per engine per round; "
            "each engine in its own process with its own default threading; model size is the ONNX "
            "graphs and weights on disk; peak RSS is VmHWM of the engine's process (torch included "
            "where the engine needs it).")


# ----------------------------------------------------------------------------- run
def prepare(shape: Shape, with_int4: bool = True, engines: tuple[str, ...] = (),
            reuse: bool = False) -> tuple[list[Engine], list[int]]:
    """Build the model folder and each engine's files (``reuse``: keep those already in WORK)."""
    WORK.mkdir(parents=True, exist_ok=True)
    folder = WORK / "model"
    if not (reuse and (folder / "config.json").exists()):
        build_model(folder, shape)
    ids = prompt_ids(folder, shape.prompt)
    want = set(engines) or {"hf", "edgeship", "optimum", "genai"}
    out: list[Engine] = [Engine("hf", "hf", Path(PY), folder, "fp32", folder)]
    if "edgeship" in want:
        log("edgeship export ...")
        b = WORK / "tiny.edgeship"
        if not (reuse and b.exists()):
            export_edgeship(folder, b)
        manifest = json.loads((b / "manifest.json").read_text())
        variants = manifest["variants"]
        default = manifest["defaults"]["cpu"]
        out.append(Engine("edgeship", "edgeship", Path(PY), b, variants[default]["precision"], b / variants[default]["file"]))
        # information: one intra-op thread, as onnxruntime-genai's default session runs (measured here)
        out.append(Engine("x edgeship, 1 thread", "edgeship", Path(PY), b, variants[default]["precision"],
                          b / variants[default]["file"], threads=1))
        b4 = WORK / "tiny-int4.edgeship"
        if with_int4 and "int4" not in variants and not (reuse and b4.exists()):
            log("edgeship export --quantize int4 (agreement gate at 0) ...")
            export_edgeship(folder, b4, int4_ungated=True)
        b4 = b if "int4" in variants else b4
        if with_int4:
            out.append(Engine("edgeship int4", "edgeship", Path(PY), b4, "int4", b4 / "models" / "int4.onnx", "int4"))
        if "genai" in want:  # the bundle through onnxruntime-genai's loop, in the genai venv (torch-free path)
            g = ensure_venv("genai")
            out.append(Engine("edgeship genai", "edgeship-genai", g, b, "fp32", b / variants["fp32"]["file"], "fp32"))
            if with_int4:
                out.append(Engine("edgeship genai int4", "edgeship-genai", g, b4, "int4", b4 / "models" / "int4.onnx",
                                  "int4"))
    if "optimum" in want:
        py = ensure_venv("optimum")
        log("optimum-cli export ...")
        d = WORK / "optimum"
        if not (reuse and d.exists()):
            export_optimum(py, folder, d)
        out.append(Engine("optimum", "optimum", py, d, "fp32", d))
    if "genai" in want:
        py = ensure_venv("genai")
        for p in ("fp32", "int4") if with_int4 else ("fp32",):
            log(f"onnxruntime-genai builder {p} ...")
            d = WORK / f"genai-{p}"
            if not (reuse and d.exists()):
                export_genai(py, folder, d, p)
            out.append(Engine(f"genai {p}", "genai", py, d, p, d))
    return out, ids


def run(quick: bool = False, shape: Shape | None = None, engines: tuple[str, ...] = (), reuse: bool = False) -> dict:
    shape = shape or Shape()
    es, ids = prepare(shape, engines=engines, reuse=reuse)
    return measure(es, ids, shape.new, rounds=3 if quick else 9, reps=3 if quick else 5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--engines", default="", help="comma-separated subset of edgeship,optimum,genai (default: all)")
    p.add_argument("--json", type=Path, help="also write the raw result as JSON")
    p.add_argument("--reuse", action="store_true", help="keep the model folder and exports already in benchmarks/out/b9")
    d = Shape()
    for f in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "prompt", "new"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(d, f))
    a = p.parse_args()
    shape = Shape(**{f: getattr(a, f) for f in Shape.__dataclass_fields__})
    res = run(a.quick, shape, tuple(x for x in a.engines.split(",") if x), a.reuse)
    text = table(res) + "\n\n" + note(res) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
