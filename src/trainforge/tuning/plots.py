"""The trial history picture of a tuning run: every trial's score and the best so far."""

from __future__ import annotations

from trainforge.tracking.figures import png, pyplot


def history_png(trials, metric: str, maximize: bool) -> bytes:
    plt = pyplot()
    done = sorted((t.number, t.value) for t in trials if t.value is not None)
    pruned = [
        (t.number, list(t.intermediate_values.values())[-1])
        for t in trials
        if t.value is None and t.intermediate_values
    ]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    if done:
        numbers, values = zip(*done)
        ax.scatter(numbers, values, s=14, label="complete")
        best, running = [], None
        for v in values:
            running = v if running is None else (max(running, v) if maximize else min(running, v))
            best.append(running)
        ax.step(numbers, best, where="post", color="C1", label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned), s=14, marker="x", color="grey", label="pruned (running fold mean)")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)
