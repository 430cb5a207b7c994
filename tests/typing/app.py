"""An app embedding edgeship, as the README shows it, type-checked with ``mypy --strict`` by
tests/test_typing.py (never run: it needs no bundle). Every line here must check without an
ignore, and the names the app sees must be edgeship's own types, not Any."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

import edgeship
from edgeship import EdgeshipError, Model, SpecError

log = logging.getLogger(__name__)


def batch_shape(m: edgeship.Model, x: npt.NDArray[np.float32]) -> tuple[int, ...]:
    log.info("%s", m(x).shape)                 # positional arrays: the output array (README)
    y: npt.NDArray[np.float32] = m(x)          # typed Any (one array, or a tuple of them): say which
    return y.shape


def two_outputs(m: Model, x: npt.NDArray[np.float32]) -> int:
    logits, features = m(x)                    # a model with two outputs gives a tuple
    a: npt.NDArray[np.float32] = logits
    b: npt.NDArray[np.float32] = features
    return a.size + b.size


def by_name(m: Model, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    d = m({"x": x})                            # a dict in, outputs by name out
    k = m(x=x)                                 # inputs by keyword: the same
    feeds: dict[str, npt.NDArray[np.float32]] = {"x": x}
    r = m.run(feeds)
    first: npt.NDArray[np.float32] = d[m.outputs[0].name]
    return {"first": first, **k, **r}


def describe(m: Model) -> str:
    names = [t.name for t in m.inputs] + [t.name for t in m.outputs]
    shapes = [t.shape for t in m.inputs]
    providers: list[str] = m.providers
    skipped: tuple[str, ...] = m.skipped
    name: str = m.manifest["name"]
    return (f"{name} {m.variant} {m.precision} {m.target} {m.runtime} {m.candidate.id} "
            f"{names} {shapes} {providers} {skipped}")


def serve(bundle: str | Path, batch: int = 4) -> tuple[int, ...] | None:
    x = np.ones((batch, 10), np.float32)
    try:
        with edgeship.load(bundle, target="auto", variant="auto", threads=1) as m:
            log.info("%s", describe(m))
            y = m(x)
            two = m(x, x) if len(m.inputs) == 2 else None   # several inputs, positionally
            if two is not None:
                log.info("%s", two)
            by_name(m, x)
            shape: tuple[int, ...] = y.shape
            return shape
    except SpecError as e:                     # the feeds do not fit the model's inputs
        log.error("bad input: %s", e)
    except EdgeshipError as e:                 # a missing or tampered bundle, no such target, ...
        log.error("cannot serve %s: %s", bundle, e)
    return None


def load_from_memory(data: bytes) -> Model:
    return edgeship.load(data, runtime="onnxruntime", provider_options={"arena_extend_strategy": "kSameAsRequested"})


if __name__ == "__main__":
    serve("simplenet.edgeship")
