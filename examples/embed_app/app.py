"""An app that embeds a bundle with only numpy and onnxruntime installed (no torch, no onnx).

    python app.py path/to/simplenet.edgeship
"""

import sys

import numpy as np

import edgeship


def main(bundle: str) -> None:
    model = edgeship.load(bundle, target="auto")
    print(model)
    feeds = {}
    for t in model.inputs:
        shape = [2 if isinstance(d, str) else d for d in t.shape]  # any size for named axes
        feeds[t.name] = np.ones(shape, dtype=t.dtype)
    for name, value in model(feeds).items():
        print(f"{name}: {value.dtype}{list(value.shape)} first values {value.ravel()[:4]}")
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../simplenet/simplenet.edgeship")
