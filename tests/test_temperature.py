"""Fixed and learnable temperatures: CLIP's parameterisation, its start value and the clamp."""

import math

import numpy as np
import pytest
import torch

from clipcourse import temperature as T
from clipcourse.temperature import FixedTemperature, LearnableTemperature


def test_learnable_starts_at_clip_value():
    t = LearnableTemperature()
    assert t.temperature.item() == pytest.approx(0.07)
    assert t().item() == pytest.approx(0.07)
    assert t.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert T.INIT_TEMPERATURE == 0.07 and (T.MIN_TEMPERATURE, T.MAX_TEMPERATURE) == (0.01, 1.0)


def test_the_parameter_is_logit_scale_and_temperature_is_its_transform():
    t = LearnableTemperature(0.3)
    assert [n for n, _ in t.named_parameters()] == ["logit_scale"]
    with torch.no_grad():
        t.logit_scale.fill_(2.5)
    assert t.temperature.item() == pytest.approx(math.exp(-2.5))
    assert t.temperature.ndim == 0


def test_gradient_flows_to_logit_scale():
    t = LearnableTemperature(0.5)
    (1 / t()).backward()  # d(1/τ)/d logit_scale = exp(logit_scale) = 1/τ
    assert t.logit_scale.grad.item() == pytest.approx(2.0)


@pytest.mark.parametrize("direction", [+1.0, -1.0])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_clamp_keeps_tau_in_range_after_a_huge_step(direction, optimizer):
    t = LearnableTemperature()
    if optimizer == "sgd":
        opt = torch.optim.SGD(t.parameters(), lr=1e6)
    else:
        opt = torch.optim.AdamW(t.parameters(), lr=1e3, weight_decay=0.0)
    (direction * t.logit_scale).backward()
    opt.step()
    assert not 0.01 <= t.temperature.item() <= 1.0  # the step really left the range...
    t.clamp_()
    tau = t.temperature.item()
    assert 0.01 - 1e-7 <= tau <= 1.0 + 1e-7          # ...and clamp_ brought it back to the edge
    assert tau == pytest.approx(0.01 if direction < 0 else 1.0)
    assert t.logit_scale.requires_grad and t.logit_scale.grad is not None


def test_clamp_leaves_an_in_range_value_alone():
    t = LearnableTemperature(0.2)
    before = t.logit_scale.detach().clone()
    t.clamp_()
    assert torch.equal(t.logit_scale.detach(), before)


def test_custom_range():
    t = LearnableTemperature(0.1, min_temperature=0.05, max_temperature=0.2)
    with torch.no_grad():
        t.logit_scale.fill_(100.0)
    t.clamp_()
    assert t.temperature.item() == pytest.approx(0.05)


def test_fixed_temperature_has_no_parameters():
    t = FixedTemperature(0.2)
    assert list(t.parameters()) == []
    assert t().item() == pytest.approx(0.2)
    assert t.logit_scale.item() == pytest.approx(math.log(5.0))
    assert "logit_scale" in dict(t.named_buffers())
    before = t.logit_scale.clone()
    t.clamp_()
    assert torch.equal(t.logit_scale, before)
    assert not t().requires_grad


def test_fixed_temperature_default_is_clip_init():
    assert FixedTemperature()().item() == pytest.approx(0.07)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), torch.tensor(0.0), np.float32("nan")])
def test_fixed_temperature_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        FixedTemperature(bad)


@pytest.mark.parametrize("bad, name", [("0.1", "str"), (None, "NoneType"), (True, "bool"),
                                       (torch.tensor([0.1]), "Tensor of shape \\(1,\\)")])
def test_temperatures_refuse_what_is_not_a_number_naming_its_type(bad, name):
    with pytest.raises(TypeError, match=rf"temperature must be a number .*got {name}"):
        FixedTemperature(bad)
    with pytest.raises(TypeError, match=rf"init must be a number .*got {name}"):
        LearnableTemperature(bad)


@pytest.mark.parametrize("make", [np.float32, np.float64, torch.tensor, lambda v: torch.tensor(v, dtype=torch.float64)])
def test_temperatures_take_numpy_numbers_and_0d_tensors(make):
    assert FixedTemperature(make(0.1))().item() == pytest.approx(0.1)
    learnable = LearnableTemperature(make(0.1), min_temperature=make(0.05), max_temperature=make(0.5))
    assert learnable().item() == pytest.approx(0.1)
    assert isinstance(learnable.min_temperature, float) and isinstance(learnable.max_temperature, float)


@pytest.mark.parametrize("kwargs, name", [(dict(init=math.inf, max_temperature=math.inf), "init"),
                                          (dict(max_temperature=math.inf), "max_temperature"),
                                          (dict(min_temperature=math.nan), "min_temperature"),
                                          (dict(init=0.5, min_temperature=0.0), "min_temperature")])
def test_learnable_temperature_refuses_infinite_or_nan_bounds_clearly(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number > 0"):
        LearnableTemperature(**kwargs)


@pytest.mark.parametrize("init", [0.0, -1.0, 0.005, 1.5])
def test_learnable_temperature_rejects_init_outside_range(init):
    with pytest.raises(ValueError, match="init"):
        LearnableTemperature(init)


def test_learnable_temperature_rejects_inverted_range():
    with pytest.raises(ValueError):
        LearnableTemperature(0.5, min_temperature=0.9, max_temperature=0.1)


def test_repr_shows_tau():
    assert "0.07" in repr(LearnableTemperature())
    assert "0.2" in repr(FixedTemperature(0.2))
