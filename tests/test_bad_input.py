"""Bad input gets a clear error naming the argument, not a silent NaN, a plausible wrong number or a raw torch error.

One test per case an audit found slipping through; each passed through (or crashed deep inside) before its check.
"""

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, diagnostics, evaluate, temperature_maths


def unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_retrieval_recall_refuses_nan_features_and_bad_ks():
    img, txt = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="image_features holds NaN or infinity"):
        evaluate.retrieval_recall(torch.full_like(img, float("nan")), txt)     # was: recall 1.0 everywhere
    with pytest.raises(ValueError, match="text_features holds NaN or infinity"):
        evaluate.retrieval_recall(img, torch.full_like(txt, float("inf")))
    with pytest.raises(ValueError, match=r"ks must be .* >= 1.*\(0,\)"):
        evaluate.retrieval_recall(img, txt, ks=(0,))                           # was: R@0 = 0.0


def test_zero_shot_accuracy_refuses_labels_outside_the_classes():
    img, classes = unit(6, 8), unit(4, 8, seed=1)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 4\).*from -1 to 9"):
        evaluate.zero_shot_accuracy(img, classes, torch.tensor([0, 1, 2, 3, 9, -1]))  # was: counted as misses


def test_alignment_and_uniformity_refuse_a_bad_exponent():
    x, y = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        evaluate.alignment(x, y, alpha=-1.0)                                   # was: a plausible 0.65
    with pytest.raises(ValueError, match="t must be finite"):
        evaluate.uniformity(x, t=float("nan"))                                 # was: nan


def test_similarities_names_the_argument_instead_of_a_matmul_error():
    with pytest.raises(ValueError, match="image_features and text_features need the same feature size"):
        temperature_maths.similarities(unit(6, 8), unit(6, 4))                 # was: mat1 and mat2 shapes ...
    with pytest.raises(ValueError, match="image_features is not L2-normalised"):
        temperature_maths.similarities(unit(6, 8) * 5, unit(6, 8))             # was: "cosines" of 5


def test_optimal_temperature_refuses_unnormalised_features_and_a_tiny_grid():
    img, txt = unit(6, 8), unit(6, 8, seed=1)
    with pytest.raises(ValueError, match="image_features is not L2-normalised"):
        temperature_maths.optimal_temperature(img * 10, txt * 10)              # was: τ* = 10, an end
    with pytest.raises(ValueError, match="grid must be a whole number >= 3"):
        temperature_maths.optimal_temperature(img, txt, grid=1)                # was: τ* = 0.001 silently
    with pytest.raises(ValueError, match="steps must be a whole number >= 0"):
        temperature_maths.descend_log_temperature(img, txt, 0.07, -1)          # was: ([], [])


def test_hardest_negatives_checks_sims_and_k():
    sims = temperature_maths.similarities(unit(6, 8), unit(6, 8, seed=1))
    with pytest.raises(ValueError, match=r"sims must be a square \(B, B\) matrix"):
        diagnostics.hardest_negatives(sims[:3])                                # was: a raw RuntimeError
    with pytest.raises(ValueError, match="sims holds NaN"):
        diagnostics.hardest_negatives(torch.full((3, 3), float("nan")))        # was: NaN negatives
    with pytest.raises(ValueError, match=r"k \(how many hardest negatives\)"):
        diagnostics.hardest_negatives(sims, k=-1)                              # was: topk's RuntimeError


def test_shift_along_refuses_a_nan_vector():
    x = unit(6, 8)
    with pytest.raises(ValueError, match="vector holds NaN or infinity"):
        diagnostics.shift_along(x, torch.full((8,), float("nan")), -1.0)      # was: all-NaN embeddings


