"""Task gan: a GAN (Goodfellow et al. 2014) with the non-saturating generator loss: MLP generator and discriminator,
one discriminator and one generator Adam step per training step, on standardized rows. Losses and the
discriminator's accuracy go to metrics.jsonl; samples are drawn into samples.png and the report; the generator is
saved as generator/ (safetensors + JSON with the de-standardization)."""

from __future__ import annotations

import time

import numpy as np
import torch
from rich.console import Console
from torch import nn

from trainforge.checkpoints import load_checkpoint, save_checkpoint
from trainforge.config import RunConfig, load_config
from trainforge.data.versioning import of_arrays
from trainforge.hardware import device_of, pick_device
from trainforge.nn.models import linear_stack, load_network, save_network
from trainforge.run.finish import finish_with_scores, print_summary
from trainforge.tasks.gan.data import load_gan_rows, mode_scores
from trainforge.tasks.registry import open_task_run
from trainforge.tracking.figures import png, pyplot
from trainforge.tracking.rundir import RunDir, atomic_write_bytes

console = Console(stderr=True)
GENERATOR_DIR = "generator"


def discriminator_accuracy(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Share of real rows scored real and fake rows scored fake: near 0.5 when the generator fools it."""
    real, fake = real.to(device_of(disc)), fake.to(device_of(disc))
    with torch.no_grad():
        return ((disc(real) > 0).float().mean().item() + (disc(fake) <= 0).float().mean().item()) / 2


def sample(gen: nn.Module, meta: dict, n: int, seed: int) -> np.ndarray:
    """n generated rows in the data's own units."""
    noise = torch.randn(n, meta["latent_dim"], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = gen(noise.to(device_of(gen))).cpu().numpy()
    return out * np.asarray(meta["std"], dtype=np.float32) + np.asarray(meta["mean"], dtype=np.float32)


def sample_scores(points: np.ndarray, task: str | None) -> dict[str, float]:
    return mode_scores(points) if task == "gaussian-mixture" else {}


def moment_gaps(points: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """How far the samples' per-feature (per-pixel) distributions lie from the data's, in data standard deviations
    (0: matched), averaged over features: the gap of the means, of the spreads, and the 1-D Wasserstein distance.
    The untrained generator's outputs de-standardize to about the data's mean, so `mean_gap` starts small; the
    spread and the distance show what training adds."""
    from scipy.stats import wasserstein_distance

    std = rows.std(axis=0)
    varying = std > 1e-6  # constant features (digits' always-blank corner pixels) have no scale to measure in
    a, b = points[:, varying] / std[varying], rows[:, varying] / std[varying]
    return {
        "mean_gap": float(np.mean(np.abs(a.mean(axis=0) - b.mean(axis=0)))),
        "std_gap": float(np.mean(np.abs(a.std(axis=0) - b.std(axis=0)))),
        "wasserstein": float(np.mean([wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])])),
    }


def train(config: RunConfig, resume: bool = False, callbacks: list | None = None) -> RunDir:
    g = config.gan
    rows, columns, source = load_gan_rows(config.data, g.seed)  # data problems surface before the run exists
    mean, std = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    data = torch.from_numpy((rows - mean) / std)
    dim = data.shape[1]
    meta = {
        "sizes": [g.latent_dim, *g.hidden, dim],
        "latent_dim": g.latent_dim,
        "columns": columns,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "task": config.data.task,
        "dataset": config.data.dataset,
    }
    # every row trains: one split, its rows numbered in the order read
    version = of_arrays({"train": rows}, {"train": None}, {"train": np.arange(len(rows))})
    config, run = open_task_run("gan", config, resume, version)
    with run.failing_on_error():
        torch.manual_seed(g.seed)
        # The data and noise stay on the CPU, drawn from the seeded CPU generator (the same draws on any machine);
        # each batch goes to the device.
        device = pick_device()
        gen, disc = linear_stack(meta["sizes"]).to(device), linear_stack([dim, *g.hidden, 1], "leaky_relu").to(device)
        before = moment_gaps(sample(gen, meta, g.samples, seed=g.seed + 1), rows)  # the untrained generator
        opt_g = torch.optim.Adam(gen.parameters(), lr=g.learning_rate, betas=g.betas)
        opt_d = torch.optim.Adam(disc.parameters(), lr=g.learning_rate, betas=g.betas)
        rng, start = torch.Generator().manual_seed(g.seed), 0
        restored = load_checkpoint(run) if resume else None
        if restored:
            start, state = restored
            gen.load_state_dict(state["gen"]), disc.load_state_dict(state["disc"])
            opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"]), rng.set_state(state["rng"])
        console.print(f"[bold]data:[/] {source}: {len(rows)} rows × {dim} features")
        console.print(
            f"[bold]gan:[/] generator {meta['sizes']}, discriminator {[dim, *g.hidden, 1]}, {g.steps} steps"
            + (f", resuming at step {start}" if start else "")
        )
        bce, started = nn.BCEWithLogitsLoss(), time.perf_counter()
        ones, zeros = torch.ones(g.batch_size, 1, device=device), torch.zeros(g.batch_size, 1, device=device)
        for step in range(start + 1, g.steps + 1):
            real = data[torch.randint(0, len(data), (g.batch_size,), generator=rng)].to(device)
            fake = gen(torch.randn(g.batch_size, g.latent_dim, generator=rng).to(device))
            d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = bce(disc(fake), ones)  # non-saturating: the generator maximizes log D(G(z))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            if step % g.logging_steps == 0 or step == g.steps:
                run.append_metrics(
                    {
                        "step": step,
                        "d_loss": round(d_loss.item(), 4),
                        "g_loss": round(g_loss.item(), 4),
                        "d_accuracy": round(discriminator_accuracy(disc, real, fake.detach()), 4),
                    }
                )
            if step % g.save_steps == 0 and step < g.steps:
                save_checkpoint(
                    run,
                    step,
                    gen.state_dict(),
                    {
                        "gen": gen.state_dict(),
                        "disc": disc.state_dict(),
                        "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(),
                        "rng": rng.get_state(),
                    },
                )
        train_seconds = time.perf_counter() - started
        gen.eval()
        save_network(run.path / GENERATOR_DIR, gen, meta)
        points = sample(gen, meta, g.samples, seed=g.seed + 1)
        held = torch.from_numpy((rows[: g.samples] - mean) / std)
        fake = torch.from_numpy((points - mean) / std)
        scores = {
            "d_accuracy": round(discriminator_accuracy(disc, held, fake), 4),
            **moment_gaps(points, rows),
            **sample_scores(points, config.data.task),
        }
        picture = samples_png(points, rows, meta, config.data.dataset)
        atomic_write_bytes(run.file("samples.png"), picture)
        summary = {
            "model": "gan",
            "data": source,
            "steps": g.steps,
            "train_seconds": round(train_seconds, 1),
            "trainable_params": sum(p.numel() for p in [*gen.parameters(), *disc.parameters()]),
        }
        comparison = finish_with_scores(
            run,
            config,
            summary,
            before,
            scores,
            figures=[("Losses", losses_png(run.metrics())), ("Samples", picture)],
            artifacts=[run.path / GENERATOR_DIR, run.file("samples.png")],
        )
    print_summary(
        run,
        summary,
        comparison,
        keys=("model", "data", "steps", "train_seconds", *[k for k in summary if k.startswith("after.")]),
    )
    return run


def losses_png(metrics: list[dict]) -> bytes:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    rows = [m for m in metrics if "d_loss" in m]
    steps = [m["step"] for m in rows]
    left.plot(steps, [m["d_loss"] for m in rows], label="discriminator")
    left.plot(steps, [m["g_loss"] for m in rows], label="generator")
    left.set_xlabel("step"), left.set_ylabel("loss"), left.legend(), left.grid(alpha=0.3)
    right.plot(steps, [m["d_accuracy"] for m in rows], color="tab:green")
    right.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("step"), right.set_ylabel("discriminator accuracy"), right.set_ylim(0, 1), right.grid(alpha=0.3)
    return png(fig)


def samples_png(points: np.ndarray, rows: np.ndarray, meta: dict, dataset: str | None) -> bytes:
    """8×8 digit images as a grid of pictures; anything else as a scatter of its first two features."""
    plt = pyplot()
    if dataset == "digits":
        fig, axes = plt.subplots(4, 8, figsize=(8, 4), dpi=110)
        for ax, image in zip(axes.flat, points):
            ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
            ax.axis("off")
        return png(fig)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    x, y = (0, 1) if points.shape[1] > 1 else (0, 0)
    ax.scatter(rows[:, x], rows[:, y], s=4, alpha=0.3, label="data")
    ax.scatter(points[:, x], points[:, y], s=4, alpha=0.5, label="generated")
    ax.set_xlabel(meta["columns"][x]), ax.set_ylabel(meta["columns"][y]), ax.legend(), ax.grid(alpha=0.3)
    return png(fig)


def evaluate(run: RunDir, data: str | None = None, **options) -> dict[str, float]:
    """Fresh samples from the saved generator, scored against the bundled mixture's modes where it has them."""
    config = load_config(run.file("config.yaml"))
    gen, meta = load_network(run.path / GENERATOR_DIR)
    points = sample(gen, meta, config.gan.samples, seed=config.gan.seed + 2)
    return {"samples": len(points), **sample_scores(points, meta["task"])}
