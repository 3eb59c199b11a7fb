"""Bad input to the public functions of the last two rounds gets a clear error naming the argument (round 16 audit).

Each `was:` says what happened before the check; the last test of each group is valid-but-edge input
(numpy numbers, 0-d tensors, one seed, many seeds) that must keep working and give the same numbers.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipcourse import claims, distributed, evaluate, train
from clipcourse.train import TrainConfig


# --- evaluate.tied_accuracy ---------------------------------------------------------------------

def test_tied_accuracy_names_a_numpy_array_not_its_dtype():
    with pytest.raises(TypeError, match=r"fits must be a bool tensor .*got ndarray"):
        evaluate.tied_accuracy(np.eye(3, dtype=bool))             # was: "... got bool", though it was bool


# --- train.BatchOrder ---------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch_size, match", [
    (3, 4, r"batch_size must be a whole number in 1 \.\. 3, got 4"),   # was: ZeroDivisionError in indices
    (10, 0, r"batch_size .* got 0"),                                  # was: ZeroDivisionError
    (10, -1, r"batch_size .* got -1"),                                # was: 9 pairs, silently
    (10, True, r"batch_size .* got True"),                            # was: batches of 1
    (10, 4.0, r"batch_size .* got 4\.0"),                             # was: TypeError about slice indices
    (0, 4, r"n must be a whole number >= 1, got 0"),                  # was: ZeroDivisionError
    (-1, 4, r"n must be .* got -1"),                                  # was: torch's negative-dimension error
])
def test_batch_order_refuses_counts_that_make_no_batch(n, batch_size, match):
    with pytest.raises(ValueError, match=match):
        train.BatchOrder(n, batch_size, 0)


@pytest.mark.parametrize("seed", [None, 1.5, True, "0"])
def test_batch_order_names_a_seed_that_is_not_an_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):      # was: torch's "manual_seed expected a long"
        train.BatchOrder(10, 4, seed)


@pytest.mark.parametrize("step", [-1, 1.0, None, True])
def test_batch_order_indices_refuses_a_step_that_is_not_a_step(step):
    with pytest.raises(ValueError, match=r"step must be a whole number >= 0"):   # was: -1 gave the last batch
        train.BatchOrder(10, 4, 0).indices(step)


def test_batch_order_takes_numpy_whole_numbers():
    reference = train.BatchOrder(10, 4, 3)
    order = train.BatchOrder(np.int64(10), np.int64(4), np.int64(3))   # was: TypeError "an integer is required"
    for step in range(5):
        assert torch.equal(order.indices(np.int64(step)), reference.indices(step))


# --- train.temperature_travel and train.reachable_temperatures ----------------------------------

CFG = TrainConfig(steps=200, lr=2e-3, warmup_steps=20)


def test_temperature_travel_names_a_config_that_is_not_a_train_config():
    with pytest.raises(TypeError, match="cfg must be a TrainConfig, got dict"):   # was: AttributeError 'steps'
        train.temperature_travel({"steps": 200, "lr": 2e-3})


@pytest.mark.parametrize("changes, match", [
    (dict(steps=-5), r"cfg\.steps must be a whole number >= 0, got -5"),   # was: "from_step must be in [0, -5]"
    (dict(steps=10.5), r"cfg\.steps .* got 10\.5"),                        # was: TypeError from range()
    (dict(lr=float("nan")), r"cfg\.lr must be finite, got nan"),            # was: nan
    (dict(lr=-1e-3), r"cfg\.lr must be > 0, got -0\.001"),                  # was: a negative travel
    (dict(temperature_lr=float("nan")), r"cfg\.temperature_lr must be finite"),
    (dict(temperature_lr=-0.1), r"cfg\.temperature_lr must be > 0"),
])
def test_temperature_travel_refuses_a_config_with_no_travel(changes, match):
    cfg = TrainConfig(**{**CFG.__dict__, **changes})
    with pytest.raises(ValueError, match=match):
        train.temperature_travel(cfg)


def test_reachable_temperatures_refuses_a_nan_learning_rate_instead_of_the_whole_clamp():
    with pytest.raises(ValueError, match="cfg.temperature_lr must be finite"):   # was: (0.01, 1.0)
        train.reachable_temperatures(TrainConfig(steps=200, temperature_lr=float("nan")))


@pytest.mark.parametrize("start, error", [
    ("0.07", TypeError),                   # was: "'<=' not supported between 'float' and 'str'"
    (None, TypeError),                     # was: the same, for NoneType
    (True, TypeError),                     # was: read as τ = 1
    (torch.tensor([0.07, 0.1]), ValueError),   # was: "Boolean value of Tensor ... is ambiguous"
    (torch.tensor([0.07]), ValueError),    # was: two (1,) tensors
])
def test_reachable_temperatures_names_a_start_that_is_not_one_number(start, error):
    with pytest.raises(error, match="start"):
        train.reachable_temperatures(CFG, start)


def test_reachable_temperatures_reaches_the_clamp_without_overflowing():
    # Σ lr ≈ 1500: e^1500 overflows a float; the answer is the whole clamp
    assert train.reachable_temperatures(TrainConfig(steps=1000, lr=3.0)) == (0.01, 1.0)   # was: OverflowError


def test_numpy_numbers_and_0d_tensors_are_accepted_with_the_same_numbers():
    assert train.temperature_travel(CFG, np.int64(150)) == train.temperature_travel(CFG, 150)   # was: ValueError
    low, high = train.reachable_temperatures(CFG, 0.07)
    assert train.reachable_temperatures(CFG, np.float64(0.07)) == (low, high)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no "converting a tensor with requires_grad" warning
        from_tensor = train.reachable_temperatures(CFG, torch.tensor(0.07, dtype=torch.float64, requires_grad=True))
    assert from_tensor == (low, high) and all(type(t) is float for t in from_tensor)   # was: two tensors with grad
    assert train.reachable_temperatures(CFG, 1) == (pytest.approx(math.exp(-train.temperature_travel(CFG))), 1.0)


# --- claims.c6_learnable's paired rows -----------------------------------------------------------

def entry(tau, acc, std=0.01, final_tau=None):
    return {"tau": tau, "acc_mean": acc, "acc_std": std, "heldout_acc_mean": acc, "heldout_acc_std": std,
            "train_combo_acc_mean": acc + 0.1, "train_combo_acc_std": 0.01,
            "final_tau_mean": tau if final_tau is None else final_tau, "final_tau_std": 0.0}


SUMMARY = {"sweep": [entry(0.01, 0.50), entry(0.0316, 0.70), entry(0.1, 0.87, std=0.052), entry(0.316, 0.40)],
           "learnable_starts": [entry(0.07, 0.80, std=0.05, final_tau=0.07)]}


def rows_of(best, learnable):
    """Rows as experiments.sweep returns them: fixed τ = 0.1 (the best) and learnable from 0.07, seed k each."""
    return ([{"tau": 0.1, "seed": k, "heldout_acc": a, "learnable": False} for k, a in enumerate(best)]
            + [{"tau": 0.07, "seed": k, "heldout_acc": a, "learnable": True} for k, a in enumerate(learnable)])


ROWS = rows_of((0.93, 0.85, 0.83), (0.84, 0.77, 0.82))     # -9, -8, -1 points: paired t -2.4, not beyond 2.92


def test_c6_refuses_rows_that_repeat_a_run():
    assert claims.c6_learnable(SUMMARY, ROWS).answer == claims.UNCLEAR
    with pytest.raises(ValueError, match=r"rows\[6\] repeats .*\(False, 0\.1, 0\)"):   # was: FAILS, on six
        claims.c6_learnable(SUMMARY, ROWS + ROWS)                                       # "seeds" of three


def test_c6_names_a_nan_accuracy_in_rows():
    rows = ROWS[:3] + [dict(ROWS[3], heldout_acc=float("nan"))] + ROWS[4:]
    with pytest.raises(ValueError, match=r"rows\[3\]\['heldout_acc'\] must be a finite number, got nan"):
        claims.c6_learnable(SUMMARY, rows)                  # was: AttributeError 'float' has no 'numerator'


@pytest.mark.parametrize("args", [(SUMMARY, SUMMARY), (SUMMARY, ROWS[0]), (ROWS, SUMMARY)])
def test_c6_names_a_summary_and_rows_mixed_up(args):
    with pytest.raises(TypeError, match="summary .* rows"):       # was: "string indices must be integers" or
        claims.c6_learnable(*args)                                 # "'list' object has no attribute 'get'"


def test_c6_pairs_one_seed_many_seeds_and_a_generator_of_rows():
    one = claims.c6_learnable(SUMMARY, rows_of((0.93,), (0.84,)))
    assert "seed by seed: -9.0 points)" in one.evidence and "standard error" not in one.evidence
    # 12 seeds, differences -6 ± 0.5: the t of 10 degrees of freedom (the table's last), clearly below
    many = rows_of([0.9] * 12, [0.84 + 0.001 * (k % 2) for k in range(12)])
    assert claims.c6_learnable(SUMMARY, many).answer == claims.FAILS
    assert claims.c6_learnable(SUMMARY, iter(ROWS)).evidence == claims.c6_learnable(SUMMARY, ROWS).evidence


# --- distributed: GatherFeatures' encoders and local_clip_loss ----------------------------------

class NoEncoders(torch.nn.Module):
    """A model with a forward but no encode_image / encode_text."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, images, tokens):
        return self.linear(images), self.linear(tokens), torch.tensor(0.07)