def test_scenes_must_hold_valid_integer_attributes():
    bad_colour = torch.tensor([[[9, 0, 0, 0, 1], [1, 1, 0, 1, 1]]])
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 0\] = 9 is out of range"):
        data.swap_family(bad_colour)                                           # was: family 210, a valid id
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 1\] = 9 is out of range"):
        data.render(torch.tensor([[[0, 9, 0, 0, 1], [0, 0, 0, 0, 0]]]))        # was: a blank picture
    scenes = data.sample_scenes(4, two_object_prob=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="scenes must hold integer attributes"):
        data.swap_family(scenes.float())                                       # was: float family ids


def test_generate_names_a_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int"):
        data.ShapesWorld.generate(4, seed=None)                                # was: manual_seed's RuntimeError


# --- experiments.sweep and siglip.compare: refused in the calling process, before any worker starts ----------

from clipcourse import claims, experiments, siglip   # noqa: E402  (the tests above need none of these)

TINY_SWEEP = dict(taus=[0.1], seeds=[0], steps=3, n_train=64, n_heldout=41, batch_size=8, widths=(8,),
                  device="cpu", workers=1)
TINY_COMPARE = dict(batch_sizes=(8,), seeds=[0], pairs=16, n_train=64, n_heldout=41, widths=(8,), device="cpu")


@pytest.fixture
def no_runs(monkeypatch):
    """Any run that starts fails the test: bad input must be refused before the work begins."""
    def started(*args, **kwargs):
        raise AssertionError("a bad argument reached the runs")
    monkeypatch.setattr(experiments, "_run_all", started)


@pytest.mark.parametrize("change,match", [
    (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),                # was: runs that learn nothing
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(n_heldout=0), "n_heldout must be at least 41, got 0"),             # was: an error in every worker
    (dict(n_heldout=16), "n_heldout must be at least 41, got 16: tolerance"),  # was: a worker's error, by chance
    (dict(resolution=8), "resolution must be a whole number >= 16, got 8"),   # was: an error in every worker
    (dict(widths=()), r"widths must be .*got \(\)"),
    (dict(convs_per_stage=0), "convs_per_stage must be a whole number >= 1, got 0"),
    (dict(device="cpux"), "device must be .*got 'cpux'"),                   # was: torch's RuntimeError
    (dict(threads=0), "threads must be a whole number >= 1.*got 0"),          # was: torch's thread count, silently
    (dict(taus=[0.1, float("inf")]), r"taus: every τ must be positive and finite.*inf"),
    (dict(taus=[0.1, 0.1]), r"taus: .*given once.*\[0.1, 0.1\]"),           # was: each run twice, two "seeds"
    (dict(learnable=True, learnable_starts=[0.07, 0.07]), r"learnable_starts: .*given once"),
    (dict(seeds=[0, 0]), r"seeds must be distinct.*\[0, 0\]"),
])
def test_sweep_refuses_bad_arguments_before_any_run(no_runs, change, match):
    with pytest.raises(ValueError, match=match):
        experiments.sweep(**{**TINY_SWEEP, **change})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_sweep_refuses_cuda_without_a_gpu(no_runs):
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA"):
        experiments.sweep(**{**TINY_SWEEP, "device": "cuda"})             # was: torch's error from the run


def test_log_spaced_refuses_an_infinite_end():
    with pytest.raises(ValueError, match="high=inf"):
        experiments.log_spaced(high=float("inf"), n=3)                   # was: [0.01, inf, inf]


@pytest.mark.parametrize("change,match", [
    (dict(workers=0), "workers must be at least 1.*got 0"),                 # was: ignored (one per core)
    (dict(workers=-1), "workers must be at least 1.*got -1"),               # was: ignored (one run at a time)
    (dict(precision="fp16"), "precision must be 'auto', 'float32' or 'bfloat16', got 'fp16'"),  # was: in a worker
    (dict(device="cpux"), "device must be .*got 'cpux'"),
    (dict(lr=-1e-3), "lr must be a finite number > 0"),
    (dict(temperature_lr=0.0), "temperature_lr must be positive"),
    (dict(bias_starts=(float("nan"),)), r"bias_starts must be finite numbers.*\[nan\]"),  # was: the last run's error
    (dict(resolution=8), "resolution must be a whole number >= 16, got 8"),  # was: an error in every worker
])
def test_compare_refuses_bad_arguments_before_any_run(no_runs, change, match):
    with pytest.raises(ValueError, match=match):
        siglip.compare(**{**TINY_COMPARE, **change})


