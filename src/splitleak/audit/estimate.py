"""Cost estimates of audit cells, timed on this machine (the dry run and the progress bar)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from splitleak.audit.grid import Cell


def _time(fn: Callable[[], object], reps: int = 3) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


def _backward(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    return lambda: module(x).sum().backward()


def estimate_costs(
    cells: list[Cell],
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    *,
    attacker_pool: int,
    test_size: int,
) -> None:
    """Fill each cell's ``estimate_s`` from timings of this machine (a rough guide, ±2×)."""
    from splitleak.attacks.factory import inversion_settings
    from splitleak.models import split_model

    model.eval()
    x_full = torch.randn(128, *input_shape, requires_grad=True)
    per_sample = _time(_backward(model, x_full)) / 128
    step_cost: dict[tuple[str, int], float] = {}
    for cell in cells:
        if cell.kind == "accuracy":
            cell.estimate_s = per_sample / 3 * test_size * (cell.draws if cell.defenses else 1)
            continue
        a = cell.attack
        assert a is not None
        if (cell.split, a.n_eval) not in step_cost:
            edge = split_model(model, at=cell.split).edge
            x = torch.randn(
                a.n_eval if a.protocol == "random" else 10, *input_shape, requires_grad=True
            )
            step_cost[(cell.split, a.n_eval)] = _time(_backward(edge, x))
        step = step_cost[(cell.split, a.n_eval)]
        steps = inversion_settings(a, architecture="").get("steps", 0)
        samples = min(a.attacker_samples or attacker_pool, attacker_pool)
        train = samples * a.attack_epochs * per_sample
        cell.estimate_s = {"whitebox": steps * step, "inverse-network": 0.5 * train}.get(
            a.attack, train + steps * step
        )