@pytest.mark.parametrize("name", ["encode_image", "encode_text"])
def test_gather_features_names_a_missing_encoder(name):
    wrapped = distributed.GatherFeatures(NoEncoders())
    with pytest.raises(TypeError, match=f"NoEncoders.*has no {name}"):   # was: "'NoneType' object is not callable"
        getattr(wrapped, name)(torch.randn(2, 4))


def test_local_clip_loss_takes_a_numpy_rank():
    g = torch.Generator().manual_seed(0)
    img, txt = (F.normalize(torch.randn(8, 16, generator=g), dim=-1) for _ in range(2))
    expected = distributed.local_clip_loss(img[4:], txt[4:], img, txt, 0.07, 1)
    assert torch.equal(distributed.local_clip_loss(img[4:], txt[4:], img, txt, 0.07, np.int64(1)), expected)  # was:
    with pytest.raises(TypeError, match="rank must be an int, got bool"):                                   # TypeError
        distributed.local_clip_loss(img[4:], txt[4:], img, txt, 0.07, True)


# --- BatchOrder.indices out of order: a later epoch is drawn, an earlier one refused --------------------------------

def test_batch_order_jumps_forward_to_the_right_epoch():
    replayed = [b.clone() for b in map(train.BatchOrder(40, 10, seed=3).indices, range(13))]   # 4 batches an epoch
    jumper = train.BatchOrder(40, 10, seed=3)
    assert torch.equal(jumper.indices(9), replayed[9])         # epoch 2, reached without steps 0-8 (epoch 0 before)
    assert torch.equal(jumper.indices(12), replayed[12])