def test_small_batch_verdict_names_a_mistyped_metric():
    summary = [{"loss": loss, "batch_size": 8, "logit_bias": bias, "n_seeds": 2, "heldout_acc_mean": 0.3,
                "heldout_acc_std": 0.01} for loss, bias in (("clip", None), ("siglip", -10.0))]
    with pytest.raises(ValueError, match="metric must be 'heldout_acc' or 'train_combo_acc', got 'heldout'"):
        siglip.small_batch_verdict(summary, metric="heldout")              # was: KeyError 'heldout_mean'


# --- claims: numbers a verdict cannot be honest about -------------------------------------------------------

def entry(tau, acc, train=None):
    return {"tau": tau, "acc_mean": acc, "acc_std": 0.01, "heldout_acc_mean": acc, "heldout_acc_std": 0.01,
            "train_combo_acc_mean": acc + 0.1 if train is None else train, "train_combo_acc_std": 0.01,
            "final_tau_mean": tau, "final_tau_std": 0.0}


def test_c1_and_c2_refuse_nan():
    with pytest.raises(ValueError, match="pos_after must be a finite number, got nan"):
        claims.c1_pull_push(0.0, float("nan"), 0.0, 0.1)                   # was: "does not hold"
    with pytest.raises(ValueError, match="by_hand must be a finite number, got nan"):
        claims.c2_divided_by_tau(float("nan"), 0.82, 0.82, 2.06)           # was: "does not hold"


def test_c3_refuses_repeated_or_nan_taus_and_nan_numbers():
    with pytest.raises(ValueError, match=r"taus: .*given once.*\[1.0, 0.1, 0.1\]"):
        claims.c3_sharpens([1.0, 0.1, 0.1], [2.0, 1.2, 1.2], [0.1, 0.4, 0.4])  # was: "does not hold"
    with pytest.raises(ValueError, match=r"taus: every τ must be positive and finite.*nan"):
        claims.c3_sharpens([1.0, float("nan"), 0.01], [2.0, 1.2, 0.1], [0.1, 0.4, 0.9])
    with pytest.raises(ValueError, match=r"entropies\[1\] must be a finite number, got nan"):
        claims.c3_sharpens([1.0, 0.1, 0.01], [2.0, float("nan"), 0.1], [0.1, 0.4, 0.9])


def test_summaries_with_nan_accuracy_or_out_of_order_are_refused():
    nan_best = {"sweep": [entry(0.01, 0.5), entry(0.1, float("nan")), entry(1.0, 0.2)]}
    with pytest.raises(ValueError, match=r"summary\['sweep'\] holds NaN or infinity at τ = 0.1 \(acc_mean"):
        claims.c4_high_tau(nan_best)                                     # was: a plausible verdict
    backwards = {"sweep": [entry(0.05, 0.97, train=0.995), entry(0.01, 0.85, train=0.98)]}
    with pytest.raises(ValueError, match=r"fitted\['sweep'\] must be in ascending τ.*\[0.05, 0.01\]"):
        claims.c5_low_tau(backwards)                                     # was: low and best swapped, "does not hold"
    starts = [entry(0.07, float("nan"))]
    with pytest.raises(ValueError, match=r"summary\['learnable_starts'\] holds NaN"):
        claims.c6_learnable({"sweep": [entry(0.1, 0.8)], "learnable_starts": starts})   # was: "unclear"


