"""The temperature τ: fixed, or learnable as CLIP learns it (lessons 05 and 07).

Every similarity is divided by τ before the softmax. CLIP does not learn τ directly: it learns
`logit_scale = log(1/τ)` and multiplies by `logit_scale.exp()`. Learning the logarithm keeps τ
positive whatever the optimiser does, and makes a step mean the same *relative* change at τ = 0.5
as at τ = 0.01. CLIP starts at τ = 0.07 and clips the logit scale at 100 (τ ≥ 0.01) because it found
that necessary for stable training; open_clip clamps `logit_scale` to [0, ln 100] (τ in [0.01, 1])
after every optimiser step and keeps it out of weight decay. This module does the same.

SigLIP (lesson 09) learns t = 1/τ the same way, from t = 10 (τ = 0.1) with open_clip's clamp, and a
bias b from -10; the bias lives on the model (`CLIPConfig.logit_bias`).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

INIT_TEMPERATURE = 0.07
MIN_TEMPERATURE = 0.01   # logit scale at most 100
MAX_TEMPERATURE = 1.0    # logit scale at least 1
SIGLIP_INIT_TEMPERATURE = 0.1   # SigLIP starts t = 1/τ at 10: t' = log t = log 10 (Zhai et al. 2023)
SIGLIP_INIT_BIAS = -10.0        # ... and its bias b at -10 (lesson 09)


def _positive(value, name: str) -> float:
    """`value` as a float: a finite number > 0 (int, float, numpy number or 0-d tensor), or a clear error."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = float(value)                                   # a 0-d tensor, e.g. model.temperature()
    if isinstance(value, bool) or not isinstance(value, Real):
        kind = (f"Tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) and value.ndim
                else type(value).__name__)
        raise TypeError(f"{name} must be a number (a float, or a 0-d tensor), got {kind}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


class FixedTemperature(nn.Module):
    """A constant τ, stored as a buffer so it moves with the model between devices."""

    def __init__(self, temperature: float = INIT_TEMPERATURE):
        super().__init__()
        temperature = _positive(temperature, "temperature")
        self.register_buffer("logit_scale", torch.tensor(math.log(1.0 / temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        """τ = exp(-logit_scale), a 0-d tensor."""
        return self.logit_scale.neg().exp()

    def forward(self) -> torch.Tensor:
        return self.temperature

    def clamp_(self) -> None:
        """Nothing to clamp: a fixed τ never moves."""

    def extra_repr(self) -> str:
        return f"temperature={self.temperature.item():.4g}"


class LearnableTemperature(nn.Module):
    """τ learned as `logit_scale = log(1/τ)`, starting at 0.07, clamped to [0.01, 1] by `clamp_()`."""

    def __init__(self, init: float = INIT_TEMPERATURE, min_temperature: float = MIN_TEMPERATURE,
                 max_temperature: float = MAX_TEMPERATURE):
        super().__init__()
        init = _positive(init, "init")
        min_temperature = _positive(min_temperature, "min_temperature")
        max_temperature = _positive(max_temperature, "max_temperature")
        if not min_temperature <= init <= max_temperature:
            raise ValueError(f"need 0 < min_temperature <= init <= max_temperature, got "
                             f"{min_temperature}, {init}, {max_temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init)))  # CLIP's name, log(1/τ)
        self.min_temperature, self.max_temperature = min_temperature, max_temperature

    @property
    def temperature(self) -> torch.Tensor:
        """τ = exp(-logit_scale), a 0-d tensor that carries gradient to logit_scale."""
        return self.logit_scale.neg().exp()

    def forward(self) -> torch.Tensor:
        return self.temperature

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep τ in [min_temperature, max_temperature]; call after every optimiser step."""
        self.logit_scale.clamp_(math.log(1.0 / self.max_temperature), math.log(1.0 / self.min_temperature))

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature.item():.4g}, "
                f"range=[{self.min_temperature}, {self.max_temperature}]")
