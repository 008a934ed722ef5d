import csv
import json
import math
import re
import subprocess
import sys

import pytest

from conftest import tiny_run_config
from trainforge.errors import DataError, TrainforgeError
from trainforge.evaluation import benchmark
from trainforge.evaluation.benchmark import (
    Question,
    build_prompt,
    bundled_questions,
    load_questions,
    loglikelihoods,
    run_benchmark,
)
from trainforge.evaluation.humaneval import import_sheet, wilson, write_sheet
from trainforge.evaluation.judge import logprob_judge, pairwise
from trainforge.evaluation.preference import answer_logprob
from trainforge.models import load_causal_lm, load_tokenizer

CSV_BENCH = """question,A,B,C,D,answer,subject
What is 2 plus 2?,3,4,5,6,B,math
What is 3 times 3?,6,8,9,12,C,math
Capital of France?,Paris,Rome,Oslo,Lima,A,geo
Capital of Peru?,Paris,Rome,Oslo,Lima,D,geo
"""


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainforge.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def tiny():
    return load_causal_lm("tiny-llama").eval(), load_tokenizer("tiny-llama")


# --- benchmark files ---------------------------------------------------------------------------------------------


def test_csv_and_jsonl_benchmarks_read_alike(tmp_path):
    (tmp_path / "b.csv").write_text(CSV_BENCH)
    rows = [
        {"question": q.question, "choices": list(q.choices), "answer": q.answer, "subject": q.subject}
        for q in load_questions(tmp_path / "b.csv")
    ]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_questions(tmp_path / "b.jsonl") == load_questions(tmp_path / "b.csv")
    assert [q.answer for q in load_questions(tmp_path / "b.csv")] == [1, 2, 0, 3]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q", "choices": ["a", "b"], "answer": "C"}, "answer"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "0-based index 0-1"),
        ({"question": "q", "choices": ["a"], "answer": 0}, "at least two choices"),
        ({"question": "", "choices": ["a", "b"], "answer": 0}, "question"),
        ({"question": "q", "choices": ["a", "a"], "answer": 0}, "same text"),
    ],
)
def test_bad_benchmark_row_names_file_and_row(tmp_path, row, message):
    good = {"question": "ok", "choices": ["x", "y"], "answer": "A"}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl, row 2: .*{message}"):
        load_questions(path)


# --- scoring -----------------------------------------------------------------------------------------------------


def _oracle(believed: dict[str, str]):
    """A scorer that gives log-prob 0 to the choice it believes in, -5 to the others (per token: -5 per token)."""

    def score(requests):
        out = []
        for context, continuation in requests:
            question = context.rsplit("\n\n", 1)[-1].removesuffix("\nAnswer:")
            out.append((0.0 if continuation.strip() == believed[question] else -5.0, 1))
        return out

    return score


def test_accuracy_per_subject_on_known_answers(tmp_path):
    (tmp_path / "b.csv").write_text(CSV_BENCH)
    questions = load_questions(tmp_path / "b.csv")
    # right on both math questions, wrong on Peru
    believed = {
        "What is 2 plus 2?": "4",
        "What is 3 times 3?": "9",
        "Capital of France?": "Paris",
        "Capital of Peru?": "Oslo",
    }
    result = run_benchmark(questions, _oracle(believed))
    assert result["accuracy"] == 0.75 and result["chance"] == 0.25
    assert result["subjects"]["math"]["accuracy"] == 1.0 and result["subjects"]["geo"]["accuracy"] == 0.5
    assert [r["predicted"] for r in result["items"]] == [1, 2, 0, 2]


def test_length_normalized_accuracy_differs_from_summed():
    q = Question("Pick the long one", ("no", "a much longer right answer"), 1)
    # summed: the one-token choice wins (-2 > -3); per token the 3-token choice wins (-1 > -2)
    result = run_benchmark([q], lambda reqs: [(-2.0, 1) if c == " no" else (-3.0, 3) for _, c in reqs])
    assert result["accuracy"] == 0.0 and result["accuracy_norm"] == 1.0


