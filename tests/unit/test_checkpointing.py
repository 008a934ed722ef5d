"""`training.gradient_checkpointing`: true recomputes every layer in backward, an integer N every N-th layer, auto
follows the precision."""

import pytest
from transformers import TrainerCallback

from conftest import tiny_run_config
from trainforge.pipeline import train
from trainforge.run.prepare import resolve_run


def test_checkpointing_every_nth_layer_recomputes_those_layers_and_keeps_the_numbers(runs_dir):
    class Layers(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.flags = [layer.gradient_checkpointing for layer in model.get_base_model().model.layers]

    def run(name, checkpointing):
        probe = Layers()
        config = tiny_run_config(
            runs_dir,
            name=name,
            training={"max_steps": 3, "logging_steps": 1, "precision": "fp32", "gradient_checkpointing": checkpointing},
            evaluation={"before_after": False, "generation": False},
        )
        return [m["loss"] for m in train(config, callbacks=[probe]).metrics() if "loss" in m], probe.flags

    plain, flags = run("plain", False)
    every_other, flags_2 = run("every-other", 2)
    assert flags == [False, False] and flags_2 == [True, False]
    assert every_other == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("precision, resolved", [("fp32", True), ("bf16", 3)])
def test_auto_checkpoints_every_layer_in_fp32_and_every_third_in_bf16(runs_dir, precision, resolved):
    config = tiny_run_config(runs_dir, training={"precision": precision, "gradient_checkpointing": "auto"})
    resolved_config, _, _ = resolve_run(config)
    assert resolved_config.training.gradient_checkpointing == resolved
    assert type(resolved_config.training.gradient_checkpointing) is type(resolved)  # True, not the integer 1
    assert config.training.gradient_checkpointing == "auto"  # the caller's config is left as written
