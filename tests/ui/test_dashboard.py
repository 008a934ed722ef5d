"""The dashboard driven in headless Chromium (Debian's `chromium`, Playwright's Python client): launch a tiny run
from the schema-generated form and watch its loss curve grow, stop one with its button, compare two runs, chat with
a generative run, look at a tuning study, see a run made outside the dashboard: its tick labels, one-off metrics and
summary. Each test keeps a screenshot under test-artifacts/ui/<test>.png."""

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ui

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).is_file():
    pytest.skip("no chromium browser (install Debian's: apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright client (pip install 'trainforge[ui]')")
pytest.importorskip("fastapi", reason="the dashboard needs the serve extra (fastapi, uvicorn)")

from conftest import tiny_run_config  # noqa: E402
from trainforge.config import load_config  # noqa: E402
from trainforge.config.loader import dump_config  # noqa: E402
from trainforge.pipeline import train  # noqa: E402
from trainforge.tracking.rundir import RunDir, atomic_write_json  # noqa: E402
from trainforge.ui import build_app  # noqa: E402


def tabular(runs_dir, **sections):
    base = {
        "task": "classification",
        "model": {"name": "random_forest", "params": {"n_estimators": 10}},
        "data": {"dataset": "iris"},
        "cv": {"folds": 3},
        "tracking": {"runs_dir": str(runs_dir), "mlflow": False, "report": False},
    }
    from trainforge.config.loader import merge

    return load_config(base=merge(base, sections))


@pytest.fixture
def server(runs_dir):
    """The dashboard on a free localhost port, in a thread; yields its URL."""
    import uvicorn

    runs_dir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(runs_dir, EXAMPLES)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    for launch in app.state.launcher.launches.values():  # never leave a training process behind
        if launch.process.poll() is None:
            launch.process.kill()
            launch.process.wait()
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def page(request):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        yield page
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def points(page, metric: str) -> int:
    chart = page.locator(f'svg.chart[data-metric="{metric}"]')
    return int(chart.get_attribute("data-points")) if chart.count() else 0


TINY_FORM = {
    "model.name": "tiny-llama",
    "data.task": "dates-json",
    "data.task_size": "64",
    "method.lora.r": "4",
    "training.batch_size": "4",
    "training.learning_rate": "1e-2",
    "training.max_length": "96",
    "training.logging_steps": "1",
    "training.save_steps": "100",
    "evaluation.max_new_tokens": "4",
    "evaluation.max_samples": "4",
}


def fill_launch_form(page, server, fields: dict):
    """The launch form, all fields shown, for a tiny-llama LoRA run (no MLflow, no report) with `fields` on top."""
    page.goto(server + "#launch")
    page.click("#expand-btn")
    for key, value in {**TINY_FORM, **fields}.items():
        page.fill(f'[data-key="{key}"]', value)
    for key in ("tracking.mlflow", "tracking.report"):
        page.select_option(f'[data-key="{key}"]', "false")


def test_launch_tiny_run_from_form_and_watch_its_curve(server, page, runs_dir):
    fill_launch_form(page, server, {"name": "ui-tiny", "training.max_steps": "oops"})
    page.click("#validate-btn")  # the loader's ConfigError text, as the CLI prints it
    assert "key `training.max_steps` = 'oops'" in page.locator("#config-error").inner_text()

    page.fill('[data-key="training.max_steps"]', "100")  # long enough that the page sees the curve part-drawn
    page.click("#launch-btn")
    page.wait_for_url("**#run/ui-tiny")
    page.wait_for_function(
        "() => Number(document.querySelector('svg.chart[data-metric=loss]')?.dataset.points) > 0"
        " || document.querySelector('#run-status .failed')",
        timeout=180_000,
    )
    assert page.locator("#run-status .failed").count() == 0, page.locator("#log").inner_text()
    first = points(page, "loss")
    page.wait_for_function(
        "() => document.querySelector('#run-status').innerText.trim() === 'completed'", timeout=180_000
    )
    page.wait_for_timeout(1500)  # the page polls each second; let it draw the last rows
    assert points(page, "loss") == 100 > first, "the curve did not grow while the run trained"
    assert (runs_dir / "ui-tiny" / "train.log").is_file() and "ui-tiny" in page.locator("#log").inner_text()
    assert "tiny-llama" in page.locator("#config").inner_text()


def test_stop_button_interrupts_a_launched_run(server, page, runs_dir):
    fill_launch_form(page, server, {"name": "ui-stop", "training.max_steps": "100000"})
    page.click("#launch-btn")
    page.wait_for_url("**#run/ui-stop")
    page.wait_for_function(
        "() => Number(document.querySelector('svg.chart[data-metric=loss]')?.dataset.points) > 0"
        " || document.querySelector('#run-status .failed')",
        timeout=180_000,
    )
    assert page.locator("#run-status .failed").count() == 0, page.locator("#log").inner_text()
    page.click("#stop-btn")
    page.wait_for_function(
        "() => document.querySelector('#run-status').innerText.trim() === 'interrupted'", timeout=90_000
    )
    page.wait_for_selector("#stop-btn", state="detached", timeout=90_000)  # gone once the process has exited
    from trainforge.tracking import find_run

    run = find_run("ui-stop", runs_dir)
    assert run.status == "interrupted" and points(page, "loss") < 100000


