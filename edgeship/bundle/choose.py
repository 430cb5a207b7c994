"""Which of a verified bundle's candidates runs on this host, and opening it: what ``edgeship.load``
and ``edgeship check`` share, so check checks what load runs.

A candidate runs here when its needs are met (:func:`why_not_here`: its runtime is installed, the CPU
has the flags it needs, less those ``EDGESHIP_CPU_MASK`` hides, the GPU provider exists) and it
opens; :func:`open_candidate` takes the first such one, then the variant itself (fp32 for ``auto``)
on onnxruntime's defaults, which always runs. Torch-free.
"""

from __future__ import annotations

import logging
from typing import Any

from edgeship.bundle.manifest import Candidate, VariantResult, candidates_of, variants_of
from edgeship.bundle.read import Bundle
from edgeship.errors import BundleError, ExportError, SpecError, TargetUnavailableError, brief
from edgeship.host import cpu_flags
from edgeship.runtimes.external_data import refuse_external_data
from edgeship.runtimes.ort import MOBILE, OrtRunner
from edgeship.runtimes.ort_format import NotOrtFormat, is_ort_format, ort_format_version
from edgeship.runtimes.registry import OPENVINO, ORT, for_this_host, installed, make_runner, requirements, unmet
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

# onnxruntime's words for an ORT-format file it cannot parse (its flatbuffers verifier, its checks of
# the tensors): see _malformed
ORT_MALFORMED = ("ORT model verification failed", "Invalid ORT format model")


def open_variant(bundle: Bundle, runner: Any, file: str, model_format: str = "onnx") -> Any:
    """Open a verified variant and check that the model agrees with the manifest's io spec.

    Args:
        model_format: the variant's format as the manifest records it (``onnx`` or ``ort``).

    Raises:
        BundleError: the file names external data, is not in the format the manifest says,
            onnxruntime cannot open it, or its inputs/outputs differ from the manifest.
    """
    if isinstance(runner.model, bytes):  # before onnxruntime sees a byte (it would read from the cwd)
        found = "ort" if is_ort_format(runner.model) else "onnx"
        if found != model_format:
            raise BundleError(f"bundle {bundle.path}: manifest.json says {file} is {model_format!r} format, but the file "
                              f"is {found!r} format; the bundle was edited. Re-export it.")
        refuse_external_data(runner.model, file, BundleError, where=f"bundle {bundle.path}: ")
        if found == "ort":
            _check_ort_version(bundle, runner.model, file)
    try:
        runner.load()
    except ExportError as e:
        what = "OpenVINO" if getattr(runner, "compiled", False) is not False else "onnxruntime"
        said = brief(e.__cause__ or e)
        if isinstance(e.__cause__, UnicodeDecodeError):  # onnxruntime's message could not even be decoded
            said = f"its error quotes bytes of the file that are not UTF-8: {said}"
        if model_format == "ort" and _malformed(e.__cause__, said):
            raise BundleError(f"bundle {bundle.path}: onnxruntime refuses {file} as a malformed ORT-format model "
                              f"({said}); the file was damaged or edited. Re-export the bundle.") from e.__cause__
        raise BundleError(f"bundle {bundle.path}: {what} cannot open {file}: {said}") from e
    problems = runner.io_problems()
    if problems:
        runner.close()
        raise BundleError(
            f"bundle {bundle.path}: {file} does not match manifest.json's io spec ({'; '.join(problems)}); "
            "the manifest was edited or belongs to another model. Re-export the bundle."
        )
    return runner


def _malformed(cause: BaseException | None, said: str) -> bool:
    """Whether onnxruntime failed to open an ORT-format file because the file itself is malformed:
    its flatbuffers verifier or its tensor checks said so (:data:`ORT_MALFORMED`), or its message
    quoted a name whose bytes are not UTF-8 (its Python binding then raises UnicodeDecodeError).
    onnxruntime reads an ORT file alike on every host, so such a file is a damaged bundle, not a
    candidate to pass over as unsupported here."""
    return isinstance(cause, UnicodeDecodeError) or any(m in said for m in ORT_MALFORMED)


