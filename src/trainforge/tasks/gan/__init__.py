"""Task gan: a generator and a discriminator MLP trained against each other on numeric rows (task.py, data.py)."""
