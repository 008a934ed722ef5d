"""`trainforge serve RUN`: an OpenAI-compatible HTTP API for a trained run (FastAPI + uvicorn, extra `serve`)."""

from __future__ import annotations

import ipaddress
import logging

from trainforge.errors import TrainforgeError
from trainforge.tracking.rundir import RunDir


def build_app(run: RunDir, api_key: str | None = None, **limits):
    """The app for a run, its model loaded; limits: max_body_bytes, max_tokens_limit."""
    try:
        from trainforge.serve.app import create_app
    except ImportError as err:
        raise TrainforgeError(
            f"Serving needs FastAPI and uvicorn ({err}); install them with `pip install 'trainforge[serve]'`."
        ) from None
    return create_app(load_backend(run), run.name, api_key, **limits)


def load_backend(run: RunDir):
    """What the run's task serves with: completions (generative runs) or predictions (predictive runs)."""
    from trainforge.tasks import registry

    return registry.for_run(run).hook("backend", f"Run {run.path}")(run)


def serve(run: RunDir, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, **limits) -> None:
    import uvicorn

    app = build_app(run, api_key, **limits)
    log = logging.getLogger("trainforge.serve")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        exposed = not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        exposed = host != "localhost"
    if exposed and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can use the model", host)
    uvicorn.run(app, host=host, port=port, log_level="info")
