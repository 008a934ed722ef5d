"""Task text-classification: a pretrained encoder fine-tuned with a classification head, or a classical estimator
on its frozen embeddings (task.py). Labelled rows are read by data/labelled.py."""
