"""The embedding API: ``edgeship.load(bundle) -> Model``. Imports numpy and onnxruntime only.

    import edgeship
    m = edgeship.load("simplenet.edgeship", target="cpu")   # or "cuda", "auto"
    y = m(x)                      # positional arrays -> array (or tuple for several outputs)
    d = m({"x": x})               # dict -> dict of outputs by name (also m(x=x), m.run({"x": x}))
    m.inputs, m.outputs, m.variant, m.precision, m.candidate, m.providers
    m.session                     # the onnxruntime.InferenceSession itself (public: IO binding, run options)

A bundle lists per target its candidates (runtime, variant, precision, runtime options, what each
needs of a host), fastest first. ``load`` takes the first this host can run: it skips a candidate
whose needs are unmet (its runtime is not installed, the CPU lacks the flags it needs, such as native
bf16 for OpenVINO's bf16, or the GPU provider is missing), and falls back to the next when one fails
to open, down to the fp32 variant on onnxruntime's defaults, which always runs; it says once which
it took and why (``Model.skipped`` keeps the reasons). ``EDGESHIP_CPU_MASK=avx512_bf16,amx_bf16``
treats those CPU flags as absent, to see what a device without them gets. Thread counts stored as
``cores/N`` are resolved for this host, and every count is capped at its usable cores.
``variant=`` and ``runtime=`` pin one.

The bundle is fully verified (every sha256, no unlisted, linked or escaping files) before
onnxruntime sees a byte, and the model is handed to onnxruntime from the verified bytes; the
opened model must then agree with the manifest's inputs and outputs. Feeds are checked for
names, dtypes (in native byte order), ranks and fixed sizes; their values are not scanned for
NaN/Inf (that would cost every call): NaN in, NaN out. ``edgeship check`` reports NaN/Inf.

A graph can run as long as it says (a Loop of 2^62 iterations fits in a few hundred bytes):
``load(..., timeout=s)`` bounds each call (``InferenceTimeout``); see :mod:`edgeship.runtimes.deadline`.
"""

from __future__ import annotations

import logging
import operator
import os
from typing import Any, TypeAlias, overload

import numpy as np

from edgeship.bundle.choose import open_candidate
from edgeship.bundle.manifest import Candidate
from edgeship.bundle.read import Bundle, identity, open_bundle
from edgeship.errors import BundleError, EdgeshipError, InferenceError, SpecError, brief
from edgeship.hf.preprocess import Preprocessor
from edgeship.host import resolve_threads
from edgeship.runtimes.deadline import check_seconds, timed
from edgeship.runtimes.lifecycle import checked_run, guard_after_fork, hangs_after_fork, refuse_after_fork, release_model_bytes, unguard
from edgeship.runtimes.ort import OrtRunner, bind_io, check_threads, resolve_target
from edgeship.runtimes.ort import session_options as ort_session_options
from edgeship.runtimes.registry import OPENVINO, ORT, runtime_name
from edgeship.spec import IOSpec, TensorSpec, format_shape, validate_feeds

log = logging.getLogger(__name__)


# What ``m(x, ...)`` returns: an ndarray, or a tuple of them for a model with several outputs. How
# many is the bundle's, which no type checker can know, so it is typed Any (``m(x).shape`` checks);
# ``m({...})``, ``m(name=x)`` and ``m.run(feeds)`` are typed precisely, as dict[str, np.ndarray].
ArrayOrArrays: TypeAlias = Any


def _fast_path(checks: list, out_names: list[str]) -> tuple | None:
    """(name, dtype, rank, getter of the fixed axes' sizes or None, their sizes) of a model with
    one input and one output, for ``Model.__call__``'s lean path; None otherwise."""
    if len(checks) != 1 or len(out_names) != 1:
        return None
    name, dtype, ndim, fixed = checks[0]
    if not fixed:
        return name, dtype, ndim, None, None
    return name, dtype, ndim, operator.itemgetter(*(i for i, _ in fixed)), \
        (fixed[0][1] if len(fixed) == 1 else tuple(d for _, d in fixed))


