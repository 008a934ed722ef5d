"""End-to-end: a short LoRA run on the real SmolLM2, merged and exported to F16 GGUF, generates in llama.cpp
(through llama-cpp-python) the same greedy text as the PyTorch model; Q8_0 gives nearly the same next-token logits
(not always the same text: on near-ties llama.cpp's Q8_0 matmuls, which quantize activations too, can flip a token)."""

import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from trainforge.pipeline import train

pytestmark = pytest.mark.e2e

PROMPTS = ["Extract the date: born on May 3, 1999.", "What is the capital of France?", "Name three colors."]


def test_llama_cpp_greedy_text_equals_pytorch(runs_dir):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra `gguf`)")
    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate
    from trainforge.export.gguf import export_run_gguf
    from trainforge.export.quantize import run_model

    config = tiny_run_config(
        runs_dir,
        model={"name": "smollm2-135m-instruct"},
        data={"task_size": 40},
        training={"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3, "max_length": 96, "save_steps": 100},
        evaluation={"before_after": False, "perplexity": False, "generation": False},
    )
    run = train(config)
    gguf_file = export_run_gguf(run)
    model, tokenizer, _ = run_model(run)
    texts = [render(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in PROMPTS]
    want = generate(model, tokenizer, texts, max_new_tokens=16)

    llm = llama_cpp.Llama(model_path=str(gguf_file), n_ctx=256, n_threads=1, verbose=False)
    for text, expected in zip(texts, want):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # the tokenizer metadata matches
        got = llm.create_completion(text, max_tokens=16, temperature=0.0, top_k=1)["choices"][0]["text"]
        assert got.strip() == expected, (text, got, expected)
    llm.close()  # now, not at interpreter exit, where llama-cpp-python's finalizer fails noisily

    q8_0 = llama_cpp.Llama(
        model_path=str(export_run_gguf(run, "q8_0")), n_ctx=256, n_threads=1, logits_all=True, verbose=False
    )
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0, -1].numpy()
        q8_0.reset()
        q8_0.eval(ids)
        got = np.asarray(q8_0.scores[len(ids) - 1])
        cosine = want @ got / np.linalg.norm(want) / np.linalg.norm(got)
        assert cosine > 0.99, (text, cosine)
    q8_0.close()
