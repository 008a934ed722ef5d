"""`training.gradient_checkpointing`: true recomputes every layer in backward, an integer N every N-th layer."""

import pytest
from transformers import TrainerCallback

from conftest import tiny_run_config
from trainforge.pipeline import train


def test_checkpointing_every_nth_layer_recomputes_those_layers_and_keeps_the_numbers(runs_dir):
    class Layers(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.flags = [layer.gradient_checkpointing for layer in model.get_base_model().model.layers]

    def run(name, checkpointing):
        probe = Layers()
        config = tiny_run_config(runs_dir, name=name, training={"max_steps": 3, "logging_steps": 1, "precision": "fp32",
                                                                "gradient_checkpointing": checkpointing},
                                 evaluation={"before_after": False, "generation": False})
        return [m["loss"] for m in train(config, callbacks=[probe]).metrics() if "loss" in m], probe.flags

    plain, flags = run("plain", False)
    every_other, flags_2 = run("every-other", 2)
    assert flags == [False, False] and flags_2 == [True, False]
    assert every_other == pytest.approx(plain, rel=1e-5)
