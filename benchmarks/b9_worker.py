"""One B9 engine in its own process (benchmarks/bench_b9.py starts it, maybe in an anchor's venv).

    python b9_worker.py KIND PATH PROMPT_IDS NEW_TOKENS [VARIANT [THREADS]]

KIND is one of ``hf`` (transformers eager, the reference), ``optimum`` (ORTModelForCausalLM on an
``optimum-cli export onnx`` folder), ``genai`` (onnxruntime-genai's ``og.Generator`` on a model builder
folder), ``edgeship`` (``edgeship.load(PATH).generate``), ``edgeship-genai`` (the same bundle through
benchmarks/b9_genai.py: onnxruntime-genai's loop on the bundle's own graph).
PROMPT_IDS is a comma-separated list of token ids; VARIANT picks an edgeship bundle's variant (default:
auto), THREADS an edgeship engine's intra-op threads (default: the bundle's). The worker loads the engine, runs one greedy
generation of NEW_TOKENS tokens and prints ``READY {json}`` (tokens, load time, peak RSS); then for
each ``block R`` line on stdin it times R pairs of generations (1 new token: the prefill; NEW_TOKENS new
tokens: prefill + decode) and prints their seconds as ``BLOCK {json}``; ``stop`` prints the peak RSS.

Only the standard library and numpy are imported here besides the engine's own packages, so the
script runs in any of the venvs.
"""

from __future__ import annotations

import json
import sys
import time


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM; ``ru_maxrss`` keeps the parent's RSS at fork on Linux)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_engine(kind: str, path: str, variant: str = "auto", threads: int | None = None):
    """A function ``gen(ids, n) -> list of n new token ids`` (greedy, no early stop) and a description."""
    if kind in ("hf", "optimum"):
        import torch

        if kind == "hf":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(path).eval()
        else:
            from optimum.onnxruntime import ORTModelForCausalLM

            model = ORTModelForCausalLM.from_pretrained(path, use_cache=True)

        def gen(ids, n):
            x = torch.tensor([ids], dtype=torch.int64)
            with torch.inference_mode():
                out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                     do_sample=False, pad_token_id=0)
            return out[0, len(ids):].tolist()

        return gen, kind
    if kind == "genai":
        import onnxruntime_genai as og

        model = og.Model(path)

        def gen(ids, n):
            params = og.GeneratorParams(model)
            params.set_search_options(do_sample=False, max_length=len(ids) + n, min_length=len(ids) + n)
            g = og.Generator(model, params)
            g.append_tokens(ids)
            while not g.is_done():
                g.generate_next_token()
            return [int(t) for t in g.get_sequence(0)][len(ids):]

        return gen, f"onnxruntime-genai {og.__version__}"
    if kind == "edgeship":
        import edgeship

        m = edgeship.load(path, target="cpu", variant=variant, threads=threads)
        if hasattr(m, "generate"):
            run = m.generate
        else:  # before Model.generate is wired: the loop itself
            from edgeship.generate import generate as loop

            def run(ids, **kw):
                return loop(m, ids, **kw).tokens[0]

        def gen(ids, n):
            return [int(t) for t in run(ids, max_new_tokens=n, eos_token_id=[])]

        cand = getattr(m, "candidate", None)
        threads_now = m.session.get_session_options().intra_op_num_threads
        return gen, (f"edgeship {m.variant} on {m.runtime}" + (f" ({cand.id})" if cand is not None else "")
                     + f", {threads_now} intra-op thread(s)")
    if kind == "edgeship-genai":
        from b9_genai import open_genai

        import edgeship

        m = edgeship.load(path, target="cpu", variant=variant)
        g = open_genai(m)  # parity-gated against edgeship's own loop on the golden prompts

        def gen(ids, n):
            return g.generate(ids, max_new_tokens=n, eos_token_id=[])

        import onnxruntime_genai as og

        return gen, f"edgeship {m.variant} on onnxruntime-genai {og.__version__} (b9_genai.py)"
    raise SystemExit(f"unknown engine kind {kind!r}")


def main() -> None:
    kind, path, prompt, new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    variant = sys.argv[5] if len(sys.argv) > 5 else "auto"
    threads = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6] != "0" else None
    ids = [int(t) for t in prompt.split(",")]
    t0 = time.perf_counter()
    gen, desc = open_engine(kind, path, variant, threads)
    t_load = time.perf_counter() - t0
    tokens = gen(ids, new)
    print("READY " + json.dumps({"desc": desc, "tokens": tokens, "load_s": t_load, "rss_kb": peak_rss_kb()}),
          flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "stop":
            print("STOP " + json.dumps({"rss_kb": peak_rss_kb()}), flush=True)
            return
        reps = int(arg)
        gen(ids, 1)  # untimed: the pool threads slept during the parent's pause
        t1, tn = [], []
        for _ in range(reps):
            a = time.perf_counter()
            gen(ids, 1)
            b = time.perf_counter()
            gen(ids, new)
            c = time.perf_counter()
            t1.append(b - a)
            tn.append(c - b)
        print("BLOCK " + json.dumps({"t1": t1, "tn": tn}), flush=True)


if __name__ == "__main__":
    main()
