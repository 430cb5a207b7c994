import numpy as np
import pytest

from edgeship.errors import SpecError
from edgeship.spec import (
    IOSpec,
    TensorSpec,
    apply_dynamic,
    parse_dynamic,
    parse_input,
    validate_feeds,
)


def test_parse_input_shapes_and_dtypes():
    assert parse_input("x:1x3x224x224") == TensorSpec("x", "float32", (1, 3, 224, 224))
    assert parse_input("ids:1x128:int64") == TensorSpec("ids", "int64", (1, 128))
    assert parse_input("s:scalar:float32").shape == ()


@pytest.mark.parametrize("text, match", [
    ("x", "NAME:SHAPE"), ("x:", "NAME:SHAPE"), ("x:1xax3", "positive integer"),
    ("x:0x3", "positive integer"), ("x:1x3:complex7", "unsupported dtype"), ("1x:2", "not valid"),
])
def test_parse_input_errors_show_the_syntax(text, match):
    with pytest.raises(SpecError, match=match):
        parse_input(text)


def test_parse_dynamic():
    assert parse_dynamic("ids:1=seq") == ("ids", 1, "seq")
    assert parse_dynamic("x:0") == ("x", 0, "x_dim0")
    with pytest.raises(SpecError, match="NAME:AXIS"):
        parse_dynamic("ids=seq")


def test_apply_dynamic_marks_axes_and_names_bad_ones():
    specs = (TensorSpec("a", "float32", (1, 4)), TensorSpec("b", "int64", (1, 7)))
    out = apply_dynamic(specs, ["b:1=seq"], dynamic_batch=True)
    assert out[0].shape == ("batch", 4) and out[1].shape == ("batch", "seq")
    with pytest.raises(SpecError, match="model's inputs are a, b"):
        apply_dynamic(specs, ["c:0"], False)
    with pytest.raises(SpecError, match="rank 2"):
        apply_dynamic(specs, ["a:5"], False)


def test_validate_feeds_messages_name_input_expected_and_given():
    specs = (TensorSpec("x", "float32", ("batch", 3)),)
    validate_feeds(specs, {"x": np.zeros((5, 3), np.float32)})
    with pytest.raises(SpecError, match=r"'x' expects dtype float32, got float64"):
        validate_feeds(specs, {"x": np.zeros((1, 3))})
    with pytest.raises(SpecError, match=r"'x' expects shape \[batch, 3\], got \[1, 4\]"):
        validate_feeds(specs, {"x": np.zeros((1, 4), np.float32)})
    with pytest.raises(SpecError, match=r"expects shape .* got \[3\]"):
        validate_feeds(specs, {"x": np.zeros((3,), np.float32)})
    with pytest.raises(SpecError, match=r"\(missing x; unexpected y\)"):
        validate_feeds(specs, {"y": np.zeros((1, 3), np.float32)})
    with pytest.raises(SpecError, match="must be a numpy.ndarray"):
        validate_feeds(specs, {"x": [[1.0, 2.0, 3.0]]})


def test_iospec_round_trip():
    spec = IOSpec((TensorSpec("x", "float32", ("batch", 3)),), (TensorSpec("y", "float32", ("batch", 1)),))
    assert IOSpec.from_dict(spec.to_dict()) == spec