def test_table_names_its_argument():
    with pytest.raises(TypeError, match="verdicts must be a dict"):
        claims.table(None)                                               # was: AttributeError 'get'


# --- plots, evaluate, temperature_maths and data: the cases a third audit found ---------------------------

import matplotlib.pyplot as plt   # noqa: E402
import numpy as np                # noqa: E402

from clipcourse import plots      # noqa: E402
from clipcourse.model import build_model   # noqa: E402
from clipcourse.text import Tokenizer      # noqa: E402


@pytest.fixture
def no_figures_left():
    yield
    plt.close("all")


def test_plots_take_numpy_and_name_a_bad_positive_ncols_or_captions(no_figures_left):
    sims = temperature_maths.similarities(unit(4, 8), unit(4, 8, seed=1))
    plots.similarity_matrix(sims.numpy())                                     # was: AttributeError 'detach'
    plots.softmax_row(sims[0].softmax(0).numpy(), positive=0)
    with pytest.raises(ValueError, match=r"positive .* in 0 \.\. 3, got 4"):
        plots.softmax_row(sims[0].softmax(0), positive=4)                      # was: IndexError
    with pytest.raises(ValueError, match=r"positive .* in 0 \.\. 3, got 9"):
        plots.gradient_row(sims[0], positive=9)
    with pytest.raises(ValueError, match=r"sims must be a square \(B, B\) matrix"):
        plots.positive_negative_histogram(sims[:3])                            # was: IndexError (mask shape)
    images = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="ncols must be a whole number >= 1, got 0"):
        plots.show_images(images, ncols=0)                                     # was: ZeroDivisionError
    with pytest.raises(ValueError, match="one caption per image: got 3 for 5 images"):
        plots.show_images(images, ["a red circle"] * 3)                        # was: IndexError


def test_confusion_matrix_refuses_labels_that_do_not_fit_it(no_figures_left):
    with pytest.raises(ValueError, match=r"got shape \(3, 3\), 2 row_labels and 2 col_labels"):
        plots.confusion_matrix(torch.eye(3), ["red", "green"])                 # was: the third row unlabelled
    with pytest.raises(ValueError, match=r"got shape \(3, 6\), 3 row_labels and 3 col_labels"):
        plots.confusion_matrix(torch.ones(3, 6), ["red", "green", "blue"])     # was: columns named as colours


def test_accuracy_vs_temperature_refuses_points_it_would_not_draw(no_figures_left):
    with pytest.raises(ValueError, match=r"taus must be > 0 .*taus=\[0.0, 0.1\]"):
        plots.accuracy_vs_temperature([0.0, 0.1], [0.5, 0.6], [0.1, 0.1])    # was: τ = 0 dropped by the log axis
    with pytest.raises(ValueError, match=r"finite.*mean=\[nan, 0.6\]"):
        plots.accuracy_vs_temperature([0.01, 0.1], [float("nan"), 0.6], [0.1, 0.1])  # was: a missing point
    bands = {f"from {t}": (0.5, 0.1) for t in range(7)}
    with pytest.raises(ValueError, match="learnable has 7 bands but there are 5 colours"):
        plots.accuracy_vs_temperature([0.01, 0.1], [0.5, 0.6], [0.1, 0.1], learnable=bands)  # was: 2 dropped


def test_metrics_vs_temperature_refuses_points_it_would_not_draw(no_figures_left):
    good = ([0.5, 0.6], [0.1, 0.1])
    with pytest.raises(ValueError, match=r"taus must be > 0 .*metric 'uniformity'.*taus=\[0.0, 0.1\]"):
        plots.metrics_vs_temperature([0.0, 0.1], {"uniformity": good})      # was: τ = 0 dropped by the log axis
    with pytest.raises(ValueError, match=r"metric 'alignment'.*mean=\[nan, 0.6\]"):
        plots.metrics_vs_temperature([0.01, 0.1], {"uniformity": good, "alignment": ([float("nan"), 0.6], [0, 0])})
    with pytest.raises(ValueError, match=r"metric 'alignment'.* one length"):
        plots.metrics_vs_temperature([0.01, 0.1], {"alignment": ([0.5], [0.1])})  # was: matplotlib's shape error


