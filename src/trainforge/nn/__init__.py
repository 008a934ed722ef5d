"""Networks trained from scratch in plain PyTorch: engine.py (the training loop every task here shares: AdamW,
early stopping, atomic checkpoints, exact resume, metrics.jsonl), models.py (MLP, LeNet-style CNN, autoencoder;
safetensors + architecture.json), data.py (tables via the classical engine's preprocessing, images) and run.py
(the torch_mlp, image-classification and anomaly-detection runs, predict and eval)."""
