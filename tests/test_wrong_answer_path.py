"""The wrong-answer path: a learner answers an exercise wrongly (or a cell before it left a wrong value behind)
and runs on. The checker must say "not yet" and point at the real cause, never praise a wrong answer nor
blame the right formula for a value an earlier cell changed."""

import torch
import torch.nn.functional as F

from clipcourse.exercises import lesson05


def _says(feedback, *phrases):
    text = str(feedback)
    assert feedback.passed is False, text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"


# --- lesson 05 -------------------------------------------------------------------------------------------

def test_05_gradient_with_sims_divided_by_tau_in_exercise_1_names_the_cause():
    # exercise 1's cell written as `sims = sims / tau_ex` (or `sims /= tau_ex`): exercise 2's right formula,
    # on that `sims`, is a saturated softmax; it was once called "the right pattern times 3.7e-10"
    s = lesson05.exercise_similarities() / lesson05.TAU_EFFECTIVE
    answer = lesson05.reference_gradient(s)
    _says(lesson05.check_gradient_weights(answer), "sims", "exercise 1")
    assert "right pattern" not in str(lesson05.check_gradient_weights(answer))


def test_05_a_nearly_zero_gradient_is_not_the_right_pattern_scaled():
    answer = lesson05.reference_gradient() * 1e-9
    feedback = lesson05.check_gradient_weights(answer)
    _says(feedback, "almost 0")
    assert "right pattern" not in str(feedback)


def test_05_softmax_over_columns_with_the_entropy_over_rows_is_named():
    s = lesson05.exercise_similarities()
    p = torch.softmax(s / lesson05.TAU_EFFECTIVE, dim=0)              # dim=0: the slip
    answer = (-(p * p.log()).sum(dim=-1)).exp()                        # the entropy over each row, as asked
    _says(lesson05.check_effective_negatives(answer), "dim=0")


def test_05_effective_numbers_with_sims_divided_by_tau_twice_are_not_called_entropies():
    # `sims /= tau_ex` and then softmax(sims / tau_ex): every value is >= 1, so exp was taken; it was once
    # diagnosed as "these look like entropies, not exp(entropy)"
    s = lesson05.exercise_similarities() / lesson05.TAU_EFFECTIVE
    feedback = lesson05.check_effective_negatives(lesson05.reference_effective_negatives(s))
    _says(feedback, "τ twice")
    assert "entropies" not in str(feedback)


def test_05_effective_numbers_at_another_tau_name_that_tau():
    answer = lesson05.reference_effective_negatives(tau=0.05)      # the τ of exercise 2
    _says(lesson05.check_effective_negatives(answer), "τ ≈ 0.05")


# --- lesson 09: the lesson's own `B, D = 8, 32` and `labels = 2 * torch.eye(B) - 1` (cell 3), used inside ------
# my_siglip_loss: lessons 04, 10 and 11 name that slip; lesson 09 said "Test it on small tensors first" or gave
# two numbers

LESSON_B = 8
LESSON_LABELS = 2 * torch.eye(LESSON_B) - 1


def _siglip_with_lesson_labels(image_features, text_features, temperature, bias):
    logits = image_features @ text_features.T / temperature + bias
    return -F.logsigmoid(LESSON_LABELS * logits).sum() / len(logits)


def _siglip_divided_by_lesson_b(image_features, text_features, temperature, bias):
    logits = image_features @ text_features.T / temperature + bias
    labels = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(labels * logits).sum() / LESSON_B


def test_09_labels_from_the_lesson_are_named():
    from clipcourse.exercises import lesson09
    _says(lesson09.check_siglip_loss(_siglip_with_lesson_labels), "another batch", "len(image_features)")


def test_09_a_fixed_b_is_named():
    from clipcourse.exercises import lesson09
    _says(lesson09.check_siglip_loss(_siglip_divided_by_lesson_b), "divided by 8", "len(image_features)")
