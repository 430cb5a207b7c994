"""An embedded runner over its life, on either runtime: the call an ``edgeship.Model`` makes
(:func:`checked_run`), the model bytes dropped once the session is open
(:func:`release_model_bytes`), and calls refused in a fork()ed child where they would hang
(:func:`hangs_after_fork`, :func:`guard_after_fork`). Torch-free; :mod:`edgeship.model` uses it.

fork(): ``os.register_at_fork`` swaps the call of each guarded owner in the child (no call pays
for a check); the reasons and measurements are in ``edgeship.Model``'s docstring and
tests/test_fork.py.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

from edgeship.errors import InferenceError
from edgeship.runtimes.ort import OrtRunner


def checked_run(runner: Any) -> Any:
    """``run(output_names, feeds, run_options)`` for feeds already checked against the spec.

    On onnxruntime this is the session's native ``run`` (``InferenceSession._sess``), without the
    Python wrapper's second check of the feed names (ours is stricter: names, dtypes, ranks, fixed
    sizes) and its provider fallback (turned off here: a CUDA target must not silently become CPU).
    Measured on SimpleNet: 3.0 µs a call vs 3.7 µs through ``InferenceSession.run``. Where a
    future onnxruntime has no ``_sess`` the public ``run`` is used."""
    if isinstance(runner, OrtRunner):
        native = getattr(runner.session, "_sess", None)
        if native is not None and callable(getattr(native, "run", None)):
            return native.run
        public = runner.session.run
    else:
        public = runner.run
    return lambda names, feeds, _options=None: public(names, feeds)


def release_model_bytes(runner: Any) -> None:
    """Drop every reference to the model's bytes once the session is open: the runner's, and
    the one onnxruntime's Python ``InferenceSession`` keeps (``_model_bytes``) only to re-create
    the session when it falls back to another provider after a failure, a fallback edgeship
    turns off anyway (a CUDA target must not silently become CPU). Measured on a 64 MiB fp32 model
    (4 MatMul 2048×2048): RSS after load 237 MiB before this, 157 MiB after (a raw session opened
    from the file path: 168 MiB); the peak while opening stays 245 MiB, since onnxruntime copies
    the weights out of the bytes while they are still alive."""
    runner.model = None
    session: Any = getattr(runner, "session", None)
    if getattr(session, "_model_bytes", None) is not None:
        session.disable_fallback()
        session._model_bytes = None


def hangs_after_fork(runner: Any) -> bool:
    """Whether a call in a fork()ed child would wait forever: onnxruntime's parallel execution mode
    (``inter_op_threads``) with other than one inter-op thread; its pool's threads do not survive
    fork (measured, onnxruntime 1.32: 7 of 7 such calls hung; the sequential mode runs)."""
    if not isinstance(runner, OrtRunner):
        return False
    so = runner.session.get_session_options()
    return str(so.execution_mode).endswith("ORT_PARALLEL") and so.inter_op_num_threads != 1


def refuse_after_fork(names: Any, feeds: Any, options: Any = None) -> NoReturn:
    """The call of a Model that :func:`hangs_after_fork`, in a fork()ed child.

    Raises:
        InferenceError: always, saying to load the model after fork.
    """
    raise InferenceError("this Model runs onnxruntime's parallel execution mode (inter_op_threads), whose threads "
                         "do not survive fork(): a call in this fork()ed process would hang. Load the model after "
                         "fork (gunicorn: no --preload, or load in post_fork; multiprocessing: 'spawn' or 'forkserver').")


# owner -> what to do to it in a fork()ed child; weak: a guarded owner is freed as if unguarded
_guarded: weakref.WeakKeyDictionary[Any, Callable[[Any], None]] = weakref.WeakKeyDictionary()


def guard_after_fork(owner: Any, in_child: Callable[[Any], None]) -> None:
    """Call ``in_child(owner)`` in every fork()ed child of this process while ``owner`` lives and is
    not :func:`unguard`-ed (``in_child`` must not hold ``owner``: it would never be freed)."""
    _guarded[owner] = in_child


def unguard(owner: Any) -> None:
    """Stop guarding ``owner`` (it was closed); nothing happens when it was not guarded."""
    _guarded.pop(owner, None)


def after_fork_in_child() -> None:
    """The ``os.register_at_fork`` hook: each guarded owner's ``in_child``."""
    for owner, in_child in list(_guarded.items()):
        in_child(owner)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=after_fork_in_child)
