"""Hostile inputs, round two (issue 10, items 1, 2, 4): no file written or read behind the user's back.

Each case: exit 2 with a message naming what was refused, no marker file, the output path untouched.
"""


import torch
from hostile_helpers import assert_untouched, snapshot

# ----------------------------------------------------------------------------- item 1


def _evil_pt2(tmp_path, victim):
    """A pickle-free .pt2 whose graph maps ``victim`` with aten.from_file(shared=True) and fills it."""

    class M(torch.nn.Module):
        def forward(self, x):
            return x + torch.empty(4).fill_(1.0) * 0

    ep = torch.export.export(M(), (torch.randn(4),))
    for n in ep.graph.nodes:
        if n.op == "call_function" and n.target == torch.ops.aten.empty.memory_format:
            n.target, n.args = torch.ops.aten.from_file.default, (str(victim), True, 4)
            n.kwargs = {"dtype": torch.float32, "device": torch.device("cpu"), "pin_memory": False}
        elif n.op == "call_function" and "fill" in str(n.target):
            n.target = torch.ops.aten.fill_.Scalar  # in place: writes through the shared mapping
    ep.graph_module.recompile()
    path = tmp_path / "evil.pt2"
    torch.export.save(ep, path)
    return path


def test_exported_program_with_file_ops_is_refused(tmp_path, cli, mlp_bundle):
    victim = tmp_path / "victim.bin"
    path = _evil_pt2(tmp_path, victim)
    out = tmp_path / "evil.edgeship"
    code, msg = cli("export", path, "--input", "x:4", "-o", out)
    assert not victim.exists(), "the graph wrote a file"
    assert code == 2, msg
    assert "aten.from_file.default" in msg and "--trust-ops" in msg and "Traceback" not in msg
    assert_untouched(out, {})
    before = snapshot(mlp_bundle)
    code, msg = cli("check", mlp_bundle, "--against", path)  # the eager reference of check --against
    assert code == 2 and "aten.from_file.default" in msg, msg
    assert not victim.exists()
    assert snapshot(mlp_bundle) == before


def test_exported_program_of_plain_ops_still_loads(files):
    from edgeship.exporters.loading import load_model

    loaded = load_model(files["dir"] / "mlp_ep.pt2")
    assert loaded.module is not None
