"""`trainforge ui`: a local web dashboard to launch runs from a form generated from the config schema, watch
their curves, compare runs, chat with generative runs and look at tuning studies (FastAPI + uvicorn, extra `serve`)."""

from __future__ import annotations

import logging
from pathlib import Path

from trainforge.errors import TrainforgeError


def build_app(runs_dir: str | Path = "runs", examples_dir: str | Path | None = None):
    try:
        from trainforge.ui.app import create_app
    except ImportError as err:
        raise TrainforgeError(
            f"The dashboard needs FastAPI and uvicorn ({err}); install them with `pip install 'trainforge[serve]'`."
        ) from None
    return create_app(runs_dir, examples_dir)


def default_examples() -> Path | None:
    """./examples when it exists (a checkout), else none: the form then starts from the schema's defaults."""
    here = Path("examples")
    return here if here.is_dir() else None


def run_ui(
    runs_dir: str | Path = "runs", host: str = "127.0.0.1", port: int = 8765, examples_dir: str | Path | None = None
) -> None:
    import uvicorn

    from trainforge.ui.app import host_exposed

    app = build_app(runs_dir, examples_dir if examples_dir is not None else default_examples())
    if not host_exposed(host):  # a page on another site that rebinds its DNS name to 127.0.0.1 is refused
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"])
    else:
        logging.getLogger("trainforge.ui").warning(
            "listening on %s: anyone who can reach it can launch runs (which run code) on this machine", host
        )
    print(f"trainforge ui: http://{host}:{port}/  (runs from {Path(runs_dir).resolve()})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
