"""The generation gate (edgeship.parity.generation): teacher-forced agreement and log-prob delta,
on small numpy logits functions whose answers are known by construction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeship.errors import SpecError
from edgeship.parity.generation import (
    DEFAULT_GENERATION_TOLERANCES,
    GenerationTolerance,
    GoldenSequence,
    configured_tolerance,
    log_softmax,
    recorded_tolerance,
    teacher_forced,
)

VOCAB = 11


def bigram(table: np.ndarray):
    """A logits function whose logits at position p depend on the token at p only."""
    def fn(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert ids.dtype == np.int64 and mask.shape == ids.shape and mask.all()
        return table[ids].astype(np.float32)
    return fn


def greedy(table: np.ndarray, prompt: list[int], steps: int, label: str = "") -> GoldenSequence:
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(np.argmax(table[ids[-1]])))
    return GoldenSequence(np.array(ids), len(prompt), label)


@pytest.fixture
def table() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((VOCAB, VOCAB)) * 3


def test_identical_model_agrees_everywhere(table):
    seqs = [greedy(table, [1, 2, 3], 6, "a"), greedy(table, [4], 9, "b")]
    rep = teacher_forced(seqs, bigram(table), bigram(table), variant="fp32", precision="fp32")
    assert rep.passed and rep.agreement == 1.0 and rep.min_agreement == 1.0
    assert rep.positions == 15 and [s.positions for s in rep.sequences] == [6, 9]
    assert rep.max_logprob_delta == 0.0 and rep.sequences[0].first_mismatch is None


def test_disagreement_counted_at_the_changed_positions(table):
    seq = greedy(table, [1, 2], 8, "s")
    cont = seq.continuation
    # the candidate prefers another token wherever the current token is the one before cont[3]
    flipped = table.copy()
    prev = seq.ids[seq.prompt_len - 1 + 3]
    other = (cont[3] + 1) % VOCAB
    flipped[prev, other] = table[prev].max() + 5
    rep = teacher_forced([seq], bigram(flipped), bigram(table), precision="int4")
    # expected: the positions whose previous token is `prev` disagree, the others agree
    predicted_from = seq.ids[seq.prompt_len - 1:-1]
    expect_miss = predicted_from == prev
    s = rep.sequences[0]
    assert s.agreed == int((~expect_miss).sum()) and s.positions == len(cont)
    assert s.first_mismatch == int(np.flatnonzero(expect_miss)[0])
    # the log-prob delta is the reference token's, computed independently here
    ref = log_softmax(table[predicted_from])[np.arange(len(cont)), cont]
    cand = log_softmax(flipped[predicted_from])[np.arange(len(cont)), cont]
    assert s.max_logprob_delta == pytest.approx(np.abs(cand - ref).max())
    assert s.mean_logprob_delta == pytest.approx(np.abs(cand - ref).mean())
    assert rep.passed == (s.agreement >= 0.9)


def test_threshold_and_logprob_gate(table):
    seq = greedy(table, [0], 10)
    noisy = table + np.random.default_rng(1).standard_normal(table.shape) * 0.01
    rep = teacher_forced([seq], bigram(noisy), bigram(table), GenerationTolerance(min_agreement=0.9))
    assert rep.agreement == 1.0 and rep.passed and 0 < rep.mean_logprob_delta < 0.05
    strict = teacher_forced([seq], bigram(noisy), bigram(table),
                            GenerationTolerance(min_agreement=0.9, max_logprob_delta=rep.mean_logprob_delta / 2))
    assert not strict.passed and "log-prob delta" in strict.reason
    uniform = teacher_forced([seq], bigram(np.zeros_like(table) + np.eye(VOCAB)[::-1]), bigram(table))
    assert not uniform.passed and "agreement" in uniform.reason
    d = rep.to_dict()
    assert d["agreement"] == 1.0 and d["tolerance"] == {"min_agreement": 0.9} and len(d["sequences"]) == 1


def test_precomputed_reference_logits(table):
    seq = greedy(table, [3, 3], 5)
    ref = [table[seq.ids][None].astype(np.float32)]
    a = teacher_forced([seq], bigram(table * 1.5), ref)
    b = teacher_forced([seq], bigram(table * 1.5), bigram(table))
    assert a.to_dict() == b.to_dict() and a.mean_logprob_delta > 0
    # one row per generated token, as generate(output_logits=True) gives: the same figures
    steps = [table[seq.ids[seq.prompt_len - 1:-1]].astype(np.float32)]
    assert teacher_forced([seq], bigram(table * 1.5), steps).to_dict() == a.to_dict()


def test_log_softmax_is_stable():
    x = np.array([[1e4, 1e4 - 1.0, -1e4], [0.0, 0.0, 0.0]], dtype=np.float32)
    out = log_softmax(x)
    assert np.all(np.isfinite(out))
    assert out[0, 0] == pytest.approx(-np.log1p(np.exp(-1.0)))
    assert out[1] == pytest.approx(np.full(3, -np.log(3.0)))


def test_defaults_documented():
    assert DEFAULT_GENERATION_TOLERANCES["int4"].min_agreement == 0.9
    assert DEFAULT_GENERATION_TOLERANCES["int8"].min_agreement == 0.9
    assert DEFAULT_GENERATION_TOLERANCES["fp32"].min_agreement == 1.0


def test_errors(table):
    seq = greedy(table, [1], 4, "x")
    with pytest.raises(SpecError, match="at least one golden sequence"):
        teacher_forced([], bigram(table), bigram(table))
    with pytest.raises(SpecError, match="leaves no continuation"):
        GoldenSequence(np.array([1, 2]), 2)
    with pytest.raises(SpecError, match="1-D integer"):
        GoldenSequence(np.array([[1, 2]]), 1)
    with pytest.raises(SpecError, match=r"must return \[1, 5, vocab\]"):
        teacher_forced([seq], lambda ids, m: table[ids][0], bigram(table))
    with pytest.raises(SpecError, match="NaN or Inf"):
        teacher_forced([seq], lambda ids, m: table[ids] * np.nan, bigram(table))
    with pytest.raises(SpecError, match="differ in shape"):
        teacher_forced([seq], bigram(table), [np.zeros((5, VOCAB + 1))])
    with pytest.raises(SpecError, match="reference logits hold NaN"):
        teacher_forced([seq], bigram(table), [np.full((4, VOCAB), np.inf)])
    with pytest.raises(SpecError, match="2 reference logits for 1"):
        teacher_forced([seq], bigram(table), [np.zeros((5, VOCAB))] * 2)
    with pytest.raises(SpecError, match="min_agreement must be in"):
        teacher_forced([seq], bigram(table), bigram(table), GenerationTolerance(min_agreement=1.5))


def test_module_is_numpy_only():
    code = ("import sys, edgeship.parity.generation; "
            "bad = [m for m in ('torch', 'transformers', 'onnxruntime', 'onnx') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("criteria, expected", [
    ({"min_agreement": 0.5}, GenerationTolerance(0.5)),
    ({"min_agreement": 0.8, "max_logprob_delta": 0.2}, GenerationTolerance(0.8, 0.2)),
    ({"min_cosine": 0.98}, DEFAULT_GENERATION_TOLERANCES["int4"]),  # a logits tolerance without generation keys
    ({"min_agreement": 1.5}, DEFAULT_GENERATION_TOLERANCES["int4"]),
    ({"min_agreement": True}, DEFAULT_GENERATION_TOLERANCES["int4"]),
    ({"min_agreement": "0.1"}, DEFAULT_GENERATION_TOLERANCES["int4"]),
    ({"min_agreement": 0.5, "max_logprob_delta": -1}, DEFAULT_GENERATION_TOLERANCES["int4"]),
    ({"min_agreement": 0.5, "max_logprob_delta": float("nan")}, DEFAULT_GENERATION_TOLERANCES["int4"]),
    ([], DEFAULT_GENERATION_TOLERANCES["int4"]),
    (None, DEFAULT_GENERATION_TOLERANCES["int4"]),
])
def test_recorded_tolerance_is_validated(criteria, expected):
    """What check reads from a (possibly crafted) manifest: finite numbers in range, else the default."""
    assert recorded_tolerance(criteria, "int4") == expected


def test_configured_tolerance_takes_the_tolerance_overrides():
    from edgeship.parity.tolerances import Tolerances

    tols = Tolerances.from_dict({"int4": {"min_agreement": 0.8}, "int8/generation": {"max_logprob_delta": 0.1}})
    assert configured_tolerance(tols.get("int4", "generation"), "int4") == GenerationTolerance(0.8)
    assert configured_tolerance(tols.get("int8", "generation"), "int8") == GenerationTolerance(0.9, 0.1)
    assert configured_tolerance(tols.get("fp16", "generation"), "fp16") == DEFAULT_GENERATION_TOLERANCES["fp16"]
    with pytest.raises(SpecError, match="out of range"):
        Tolerances.from_dict({"int4": {"min_agreement": 1.2}})
