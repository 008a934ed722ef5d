"""The dashboard's HTTP side: one static page (static/) and a JSON API over the run directories, the launcher,
the optuna storage and a chat backend. Everything it shows is read from the same files the CLI reads."""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from trainforge.config import RunConfig, validate
from trainforge.config.loader import dump_config, parse_overrides, read_yaml, with_overrides
from trainforge.errors import TrainforgeError
from trainforge.serve.text import Text
from trainforge.tracking.registry import SUMMARY_KEYS, compare, listed_summary
from trainforge.tracking.rundir import STATUS_FILE, RunDir, list_runs
from trainforge.ui.launcher import Launcher, default_name

STATIC = Path(__file__).parent / "static"
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a run / example / study name, never a path
LOG_TAIL_BYTES = 200_000  # read, then cleaned of progress-bar redraws down to LOG_SHOWN_CHARS
LOG_SHOWN_CHARS = 20_000
NO_LOG = (
    "No log: this run was not launched from this dashboard (it was started on the command line, e.g. `trainforge "
    "train`, or from Python), so its output went to the terminal that started it. The dashboard keeps the output of "
    "the runs it launches."
)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def terminal_text(raw: str) -> str:
    """What a terminal shows for `raw`: escape sequences (colours, cursor moves) dropped, and each carriage
    return overwriting its line from the start, as progress bars redraw themselves."""
    lines = []
    for line in _ANSI.sub("", raw).split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown)
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON has no NaN / inf: they travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class LaunchRequest(BaseModel):
    overrides: list[Text] = Field(description="key=value pairs, read exactly as `trainforge train` reads them")
    yaml: Text | None = Field(None, description="a config file's text (a stage chain too); the overrides apply over it")
    launch: bool = True  # False: validate only


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(64, ge=1, le=1024)


