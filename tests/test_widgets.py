"""The temperature explorers: drive the sliders from Python, check what is drawn and read out.

Both canvases are tested: "agg" (a plain matplotlib canvas) and "ipympl" (the interactive widget,
which works outside a kernel with a dummy comm). No display is needed.
"""

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from clipcourse import temperature_maths, widgets
from clipcourse.loss import clip_loss

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")


def needs_ipympl():
    # not importorskip: importing ipympl switches pyplot's backend, which is part of what we test
    if importlib.util.find_spec("ipympl") is None:
        pytest.skip("ipympl is not installed")


def batch(b=12, d=16, seed=0, noise=0.4, duplicate=True):
    """A partly trained-looking batch; caption 1 repeats caption 0 (two images, one caption)."""
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = F.normalize(img + noise * torch.randn(b, d, generator=g), dim=-1)
    if duplicate:
        txt[1] = txt[0]
    return img, txt


@pytest.fixture(params=["agg", "ipympl"])
def canvas(request):
    if request.param == "ipympl":
        needs_ipympl()
    return request.param


@pytest.fixture
def explorer(canvas):
    img, txt = batch()
    other = batch(seed=1, noise=2.0, duplicate=False)
    return widgets.TemperatureExplorer({"trained": (img, txt), "untrained": other}, tau=0.07, canvas=canvas,
                                       captions=[f"caption {i}" for i in range(len(img))])


