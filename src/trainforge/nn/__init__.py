"""Networks trained from scratch in plain PyTorch: engine.py (the training loop every task here shares: AdamW,
early stopping, atomic checkpoints, exact resume, metrics.jsonl), models.py (MLP, LeNet-style CNN, autoencoder,
recurrent classifier, character LM, attention seq2seq; safetensors + architecture.json), data.py (tables via the
classical engine's preprocessing, images), seq.py (vocabularies, text / seq2seq data, perplexity, exact match) and
run.py (every task's run, predict and eval)."""