def _check_ort_version(bundle: Bundle, data: bytes, file: str) -> None:
    """An ORT-format file's format version is one the manifest records (``mobile.written_by``): an
    onnxruntime that does not read that version passes the file over as unsupported here, so a file
    edited to claim another version must not pass as one."""
    mobile = bundle.manifest.get("mobile")
    written_by = mobile.get("written_by") if isinstance(mobile, dict) else None
    recorded = written_by.get("ort_format_version") if isinstance(written_by, dict) else None
    if not isinstance(recorded, str):
        return
    try:
        found = ort_format_version(data) or ""  # as the manifest records a file without one
    except NotOrtFormat as e:
        raise BundleError(f"bundle {bundle.path}: {file} is marked as an ORT-format model but its format version "
                          f"does not read ({e}); the bundle was edited. Re-export it.") from e
    if found not in recorded.split(", "):
        raise BundleError(f"bundle {bundle.path}: {file} is ORT format version {found!r}, but manifest.json records "
                          f"version {recorded[:40]!r}; the bundle was edited. Re-export it.")


def choose_variant(manifest: dict, target: str, variant: str) -> VariantResult:
    """The named variant, or for ``auto`` the bundle's default for ``target`` (else for cpu,
    else its first variant).

    Raises:
        BundleError: the bundle has no such variant.
    """
    variants = variants_of(manifest)
    if variant == "auto":
        defaults = manifest.get("defaults") or {}
        variant = defaults.get(target) or defaults.get("cpu") or next(iter(variants), "")
    if variant not in variants:
        raise BundleError(
            f"variant {variant!r} is not in bundle {manifest.get('name')!r}; it has "
            f"{', '.join(variants) or 'none'}."
        )
    return variants[variant]


_said: set[str] = set()


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        log.warning(text)


def matching_candidates(manifest: dict, target: str, variant: str = "auto", runtime: str | None = None) -> list[Candidate]:
    """The manifest's candidates for ``target`` in its order that match ``variant`` (``auto``: any)
    and ``runtime`` (None: any). A pinned variant runs at its own precision (``variant="fp32"`` is
    never OpenVINO's bf16 of that file)."""
    shipped = variants_of(manifest)
    precision = shipped[variant].precision if variant in shipped else None
    return [c for c in candidates_of(manifest).get(target, [])
            if (variant == "auto" or (c.variant == variant and c.precision == precision))
            and (runtime is None or c.runtime == runtime)]


def why_not_here(c: Candidate, target: str) -> str | None:
    """Why candidate ``c`` cannot run on this host (what it needs and what is missing), or None.
    Its needs are what edgeship derives for its runtime and precision and what the manifest records."""
    return unmet(requirements(c.runtime, c.precision, target)) or unmet(c.requires or {"runtime": c.runtime})


def _tuned_elsewhere(manifest: dict) -> None:
    """Say once when the bundle's candidates were measured on a CPU with other flags than this one."""
    tuned = manifest.get("tuned") if isinstance(manifest.get("tuned"), dict) else None
    host = (tuned or {}).get("host") if tuned else manifest.get("host")
    flags = host.get("cpu_flags") if isinstance(host, dict) else None
    if not isinstance(flags, list):
        return
    theirs, ours = {f for f in flags if isinstance(f, str)}, set(cpu_flags())
    if theirs != ours:
        diff = ", ".join([f"+{f}" for f in sorted(ours - theirs)] + [f"-{f}" for f in sorted(theirs - ours)])
        _say_once(f"bundle {manifest.get('name')!r} was {'tuned' if tuned else 'selected'} on a CPU with other flags "
                  f"than this one ({diff[:200]}); its default may not be the fastest here: run `edgeship tune` on this machine")