def test_compare_two_runs_highlights_config_differences(server, page, runs_dir):
    for name, trees in (("rf-small", 5), ("rf-large", 40)):
        train(tabular(runs_dir, name=name, model={"name": "random_forest", "params": {"n_estimators": trees}}))
    train(tabular(runs_dir, name="forest"))  # filtered out below
    page.goto(server + "#runs")
    page.wait_for_selector('tr[data-run="forest"]')
    page.fill("#filter", "rf-")
    assert page.locator("#runs-table tr[data-run]").count() == 2
    for name in ("rf-small", "rf-large"):
        page.check(f'tr[data-run="{name}"] .pick')
    page.click("#compare-btn")
    page.wait_for_selector("#compare-config")
    diff = page.locator("#compare-config tr.diff", has_text="model.params.n_estimators")
    assert diff.count() == 1 and "40" in diff.inner_text() and "5" in diff.inner_text()
    assert page.locator("#compare-config tr", has_text="data.dataset").count() == 0  # only differences
    assert page.locator("svg.chart").count() >= 1
    # the per-fold accuracy is a curve; the CV mean, logged once, is a row of values, not a chart of one dot each
    assert page.locator('svg.chart[data-metric="accuracy"]').count() == 1
    assert page.locator('svg.chart[data-metric="cv.accuracy.mean"]').count() == 0
    assert page.locator("#compare-single tr", has_text="cv.accuracy.mean").count() == 1


def labels_outside_their_chart(page) -> list[str]:
    """Each label (ticks, title, axis) whose box is not inside its chart's box: an <svg> cuts off what overflows."""
    return page.evaluate(
        """() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
            const box = svg.getBoundingClientRect();
            return [...svg.querySelectorAll('text')].filter(t => {
                const r = t.getBoundingClientRect();
                return r.left < box.left || r.right > box.right || r.top < box.top || r.bottom > box.bottom;
            }).map(t => `${svg.dataset.metric}: ${t.textContent}`);
        })"""
    )


def test_run_made_outside_the_dashboard(server, page, runs_dir):
    """A run as `trainforge train` leaves it (no train.log): long tick labels fit their charts, metrics logged once
    are a table, the runs table has the columns of `runs list`, and the Log panel says where the output went."""
    run = RunDir.create(runs_dir, "outside", dump_config(tabular(runs_dir, name="outside")))
    for i in range(6):
        run.append_metrics({"step": i * 2500, "loss": 0.000123 + i * 0.0000371, "reward": -12345.6 + i * 37.123})
    run.append_metrics({"step": 15000, "eval_accuracy": 0.912345, "train_runtime": 12345.678})
    atomic_write_json(run.file("summary.json"), {"method": "lora", "after.exact_match": 0.75, "after.perplexity": 3.2})
    run.set_status("completed")

    page.goto(server + "#runs")
    page.wait_for_selector('tr[data-run="outside"]')
    headers = page.locator("#runs-table th").all_inner_texts()
    assert "after.exact_match" in headers and "score" in headers
    cells = page.locator('tr[data-run="outside"] td').all_inner_texts()
    assert cells[headers.index("after.exact_match")] == "0.75"

    page.goto(server + "#run/outside")
    page.wait_for_selector('svg.chart[data-metric="loss"]')
    assert page.locator("svg.chart").count() == 2 and points(page, "reward") == 6
    assert labels_outside_their_chart(page) == []
    assert page.locator("svg.chart .ytick").count() >= 8 and page.locator("svg.chart .xtick").count() >= 4
    assert "-1" in page.locator('svg.chart[data-metric="reward"] .ytick').first.text_content()  # its minus sign shows
    for metric, shown in (("eval_accuracy", "0.9123"), ("train_runtime", "12345.7")):
        assert points(page, metric) == 0
        assert page.locator(f'#single-metrics tr[data-metric="{metric}"] td').inner_text() == shown
    assert "its output went to the terminal" in page.locator("#log").inner_text()


def test_chat_with_a_tiny_generative_run(server, page, runs_dir):
    train(tiny_run_config(runs_dir, name="tiny-chat", training={"max_steps": 2}))
    page.goto(server + "#chat/tiny-chat")
    page.fill("#chat-input", "What is the date today?")
    page.click("#chat-send")
    reply = page.wait_for_selector(".chat-reply", timeout=120_000)
    assert page.locator(".msg.user").inner_text() == "What is the date today?"
    assert reply.get_attribute("title").split()[0].isdigit()  # "<n> tokens in <s> s"


def test_tuning_study_plot(server, page, runs_dir):
    from trainforge.tuning.run import tune

    tune(tabular(runs_dir, name="tune-rf", tuning={"strategy": "random", "trials": 5, "pruning": False}))
    page.goto(server + "#studies")
    page.click("text=tune-rf")
    page.wait_for_selector('svg.chart[data-metric="trial value"]')
    assert points(page, "trial value") == 10  # 5 trial values + 5 best-so-far points
    assert page.locator("table tr").count() == 6


def test_stage_chain_example_opens_as_yaml_and_validates(server, page):
    page.goto(server + "#launch")
    page.select_option("#example", "sft-dpo")
    page.wait_for_function("() => document.querySelector('#yaml-text').value.includes('stages:')")
    page.fill('[data-key="training.batch_size"]', "4")  # a form field overrides the file, as on the command line
    page.click("#validate-btn")
    assert page.locator(".ok").inner_text() == "Valid: stage chain sft-dpo, runs sft-dpo-sft, sft-dpo-dpo."
    assert "batch_size: 4" in page.locator("#launch-yaml").inner_text()
    page.fill("#yaml-text", page.locator("#yaml-text").input_value().replace("objective: dpo", "objective: nope"))
    page.click("#validate-btn")
    assert "stage 2 (dpo)" in page.locator("#config-error").inner_text()
