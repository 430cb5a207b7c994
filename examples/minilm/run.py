"""Export all-MiniLM-L6-v2 with dynamic batch and sequence axes, then compare fp32 and int8.

    python run.py [--out DIR]

Prints the min cosine between fp32 and int8 embeddings of a few dozen sentences, whether
nearest-neighbour retrieval gives the same results, and the latency of both on this CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import SentenceEncoder, tokenizer  # noqa: E402

SENTENCES = [
    "The cat sits on the mat.", "A dog is playing in the park.", "Stock markets fell sharply today.",
    "The central bank raised interest rates.", "I love eating fresh strawberries in summer.",
    "Fruit salad is a healthy dessert.", "The new phone has an excellent camera.",
    "This smartphone takes great photos.", "Rain is expected tomorrow afternoon.",
    "The weather forecast predicts showers.", "She is learning to play the violin.",
    "He practices piano every evening.", "The train to Berlin was delayed by an hour.",
    "Our flight was cancelled due to fog.", "Python is a popular programming language.",
    "Many developers write code in Rust.", "The museum opens at nine in the morning.",
    "The gallery exhibits modern paintings.", "A kitten is sleeping on the sofa.",
    "Two puppies chase a ball across the grass.", "Inflation reached its highest level in years.",
    "Prices of groceries keep going up.", "The football match ended in a draw.",
    "The team won the championship last night.", "Drink plenty of water when it is hot.",
    "Staying hydrated is important in summer.", "The laptop battery lasts ten hours.",
    "This notebook computer is light and fast.", "He planted tomatoes in the garden.",
    "Vegetables grow well in sunny soil.", "The lecture covered quantum mechanics.",
    "Physics students studied particle behaviour.", "Please close the window, it is cold.",
    "It is freezing in this room.", "The bakery sells fresh bread every morning.",
    "Croissants are best straight from the oven.", "A storm knocked down power lines.",
    "Thousands of homes lost electricity overnight.", "The novel was translated into twelve languages.",
    "Her book became an international bestseller.",
]


def encode(tok, sentences, max_length=48):
    enc = tok(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def p50_ms(fn, repeats=30):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = SentenceEncoder(pretrained=True).eval()
    torch.save(model.state_dict(), args.out / "minilm_state.pt")
    tok = tokenizer()
    np.savez(args.out / "example.npz", **encode(tok, SENTENCES[:16]))  # real golden inputs
    bundle = args.out / "minilm.edgeship"
    names = ("input_ids", "attention_mask", "token_type_ids")
    cmd = [sys.executable, "-m", "edgeship", "export", str(args.out / "minilm_state.pt"),
           "--arch", f"{HERE / 'model.py'}:SentenceEncoder", "--example-inputs", str(args.out / "example.npz"),
           "--dynamic-batch", *[a for n in names for a in ("--dynamic", f"{n}:1")],  # no symbol names: tied by edgeship
           "--output-names", "embedding", "--quantize", "fp32,dynamic", "--no-torchscript", "-o", str(bundle)]
    subprocess.run(cmd, check=True)

    import edgeship

    feeds = encode(tok, SENTENCES)
    fp32 = edgeship.load(bundle, variant="fp32")
    int8 = edgeship.load(bundle, variant="int8_dynamic")
    e32, e8 = fp32(feeds)["embedding"], int8(feeds)["embedding"]
    with torch.no_grad():
        eager = model(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    cos = np.sum(e32 * e8, axis=1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1))

    def similarities(e):
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        return sims

    s32, s8 = similarities(e32), similarities(e8)
    nn32, nn8 = s32.argmax(1), s8.argmax(1)
    same = np.mean(nn32 == nn8)
    in_top3 = np.mean([nn32[i] in np.argsort(-s8[i])[:3] for i in range(len(SENTENCES))])
    margins = [s32[i, nn32[i]] - s32[i, nn8[i]] for i in range(len(SENTENCES)) if nn32[i] != nn8[i]]
    batch = encode(tok, SENTENCES[:8])
    t32, t8 = p50_ms(lambda: fp32(batch)), p50_ms(lambda: int8(batch))
    print(f"fp32 ONNX vs eager: max abs {np.abs(e32 - eager).max():.2e}")
    print(f"int8 vs fp32 on {len(SENTENCES)} sentences: min cosine {cos.min():.5f}, mean {cos.mean():.5f}")
    print(f"nearest neighbour identical for {same:.0%} of sentences; fp32's neighbour in int8's top 3 for {in_top3:.0%}"
          + (f"; where they differ, fp32's own similarity margin was at most {max(margins):.3f}" if margins else ""))
    print(f"p50 batch 8: fp32 {t32:.2f} ms, int8 {t8:.2f} ms ({t32 / t8:.2f}x faster)")


if __name__ == "__main__":
    main()
