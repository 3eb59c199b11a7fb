"""clip_loss and siglip_loss: parity with open_clip, properties, stability and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from clipcourse.loss import clip_loss, in_batch_accuracy, siglip_loss

open_clip_loss = pytest.importorskip("open_clip.loss", reason="open-clip-torch is a test dependency")


def features(b=8, d=16, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1)
    txt = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1)
    return img.requires_grad_(requires_grad), txt.requires_grad_(requires_grad)


# --- parity with the reference implementation ---------------------------------------------------

@pytest.mark.parametrize("tau", [0.01, 0.07, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("b,d", [(2, 4), (8, 16), (33, 7)])
def test_clip_loss_matches_open_clip_value_and_gradients(tau, b, d):
    img, txt = features(b, d, seed=b * d, requires_grad=True)
    temperature = torch.tensor(tau, dtype=torch.float64, requires_grad=True)
    ours = clip_loss(img, txt, temperature)
    g_ours = torch.autograd.grad(ours, (img, txt, temperature))

    img2, txt2 = img.detach().clone().requires_grad_(), txt.detach().clone().requires_grad_()
    log_scale = torch.tensor(math.log(1 / tau), dtype=torch.float64, requires_grad=True)
    ref = open_clip_loss.ClipLoss()(img2, txt2, log_scale.exp())
    g_ref = torch.autograd.grad(ref, (img2, txt2, log_scale))

    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours[0], g_ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours[1], g_ref[1], rtol=1e-10, atol=1e-12)
    # dL/dlog(1/τ) = -τ dL/dτ: the same gradient, seen through CLIP's parameterisation
    torch.testing.assert_close(-tau * g_ours[2], g_ref[2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau,bias", [(0.1, -10.0), (0.5, 0.0), (1.0, 2.5), (0.02, -3.0)])
@pytest.mark.parametrize("b", [1, 5, 16])
def test_siglip_loss_matches_open_clip_value_and_gradients(tau, bias, b):
    img, txt = features(b, 12, seed=b, requires_grad=True)
    bias_t = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    ours = siglip_loss(img, txt, tau, bias_t)
    g_ours = torch.autograd.grad(ours, (img, txt, bias_t))

    img2, txt2 = img.detach().clone().requires_grad_(), txt.detach().clone().requires_grad_()
    bias2 = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    ref = open_clip_loss.SigLipLoss()(img2, txt2, torch.tensor(1 / tau, dtype=torch.float64), bias2)
    g_ref = torch.autograd.grad(ref, (img2, txt2, bias2))

    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_clip_loss_float32_matches_open_clip():
    img, txt = features(64, 32, dtype=torch.float32)
    ref = open_clip_loss.ClipLoss()(img, txt, torch.tensor(1 / 0.07))
    torch.testing.assert_close(clip_loss(img, txt, 0.07), ref, rtol=1e-5, atol=1e-6)


# --- properties (hypothesis) ---------------------------------------------------------------------

batch = st.integers(min_value=1, max_value=12)
dim = st.integers(min_value=1, max_value=8)
tau = st.floats(min_value=0.01, max_value=10.0)
seed = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=60, deadline=None)
@given(b=batch, d=dim, tau=tau, seed=seed)
def test_jointly_permuting_pairs_leaves_the_loss_unchanged(b, d, tau, seed):
    img, txt = features(b, d, seed=seed)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(clip_loss(img[perm], txt[perm], tau), clip_loss(img, txt, tau))
    torch.testing.assert_close(siglip_loss(img[perm], txt[perm], tau, -1.0), siglip_loss(img, txt, tau, -1.0))


@settings(max_examples=60, deadline=None)
@given(b=batch, d=dim, tau=tau, seed=seed)
def test_swapping_images_and_texts_leaves_the_loss_unchanged(b, d, tau, seed):
    img, txt = features(b, d, seed=seed)
    torch.testing.assert_close(clip_loss(txt, img, tau), clip_loss(img, txt, tau))
    torch.testing.assert_close(siglip_loss(txt, img, tau, 0.3), siglip_loss(img, txt, tau, 0.3))


@settings(max_examples=60, deadline=None)
@given(b=batch, d=dim, tau=tau, seed=seed)
def test_equal_similarities_give_log_b(b, d, tau, seed):
    # every image identical and every text identical: all B×B similarities are equal
    img, txt = features(1, d, seed=seed)
    loss = clip_loss(img.expand(b, d), txt.expand(b, d), tau)
    assert loss.item() == pytest.approx(math.log(b), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(min_value=2, max_value=12), seed=seed)
def test_perfectly_separated_pairs_tend_to_zero_as_tau_falls(b, seed):
    # orthonormal pairs: positive similarity 1, every negative 0, so the loss ~ (B-1) exp(-1/τ)
    q, _ = torch.linalg.qr(torch.randn(b, b, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    img = txt = q
    losses = [clip_loss(img, txt, t).item() for t in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert all(a > c for a, c in zip(losses, losses[1:]))
    assert losses[-1] < 1e-30
    assert losses[0] == pytest.approx(math.log(1 + (b - 1) * math.exp(-1.0)), rel=1e-9)


def test_a_batch_of_one_has_zero_loss():
    img, txt = features(1, 4)
    assert clip_loss(img, txt, 0.07).item() == 0.0


def test_loss_falls_as_positives_align():
    img, txt = features(16, 8)
    assert clip_loss(img, img, 0.1) < clip_loss(img, txt, 0.1)


# --- stability at extreme temperatures and in low precision ---------------------------------------

@pytest.mark.parametrize("tau", [1e-4, 1e4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_stable_at_extreme_temperatures(tau, dtype):
    img64, txt64 = features(32, 16)
    img, txt = img64.to(dtype).requires_grad_(), txt64.to(dtype).requires_grad_()
    loss = clip_loss(img, txt, tau)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    reference = clip_loss(img.detach().double(), txt.detach().double(), tau)  # the same rounded inputs
    torch.testing.assert_close(loss.double(), reference, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)
    s = siglip_loss(img, txt, tau, -10.0)
    assert torch.isfinite(s)


def test_large_tau_loss_is_log_b_and_small_tau_is_hard_negative_margin():
    img, txt = features(16, 8)
    assert clip_loss(img, txt, 1e4).item() == pytest.approx(math.log(16), rel=1e-3)
    sims = img @ txt.T
    margin = (sims - sims.diag()[:, None]).max(dim=1).values.clamp(min=0)     # hardest negative - positive
    margin_t = (sims - sims.diag()[None, :]).max(dim=0).values.clamp(min=0)
    expected = (margin.mean() + margin_t.mean()) / 2 / 1e-4                    # the τ → 0 limit
    assert clip_loss(img, txt, 1e-4).item() == pytest.approx(expected.item(), rel=1e-3)


def test_bf16_features_give_bf16_gradients():
    img, txt = features(8, 8, dtype=torch.bfloat16, requires_grad=True)
    clip_loss(img, txt, 0.07).backward()
    assert img.grad.dtype == torch.bfloat16


def test_temperature_as_tensor_carries_gradient():
    img, txt = features()
    tau_t = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    clip_loss(img, txt, tau_t).backward()
    assert tau_t.grad is not None and torch.isfinite(tau_t.grad)


# --- bad input: clear errors at the boundary --------------------------------------------------------

def bad_cases():
    img, txt = features(4, 8)
    return [
        ((img, txt[:3], 0.1), ValueError, r"batch size.*\(4, 8\).*\(3, 8\)"),
        ((img, txt[:, :5], 0.1), ValueError, r"feature size.*\(4, 8\).*\(4, 5\)"),
        ((img[0], txt[0], 0.1), ValueError, r"image_features must be 2-D.*\(8,\)"),
        ((img, txt[None], 0.1), ValueError, r"text_features must be 2-D.*\(1, 4, 8\)"),
        ((img[:0], txt[:0], 0.1), ValueError, r"empty batch.*\(0, 8\)"),
        ((img, txt, 0.0), ValueError, r"temperature must be > 0, got 0.0"),
        ((img, txt, -0.5), ValueError, r"temperature must be > 0, got -0.5"),
        ((img, txt, float("nan")), ValueError, r"temperature must be finite, got nan"),
        ((img, txt, float("inf")), ValueError, r"temperature must be finite, got inf"),
        ((img, txt, torch.tensor([0.1, 0.2])), ValueError, r"temperature must be a scalar.*\(2,\)"),
        ((img, txt, torch.tensor(float("nan"))), ValueError, r"temperature must be finite"),
        ((img, txt, "0.1"), TypeError, r"temperature must be a float or a 0-d tensor, got str"),
        ((img, txt, True), TypeError, r"temperature must be a float or a 0-d tensor, got bool"),
        ((img, txt, torch.tensor(1)), TypeError, r"temperature must be a floating point tensor"),
        ((img.long(), txt, 0.1), TypeError, r"image_features must be floating point, got dtype torch.int64"),
        ((img, txt.int(), 0.1), TypeError, r"text_features must be floating point, got dtype torch.int32"),
        ((img.tolist(), txt, 0.1), TypeError, r"image_features must be a torch.Tensor, got list"),
    ]


@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_clip_loss_bad_input_raises_a_clear_error(case):
    args, error, message = bad_cases()[case]
    with pytest.raises(error, match=message):
        clip_loss(*args)


@pytest.mark.parametrize("case", range(len(bad_cases())))
def test_siglip_loss_bad_input_raises_a_clear_error(case):
    args, error, message = bad_cases()[case]
    with pytest.raises(error, match=message):
        siglip_loss(*args, -10.0)


@pytest.mark.parametrize("bias,error,message", [
    (float("nan"), ValueError, r"bias must be finite, got nan"),
    (float("-inf"), ValueError, r"bias must be finite, got -inf"),
    (torch.ones(3), ValueError, r"bias must be a scalar.*\(3,\)"),
    ("-10", TypeError, r"bias must be a float or a 0-d tensor, got str"),
    (None, TypeError, r"bias must be a float or a 0-d tensor, got NoneType"),
])
def test_siglip_bias_bad_input(bias, error, message):
    img, txt = features(4, 8)
    with pytest.raises(error, match=message):
        siglip_loss(img, txt, 0.1, bias)


def test_siglip_accepts_negative_and_zero_bias():
    img, txt = features(4, 8)
    assert torch.isfinite(siglip_loss(img, txt, 0.1, 0.0))
    assert torch.isfinite(siglip_loss(img, txt, 0.1, torch.tensor(-10.0)))


def test_in_batch_accuracy():
    img, _ = features(10, 16)
    assert in_batch_accuracy(img, img) == 1.0
    assert in_batch_accuracy(img, img.roll(1, dims=0)) < 1.0


def test_in_batch_accuracy_of_bfloat16_features_is_computed_in_float32():
    """bfloat16 similarities tie where float32 ones do not, and a tie went to the first (wrong) twin."""
    g = torch.Generator().manual_seed(0)
    twins = torch.repeat_interleave(F.normalize(torch.randn(32, 64, generator=g), dim=-1), 2, dim=0)  # (64, 64)
    img = F.normalize(twins + 0.002 * torch.randn(64, 64, generator=g), dim=-1).bfloat16()
    txt = F.normalize(twins + 0.002 * torch.randn(64, 64, generator=g), dim=-1).bfloat16()
    in_bf16 = ((img @ txt.T).argmax(1) == torch.arange(64)).float().mean().item()
    assert in_batch_accuracy(img, txt) == in_batch_accuracy(img.float(), txt.float()) != in_bf16


@pytest.mark.parametrize("img, txt, error, match", [
    (features(4, 8)[0], features(3, 8)[1], ValueError, r"same batch size.*\(4, 8\).*\(3, 8\)"),
    (features(4, 8)[0][:0], features(4, 8)[1][:0], ValueError, r"empty batch"),
    (3 * features(4, 8)[0], features(4, 8)[1], ValueError, r"image_features is not L2-normalised: row 0 has length 3"),
    (features(4, 8)[0], features(4, 8)[1].long(), TypeError, r"text_features must be floating point"),
])
def test_in_batch_accuracy_refuses_mismatched_or_unnormalised_features(img, txt, error, match):
    with pytest.raises(error, match=match):
        in_batch_accuracy(img, txt)
