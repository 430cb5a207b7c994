"""benchmarks/bench_b9.py's helpers (no anchor venvs, no timing): the decode rate, dropped rounds,
sizes, the report's ratios and verdicts, the pinned requirements, the prompt."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_b9  # noqa: E402


def test_decode_rate_counts_the_tokens_after_the_first():
    # 1 new token in 10 ms, 101 in 110 ms: 100 decode tokens in 100 ms
    assert bench_b9.decode_rate(0.010, 0.110, 101) == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        bench_b9.decode_rate(0.2, 0.1, 101)  # a disturbed pair: the longer run took less time
    with pytest.raises(ValueError):
        bench_b9.decode_rate(0.1, 0.2, 1)


def test_a_round_is_dropped_only_when_every_engine_was_slow_at_once():
    rounds = [{"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, {"a": 1.3, "b": 2.6}, {"a": 1.3, "b": 2.0},
              {"a": 1.0, "b": 2.0}]
    assert bench_b9.kept_rounds(rounds) == [0, 1, 3, 4]
    assert bench_b9.kept_rounds([]) == []


def test_sizes_count_the_model_files(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"x" * 10)
    (tmp_path / "m" / "model.onnx.data").write_bytes(b"x" * 100)
    (tmp_path / "m" / "tokenizer.json").write_bytes(b"x" * 1000)
    assert bench_b9.model_bytes(tmp_path / "m") == 110
    assert bench_b9.tree_bytes(tmp_path / "m") == 1110
    assert bench_b9.tree_bytes(tmp_path / "m" / "model.onnx") == 10
    assert bench_b9.model_bytes(tmp_path / "m" / "model.onnx.data") == 100


def engine(tok_s: float, ok: bool = True, precision: str = "fp32") -> dict:
    return {"desc": "d", "precision": precision, "tokens_ok": ok, "agree": 1.0 if ok else 0.5, "tok_s": tok_s,
            "prefill_ms": 5.0, "size_mib": 1.0, "disk_mib": 2.0, "rss_mib": 50.0, "load_s": 0.1}


def test_rows_give_edgeship_over_each_anchor_and_gate_on_tokens():
    res = {"prompt": 64, "engines": {"edgeship": engine(600), "optimum": engine(300), "genai fp32": engine(1200)}}
    rows = bench_b9.rows(res)
    b9 = [r for r in rows if r.startswith("| B9 |")]
    assert len(b9) == 2
    assert "| 2.000 | ≥ 1.0 | pass |" in b9[0] and "÷ optimum" in b9[0]
    assert "| 0.500 | ≥ 1.0 | **FAIL** |" in b9[1] and "÷ genai fp32" in b9[1]
    # faster but with other tokens than transformers: not a pass
    res["engines"]["edgeship"] = engine(6000, ok=False)
    assert all("**FAIL**" in r for r in bench_b9.rows(res) if r.startswith("| B9 |"))


def test_anchor_requirements_are_pinned_and_torch_is_the_cpu_build():
    for path in bench_b9.REQUIREMENTS.values():
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines and all("==" in ln for ln in lines), path
        assert "torch==2.13.0+cpu" in lines, path
    assert any(ln.startswith("transformers==4.57") for ln in bench_b9.REQUIREMENTS["optimum"].read_text().splitlines())


def test_prompt_is_the_requested_number_of_the_tokenizers_ids(tmp_path):
    pytest.importorskip("transformers")
    tok = bench_b9.build_tokenizer(400)
    tok.save_pretrained(tmp_path)
    ids = bench_b9.prompt_ids(tmp_path, 16)
    assert len(ids) == 16 and all(0 <= i < len(tok) for i in ids)
    assert ids == bench_b9.prompt_ids(tmp_path, 16)
    with pytest.raises(ValueError, match="fewer than"):
        bench_b9.prompt_ids(tmp_path, 10 ** 6)