def test_fewshot_prompts_exclude_the_question_and_are_seeded(tmp_path):
    (tmp_path / "b.csv").write_text(CSV_BENCH)
    questions = load_questions(tmp_path / "b.csv")
    seen = []

    def capture(requests):
        seen.extend(requests)
        return [(0.0, 1)] * len(requests)

    run_benchmark(questions, capture, fewshot=1, seed=3)
    first = [ctx for ctx, _ in seen[::4]]
    for ctx, q in zip(first, questions):
        assert ctx.count(q.question) == 1 and ctx.count("Answer:") == 2  # one example, then the question itself
    assert "Capital of France?\nAnswer: Paris" in first[3]  # same subject preferred: Peru's example is France
    again = []
    run_benchmark(questions, lambda r: again.extend(r) or [(0.0, 1)] * len(r), fewshot=1, seed=3)
    assert again == seen
    assert build_prompt(questions[0], []).endswith("What is 2 plus 2?\nAnswer:")


def test_batched_loglikelihoods_match_one_at_a_time(tiny):
    model, tokenizer = tiny
    requests = [
        ("The capital of France is", " Paris"),
        ("Q: 2+2?\nAnswer:", " 4"),
        ("A much longer context, so that the batch needs padding on the right side.\nAnswer:", " the end"),
        ("x", " y z"),
    ]
    batched = loglikelihoods(model, tokenizer, requests, batch_size=4)
    for (ctx, cont), (total, n) in zip(requests, batched):
        assert n == len(tokenizer(cont, add_special_tokens=False)["input_ids"])
        assert total == pytest.approx(answer_logprob(model, tokenizer, ctx, ctx + cont), abs=1e-4)
        assert total < 0


TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_prompt_format_scores_choices_as_the_assistant_reply(tmp_path):
    from trainforge.evaluation.benchmark import benchmark_source
    from trainforge.evaluation.sources import load_source

    (tmp_path / "b.csv").write_text(CSV_BENCH)
    source = load_source("tiny-llama")
    source.tokenizer.chat_template = None
    with pytest.raises(TrainforgeError, match="needs a tokenizer with a chat template"):
        benchmark_source(source, str(tmp_path / "b.csv"), prompt_format="chat", out=str(tmp_path / "r.json"))
    source.tokenizer.chat_template = TEMPLATE
    seen = []
    real = benchmark.loglikelihoods
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(benchmark, "loglikelihoods", lambda m, t, reqs, b: seen.extend(reqs) or real(m, t, reqs, b))
        chat, _ = benchmark_source(
            source, str(tmp_path / "b.csv"), fewshot=1, prompt_format="chat", out=str(tmp_path / "chat.json")
        )
        plain, _ = benchmark_source(source, str(tmp_path / "b.csv"), fewshot=1, out=str(tmp_path / "plain.json"))
    context, reply = seen[0]
    assert context.startswith("<|user|>The following are multiple choice") and context.endswith(
        "<|end|>\n<|assistant|>"
    )
    assert (
        context.count("Answer:") == 1 and "What is 2 plus 2?<|end|>" in context
    )  # the shot answered, not the question
    assert [r for _, r in seen[:4]] == ["3<|end|>\n", "4<|end|>\n", "5<|end|>\n", "6<|end|>\n"]
    assert seen[16][0].endswith("What is 2 plus 2?\nAnswer:") and seen[16][1] == " 3"  # plain keeps its text
    assert (chat["prompt_format"], plain["prompt_format"]) == ("chat", "plain")
    assert chat["items"][0]["logprobs"] != plain["items"][0]["logprobs"] and chat["questions"] == 4


def test_bundled_benchmark_is_seeded_and_correct():
    questions = bundled_questions("basics", per_subject=10, seed=1)
    assert questions == bundled_questions("basics", per_subject=10, seed=1) != bundled_questions("basics", 10, seed=2)
    assert {q.subject for q in questions} == {"arithmetic", "unit_conversion", "capitals", "dates"} and len(
        questions
    ) == 40
    for q in questions:
        assert len(set(q.choices)) == 4
        if q.subject == "arithmetic":
            a, word, b = re.match(r"What is (\d+) (\w+) (\d+)\?", q.question).groups()
            assert (
                int(q.choices[q.answer])
                == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[word]
            )