def create_app(runs_dir: str | Path = "runs", examples_dir: str | Path | None = None) -> FastAPI:
    runs_dir = Path(runs_dir)
    examples = Path(examples_dir) if examples_dir else None
    launcher = Launcher(runs_dir)
    generators: dict[Path, Any] = {}  # run path → loaded chat backend, loaded on first use
    load_lock = threading.Lock()
    app = FastAPI(title="trainforge", docs_url=None, redoc_url=None)
    app.state.launcher = launcher

    @app.exception_handler(TrainforgeError)
    async def trainforge_error(request, err: TrainforgeError):
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        # the page shows `error`; FastAPI's own answer echoes the input, and fails (500) on a NaN in it
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return JSONResponse({"error": f"{first['msg']}: {where}." if where else f"{first['msg']}."}, status_code=422)

    @app.middleware("http")
    async def json_posts_only(request: Request, call_next):
        # a page on another site can POST forms to localhost, but not JSON without a CORS preflight we never grant
        if request.method == "POST" and request.headers.get("content-type", "").split(";")[0] != "application/json":
            return JSONResponse({"error": "POST bodies must be application/json."}, status_code=415)
        return await call_next(request)

    def run_named(name: str) -> RunDir:
        if not _PLAIN.match(name) or not (runs_dir / name / STATUS_FILE).is_file():
            raise HTTPException(404, f"No run {name!r} under {runs_dir}/.")
        return RunDir(runs_dir / name)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    # the page ----------------------------------------------------------------------------------------------------
    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    def static(name: str):
        path = STATIC / name
        if not _PLAIN.match(name) or not path.is_file():
            raise HTTPException(404, f"No file {name!r}.")
        return FileResponse(path)

    # launching ---------------------------------------------------------------------------------------------------
    @app.get("/api/schema")
    def schema():
        return RunConfig.model_json_schema()

    @app.get("/api/examples")
    def example_list():
        if not examples or not examples.is_dir():
            return []
        found = []
        for path in sorted(examples.glob("*.yaml")):
            try:
                found.append({"name": path.stem, "stages": "stages" in read_yaml(path)})  # a chain opens as YAML
            except TrainforgeError:
                continue
        return found

    @app.get("/api/examples/{name}")
    def example(name: str):
        path = (examples / f"{name}.yaml") if examples and _PLAIN.match(name) else None
        if path is None or not path.is_file():
            raise HTTPException(404, f"No example {name!r}.")
        return read_yaml(path)

    @app.get("/api/examples/{name}/yaml")
    def example_text(name: str):
        example(name)  # the same checks
        return {"yaml": (examples / f"{name}.yaml").read_text(encoding="utf-8")}

    @app.post("/api/launch")
    def launch(req: LaunchRequest):
        data = with_overrides(_yaml_text(req.yaml), req.overrides) if req.yaml else parse_overrides(req.overrides)
        stages = data.get("stages") if isinstance(data.get("stages"), list) else []  # parse_stages says what is wrong
        for section in (data, *(s for s in stages if isinstance(s, dict) and "tracking" in s)):
            section.setdefault("tracking", {})
            if not isinstance(section["tracking"], dict):
                raise HTTPException(400, "`tracking` must be a section.")
            section["tracking"]["runs_dir"] = str(runs_dir)  # the dashboard shows the runs under its own folder
        if "stages" in data:
            return launch_chain(data, req.launch)
        config = validate(data, "from the launch form")
        if not config.name:
            config = validate({**data, "name": launcher.free_name(default_name(config))}, "from the launch form")
        if not req.launch:
            return {"ok": True, "name": config.name, "yaml": dump_config(config)}
        launch = launcher.launch(config)
        return {"ok": True, "name": launch.name, "yaml": dump_config(config)}

    def launch_chain(data: dict[str, Any], start: bool):
        """A `stages:` config: checked stage by stage as `trainforge train` checks it, run as that file."""
        import yaml

        from trainforge.stages import parse_stages

        data.setdefault("name", f"stages-{time.strftime('%Y%m%d-%H%M%S')}")
        stages = parse_stages(data, "from the launch form")
        text = yaml.safe_dump(data, sort_keys=False)
        names = [s.config.name for s in stages]
        if start:
            launcher.launch_chain(data["name"], text, names)
        return {"ok": True, "name": data["name"], "yaml": text, "stages": names}

    @app.post("/api/runs/{name}/stop")
    def stop(name: str):
        if name not in launcher.launches:
            raise HTTPException(404, f"Run {name!r} was not launched from this dashboard; stop it where it runs.")
        if not launcher.stop(name):
            raise HTTPException(400, f"Run {name!r} is not running.")
        return {"ok": True, "name": name}

    # runs --------------------------------------------------------------------------------------------------------
    @app.get("/api/summary-keys")
    def summary_keys():
        """The runs table's summary columns: those of `trainforge runs list`."""
        return list(SUMMARY_KEYS)

    @app.get("/api/runs")
    def runs():
        rows = []
        for run in list_runs(runs_dir):
            info = run.info()
            rows.append(
                {
                    "name": run.name,
                    "status": run.status,
                    "started": info.get("started"),
                    "summary": listed_summary(run),
                    "generative": _generative(run),
                }
            )
        known = {r["name"] for r in rows}
        for name, launch in launcher.launches.items():  # launched, run directory not there yet (or a chain)
            if name not in known:
                rows.append(
                    {
                        "name": name,
                        "status": launch.status,
                        "started": launch.started,
                        "summary": {"stages": ", ".join(launch.stages)} if launch.stages else {},
                        "generative": False,
                    }
                )
        return _finite(rows)

    def log_of(name: str) -> Path | None:
        """The output the dashboard keeps of `name`: its own launch's, else that of the chain it is a stage of (a
        chain's stages write to the chain's log)."""
        path = launcher.log_of(name)
        if path is None:
            chain = next((launch for launch in launcher.launches.values() if name in launch.stages), None)
            path = chain.log if chain else None
        return path

    def log_note(run: RunDir) -> str | None:
        """What the Log panel says of a run whose output the dashboard never kept; None when it kept it."""
        if log_of(run.name) is not None:
            return None
        error = run.info().get("error")
        return f"{NO_LOG}\n\nIt ended {run.status}: {error}" if error else NO_LOG

    def log_tail(name: str) -> str:
        for _ in range(3):  # the log may be moving into the run directory right now
            path = log_of(name)
            if path is None:
                return ""
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
                    return terminal_text(f.read().decode("utf-8", "replace"))[-LOG_SHOWN_CHARS:]
            except FileNotFoundError:
                continue
        return ""

    @app.get("/api/runs/{name}")
    def run_detail(name: str):
        launch = launcher.launches.get(name)
        stoppable = launch is not None and launch.returncode is None
        if launch and not (runs_dir / name / STATUS_FILE).is_file():
            config_text = launch.config_file.read_text(encoding="utf-8") if launch.stages else ""
            return {
                "name": name,
                "status": launch.status,
                "info": {},
                "stages": launch.stages,
                "summary": {},
                "config": config_text,
                "metrics": [],
                "log": log_tail(name),
                "log_note": None,
                "generative": False,
                "stoppable": stoppable,
            }
        run = run_named(name)
        config_text = run.file("config.yaml").read_text(encoding="utf-8") if run.file("config.yaml").is_file() else ""
        return _finite(
            {
                "name": run.name,
                "status": run.status,
                "info": run.info(),
                "summary": listed_summary(run),
                "config": config_text,
                "metrics": run.metrics(),
                "log": log_tail(name),
                "log_note": log_note(run),
                "generative": _generative(run),
                "stoppable": stoppable,
            }
        )

    @app.get("/api/compare")
    def compare_runs(a: str, b: str):
        ra, rb = run_named(a), run_named(b)
        return _finite({**compare(ra, rb), "a": a, "b": b, "metrics": {a: ra.metrics(), b: rb.metrics()}})

    # chat --------------------------------------------------------------------------------------------------------
    @app.post("/api/chat")
    def chat(req: ChatRequest):
        from trainforge.inference.backends import Sampling
        from trainforge.tasks import registry

        run = run_named(req.run)
        if not _generative(run):
            raise HTTPException(400, f"Run {run.name} is not a generative (causal LM) run; it cannot chat.")
        with load_lock:  # one load per run, however many requests arrive while it loads
            if run.path not in generators:
                generators[run.path] = registry.for_run(run).hook("backend")(run)
            backend = generators[run.path]
        ids = backend.encode(backend.chat_prompt([m.model_dump() for m in req.messages]))
        if not ids:  # generation needs at least one token to continue from
            raise HTTPException(400, "The messages are empty: the chat prompt encodes to no tokens.")
        completion = backend.complete(ids, Sampling(req.max_tokens))
        return {
            "reply": completion.text,
            "completion_tokens": completion.completion_tokens,
            "seconds": round(completion.seconds, 3),
        }

    # tuning studies ----------------------------------------------------------------------------------------------
    def storages() -> list[str]:
        """The default storage of this runs folder, and every storage a tuning run recorded."""
        urls = []
        if (runs_dir / "optuna.db").is_file():
            urls.append(f"sqlite:///{(runs_dir / 'optuna.db').resolve()}")
        for run in list_runs(runs_dir):
            url = listed_summary(run).get("storage")
            if isinstance(url, str) and url not in urls:
                urls.append(url)
        return urls

    @app.get("/api/studies")
    def studies():
        import optuna

        found = []
        for url in storages():
            try:
                summaries = optuna.get_all_study_summaries(url, include_best_trial=True)
            except Exception as err:  # noqa: BLE001 - an unreachable storage is reported, not fatal
                found.append({"storage": url, "error": str(err)})
                continue
            for s in summaries:
                best = s.best_trial.value if s.best_trial else None
                found.append(
                    {
                        "storage": url,
                        "name": s.study_name,
                        "trials": s.n_trials,
                        "best": best,
                        "direction": s.direction.name.lower() if s.direction else None,
                    }
                )
        return _finite(found)

    @app.get("/api/study")
    def study(name: str, storage: str):
        import optuna

        if storage not in storages():
            raise HTTPException(404, f"Unknown storage {storage!r}.")
        try:
            s = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise HTTPException(404, f"No study {name!r} in {storage}.") from None
        trials = [
            {"number": t.number, "value": t.value, "state": t.state.name.lower(), "params": t.params}
            for t in s.get_trials(deepcopy=False)
        ]
        return _finite({"name": name, "storage": storage, "direction": s.direction.name.lower(), "trials": trials})

    return app


def _yaml_text(text: str) -> dict[str, Any]:
    """A config file's text, read by the loader that reads config files (same checks, same messages)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "launch-form.yaml"
        path.write_text(text, encoding="utf-8")
        return read_yaml(path)


def _generative(run: RunDir) -> bool:
    """A completed run whose task generates text (not a masked LM, which fills in masks)."""
    from trainforge.tasks import registry

    try:
        generates = registry.for_run(run).can("generate") and registry.run_config(run).training.objective != "mlm"
    except TrainforgeError:
        return False
    return generates and run.status == "completed"


def host_exposed(host: str) -> bool:
    import ipaddress

    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host != "localhost"


__all__ = ["create_app", "host_exposed"]
