"""A small CNN trained on scikit-learn's digits (8x8 images, shipped with the package), then
exported with static int8 calibrated on training images; held-out top-1 of fp32 and int8.

    python train.py [--out DIR]      # trains, exports DIR/digits.edgeship, prints both accuracies
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import DigitsCNN  # noqa: E402


def data():
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    return train_test_split(x, d.target.astype(np.int64), test_size=0.25, random_state=0, stratify=d.target)


def train(x, y, epochs: int) -> DigitsCNN:
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        if epoch % 5 == 0:
            print(f"epoch {epoch:2d}/{epochs}  loss {loss.item():.4f}")
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = data()
    model = train(x_train, y_train, args.epochs)
    torch.save(model.state_dict(), args.out / "digits_state.pt")
    np.savez(args.out / "calibration.npz", x=x_train[:256])           # [N, 1, 8, 8]: split into batch-1 samples
    np.savez(args.out / "example.npz", x=x_test[:32])                  # real golden inputs for parity
    bundle = args.out / "digits.edgeship"
    cmd = [sys.executable, "-m", "edgeship", "export", str(args.out / "digits_state.pt"),
           "--arch", f"{HERE / 'model.py'}:DigitsCNN", "--example-inputs", str(args.out / "example.npz"),
           "--dynamic-batch", "--quantize", "fp32,static", "--calibration", str(args.out / "calibration.npz"),
           "-o", str(bundle)]
    subprocess.run(cmd, check=True)

    import edgeship

    accs = {}
    for variant in ("fp32", "int8_static"):
        m = edgeship.load(bundle, variant=variant)
        accs[variant] = float(np.mean(m(x_test).argmax(1) == y_test))
    with torch.no_grad():
        eager = float(np.mean(model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test))
    print(f"held-out top-1 ({len(y_test)} images): eager {eager:.4f}, fp32 {accs['fp32']:.4f}, "
          f"int8_static {accs['int8_static']:.4f} (drop {100 * (accs['fp32'] - accs['int8_static']):.2f} points)")


if __name__ == "__main__":
    main()
