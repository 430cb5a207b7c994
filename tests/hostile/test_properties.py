"""Property tests (hypothesis): the input-spec parser, the manifest reader, the path check and the
bundle verifier either succeed or raise their EdgeshipError, never anything else."""

import json
import math
import os
import posixpath
import shutil

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgeship.bundle import check_relpath, open_bundle, parse_manifest, write_bundle
from edgeship.errors import BundleError, SpecError
from edgeship.spec import MAX_ELEMENTS, SUPPORTED_DTYPES, TensorSpec, check_name, parse_dynamic, parse_input

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,12}", fullmatch=True)
dims = st.lists(st.integers(1, 4096), min_size=1, max_size=5)
noise = st.text(st.characters(codec="utf-8"), max_size=40) | st.text("x:0123456789-=_ab²١", max_size=20)


@FAST
@given(noise)
def test_parse_input_accepts_or_raises_spec_error(text):
    try:
        spec = parse_input(text)
    except SpecError:
        return
    assert isinstance(spec, TensorSpec) and all(isinstance(d, int) and d > 0 for d in spec.shape)


@FAST
@given(names, dims, st.sampled_from(SUPPORTED_DTYPES), st.booleans())
def test_parse_input_round_trips(name, shape, dtype, explicit):
    text = f"{name}:{'x'.join(map(str, shape))}" + (f":{dtype}" if explicit else "")
    if math.prod(shape) > MAX_ELEMENTS:  # refused before anything is allocated
        with pytest.raises(SpecError, match="elements, over the"):
            parse_input(text)
        return
    assert parse_input(text) == TensorSpec(name, dtype if explicit else "float32", tuple(shape))


@FAST
@given(noise)
def test_parse_dynamic_accepts_or_raises_spec_error(text):
    try:
        name, axis, symbol = parse_dynamic(text)
    except SpecError:
        return
    assert check_name(name) == name and isinstance(axis, int) and symbol


@FAST
@given(names.filter(lambda n: "=" not in n and ":" not in n), st.integers(-8, 8),
       st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True))
def test_parse_dynamic_round_trips(name, axis, symbol):
    assert parse_dynamic(f"{name}:{axis}={symbol}") == (name, axis, symbol)


@FAST
@given(st.text(max_size=60) | st.sampled_from(["a/../b", "./a", "a//b", "C:/x", "~/x", "a\\b", "a\x00b", "/", "."]))
def test_accepted_paths_stay_inside_the_bundle(rel):
    try:
        check_relpath(rel)
    except BundleError:
        return
    root = "/bundle"
    joined = posixpath.normpath(posixpath.join(root, rel))
    assert joined.startswith(root + "/") and joined == posixpath.join(root, rel)  # one spelling per file
    assert not any(ord(c) < 32 for c in rel) and "\\" not in rel


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_manifest_accepts_or_raises_bundle_error(data):
    try:
        m = parse_manifest(data, "fuzz")
    except BundleError:
        return
    assert isinstance(m, dict) and m["schema_version"] == 1


@pytest.fixture(scope="module")
def real_manifest(mlp_bundle):
    return json.loads((mlp_bundle / "manifest.json").read_text())


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@FAST
@given(data=st.data())
def test_mutated_real_manifest_accepts_or_raises_bundle_error(real_manifest, data):
    m = json.loads(json.dumps(real_manifest))
    paths = [p for p in _paths(m) if p]
    path = data.draw(st.sampled_from(paths))
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    try:
        parse_manifest(json.dumps(m).encode(), "fuzz")
    except BundleError:
        pass


file_names = st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6}){0,2}\.(bin|txt)", fullmatch=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.dictionaries(file_names, st.binary(min_size=1, max_size=64), min_size=1, max_size=4),
       zipped=st.booleans(), data=st.data())
def test_written_bundles_verify_and_any_changed_byte_is_refused(tmp_path_factory, real_manifest, contents, zipped, data):
    """The verifier's round trip: what write_bundle writes opens; one flipped byte anywhere does not."""
    names = list(contents)
    assume(not any(a != b and b.startswith(a + "/") for a in names for b in names))  # a file is not a folder
    work = tmp_path_factory.mktemp("prop")
    src = work / "src"
    for rel, blob in contents.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(blob)
    rel0 = names[0]
    manifest = {k: v for k, v in real_manifest.items() if k not in ("schema_version", "files")}
    manifest["variants"] = {"fp32": {"file": rel0, "precision": "fp32"}}
    manifest.pop("candidates", None)  # they name the real bundle's variants
    manifest["defaults"] = {"cpu": "fp32"}
    manifest["golden"] = {"inputs": rel0, "outputs": rel0, "samples": []}
    out = work / ("b.edgeship.zip" if zipped else "b.edgeship")
    write_bundle(out, {rel: src / rel for rel in names}, manifest)
    b = open_bundle(out)
    assert {rel: b.read(rel) for rel in names} == contents
    victim = data.draw(st.sampled_from(names))
    if zipped:
        raw = bytearray(out.read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0xFF
        out.write_bytes(bytes(raw))
    else:
        f = out / victim
        raw = bytearray(f.read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 0xFF
        f.write_bytes(bytes(raw))
    try:
        b = open_bundle(out)
    except BundleError:
        pass
    else:  # a zip byte outside every member's data (e.g. a timestamp) changes no content
        assert zipped and {rel: b.read(rel) for rel in names} == contents
    shutil.rmtree(work) if os.path.isdir(work) else None