def _refuse_closed(names: Any, feeds: Any, options: Any = None) -> Any:
    raise InferenceError("this Model was closed (its session and memory were freed); load the bundle again to run it.")


def _refuse_in_child(model: Model) -> None:
    """In a fork()ed child, a Model whose calls would hang there refuses them (see :mod:`edgeship.runtimes.lifecycle`)."""
    model._run_checked = refuse_after_fork  # the same call path: nothing is checked per call


class Model:
    """A loaded bundle variant, callable on numpy arrays.

    Thread safety: one Model may be called from several threads at once, on either runtime.
    onnxruntime's ``InferenceSession.run`` is thread-safe and a call keeps no state on the Model;
    on OpenVINO each calling thread runs its own infer request (``runtimes/openvino.py``). 8
    threads × 25 calls on one Model give results bit-identical to single-threaded calls on both
    (tests/test_threads.py). Threads share the session's intra-op thread pool, so for throughput
    prefer ``threads=1`` per Model with one Model per worker, or one Model with the default
    threads and few callers.

    fork(): load the Model after fork (gunicorn: no ``--preload``, or load in ``post_fork``;
    multiprocessing: ``spawn``/``forkserver``, or load in the pool's initializer). A Model loaded
    before fork and called in the child, as measured (tests/test_fork.py): on onnxruntime it runs,
    bit-identical, but on one thread (the intra-op pool's threads do not survive fork: threads=2
    ran at the speed of threads=1), except in the parallel execution mode (``inter_op_threads``
    other than 1), where every call hung: it raises ``InferenceError`` instead. On OpenVINO it
    raises ``InferenceError`` (calls hang there), and a child of a process that compiled an
    OpenVINO model cannot compile one (``load`` falls back to onnxruntime); see
    ``runtimes/openvino.py``. Neither check costs a call (``os.register_at_fork`` swaps the call
    of the Models concerned in the child). Apart from edgeship, a child forked after ``import
    onnxruntime`` hangs at a normal interpreter exit, in onnxruntime's own C++ exit handlers;
    children that leave with ``os._exit`` (multiprocessing's fork workers) do not.

    Memory: the model bytes read from the bundle are released once onnxruntime has opened the
    session (it keeps its own copy of the weights): :func:`~edgeship.runtimes.lifecycle.release_model_bytes`.
    """

    def __init__(self, bundle: Bundle, spec: IOSpec, variant: str, target: str, runner: Any,
                 candidate: Candidate, skipped: tuple[str, ...] = (), timeout: float | None = None):
        self.bundle = bundle
        self.spec = spec
        self.variant = variant
        self.target = target
        # what runs: the manifest's candidate, or the variant on a runtime's defaults where it lists none
        self.candidate = candidate
        self.skipped = skipped  # the candidates load passed over on this host, each with why
        self.runtime = runner.runtime  # onnxruntime or openvino
        self._runner = runner.load()
        release_model_bytes(runner)
        self._names = [t.name for t in spec.inputs]
        self._out_names = runner.output_names
        self._checks = [(t.name, _np_dtype(t.dtype), len(t.shape),
                         tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int)))
                        for t in spec.inputs]
        self._fast = _fast_path(self._checks, self._out_names)
        self._run_checked = checked_run(runner)
        self.timeout = timeout
        if timeout is not None:  # each call bounded; without it the call path stays as it is (B3, B8)
            self._run_checked = timed(self._run_checked, timeout, f"{bundle.path} (candidate {candidate.id})",
                                      isinstance(runner, OrtRunner))
        self._pre = Preprocessor(bundle.manifest, spec.inputs, bundle.read)  # a Hugging Face folder's task and tokenizer
        if hangs_after_fork(runner):
            guard_after_fork(self, _refuse_in_child)

    @property
    def task(self) -> str | None:
        """The task a Hugging Face folder was exported for (``feature-extraction``,
        ``sequence-classification``, ...); None for other bundles."""
        return self._pre.task

    @property
    def labels(self) -> list[str] | None:
        """A classifier's labels in output order (config.json's id2label); None where there are none."""
        return self._pre.labels

    @property
    def preprocess(self) -> dict[str, Any]:
        """The pre-processing the bundle carries: ``tokenizer`` (pad token, padding side, inputs, max
        length, bos/eos ids) and/or ``image`` (mean, std, height, width, rescale); {} for none."""
        return self._pre.preprocess

    @property
    def tokenizer(self) -> Any:
        """The bundle's ``tokenizers.Tokenizer`` (needs the ``tokenizers`` library: ``edgeship[text]``).

        Raises:
            SpecError: the bundle has no tokenizer, or ``tokenizers`` is not installed.
        """
        return self._pre.encoder().tokenizer

    def encode(self, items: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """Feeds for this model from text (a string or a list of strings, padded to the longest, as the
        original tokenizer's ``padding=True, truncation=True`` does; a (question, context) pair in the list
        is encoded as one sequence of two segments, as ``tokenizer(q, c)`` does) or, for an image model, HWC/NHWC
        images of the model's size (normalised to NCHW ``pixel_values``). ``m(m.encode(texts))`` runs it.

        Raises:
            SpecError: the bundle carries no pre-processing for that input, or the input does not fit.
        """
        return self._pre.encode(items, **kwargs)

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str | list[str]:
        """Text from token ids (one sequence: a string; a 2-D batch: a list), with the bundle's tokenizer.

        Raises:
            SpecError: the bundle has no tokenizer, or ``tokenizers`` is not installed.
        """
        return self._pre.encoder().decode(ids, skip_special_tokens=skip_special_tokens)

    @property
    def precision(self) -> str:
        """The precision class the model computes in: the candidate's (``bf16`` for OpenVINO's bf16
        run of the fp32 file), not only the variant's."""
        return self.candidate.precision

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.outputs

    @property
    def providers(self) -> list[str]:
        """onnxruntime's active providers; ``["OpenVINO:CPU"]`` on OpenVINO."""
        return self._runner.active_providers if self.runtime == ORT else ["OpenVINO:CPU"]

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (public API): for IO binding (``session.io_binding()``,
        so CUDA outputs can stay on the device), ``RunOptions``, or anything edgeship does not wrap;
        on OpenVINO, its ``CompiledModel``. Closing the Model closes it."""
        return self._runner.session if self.runtime == ORT else self._runner.compiled

    @property
    def manifest(self) -> dict[str, Any]:
        """The bundle's manifest.json, as read."""
        return self.bundle.manifest

    @overload
    def __call__(self, feeds: dict[str, np.ndarray], /) -> dict[str, np.ndarray]: ...

    @overload
    def __call__(self, *arrays: np.ndarray) -> ArrayOrArrays: ...

    @overload
    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]: ...

    def __call__(self, *args: np.ndarray | dict[str, np.ndarray], **kwargs: np.ndarray) -> Any:
        """Run the model on numpy arrays.

        ``m(x, ...)``: one array per input, in the model's order; returns the output array, or a
        tuple of arrays for a model with several outputs. How many is the bundle's, unknown to a
        type checker, so this form is typed ``Any`` (``ArrayOrArrays``): ``m(x).shape`` checks,
        and an app that knows its model says which (``y: np.ndarray = m(x)``, ``a, b = m(x)``).
        ``m({"x": x})`` and ``m(x=x)`` return the outputs by name and are typed precisely
        (``dict[str, np.ndarray]``), as is ``m.run(feeds)``.

        Raises:
            SpecError: the feeds do not fit the model's inputs (names, count, dtypes, ranks, fixed
                sizes), or mix positional and named inputs.
            InferenceError: the runtime failed to run.
        """
        fast = self._fast
        if fast is not None and len(args) == 1 and not kwargs:  # one array in, one out: kept lean (B3, B8)
            a = args[0]
            name, dtype, ndim, fixed_of, fixed = fast
            if type(a) is np.ndarray and a.dtype == dtype and a.ndim == ndim \
                    and (fixed_of is None or fixed_of(a.shape) == fixed):
                feeds = {name: a}
                try:  # free when nothing is raised
                    return self._run_checked(self._out_names, feeds, None)[0]
                except EdgeshipError:  # edgeship's own (a call in a fork()ed child): as it is
                    raise
                except Exception as e:  # onnxruntime's own Fail, RuntimeException, allocation errors...
                    raise self._run_error(feeds, e) from e
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            feeds = args[0]
            return dict(zip(self._out_names, self._run(feeds)))
        if kwargs and not args:
            return dict(zip(self._out_names, self._run(kwargs)))
        if kwargs:
            raise SpecError("pass inputs either positionally or by name, not both.")
        if len(args) != len(self._names):
            raise SpecError(
                f"the model takes {len(self._names)} input{'s' * (len(self._names) != 1)} ({', '.join(self._names)}), "
                f"got {len(args)} positional array{'s' * (len(args) != 1)}."
            )
        outs = self._run(dict(zip(self._names, args)))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _fits(self, feeds: dict) -> bool:
        """Fast check of names, dtypes, ranks and fixed axes; False sends to validate_feeds."""
        if len(feeds) != len(self._checks):
            return False
        for name, dtype, ndim, fixed in self._checks:
            a = feeds.get(name)
            if type(a) is not np.ndarray or a.dtype != dtype or a.ndim != ndim:
                return False
            shape = a.shape
            for i, d in fixed:
                if shape[i] != d:
                    return False
        return True

    def _run(self, feeds: dict) -> list:
        if not self._fits(feeds):
            validate_feeds(self.spec.inputs, feeds)
        try:
            return self._run_checked(self._out_names, feeds, None)
        except EdgeshipError:
            raise
        except Exception as e:  # onnxruntime's own Fail, RuntimeException, allocation errors...
            raise self._run_error(feeds, e) from e

    def _run_error(self, feeds: dict, e: Exception) -> InferenceError:
        sizes = ", ".join(f"{k}: {a.dtype}{format_shape(a.shape)} ({a.nbytes / 2**20:.1f} MiB)" for k, a in feeds.items())
        return InferenceError(
            f"{self.runtime} failed to run {self.bundle.path} (variant {self.variant}, {self.target}) on inputs "
            f"{sizes}: {brief(e)}. Check the inputs' sizes (smaller batches need less memory) and their values."
        )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Same as ``m(feeds)`` for a dict: outputs by name."""
        return dict(zip(self._out_names, self._run(feeds)))

    def run_bound(self, feeds: dict[str, Any], device: str | None = None, device_id: int = 0) -> dict[str, Any]:
        """Run with onnxruntime IO binding; outputs stay where they were computed.

        Args:
            feeds: numpy arrays (copied to the device once) or ``onnxruntime.OrtValue`` already on it.
            device: where the outputs are bound: ``cuda`` (default on a CUDA target) or ``cpu``.
            device_id: the device's index.

        Returns:
            ``onnxruntime.OrtValue`` outputs by name (``.numpy()`` copies one to the host), so a
            pipeline of models on the GPU never round-trips through the host.

        Raises:
            SpecError: a numpy feed does not fit the model's inputs.
            InferenceError: onnxruntime failed to run.
        """
        if self._run_checked is _refuse_closed:
            _refuse_closed(None, feeds)
        if self.runtime != ORT:
            raise SpecError(f"run_bound is onnxruntime's IO binding; this Model runs candidate {self.candidate.id} on "
                            f"{self.runtime}. Call m(x) or m.run(feeds), or load with runtime='onnxruntime' for IO binding.")
        device = device or ("cuda" if self.target == "cuda" else "cpu")
        arrays = {k: v for k, v in feeds.items() if isinstance(v, np.ndarray)}
        if len(arrays) == len(feeds):
            validate_feeds(self.spec.inputs, arrays)
        elif set(feeds) != set(self._names):
            raise SpecError(f"run_bound needs every input ({', '.join(self._names)}); got {', '.join(feeds) or 'none'}.")
        try:
            binding, _keep = bind_io(self.session, feeds, self._out_names, device, device_id)
            self.session.run_with_iobinding(binding)
        except Exception as e:
            raise self._run_error(arrays, e) from e
        return dict(zip(self._out_names, binding.get_outputs()))

    def generate(self, prompt: Any, max_new_tokens: int = 32, eos_token_id: int | list[int] | None = None, *,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int | None = None) -> Any:
        """Generate text tokens with a decoder bundle (a causal LM exported from a ``save_pretrained``
        folder): greedy by default, as transformers' ``generate(do_sample=False)``. Torch-free: the
        loop runs on onnxruntime with the KV cache kept there (:mod:`edgeship.generate`).

        Args:
            prompt: token ids (list of ints or 1-D array) or a text (the bundle's tokenizer); a list
                of them (or a 2-D array) is a batch, padded on the left.
            max_new_tokens: at most this many new tokens per prompt.
            eos_token_id: stop at this token (or any of a list); None: the bundle's; ``[]``: never early.
            do_sample, temperature, top_k, top_p, seed: sampling instead of greedy.

        Returns:
            The new token ids (a list of ints; a list of lists for a batch), the end-of-sequence
            token included where it stopped a prompt.

        Raises:
            SpecError: the bundle is not a decoder, or a bad prompt or argument.
        """
        from edgeship.generate import generate

        single = isinstance(prompt, str) or (isinstance(prompt, np.ndarray) and prompt.ndim == 1) or (
            isinstance(prompt, (list, tuple)) and bool(prompt) and all(isinstance(x, (int, np.integer)) for x in prompt))
        out = generate(self, prompt, max_new_tokens, eos_token_id, do_sample=do_sample, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed)
        return out.tokens[0] if single else out.tokens

    def close(self) -> None:
        """Free the runtime's session and the memory it holds, and close the bundle (a zip's open
        file); a call after it raises InferenceError. The manifest stays (``m.manifest``);
        ``m.bundle.read`` then refuses. Closing twice does nothing more."""
        self._run_checked = _refuse_closed  # it held the session's run: the session lives as long as it does
        unguard(self)
        self._runner.close()
        self.bundle.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}:{t.dtype}{format_shape(t.shape)}" for t in self.inputs)
        return (f"<edgeship.Model {self.bundle.manifest.get('name')} candidate={self.candidate.id} variant={self.variant} "
                f"precision={self.precision} runtime={self.runtime} target={self.target} ({ins})>")


def _np_dtype(name: str):
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 without ml_dtypes: never matches, validate_feeds decides
        return None


def load(bundle: str | os.PathLike[str] | bytes, target: str = "cpu", variant: str = "auto",
         threads: int | None = None, *, runtime: str | None = None, inter_op_threads: int | None = None,
         session_options: Any = None, provider_options: dict[str, Any] | None = None,
         timeout: float | None = None) -> Model:
    """Verify a bundle and open one variant of it for ``target``.

    Args:
        bundle: a ``NAME.edgeship`` folder, a ``NAME.edgeship.zip`` file, or the bytes of a zipped
            bundle already in memory (``bytes``, ``bytearray`` or ``memoryview``, copied once;
            verified exactly like the file, without a temporary file, and not kept once the model
            is open).
        target: ``cpu``, ``cuda``, ``auto`` (CUDA when usable, else CPU), ``mobile`` (the bundle's ORT-format
            variants, from ``export --target mobile``, on the CPU provider) or a provider name.
        variant: ``auto`` (the bundle's default for the target) or a variant name such as ``fp32``.
        threads: intra-op threads, at most this host's usable cores (a larger count is capped);
            default: the candidate's, else one per usable core (or ``session_options``' own).
        runtime: ``onnxruntime`` (``ort``) or ``openvino``: the first candidate on that runtime;
            default: the first candidate this host can run (see the module's docstring). ``inter_op_threads``,
            ``session_options`` and ``provider_options`` are onnxruntime's, and pin it.
        inter_op_threads: threads for independent nodes (capped like ``threads``); turns on
            onnxruntime's parallel mode.
        session_options: an ``onnxruntime.SessionOptions`` to open the session with (``threads``
            and ``inter_op_threads``, when given, are set on it).
        provider_options: options for the target's execution provider, e.g. ``{"device_id": 1}``
            or ``{"arena_extend_strategy": "kSameAsRequested"}`` for CUDA.
        timeout: seconds each call may take, for bundles you do not trust: a graph can run as long
            as it says (an ONNX Loop of 2^62 iterations). A call past it raises
            ``InferenceTimeout``; onnxruntime stops the inference (``RunOptions.terminate``) and the
            Model stays usable; OpenVINO cannot stop it, so it keeps running on one of OpenVINO's
            threads (``InferenceTimeout.stuck``): the Model then raises ``InferenceTimeout`` at once
            on every later call, and the process cannot exit normally (end it with ``os._exit``,
            as the CLI does, and load the model in a new process; see
            :mod:`edgeship.runtimes.openvino` and :mod:`edgeship.runtimes.deadline`). Default:
            none, and the call path is then exactly as without it. ``run_bound`` is not bounded.

    Raises:
        BundleError: the bundle is missing, corrupt or tampered with, or lacks the variant.
        TargetUnavailableError: the target's execution provider (or the runtime) is not installed.
        SpecError: ``timeout`` is not a number of seconds above 0.
    """
    check_threads(threads)
    check_threads(inter_op_threads, "inter_op_threads")
    threads = resolve_threads(threads) if threads else None  # more threads than cores only oversubscribe
    inter_op_threads = resolve_threads(inter_op_threads) if inter_op_threads else None
    if isinstance(bundle, (bytearray, memoryview)):  # a snapshot: the buffer may change after verification
        bundle = bytes(bundle)
    if timeout is not None:
        timeout = check_seconds(timeout, "timeout")
    if runtime is not None:
        runtime = runtime_name(runtime)
    if session_options is not None or inter_op_threads or provider_options:
        if runtime == OPENVINO:
            raise SpecError("session_options, inter_op_threads and provider_options are onnxruntime's; "
                            "leave them out with runtime='openvino'.")
        runtime = ORT
    before = identity(bundle) if isinstance(bundle, (str, os.PathLike)) else None
    options = None
    if session_options is not None or inter_op_threads:
        options = ort_session_options(threads, inter_op_threads=inter_op_threads, base=session_options)
    try:
        return _load(bundle, target, variant, threads, options, provider_options, runtime, timeout)
    except BundleError:
        # a folder bundle replaced by an export while it was read (its files then belong to two
        # manifests) fails verification once: read it again, once, when it changed underneath
        if before is None or isinstance(bundle, bytes) or identity(bundle) == before:
            raise
        log.info("bundle %s changed while it was read; reading it again", bundle)
        return _load(bundle, target, variant, threads, options, provider_options, runtime, timeout)


def _load(bundle: str | os.PathLike[str] | bytes, target: str, variant: str, threads: int | None, options: Any,
          provider_options: dict[str, Any] | None, runtime: str | None = None, timeout: float | None = None) -> Model:
    """Open the first candidate that runs here; see :func:`load`. A bundle given as bytes is closed
    once the model is open: the Model keeps its manifest, not the zip's bytes (``Model.bundle.read``
    then refuses); a bundle on disk stays readable."""
    b = open_bundle(bundle)
    try:
        target, providers = resolve_target(target)
        spec = IOSpec.from_dict(b.manifest["io"])
        runner, c, skipped = open_candidate(b, spec, target, providers, variant, runtime, threads, options, provider_options)
        model = Model(b, spec, c.variant, target, runner, candidate=c, skipped=skipped, timeout=timeout)
    except BaseException:
        b.close()
        raise
    if isinstance(bundle, bytes):
        b.close()
    return model
