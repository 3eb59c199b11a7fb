"""benchmarks/known_pairs.py: the Poisson fit behind lesson 08's 'pull towards known pairs' (NOTES, ninth round)
recovers a rate ratio planted in counts drawn from its own model, and finds none where none was planted."""

import importlib.util
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("known_pairs", Path(__file__).resolve().parents[1] / "benchmarks"
                                              / "known_pairs.py")
known_pairs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(known_pairs)


def _counts(rho: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    colours, shapes = 8, 6
    held_shape = {c: (c * 5) % shapes for c in range(colours)}            # each colour's held-out shape
    N = torch.full((colours, shapes), 2000.0)
    for c, s in held_shape.items():
        N[c, s] = 0                                                          # no pictures of a held-out pair
    a = 0.5 * torch.randn(colours, shapes, generator=g)                      # how hard each picture class is
    b = -4 + torch.randn(shapes, shapes, generator=g)                        # which shapes look alike
    rate = N[:, :, None] * (a[:, :, None] + b[None]).exp()
    for c, s in held_shape.items():
        rate[c, :, s] *= rho
    rate *= ~torch.eye(shapes, dtype=torch.bool)[None]
    return N, torch.poisson(rate, generator=g), held_shape


@pytest.mark.parametrize("rho", [0.5, 1.0, 2.0])
def test_fit_recovers_a_planted_rate_ratio(rho):
    found, low, high = known_pairs.fit_rate_ratio(*_counts(rho, seed=int(rho * 10)))
    assert low < rho < high
    assert low < found < high and high / low < 2.5                           # an interval narrow enough to tell


def test_a_pull_is_told_from_none():
    assert known_pairs.fit_rate_ratio(*_counts(0.4, seed=1))[2] < 1.0       # the whole interval below 1
    _, low, high = known_pairs.fit_rate_ratio(*_counts(1.0, seed=2))
    assert low < 1.0 < high