def test_eval_benchmark_cli_on_a_model_alias(tmp_path):
    (tmp_path / "b.csv").write_text(CSV_BENCH)
    result = cli(
        "eval",
        "tiny-llama",
        "--benchmark",
        str(tmp_path / "b.csv"),
        "--fewshot",
        "1",
        "--out",
        str(tmp_path / "r.json"),
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["model"] == "tiny-llama" and saved["questions"] == 4 and set(saved["subjects"]) == {"geo", "math"}
    assert "overall" in result.stdout
    bad = cli("eval", "tiny-llama", "--benchmark", "nonsense")
    assert bad.returncode == 2 and "bundled benchmark" in bad.stderr


def test_trained_run_and_its_base_model_on_one_benchmark(tmp_path):
    from trainforge.evaluation.benchmark import benchmark_source
    from trainforge.evaluation.humaneval import export_sources
    from trainforge.evaluation.sources import load_source
    from trainforge.pipeline import train

    run = train(tiny_run_config(tmp_path / "runs", name="tuned", training={"max_steps": 2}))
    after, path = benchmark_source(load_source("tuned", tmp_path / "runs"), "capitals", per_subject=4)
    assert path == run.file("benchmark-capitals.json") and after["model"] == "tuned" and after["questions"] == 4
    before, _ = benchmark_source(load_source("tiny-llama"), "capitals", per_subject=4, out=str(tmp_path / "base.json"))
    assert [i["question"] for i in before["items"]] == [i["question"] for i in after["items"]]
    assert before["items"][0]["logprobs"] != after["items"][0]["logprobs"]  # the adapter is applied
    (tmp_path / "p.jsonl").write_text('{"prompt": "Hi"}\n{"prompt": "2+2?"}\n')
    folder = export_sources(
        "tuned",
        "tiny-llama",
        str(tmp_path / "p.jsonl"),
        str(tmp_path / "he"),
        max_new_tokens=4,
        runs_dir=str(tmp_path / "runs"),
    )
    assert json.loads((folder / "key.json").read_text())["models"] == ["tuned", "tiny-llama"]


def test_a_run_named_like_a_model_alias_is_used_and_named(tmp_path, caplog):
    from trainforge.evaluation.sources import load_source
    from trainforge.pipeline import train

    runs = tmp_path / "runs"
    train(tiny_run_config(runs, name="tiny-llama", training={"max_steps": 2}))
    with caplog.at_level("WARNING", logger="trainforge.evaluation"):
        assert load_source("tiny-llama", runs).run is not None
    assert "'tiny-llama' names both the run" in caplog.text and "rename the run" in caplog.text
    caplog.clear()
    assert load_source(str(runs / "tiny-llama"), runs).run is not None and not caplog.text  # a path is not ambiguous
    (tmp_path / "b.csv").write_text(CSV_BENCH)
    result = cli("eval", "tiny-llama", "--runs-dir", str(runs), "--benchmark", str(tmp_path / "b.csv"))
    assert result.returncode == 0, result.stderr
    assert f"names both the run {runs / 'tiny-llama'} and a model alias; using the run" in " ".join(
        result.stderr.split()
    )
    assert (runs / "tiny-llama" / "benchmark-b.json").is_file()


def _taught_quiz(folder, n=10):
    """A capitals benchmark whose wrong choices are other questions' answers (so no answer is likelier a priori),
    and chat rows that teach each question's answer."""
    import random

    rng, countries = random.Random(0), list(benchmark.CAPITALS)[:n]
    questions, lessons = [], []
    for country in countries:
        answer = benchmark.CAPITALS[country]
        choices = [answer, *rng.sample([benchmark.CAPITALS[c] for c in countries if c != country], 3)]
        rng.shuffle(choices)
        text = f"What is the capital of {country}?"
        questions.append({"question": text, "choices": choices, "answer": choices.index(answer), "subject": "capitals"})
        lessons.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]})
    for name, rows in [("quiz.jsonl", questions), ("lessons.jsonl", lessons)]:
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "quiz.jsonl", folder / "lessons.jsonl"


