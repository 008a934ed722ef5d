import json

import torch

from trainforge.tracking.callbacks import MetricsLogger
from trainforge.tracking.rundir import RunDir


class _State:
    def __init__(self, step):
        self.global_step, self.epoch = step, step / 10


def test_metrics_log_throughput_and_overfitting_warning(tmp_path):
    run = RunDir(tmp_path)
    logger = MetricsLogger(run)
    logger.on_train_begin(None, _State(0), None)
    for step, (loss, tokens) in enumerate([(2.0, 100), (1.5, 200), (1.0, 300)], start=1):
        logger.on_log(
            None, _State(step), None, logs={"loss": loss, "num_tokens": tokens, "grad_norm": 1.0, "learning_rate": 1e-3}
        )
    logger.on_log(None, _State(3), None, logs={"eval_loss": 1.2})
    for step, (loss, tokens) in enumerate([(0.5, 400), (0.3, 500), (0.2, 600)], start=4):
        logger.on_log(None, _State(step), None, logs={"loss": loss, "num_tokens": tokens})
    logger.on_log(None, _State(6), None, logs={"eval_loss": 1.4})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_second"] > 0 for r in rows if "loss" in r and r["step"] > 1)
    assert "warning" not in rows[3] and "overfitting" in rows[-1]["warning"]
    assert {"loss", "grad_norm", "learning_rate", "tokens_per_second"} <= set(rows[1])


def test_rewind_drops_rows_after_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for step in range(1, 6):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    run.rewind_metrics(3)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]


def test_packed_rows_do_not_attend_across_examples():
    """Padding-free packing: each packed example's logits equal those of the example alone."""
    from trainforge.models import load_causal_lm

    model = load_causal_lm("tiny-llama").eval()
    a, b = torch.tensor([5, 17, 300, 42, 8]), torch.tensor([900, 3, 77])
    with torch.no_grad():
        # use_cache=False as in training: packed rows are recognised only without a KV cache
        alone_b = model(b[None], use_cache=False).logits[0]
        packed = model(
            torch.cat([a, b])[None], position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]), use_cache=False
        ).logits[0]
        leaky = model(torch.cat([a, b])[None], use_cache=False).logits[0]
    assert torch.allclose(packed[5:], alone_b, atol=1e-5)
    assert not torch.allclose(leaky[5:], alone_b, atol=1e-3)