def _runner(b: Bundle, spec: IOSpec, c: Candidate, target: str, providers: list[str], threads: int | None, options: Any,
            provider_options: dict[str, Any] | None) -> Any:
    """An opened runner for candidate ``c`` (checked against the manifest's io spec)."""
    v = variants_of(b.manifest)[c.variant]
    runtime_options = dict(c.options)
    if c.runtime == OPENVINO:
        if v.format != "onnx":
            raise SpecError(f"variant {v.name} is an ORT-format file (ONNX Runtime Mobile's); OpenVINO runs the .onnx variants.")
        if c.precision not in ("fp32", "bf16", "int8"):
            raise SpecError(f"variant {v.name} ({c.precision}) does not run on OpenVINO; use an fp32 or int8 variant.")
        if threads:
            runtime_options["threads"] = threads
        runner = make_runner(spec, b.read(v.file), OPENVINO, target=target, precision=c.precision,
                             options=runtime_options, name=f"openvino-{target}", what=v.file)
    else:
        runner = OrtRunner(spec, b.read(v.file), target=target, providers=providers, threads=threads, name=f"onnxruntime-{target}",
                           options=options, provider_options=provider_options, runtime_options=for_this_host(ORT, runtime_options))
    return open_variant(b, runner, v.file, v.format)


def plain_candidate(v: VariantResult, runtime: str, target: str) -> Candidate:
    """A variant on a runtime's defaults, as a candidate (what runs where the manifest lists none)."""
    return Candidate(id=v.name if runtime == ORT else f"{v.name}@openvino", runtime=runtime, variant=v.name,
                     precision=v.precision, requires=requirements(runtime, v.precision, target))


def open_candidate(b: Bundle, spec: IOSpec, target: str, providers: list[str], variant: str = "auto",
                   runtime: str | None = None, threads: int | None = None, options: Any = None,
                   provider_options: dict[str, Any] | None = None) -> tuple[Any, Candidate, tuple[str, ...]]:
    """What ``load`` runs on this host: the first of the matching candidates (then the variant
    itself, fp32 for ``auto``, on onnxruntime's defaults) whose needs are met and that opens.

    Returns:
        ``(runner, candidate, skipped)``: the opened runner (checked against the io spec), the
        candidate it runs, and each candidate passed over with why.

    Raises:
        BundleError, TargetUnavailableError: nothing runs here (every reason is named).
    """
    listed = matching_candidates(b.manifest, target, variant, runtime)
    if target == MOBILE and not candidates_of(b.manifest).get(MOBILE):
        raise TargetUnavailableError(f"target 'mobile' asked for, but bundle {b.path} has no ORT-format variants; "
                                     "re-export it with --target mobile, or load it with target='cpu'.")
    if listed:
        _tuned_elsewhere(b.manifest)
    shipped = variants_of(b.manifest)
    if not listed or variant != "auto":  # the last resort: the variant itself (fp32 for auto) on onnxruntime's defaults
        last = choose_variant(b.manifest, target, variant) if not listed else shipped[variant]
    else:
        last = shipped.get("fp32") or choose_variant(b.manifest, target, variant)
    if runtime == OPENVINO and not installed(OPENVINO):
        raise TargetUnavailableError("runtime='openvino' asked for, but openvino is not installed here; "
                                     "pip install 'edgeship[openvino]'.")
    fallback = plain_candidate(last, runtime or ORT, target)
    if all(c.id != fallback.id for c in listed):
        listed.append(fallback)
    skipped: list[str] = []
    first_error: Exception | None = None
    for c in listed:
        why = why_not_here(c, target)
        if why is None:
            try:
                runner = _runner(b, spec, c, target, providers, threads, options, provider_options)
            except (BundleError, TargetUnavailableError) as e:
                # the runtime cannot open it here: try the next; a corrupt bundle (a file that
                # disagrees with the manifest, external data) is refused whatever else it lists
                if not isinstance(e, TargetUnavailableError) and not isinstance(e.__cause__, ExportError):
                    raise
                why, first_error = f"it did not open ({brief(e)})", first_error or e
        if why is not None:
            skipped.append(f"{c.id}: {why}")
            continue
        if skipped:
            _say_once(f"bundle {b.manifest.get('name')!r} on {target}: running candidate {c.id} ({c.describe()}); "
                      f"skipped {'; '.join(skipped)}")
        return runner, c, tuple(skipped)
    kind = TargetUnavailableError if first_error is None or isinstance(first_error, TargetUnavailableError) else BundleError
    raise kind(f"bundle {b.path}: no candidate for {target} runs on this host: {'; '.join(skipped)}. "
               "Install what they need, or pass variant=/runtime= to pick another.") from first_error