def test_lora_run_taught_the_answers_beats_its_base_on_the_benchmark(tmp_path):
    from trainforge.evaluation.benchmark import benchmark_source, compare
    from trainforge.pipeline import train

    quiz, lessons = _taught_quiz(tmp_path)
    # a random model learns through adapters alone only with a wide rank and full-batch steps
    train(
        tiny_run_config(
            tmp_path / "runs",
            name="taught",
            data={"task": None, "train": str(lessons)},
            method={"lora": {"r": 64, "alpha": 128}},
            training={"max_steps": 60, "batch_size": 10, "learning_rate": 5e-3, "precision": "fp32"},
        )
    )
    # the run learnt chat turns, so both are scored as chat replies: the same call for the base and the run
    scores = {
        name: benchmark_source(
            name, str(quiz), runs_dir=str(tmp_path / "runs"), prompt_format="chat", out=str(tmp_path / f"{name}.json")
        )[0]
        for name in ("tiny-llama", "taught")
    }
    before, after = scores["tiny-llama"], scores["taught"]
    assert after["model"] == "taught" and before["model"] == "tiny-llama" and before["chance"] == 0.25
    assert before["accuracy"] <= 0.4  # 10 questions: near chance
    assert after["accuracy"] >= 0.7 and after["accuracy"] - before["accuracy"] >= 0.3
    assert all(a["logprobs"] != b["logprobs"] for a, b in zip(after["items"], before["items"]))  # adapter applied
    [capitals, overall] = compare(before, after)
    assert capitals["subject"] == "capitals" and overall["delta"] == pytest.approx(
        after["accuracy"] - before["accuracy"]
    )

    # the same before/after as one command, printed as one table
    result = cli(
        "eval",
        "taught",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--benchmark",
        str(quiz),
        "--prompt-format",
        "chat",
        "--baseline",
        "tiny-llama",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "overall" in line)
    assert re.findall(r"\d\.\d{3}", row)[:2] == [f"{before['accuracy']:.3f}", f"{after['accuracy']:.3f}"]
    assert f"{overall['delta']:+.3f}" in row
    assert json.loads((tmp_path / "evals" / "tiny-llama-quiz.json").read_text())["accuracy"] == before["accuracy"]


def test_compare_refuses_results_of_different_questions():
    a = run_benchmark([Question("q1", ("x", "y"), 0)], lambda reqs: [(0.0, 1)] * len(reqs))
    b = run_benchmark([Question("q2", ("x", "y"), 0)], lambda reqs: [(0.0, 1)] * len(reqs))
    with pytest.raises(DataError, match="different questions"):
        benchmark.compare({**a, "model": "A"}, {**b, "model": "B"})


# --- judge -------------------------------------------------------------------------------------------------------

PROMPTS = [f"prompt {i}" for i in range(6)]
GOOD = [f"a careful, complete answer to {p}" for p in PROMPTS]
BAD = ["no" for _ in PROMPTS]


def test_judge_with_fixed_position_bias_gives_ties_not_wins():
    always_first = lambda triples: [3.0] * len(triples)  # noqa: E731
    result = pairwise(PROMPTS, GOOD, BAD, always_first)
    assert result["tie_rate"] == 1.0 and result["win_rate"] == 0.0 and result["first_position_rate"] == 1.0
    assert result["debiased_win_rate"] == result["debiased_loss_rate"] == 0.0


def test_judge_verdicts_survive_the_swap_only_when_quality_outweighs_bias():
    def judge(bias):  # prefers the longer answer, plus a pull towards the first position
        return lambda triples: [bias + (1.0 if len(x) > len(y) else -1.0) for _, x, y in triples]

    assert pairwise(PROMPTS, GOOD, BAD, judge(0.5))["win_rate"] == 1.0
    assert pairwise(PROMPTS, BAD, GOOD, judge(0.5))["loss_rate"] == 1.0
    strong_bias = pairwise(PROMPTS, GOOD, BAD, judge(2.0))
    assert strong_bias["tie_rate"] == 1.0  # strict: no verdict survives the swap
    assert strong_bias["debiased_win_rate"] == 1.0  # averaged over both orders the bias cancels, quality remains


def test_logprob_judge_reads_a_b_margins_independent_of_batching(tiny):
    model, tokenizer = tiny
    triples = [("Say hi", "hi", "a much longer answer that needs left padding in a batch"), ("2+2?", "4", "5")]
    one = logprob_judge(model, tokenizer, batch_size=1)(triples)
    both = logprob_judge(model, tokenizer, batch_size=2)(triples)
    assert all(math.isfinite(m) for m in one) and one == pytest.approx(both, abs=1e-4)


