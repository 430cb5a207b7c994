"""A user's own Python code, run on request: ``--import``, ``--code``, ``--arch`` and ``--calibration``.

Everything here executes code the user named on the command line (never code named by a file
being loaded): modules are imported, ``.py`` files run, factories called.

A module name (``--arch mypkg.models:Net``, ``--import``, ``--calibration mod:fn``) is looked up in the
installed packages first and in the current directory after them: a file or folder in the current
directory never shadows an installed package (nor one of edgeship's own dependencies imported
later). Where both exist the installed one is used, and a warning says so; a path
(``--arch ./mypkg/models.py:Net``) names the file itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edgeship.config import LoadOptions
from edgeship.errors import EdgeshipError, ModelLoadError

log = logging.getLogger(__name__)


def import_user_code(options: LoadOptions) -> None:
    """Apply ``--import`` and ``--code``; the current directory becomes importable, after the
    installed packages (see the module's docstring)."""
    _cwd_importable()
    for name in options.imports:
        try:
            _import_module(name, "--import")
        except Exception as e:
            raise ModelLoadError(f"--import {name}: could not import it: {e}") from e
    for file in options.code:
        import_file(Path(file))


def _cwd_importable() -> None:
    """The current directory on ``sys.path`` after everything else (unless Python put it there)."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))


def _import_module(name: str, flag: str) -> Any:
    """``importlib.import_module(name)``, with a warning when a module of the same top-level name
    in the current directory was passed over for the installed one."""
    module = importlib.import_module(name)
    top = name.split(".")[0]
    here = Path.cwd()
    local = next((p for p in (here / f"{top}.py", here / top) if p.exists()), None)
    origin = getattr(sys.modules.get(top), "__file__", None) or ""
    if local is not None and origin and not Path(origin).resolve().is_relative_to(here.resolve()):
        log.warning(f"{flag} {name}: imported the installed {top} ({origin}), not {local.name} in the current directory "
                    f"(installed packages come first); to use that one, pass its path (e.g. ./{top}.py:factory).")
    return module


def import_file(file: Path, flag: str = "--code") -> Any:
    """Run a user's Python file as a module.

    Only ``--code`` files are registered where a pickle looks for their classes (``sys.modules``
    under the file's stem, and ``__main__`` for pickles a script made); ``--arch`` and
    ``--calibration`` files get a private module name, so two ``model.py`` files never clash.
    """
    if not file.is_file():
        raise ModelLoadError(f"{flag} {file}: no such file.")
    public = flag == "--code"
    name = file.stem if public else f"edgeship_user_{file.stem}_{abs(hash(str(file.resolve()))):x}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{flag} {file}: Python cannot import it as a module (is it a .py file?).")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ModelLoadError(f"{flag} {file}: running it failed: {e}") from e
    if public:  # pickles made by a script reference classes as __main__.Name
        main = sys.modules["__main__"]
        for k, v in vars(module).items():
            if isinstance(v, type) and not hasattr(main, k):
                setattr(main, k, v)
    return module


def import_callable(spec: str, flag: str, error: type[EdgeshipError] = ModelLoadError) -> Any:
    """The callable named by ``module:attr`` (installed packages first, then the current
    directory) or ``file.py:attr`` (that file) (a user's --arch, --calibration).

    Raises:
        ``error``: the module cannot be imported or has no such callable.
    """
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            module = import_file(Path(mod_name), flag)
        else:
            _cwd_importable()
            module = _import_module(mod_name, flag)
    except ModelLoadError as e:
        raise error(str(e)) from e
    except Exception as e:
        raise error(f"{flag} {spec}: could not import {mod_name}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{flag} {spec}: {mod_name} has no callable {attr!r}.")
    return fn


def build_arch(options: LoadOptions) -> Any:
    """Build the module from ``--arch module:factory`` or ``path/to/file.py:factory``."""
    import torch

    arch = options.arch or ""
    mod_name, _, attr = arch.rpartition(":")
    if not mod_name or not attr:
        raise ModelLoadError(
            f"--arch {arch!r} is not of the form module:factory (e.g. mypkg.models:resnet18 or "
            "models.py:Net)."
        )
    import_user_code(options)
    factory = import_callable(arch, "--arch", ModelLoadError)
    try:
        model = factory(**options.arch_kwargs)
    except Exception as e:
        raise ModelLoadError(
            f"--arch {arch}: calling {attr}(**{json.dumps(options.arch_kwargs)}) failed: {e}"
        ) from e
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"--arch {arch} returned a {type(model).__name__}, not an nn.Module.")
    return model
