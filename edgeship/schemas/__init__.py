"""The JSON Schemas (draft 2020-12) of every JSON document edgeship writes, shipped in the package.

- ``manifest``: ``manifest.json`` in a bundle, written by ``export`` (rewritten by ``tune``);
- ``report``: ``report.json`` in a bundle, written by ``export``;
- ``parity``: the parity report of ``check``, ``compare`` and ``export --json``;
- ``profile``: ``profile --json``, read back by ``profile --baseline``;
- ``inspect``: ``inspect --json``.

Every document names its format in two keys: ``"schema": "edgeship.<name>/<N>"`` and
``"schema_version": N``. N is the major version: adding an optional key keeps it, and readers
must ignore keys they do not know (the schemas allow them); removing or renaming a key, changing
its type or what a value means bumps it, and a reader that finds a version newer than it knows
refuses the document (:func:`check_version`). A document without ``schema_version`` was written
before it existed and reads as version 1.

Validate with any JSON Schema validator (jsonschema is not a dependency of edgeship)::

    import json, jsonschema
    from edgeship import schemas
    jsonschema.validate(json.load(open("b.edgeship/manifest.json")), schemas.load("manifest"))

Nothing here imports more than the standard library and :mod:`edgeship.errors`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from edgeship.errors import EdgeshipError, SpecError

NAMES = ("manifest", "report", "parity", "profile", "inspect")
VERSIONS = {"manifest": 1, "report": 1, "parity": 1, "profile": 1, "inspect": 1}  # the major version each writes
WRITERS = {"manifest": "`edgeship export` (or `edgeship tune`)", "report": "`edgeship export`",
           "parity": "`edgeship check --json`", "profile": "`edgeship profile --json`",
           "inspect": "`edgeship inspect --json`"}
PREFIX = "edgeship."
MAX_VERSION_DIGITS = 9  # a version number longer than this is not one edgeship wrote


def _known(name: str) -> str:
    if name not in VERSIONS:
        raise SpecError(f"no edgeship schema named {name!r}; the schemas are {', '.join(NAMES)}.")
    return name


def tag(name: str) -> str:
    """The ``schema`` value of a document of this edgeship, ``edgeship.profile/1``."""
    return f"{PREFIX}{_known(name)}/{VERSIONS[name]}"


def header(name: str) -> dict:
    """The two keys every document starts with: ``{"schema": "edgeship.<name>/N", "schema_version": N}``."""
    return {"schema": tag(name), "schema_version": VERSIONS[_known(name)]}


def path(name: str) -> Path:
    """The schema file of document ``name`` (``edgeship/schemas/<name>.json`` in the installed package)."""
    return Path(str(resources.files(__name__).joinpath(f"{_known(name)}.json")))


def load(name: str) -> dict:
    """The JSON Schema of document ``name`` (one of :data:`NAMES`), parsed."""
    return json.loads(resources.files(__name__).joinpath(f"{_known(name)}.json").read_text(encoding="utf-8"))


def _version() -> str:
    import edgeship

    return edgeship.__version__


def check_version(doc: object, name: str, where: str, error: type[EdgeshipError] = SpecError) -> int:
    """The major version of a document edgeship wrote, once a reader of this edgeship may read it.

    ``schema_version`` decides; without it, the number in ``schema`` (``edgeship.profile/1``); without
    either, 1 (files written before the keys existed). ``where`` names the document in messages.

    Raises:
        ``error``: not a JSON object, a ``schema`` naming another kind of document, a malformed
            version, or one newer than this edgeship reads.
    """
    known = VERSIONS[_known(name)]
    if not isinstance(doc, dict):
        raise error(f"{where}: expected an edgeship {name} document (a JSON object), found {type(doc).__name__}; "
                    f"pass a file written by {WRITERS[name]}.")
    schema = doc.get("schema")
    kind, _, number = schema.partition("/") if isinstance(schema, str) else ("", "", "")
    if isinstance(schema, str) and kind != PREFIX + name:
        raise error(f"{where}: its schema is {schema[:60]!r}, not an edgeship {name} document ({tag(name)}); "
                    f"pass a file written by {WRITERS[name]}.")
    if "schema_version" in doc:  # it decides: the number in ``schema`` is not even read
        version = doc["schema_version"]
    elif number.isascii() and number.isdigit():
        if len(number) > MAX_VERSION_DIGITS:  # int() of thousands of digits raises; no real version is that long
            raise error(f"{where}: its schema names a version {len(number)} digits long ({str(schema)[:40]!r}...); the file "
                        f"is damaged or was not written by edgeship. Write it again with {WRITERS[name]}.")
        version = int(number)
    else:
        version = 1
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{where}: schema_version {repr(version)[:60]} is not a whole number from 1 up; the file is damaged or "
                    f"was not written by edgeship. Write it again with {WRITERS[name]}.")
    if version > known:
        raise error(f"{where}: schema_version {version} of the {name} format is newer than this edgeship "
                    f"{_version()} reads (up to {known}); upgrade edgeship (pip install -U edgeship), or write "
                    f"the file again with this one's {WRITERS[name]}.")
    return version