# --- human evaluation --------------------------------------------------------------------------------------------


def _fill(folder, verdicts_for_x: list[str], first: str = "X"):
    """Fill sheet.csv as an annotator who knows which side model `first` is on: 'x' (it is better), 'y' or 'tie'."""
    key = json.loads((folder / "key.json").read_text())
    with open(folder / "sheet.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, verdict in zip(rows, verdicts_for_x):
        x_side = "A" if key["items"][row["id"]]["A"] == first else "B"
        row["preference"] = {"x": x_side, "y": "B" if x_side == "A" else "A", "tie": "tie"}[verdict]
    _rewrite(folder / "sheet.csv", rows)
    return rows


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson(6, 8)
    assert (low, high) == (pytest.approx(0.4093, abs=1e-4), pytest.approx(0.9285, abs=1e-4))
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0


def test_humaneval_round_trip_blinds_and_unblinds(tmp_path):
    prompts = [f"question {i}" for i in range(10)]
    folder = write_sheet(
        tmp_path / "he", prompts, {"X": [f"x{i}" for i in range(10)], "Y": [f"y{i}" for i in range(10)]}, seed=0
    )
    sheet = (folder / "sheet.csv").read_text()
    assert "X" not in sheet.split("\n")[0] and "Y" not in sheet  # identities only in key.json
    key = json.loads((folder / "key.json").read_text())
    assert {item["A"] for item in key["items"].values()} == {"X", "Y"}  # both orders occur
    page = (folder / "sheet.html").read_text()
    assert "question 3" in page and not re.search(r"(src|href)=\"?https?:", page) and "<link" not in page
    _fill(folder, ["x"] * 6 + ["y"] * 2 + ["tie"] * 2)
    result = import_sheet(folder / "sheet.csv")
    assert (result["wins"], result["losses"], result["ties"]) == (6, 2, 2)
    assert result["win_rate"] == 0.75 and result["tie_rate"] == 0.2
    assert result["ci95"] == [pytest.approx(0.4093, abs=1e-4), pytest.approx(0.9285, abs=1e-4)]


def _rewrite(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)


def test_humaneval_import_errors_name_the_row(tmp_path):
    folder = write_sheet(tmp_path / "he", ["p1", "p2", "p3"], {"X": ["a", "b", "c"], "Y": ["d", "e", "f"]})
    rows = _fill(folder, ["x", "x", "x"])
    _rewrite(folder / "sheet.csv", [rows[0], {**rows[1], "preference": "maybe"}, rows[2]])
    with pytest.raises(DataError, match=r"row 3 \(id 2\): preference 'maybe' is not one of A, B, tie"):
        import_sheet(folder / "sheet.csv")
    _rewrite(folder / "sheet.csv", [rows[0], {**rows[1], "preference": " "}, rows[2]])
    with pytest.raises(DataError, match=r"row 3 \(id 2\).*empty"):
        import_sheet(folder / "sheet.csv")
    _rewrite(folder / "sheet.csv", rows[:2])
    with pytest.raises(DataError, match="lacks the rows with id 3"):
        import_sheet(folder / "sheet.csv")


def test_humaneval_cli_round_trip(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Hi"}\n{"prompt": "2+2?"}\n')
    export = cli(
        "humaneval",
        "export",
        "tiny-llama",
        "tiny-llama",
        "--prompts",
        str(tmp_path / "p.jsonl"),
        "--out",
        str(tmp_path / "he"),
        "--max-new-tokens",
        "2",
    )
    assert export.returncode == 0, export.stderr
    folder = tmp_path / "he"
    assert json.loads((folder / "key.json").read_text())["models"] == ["tiny-llama", "tiny-llama (tiny-llama)"]
    _fill(folder, ["x", "tie"], first="tiny-llama")
    result = cli("humaneval", "import", str(folder / "sheet.csv"))
    assert result.returncode == 0, result.stderr
    assert json.loads((folder / "results.json").read_text())["win_rate"] == 1.0
    (folder / "key.json").unlink()
    missing = cli("humaneval", "import", str(folder / "sheet.csv"))
    assert missing.returncode == 2 and "No key file" in missing.stderr
