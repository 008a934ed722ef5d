"""Text classification on an encoder (MiniLM, BERT): labelled rows, the methods, and the run flow."""