def test_image_to_text_examples_takes_numpy_pictures(no_figures_left):
    pictures = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    fig = plots.image_to_text_examples(pictures, [["a", "b"], ["c", "d"]], np.ones((2, 2)))  # was: AttributeError
    assert len(fig.axes) == 4
    plt.close(fig)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_embed_refuses_a_batch_size_below_one(batch_size):
    model = build_model(Tokenizer.for_shapesworld())
    with pytest.raises(ValueError, match=f"batch_size must be a whole number >= 1.*got {batch_size}"):
        evaluate.embed_images(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), batch_size=batch_size)


def test_zero_shot_classifier_refuses_no_class_names():
    tok = Tokenizer.for_shapesworld()
    with pytest.raises(ValueError, match=r"classnames must be a non-empty list.*got \[\]"):
        evaluate.zero_shot_classifier(build_model(tok), tok, [])              # was: torch.stack's RuntimeError


def test_tolerance_refuses_nan_integer_or_zero_features():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="tolerance: features hold NaN"):
        evaluate.tolerance(torch.full((4, 8), float("nan")), labels)          # was: nan
    with pytest.raises(ValueError, match="other_class_similarity: .*all-zero row"):
        evaluate.other_class_similarity(torch.zeros(4, 8), labels)            # was: 0.0
    with pytest.raises(TypeError, match="tolerance: features must be floating point"):
        evaluate.tolerance(torch.ones(4, 8, dtype=torch.long), labels)        # was: 1.0 from normalised ints


def test_entropy_refuses_similarities_and_row_stats_names_row():
    sims = temperature_maths.similarities(unit(6, 8), unit(6, 8, seed=1))
    with pytest.raises(ValueError, match=r"probs must be probabilities.*probabilities\(sims, tau\)"):
        temperature_maths.entropy(sims)                                        # was: NaN for negative cosines
    with pytest.raises(ValueError, match=r"row must be a whole number in \[0, 5\].*got 6"):
        temperature_maths.row_stats(sims, 0.1, 6)                              # was: an IndexError


def test_describe_and_hard_negatives_check_scenes_and_names_check_ids():
    bad = torch.tensor([[[9, 0, 0, 0, 1], [1, 1, 0, 1, 1]]])
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 0\] = 9 is out of range"):
        data.describe(bad)                                                     # was: IndexError
    with pytest.raises(ValueError, match=r"scenes\[0, 0, 0\] = -1 is out of range"):
        data.hard_negative_captions(torch.tensor([[[-1, 0, 0, 0, 1], [1, 1, 0, 1, 1]]]))                                # was: a caption, colour wrapped round
    with pytest.raises(TypeError, match="scenes must be a torch.Tensor"):
        data.hard_negative([[[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]])               # was: AttributeError 'clone'
    with pytest.raises(ValueError, match=r"index must be a combination id in 0 \.\. 47, got -1"):
        data.combo_name(-1)                                                    # was: 'cyan ring'
    with pytest.raises(TypeError, match=r"index must be a whole-number combination id, got 2.0"):
        data.combo_name(2.0)                                                   # was: "list indices must be integers"
    assert data.combo_name(torch.tensor(7)) == data.combo_name(np.int64(7)) == data.combo_name(7)  # a label's type


@pytest.mark.parametrize("jitter", [-0.1, float("nan"), float("inf")])
def test_generate_refuses_a_negative_or_non_finite_jitter(jitter):
    with pytest.raises(ValueError, match=f"jitter must be a finite number >= 0.*got {jitter}"):
        data.ShapesWorld.generate(4, jitter=jitter)                            # was: ignored, or black objects