def test_batch_order_asked_twice_for_an_epoch_start_gives_one_batch():
    order = train.BatchOrder(40, 10, seed=3)
    first = [order.indices(s).clone() for s in range(5)]
    assert torch.equal(order.indices(4), first[4])              # a second call at step 4 drew a third shuffle before


def test_batch_order_refuses_to_go_back_an_epoch():
    order = train.BatchOrder(40, 10, seed=3)
    order.indices(5)
    assert torch.equal(order.indices(6), train.BatchOrder(40, 10, seed=3).indices(6))   # within its epoch: fine
    with pytest.raises(ValueError, match="step 2 belongs to epoch 0.*moved on to epoch 1.*new BatchOrder"):
        order.indices(2)


def test_the_left_out_seed_pick_refuses_repeated_rows_and_nan():
    rows = rows_of([0.9, 0.8, 0.85], [0.8, 0.7, 0.75]) + [{"tau": 0.03, "seed": k, "heldout_acc": 0.5, "learnable": False}
                                                          for k in range(3)]
    assert [p["tau"] for p in claims.best_fixed_by_left_out_seed(rows)] == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match=r"rows\[9\] repeats"):             # two sweeps joined: one seed counted twice
        claims.best_fixed_by_left_out_seed(rows + rows[:1])
    nan = [dict(r, heldout_acc=math.nan) if k == 6 else r for k, r in enumerate(rows)]
    with pytest.raises(ValueError, match=r"rows\[6\]\['heldout_acc'\]"):     # max() over a NaN mean picks by position
        claims.best_fixed_by_left_out_seed(nan)
