"""`python -m trainforge ...`: the CLI, with SIGINT handled as Ctrl-C in a terminal. The dashboard launches runs
this way: a dashboard started as a background job (`trainforge ui &` in a script, some service managers) ignores
SIGINT and its children inherit that, so the Stop button's SIGINT would go unheard until the SIGTERM after the
grace period, leaving the run marked `running` instead of `interrupted` with a checkpoint to resume from."""

import signal

from trainforge.cli import main

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
