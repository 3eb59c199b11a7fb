"""Lesson 07, second review: the checkers' answers to realistic mistakes and to right answers in other forms."""

import math
import warnings

import numpy as np
import pytest
import torch

from clipcourse import temperature
from clipcourse.exercises import lesson07


def _message(feedback):
    return f"{feedback.message} {feedback.hint}"


def test_the_tau_of_a_learnable_temperature_is_accepted_without_a_warning():
    # cell 9 taught exactly this: set logit_scale, read .temperature (a tensor that requires grad);
    # float() of it printed a UserWarning under the learner's check
    learnable = temperature.LearnableTemperature()
    with torch.no_grad():
        learnable.logit_scale.fill_(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lesson07.check_temperature_from_logit_scale(learnable.temperature).passed is True
        bounds = (torch.nn.Parameter(torch.tensor(0.0)), torch.nn.Parameter(torch.tensor(math.log(100))))
        assert lesson07.check_logit_scale_bounds(bounds).passed is True


@pytest.mark.parametrize("answer", [np.array(math.exp(-3)), np.array([math.exp(-3)])])
def test_a_one_number_numpy_array_is_a_number_as_a_one_number_tensor_is(answer):
    assert lesson07.check_temperature_from_logit_scale(answer).passed is True


@pytest.mark.parametrize("answer", [(math.exp(-3),), [math.exp(-3)]])
def test_one_number_in_a_tuple_or_list_is_named(answer):
    feedback = lesson07.check_temperature_from_logit_scale(answer)
    assert feedback.passed is False
    assert "a number" in feedback.message and "trailing comma" in _message(feedback)


@pytest.mark.parametrize("answer", [(0.0, -math.log(100)), (math.log(1), math.log(0.01))])
def test_log_tau_in_the_order_of_the_question_is_log_tau_not_a_wrong_order(answer):
    # log(1) and log(0.01): the 1/ forgotten; was told "low > high: the pair is in the wrong order too"
    feedback = lesson07.check_logit_scale_bounds(answer)
    assert feedback.passed is False
    assert "log τ" in feedback.message and "wrong order" not in feedback.message


def test_a_string_pair_is_called_a_string_not_ten_values():
    feedback = lesson07.check_logit_scale_bounds("(0, 4.605)")
    assert feedback.passed is False
    assert "string" in feedback.message and "10 values" not in feedback.message


def test_one_value_is_not_one_values():
    feedback = lesson07.check_logit_scale_bounds(torch.tensor([[0.0, 4.6]]))
    assert feedback.passed is False and "got 1 value." in feedback.message


@pytest.mark.parametrize("answer", [(0, math.log(100)), (-math.log(1), -math.log(0.01)), (0, 4.605),
                                    torch.tensor([0.0, math.log(100)]), np.array([0.0, math.log(100)])])
def test_right_bounds_in_other_forms_still_pass(answer):
    assert lesson07.check_logit_scale_bounds(answer).passed is True


@pytest.mark.parametrize("answer", [math.exp(-3), 1 / math.exp(3), math.e ** -3, torch.tensor(3.0).neg().exp(),
                                    np.exp(-3.0), np.float32(math.exp(-3)), 0.0498])
def test_right_taus_in_other_forms_still_pass(answer):
    assert lesson07.check_temperature_from_logit_scale(answer).passed is True
