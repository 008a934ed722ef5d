"""One run's life, shared by every task: its directory opened, named or resumed (directory.py), its precision and
inputs resolved (prepare.py), the untrained model's scores and the Trainer's train-and-save (training.py), the one
`finish_run` with the before/after block and the printed summary (finish.py), and a tuning trial as an ordinary
run scored on its validation split (trial.py). Tasks build on these; this layer knows no task."""
