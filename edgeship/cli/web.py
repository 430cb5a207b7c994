"""``edgeship web-runtime``: where onnxruntime-web (the web target's runtime) is cached, and fetching it."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeship.cli.app import app, console


@app.command("web-runtime")
def web_runtime(
    fetch: Annotated[bool, typer.Option("--fetch", help="Fetch onnxruntime-web with npm into the cache now (where the npm registry is reachable), so that --target web runs offline later.")] = False,
) -> None:
    """Say where onnxruntime-web, the runtime of --target web, is cached and whether it is there; --fetch fetches it. Exit 2 when it is missing."""
    from edgeship.errors import TargetUnavailableError
    from edgeship.runtimes import web

    out = console()
    if fetch and not web.cached():
        web.fetch_runtime()
    where = web.runtime_path()
    if not web.cached():
        raise TargetUnavailableError(f"onnxruntime-web {web.ORT_WEB_VERSION} is not cached in {where}; "
                                     f"fetch it with `{web.PREFETCH}` (npm and its registry needed).")
    out.print(f"onnxruntime-web {web.ORT_WEB_VERSION}: {where}", markup=False)