def bar_entropy(heights):
    p = np.asarray(heights, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# --- driving the widget -----------------------------------------------------------------------

def test_setting_the_slider_redraws_the_row_matrix_and_readouts(explorer):
    sims = explorer.sims["trained"]
    before = explorer.drawn()
    explorer.value = 0.5                       # what the slider does when dragged
    assert explorer.slider.value == pytest.approx(0.5)
    after = explorer.drawn()
    assert not np.allclose(before["row_probs"], after["row_probs"])
    np.testing.assert_allclose(after["row_probs"], temperature_maths.probabilities(sims, 0.5)[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(after["matrix"], temperature_maths.probabilities(sims, 0.5).numpy(), rtol=1e-6)
    r = explorer.readouts
    assert r["tau"] == pytest.approx(0.5)
    img, txt = explorer.sets["trained"]
    assert r["loss"] == pytest.approx(clip_loss(img.double(), txt.double(), 0.5).item(), rel=1e-9)
    assert "τ = 0.5" in after["readout"] and f"loss = {r['loss']:.3f}" in after["readout"]


def test_entropy_falls_as_tau_falls(explorer):
    readouts, drawn_entropies = [], []
    for tau in (10.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003):
        explorer.set_temperature(tau)
        readouts.append(explorer.readouts)
        drawn_entropies.append(bar_entropy(explorer.drawn()["row_probs"]))
    entropies = [r["entropy"] for r in readouts]
    assert all(a > b for a, b in zip(entropies, entropies[1:])), entropies
    assert all(a > b for a, b in zip(drawn_entropies, drawn_entropies[1:])), drawn_entropies
    np.testing.assert_allclose(drawn_entropies, entropies, atol=1e-5)
    effective = [r["effective_negatives"] for r in readouts]
    np.testing.assert_allclose(effective, np.exp(entropies))
    assert effective[0] == pytest.approx(explorer.batch_size, rel=0.01)     # τ = 10: nearly uniform
    assert all(a > b for a, b in zip([r["mean_entropy"] for r in readouts], [r["mean_entropy"] for r in readouts][1:]))


def test_as_tau_goes_to_zero_tied_captions_share_the_mass(explorer):
    explorer.set_row(0)                        # captions 0 and 1 are the same vector
    explorer.value = 0.001
    probs = explorer.drawn()["row_probs"]
    np.testing.assert_allclose(probs[:2], [0.5, 0.5], atol=1e-6)
    assert explorer.readouts["effective_negatives"] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("row", [2, 3, 7])
def test_as_tau_goes_to_zero_the_mass_goes_to_the_largest_similarity(explorer, row):
    explorer.set_row(row)
    explorer.value = 1e-5                      # clipped to the slider's minimum, about 0.001
    assert explorer.value == pytest.approx(10 ** explorer.slider.min) == pytest.approx(1e-3, rel=0.05)
    probs = explorer.drawn()["row_probs"]
    target = int(explorer.sims["trained"][row].argmax())
    assert int(np.argmax(probs)) == target
    assert probs[target] > 0.99
    assert explorer.readouts["entropy"] < 0.05


def test_mass_goes_to_a_negative_when_it_is_the_most_similar():
    img, txt = batch(duplicate=False)
    txt[2] = F.normalize(img[5] + 0.01 * txt[2], dim=-1)   # caption 2 now looks like image 5
    ex = widgets.TemperatureExplorer((img, txt), canvas="agg", row=5)
    sims = temperature_maths.similarities(img, txt)
    assert int(sims[5].argmax()) == 2
    ex.value = 0.001
    assert int(np.argmax(ex.drawn()["row_probs"])) == 2
    assert ex.stats().hardest == 2 and ex.readouts["hardest_share"] > 0.99


@pytest.mark.parametrize("tau", [10.0, 0.3, 0.07, 0.01, 0.001])
def test_gradient_weights_sum_to_the_pull(explorer, tau):
    explorer.set_row(2)
    explorer.value = tau
    tau = explorer.value                       # 0.001 is clipped to the slider's minimum
    stats = explorer.stats()
    p = stats.probs
    neg = torch.arange(len(p)) != 2
    # Σ_j≠i P_ij / τ = (1 - P_ii) / τ
    assert stats.weights[neg].sum().item() == pytest.approx(((1 - p[2]) / tau).item(), rel=1e-9, abs=1e-15 / tau)
    assert explorer.readouts["pull"] == pytest.approx(stats.pull)
    assert stats.weights[2] == 0
    # what is drawn: the weights of the negatives at their similarities (log axis, floored)
    drawn = explorer.drawn()
    floor = widgets.WEIGHT_RANGE[0]
    np.testing.assert_allclose(drawn["weights"], np.clip((p / tau)[neg].numpy(), floor, None), rtol=1e-6)
    np.testing.assert_allclose(drawn["weights_x"], explorer.sims["trained"][2][neg].numpy(), rtol=1e-6)
    assert f"total (1 − P_ii)/τ = {stats.pull:.3g}" in drawn["readout"]


def test_hardest_share_grows_as_tau_falls(explorer):
    shares = []
    for tau in (3.0, 1.0, 0.3, 0.1, 0.03):
        shares.append(explorer.set_temperature(tau)["hardest_share"])
    assert all(a < b for a, b in zip(shares, shares[1:])), shares


def test_histograms_are_fractions_of_pairs(explorer):
    for tau in (10.0, 0.001):
        explorer.value = tau
        d = explorer.drawn()
        assert d["hist_positive"].sum() == pytest.approx(1.0)
        assert d["hist_negative"].sum() == pytest.approx(1.0)
    # at τ = 0.001 nearly every negative has P < 1e-8: the leftmost bin
    assert d["hist_negative"][0] > 0.8


def test_row_and_embedding_selection(explorer):
    explorer.set_row(4)
    assert explorer.row_selector.value == 4 and explorer.drawn()["positive_bar"] == 4
    colors = explorer.panels.bars.get_facecolor()
    assert (colors[4] != colors[0]).any() and (colors[0] == colors[1]).all()
    np.testing.assert_allclose(explorer.drawn()["row_probs"],
                               temperature_maths.probabilities(explorer.sims["trained"], explorer.value)[4].numpy(), rtol=1e-6)
    loss_trained = explorer.readouts["loss"]
    explorer.set_selector.value = "untrained"           # as a click on the toggle would
    assert explorer.name == "untrained" and explorer.readouts["embeddings"] == "untrained"
    assert explorer.readouts["loss"] != pytest.approx(loss_trained)
    np.testing.assert_allclose(explorer.drawn()["matrix"],
                               temperature_maths.probabilities(explorer.sims["untrained"], explorer.value).numpy(), rtol=1e-6)
    with pytest.raises(KeyError):
        explorer.set_embeddings("nope")
    with pytest.raises(IndexError):
        explorer.set_row(99)


def test_the_picture_changes_and_blitting_matches_a_full_redraw(canvas):
    img, txt = batch()
    ex = widgets.TemperatureExplorer((img, txt), canvas=canvas, tau=0.07)
    if canvas == "ipympl":
        ex.fig.canvas.syncing_data_url = False          # as when a browser is connected
    before = ex.pixels()
    ex.value = 0.9                                      # the fast path: background + changed artists
    fast = ex.pixels()
    assert (fast != before).any(axis=-1).mean() > 0.01
    ex.fig.canvas.draw()                                # a full redraw of the same state
    np.testing.assert_array_equal(ex.pixels(), fast)


def test_agg_view_is_an_image_widget_that_updates():
    import ipywidgets

    img, txt = batch()
    ex = widgets.TemperatureExplorer((img, txt), canvas="agg")
    assert isinstance(ex.view.widget, ipywidgets.Image)
    png = ex.view.widget.value
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ex.value = 2.0
    assert ex.view.widget.value != png


def test_ipympl_layout_has_the_controls_and_the_canvas():
    needs_ipympl()
    import ipywidgets

    img, txt = batch()
    ex = widgets.TemperatureExplorer({"a": (img, txt), "b": batch(seed=3)}, canvas="ipympl")
    assert isinstance(ex.widget, ipywidgets.VBox)
    assert ex.fig.canvas in ex.widget.children
    assert isinstance(ex.slider, ipywidgets.FloatLogSlider)
    lo, hi = 10 ** ex.slider.min, 10 ** ex.slider.max
    assert lo == pytest.approx(1e-3, rel=0.05) and hi == pytest.approx(10, rel=0.05) and ex.value == pytest.approx(0.07)
    # 0.07 sits exactly on the slider's grid, so the browser does not snap it to a neighbour
    k = (math.log10(0.07) - ex.slider.min) / ex.slider.step
    assert k == pytest.approx(round(k), abs=1e-9)
    assert ex.set_selector.options == ("a", "b")
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    # before a browser attaches, the widget keeps its picture as a data URL a browser can show
    url = ex.fig.canvas._data_url
    assert url.startswith("data:image/png;base64,")
    ex.value = 1.0
    assert ex.fig.canvas._data_url != url


def test_bad_input_is_explained():
    img, txt = batch()
    with pytest.raises(ValueError, match="same batch size"):
        widgets.TemperatureExplorer({"a": (img, txt), "b": batch(b=5)}, canvas="agg")
    with pytest.raises(ValueError, match="captions"):
        widgets.TemperatureExplorer((img, txt), captions=["x"], canvas="agg")
    with pytest.raises(ValueError, match="canvas"):
        widgets.TemperatureExplorer((img, txt), canvas="svg")
    with pytest.raises(ValueError, match="pair"):
        widgets.TemperatureExplorer({"a": (img,)}, canvas="agg")


def test_the_ipympl_canvas_leaves_pyplot_backend_alone():
    needs_ipympl()
    code = ("import matplotlib; matplotlib.use('agg'); import torch; from clipcourse import widgets; "
            "widgets.TemperatureExplorer((torch.eye(3), torch.eye(3)), canvas='ipympl'); "
            "import matplotlib.pyplot as plt; print(matplotlib.get_backend(), type(plt.figure().canvas).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["agg", "FigureCanvasAgg"]


def test_importing_widgets_does_not_load_matplotlib_or_ipywidgets():
    code = ("import sys; from clipcourse import widgets; "
            "print(any(m in sys.modules for m in ('matplotlib', 'ipywidgets', 'ipympl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the pure functions -----------------------------------------------------------------------

def test_gradient_weights_equal_autograd_of_the_image_to_text_term():
    img, txt = batch()
    sims = temperature_maths.similarities(img, txt).requires_grad_()
    for tau in (1.0, 0.07, 0.01):
        term = F.cross_entropy(sims / tau, torch.arange(len(sims)), reduction="sum")
        (g,) = torch.autograd.grad(term, sims)
        torch.testing.assert_close(temperature_maths.gradient_weights(sims.detach(), tau), g)
        for row in (0, 5):
            st_ = temperature_maths.row_stats(sims.detach(), tau, row)
            neg = torch.arange(len(sims)) != row
            torch.testing.assert_close(st_.weights[neg], g[row][neg])
            assert st_.pull == pytest.approx(-g[row, row].item())


def test_row_stats_stay_finite_at_tiny_tau():
    img, txt = batch(duplicate=False)
    st_ = temperature_maths.row_stats(temperature_maths.similarities(img, txt), 1e-6, 0)
    assert math.isfinite(st_.entropy) and math.isfinite(st_.hardest_share)
    assert 0 < st_.hardest_share <= 1


sim_matrices = st.integers(min_value=2, max_value=10).flatmap(
    lambda b: st.lists(st.floats(-1, 1), min_size=b * b, max_size=b * b).map(
        lambda xs: torch.tensor(xs, dtype=torch.float64).reshape(int(math.isqrt(len(xs))), -1)))


@settings(max_examples=60, deadline=None)
@given(sims=sim_matrices, t1=st.floats(0.005, 5.0), ratio=st.floats(1.01, 10.0))
def test_lower_tau_never_raises_entropy_or_lowers_the_hardest_share(sims, t1, ratio):
    t2 = t1 * ratio                                         # t1 < t2
    assert temperature_maths.mean_entropy(sims, t1) <= temperature_maths.mean_entropy(sims, t2) + 1e-9
    assert (temperature_maths.hardest_shares(sims, t1) >= temperature_maths.hardest_shares(sims, t2) - 1e-9).all()
    p = temperature_maths.probabilities(sims, t1)
    torch.testing.assert_close(p.sum(-1), torch.ones(len(sims), dtype=torch.float64))


def test_descent_is_gradient_descent_on_log_tau():
    img, txt = batch()
    taus, losses = temperature_maths.descend_log_temperature(img, txt, start=0.2, steps=5, lr=0.7)
    u = torch.tensor(math.log(0.2), dtype=torch.float64, requires_grad=True)
    for k in range(6):
        value = clip_loss(img.double(), txt.double(), u.exp())
        assert taus[k] == pytest.approx(u.exp().item(), rel=1e-9)
        assert losses[k] == pytest.approx(value.item(), rel=1e-9)
        (g,) = torch.autograd.grad(value, u)
        u = (u - 0.7 * g).detach().requires_grad_()


def test_optimal_temperature_is_the_bottom_of_the_curve():
    img, txt = batch()
    best, best_loss = temperature_maths.optimal_temperature(img, txt)
    lo, hi = temperature_maths.TAU_RANGE
    assert lo < best < hi                                   # the duplicate caption keeps τ* inside
    grid = torch.logspace(-3, 1, 400, dtype=torch.float64)
    assert best_loss <= temperature_maths.loss_curve(img, txt, grid).min().item() + 1e-12
    assert temperature_maths.loss_at(img, txt, best * 1.05) > best_loss and temperature_maths.loss_at(img, txt, best / 1.05) > best_loss


# --- the loss-vs-τ explorer -------------------------------------------------------------------

def test_loss_explorer_steps_converge_to_the_optimum(canvas):
    img, txt = batch()
    ex = widgets.LossTemperatureExplorer({"a": (img, txt), "b": batch(seed=2)}, tau=0.5, lr=2.0,
                                         max_steps=60, canvas=canvas)
    best, best_loss = temperature_maths.optimal_temperature(img, txt)
    d = ex.drawn()
    assert d["best"] == (pytest.approx(best), pytest.approx(best_loss))
    np.testing.assert_allclose(d["curve_loss"], temperature_maths.loss_curve(img, txt, d["curve_tau"]).numpy())
    assert len(d["path_tau"]) == 1 and d["now"][0] == pytest.approx(0.5)
    r = ex.step()
    assert r["steps"] == 1 and len(ex.drawn()["path_tau"]) == 2
    assert abs(math.log(ex.readouts["tau"] / best)) < abs(math.log(0.5 / best))      # one step closer
    ex.steps_slider.value = 60
    r = ex.readouts
    assert r["tau"] == pytest.approx(best, rel=0.02)
    assert r["loss"] == pytest.approx(best_loss, rel=1e-3)
    assert ex.drawn()["now"][0] == pytest.approx(r["tau"])
    losses = ex.drawn()["path_loss"]
    assert losses[-1] < losses[0]
    ex.value = 0.01                                         # a new start: a new path, same step count
    assert ex.readouts["start"] == pytest.approx(0.01) and ex.readouts["steps"] == 60
    ex.reset_button.click()
    assert ex.readouts["steps"] == 0
    ex.set_embeddings("b")
    assert ex.drawn()["best"][0] == pytest.approx(temperature_maths.optimal_temperature(*batch(seed=2))[0])


# --- static figures ---------------------------------------------------------------------------

def test_static_figures():
    import matplotlib.pyplot as plt

    img, txt = batch()
    fig = widgets.temperature_snapshots(img, txt, taus=(1.0, 0.07, 0.01), row=1, captions=[str(i) for i in range(12)])
    assert len(fig.axes) == 9
    heights = [np.array([p.get_height() for p in ax.patches]) for ax in fig.axes[:3]]
    assert [bar_entropy(h) for h in heights] == sorted((bar_entropy(h) for h in heights), reverse=True)
    plt.close(fig)
    fig = widgets.loss_vs_temperature(img, txt, start=0.07, lr=2.0, steps=10)
    assert len(fig.axes) == 2
    (path,) = [line for line in fig.axes[0].lines if len(line.get_xdata()) == 11]
    assert path.get_xdata()[0] == pytest.approx(0.07)
    plt.close(fig)


# --- the mean effective number of negatives; bad τ and bad similarity matrices ---------------------

@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_mean_effective_negatives_readout_is_the_lessons_mean_of_e_to_the_h(tau):
    # lesson 05 (its `effective` list) and diagnostics.Diagnosis.effective_negatives: the mean over the
    # rows of e^H, not e to the mean H (smaller, by Jensen: 1.6 against 1.9 for this batch at τ = 0.07)
    img, txt = batch()
    ex = widgets.TemperatureExplorer((img, txt), tau=tau, canvas="agg")
    sims = temperature_maths.similarities(img, txt)
    lesson = temperature_maths.entropy(temperature_maths.probabilities(sims, tau)).exp().mean().item()
    assert temperature_maths.mean_effective_negatives(sims, tau) == pytest.approx(lesson, rel=1e-12)
    assert ex.readouts["mean_effective_negatives"] == pytest.approx(lesson, rel=1e-12)
    assert f"mean e^H = {lesson:.1f}" in ex.drawn()["readout"]
    from clipcourse import diagnostics
    assert diagnostics.diagnose(img, txt, tau=tau, k=0).effective_negatives == pytest.approx(lesson, rel=1e-12)


def _row0_stats(sims, tau):
    return temperature_maths.row_stats(sims, tau, 0)


SIM_FUNCTIONS = [temperature_maths.probabilities, temperature_maths.gradient_weights, _row0_stats,
                 temperature_maths.mean_entropy, temperature_maths.hardest_shares,
                 lambda sims, tau: temperature_maths.mean_effective_negatives(sims, tau)]


@pytest.mark.parametrize("fn", SIM_FUNCTIONS)
@pytest.mark.parametrize("tau, error, match", [
    (0.0, ValueError, r"tau must be a finite number > 0, got 0\.0"),
    (-0.07, ValueError, r"tau must be a finite number > 0, got -0\.07"),
    (math.inf, ValueError, r"tau must be a finite number > 0, got inf"),
    (math.nan, ValueError, r"tau must be a finite number > 0, got nan"),
    ("0.07", TypeError, r"tau must be a number .*got str"),
    (True, TypeError, r"tau must be a number .*got bool"),
])
def test_temperature_maths_refuses_a_bad_tau(fn, tau, error, match):
    sims = temperature_maths.similarities(*batch())
    with pytest.raises(error, match=match):
        fn(sims, tau)


@pytest.mark.parametrize("fn", SIM_FUNCTIONS)
@pytest.mark.parametrize("sims, error, match", [
    (torch.eye(3, 4), ValueError, r"sims must be a square \(B, B\) matrix.*\(3, 4\)"),
    (torch.ones(1, 1), ValueError, r"sims must be a square \(B, B\) matrix with B >= 2.*\(1, 1\)"),
    (torch.ones(4), ValueError, r"sims must be a square \(B, B\) matrix.*\(4,\)"),
    (torch.full((3, 3), math.nan), ValueError, r"sims holds NaN or infinity"),
    (torch.eye(3, dtype=torch.long), TypeError, r"sims must hold floating-point similarities, got dtype torch.int64"),
    ([[1.0, 0.0], [0.0, 1.0]], TypeError, r"sims must be a torch tensor"),
])
def test_temperature_maths_refuses_a_bad_similarity_matrix(fn, sims, error, match):
    with pytest.raises(error, match=match):
        fn(sims, 0.07)


def test_temperature_maths_takes_numpy_floats_and_0d_tensors_as_tau():
    sims = temperature_maths.similarities(*batch())
    expected = temperature_maths.probabilities(sims, 0.25)
    for tau in (np.float32(0.25), np.float64(0.25), torch.tensor(0.25)):
        torch.testing.assert_close(temperature_maths.probabilities(sims, tau), expected)


def test_the_other_temperature_maths_functions_refuse_a_bad_tau():
    img, txt = batch()
    with pytest.raises(ValueError, match=r"tau_range must be two finite numbers 0 < low < high"):
        temperature_maths.optimal_temperature(img, txt, tau_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"tau_range must be two finite numbers 0 < low < high"):
        temperature_maths.optimal_temperature(img, txt, tau_range=(1.0, 0.1))
    with pytest.raises(ValueError, match=r"start must be a finite number > 0, got -1"):
        temperature_maths.descend_log_temperature(img, txt, start=-1.0, steps=3)
    with pytest.raises(ValueError, match=r"tau must be a finite number > 0, got 0"):
        temperature_maths.loss_curve(img, txt, [0.1, 0.0])
