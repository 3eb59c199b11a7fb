"""The encoders and TinyCLIP: shapes, normalisation, the causal text encoder and its <eot> pooling,
the ViT option, input checks, seeding, CUDA, and a light `import clipcourse`."""

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from clipcourse import data, encoders, loss
from clipcourse.model import CLIPConfig, TinyCLIP, build_model
from clipcourse.text import Tokenizer


@pytest.fixture(scope="module")
def model(tok):
    return build_model(tok, seed=0).eval()


@pytest.fixture(scope="module")
def batch(tok, tiny_world):
    return data.to_float(tiny_world.images[:8]), tok(tiny_world.captions[:8])


def text_hidden_states(model, tokens):
    """The text transformer's output (B, L, W), caught with a forward hook."""
    seen = {}
    handle = model.text.transformer.register_forward_hook(lambda mod, inp, out: seen.setdefault("h", out))
    try:
        feature = model.text(tokens)
    finally:
        handle.remove()
    return seen["h"], feature


# --- shapes and normalisation -------------------------------------------------------------------

def test_feature_shapes_and_unit_norm(model, batch):
    images, tokens = batch
    with torch.no_grad():
        img, txt, tau = model(images, tokens)
    assert img.shape == txt.shape == (8, model.cfg.embed_dim)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(8))
    assert tau.ndim == 0 and tau.item() == pytest.approx(0.07)
    with torch.no_grad():
        raw = model.encode_image(images, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(8))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), img)


def test_forward_feeds_clip_loss_and_every_parameter_gets_a_gradient(tok, batch):
    model = build_model(tok, seed=0).train()
    images, tokens = batch
    value = loss.clip_loss(*model(images, tokens))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert model.temperature.logit_scale.grad.abs() > 0


def test_untrained_loss_is_near_log_batch_size(tok, batch):
    # random features: every caption is about as likely as any other
    model = build_model(tok, seed=0, learnable_temperature=False, temperature=1.0).train()
    images, tokens = batch
    with torch.no_grad():
        value = loss.clip_loss(*model(images, tokens))
    assert abs(value.item() - torch.log(torch.tensor(8.0)).item()) < 0.3


def test_similarity_is_cosine_over_temperature(model, batch):
    images, tokens = batch
    with torch.no_grad():
        per_image, per_text = model.similarity(images, tokens)
        img, txt, tau = model(images, tokens)
    torch.testing.assert_close(per_image, img @ txt.T / tau)
    torch.testing.assert_close(per_text, per_image.T)


def test_logit_scale_is_log_one_over_tau(model):
    assert model.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())
    assert model.logit_scale is model.temperature.logit_scale


def test_eval_mode_features_do_not_depend_on_the_batch(model, batch):
    images, tokens = batch
    with torch.no_grad():
        together = model.encode_image(images)
        alone = torch.cat([model.encode_image(images[i:i + 1]) for i in range(len(images))])
        txt_together = model.encode_text(tokens)
        txt_alone = torch.cat([model.encode_text(tokens[i:i + 1]) for i in range(len(tokens))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt_together, txt_alone, rtol=1e-4, atol=1e-5)


# --- the text encoder: causal, pooled at <eot> -----------------------------------------------------

@pytest.mark.parametrize("mode", ["train", "eval_no_grad"])
def test_text_encoder_is_causal(tok, mode):
    model = build_model(tok, seed=1)
    model.train(mode == "train")
    tokens = tok(["a large red circle on the left", "a small blue square and a green ring"])
    context = torch.no_grad() if mode == "eval_no_grad" else torch.enable_grad()
    for k in (2, 4, 6):
        changed = tokens.clone()
        changed[:, k] = tok.index["cyan"]
        with context:
            h1, _ = text_hidden_states(model, tokens)
            h2, _ = text_hidden_states(model, changed)
        torch.testing.assert_close(h1[:, :k], h2[:, :k], rtol=1e-5, atol=1e-6)
        assert (h1[:, k] - h2[:, k]).abs().max() > 1e-3  # position k itself does change


def test_text_feature_is_the_hidden_state_at_eot(tok, model):
    tokens = tok(["a red circle", "a large orange triangle left of a small cyan diamond"])
    with torch.no_grad():
        hidden, feature = text_hidden_states(model, tokens)
    eot = (tokens == tok.eot_id).int().argmax(dim=1)
    expected = model.text.ln_final(hidden)[torch.arange(2), eot]
    torch.testing.assert_close(feature, expected)


def test_tokens_after_eot_do_not_change_the_text_feature(tok, model):
    tokens = tok(["a red circle", "a small green ring at the top"])
    noisy = tokens.clone()
    for row in range(2):
        eot = int((tokens[row] == tok.eot_id).nonzero())
        g = torch.Generator().manual_seed(row)
        noisy[row, eot + 1:] = torch.randint(4, len(tok), (tok.context_length - eot - 1,), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), model.encode_text(noisy), rtol=1e-5, atol=1e-6)


def test_skipping_the_padding_after_the_last_eot_changes_nothing(tok, model):
    """The encoder runs only up to the batch's longest caption; the full context gives the same."""
    enc = model.text
    for captions in (["a red circle"], ["a red circle", "a large orange triangle left of a small cyan diamond"]):
        tokens = tok(captions)
        with torch.no_grad():
            x = enc.token_embedding(tokens) + enc.positional_embedding       # all 16 positions
            full = enc.ln_final(enc.transformer(x, mask=enc.attn_mask, is_causal=True))
            eot = (tokens == tok.eot_id).int().argmax(dim=1)
            torch.testing.assert_close(enc(tokens), full[torch.arange(len(tokens)), eot], rtol=1e-5, atol=1e-6)


def test_cnn_runs_channels_last_and_its_weights_load_anywhere(tok, batch):
    images, _ = batch
    a, b = build_model(tok, seed=0).eval(), build_model(tok, seed=1).eval()
    conv = a.visual.net[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    plain = {k: v.contiguous() for k, v in a.state_dict().items()}   # a checkpoint in the default layout
    c = build_model(tok, seed=2).eval()
    c.load_state_dict(plain)
    with torch.no_grad():
        torch.testing.assert_close(b.encode_image(images), a.encode_image(images))
        torch.testing.assert_close(c.encode_image(images), a.encode_image(images))
        torch.testing.assert_close(a.encode_image(images.contiguous(memory_format=torch.channels_last)),
                                   a.encode_image(images))


def test_moving_eot_changes_the_text_feature(tok, model):
    # "a red circle" vs "a red" + the same circle token after <eot>: pooled at a different place
    with torch.no_grad():
        full = model.encode_text(tok("a red circle"))
        short = model.encode_text(tok("a red"))
    assert (full - short).abs().max() > 1e-3


def test_text_encoder_rejects_wrong_token_shapes(model):
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        model.encode_text(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        model.encode_text(torch.zeros(16, dtype=torch.long))


def test_build_model_follows_the_tokenizer():
    tok = Tokenizer.from_captions(["one two three four five six seven eight nine ten"] * 2,
                                  context_length=24)
    model = build_model(tok, seed=0)
    assert model.text.token_embedding.num_embeddings == len(tok)
    assert model.text.cfg.context_length == 24 and model.text.cfg.eot_id == tok.eot_id
    assert model.encode_text(tok(["one two", "ten nine eight"])).shape == (2, model.cfg.embed_dim)


# --- images: ViT option and input checks ----------------------------------------------------------

def test_vit_option(tok, batch):
    model = build_model(tok, seed=0, image=encoders.ImageEncoderConfig(kind="vit"))
    assert isinstance(model.visual, encoders.ViTImageEncoder)
    images, tokens = batch
    img, txt, tau = model(images, tokens)
    assert img.shape == (8, model.cfg.embed_dim)
    torch.testing.assert_close(img.norm(dim=1), torch.ones(8))
    loss.clip_loss(img, txt, tau).backward()
    assert model.visual.patchify.weight.grad is not None and model.visual.cls.grad is not None


def test_cnn_is_the_default(model):
    assert isinstance(model.visual, encoders.ConvImageEncoder)
    assert model.visual.width == encoders.ImageEncoderConfig().widths[-1]


def test_cnn_merges_2x2_patches_in_its_last_stage_only():
    convs = [m for m in encoders.ConvImageEncoder(encoders.ImageEncoderConfig()).modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (2, 2)]
    assert [c.stride for c in convs] == [(2, 2)] * 3 and convs[-1].padding == (0, 0)
    two = encoders.ConvImageEncoder(encoders.ImageEncoderConfig(widths=(8, 16), convs_per_stage=2))
    assert [c.kernel_size[0] for c in two.modules() if isinstance(c, nn.Conv2d)] == [3, 3, 2, 3]
    overlapping = encoders.ConvImageEncoder(encoders.ImageEncoderConfig(last_kernel=3))
    for cnn in (encoders.ConvImageEncoder(encoders.ImageEncoderConfig()), overlapping):
        assert cnn.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 128)    # 32 -> 16 -> 8 -> 4 either way
    for res in (16, 24, 28):
        assert encoders.ConvImageEncoder(encoders.ImageEncoderConfig()).eval()(torch.zeros(1, 3, res, res)).shape == (1, 128)


@pytest.mark.parametrize("bad", [dict(last_kernel=4), dict(last_kernel=1), dict(widths=()), dict(convs_per_stage=0)])
def test_cnn_rejects_a_bad_config(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        encoders.ConvImageEncoder(encoders.ImageEncoderConfig(**bad))


def test_vit_needs_a_resolution_divisible_by_the_patch_size():
    with pytest.raises(ValueError, match="patch_size"):
        encoders.ViTImageEncoder(encoders.ImageEncoderConfig(kind="vit", resolution=30, patch_size=4))


def test_unknown_image_encoder_kind_raises():
    with pytest.raises(ValueError, match="resnet"):
        encoders.image_encoder(encoders.ImageEncoderConfig(kind="resnet"))


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 32, 32, 3), (2, 3, 32, 32, 1)])
def test_bad_image_shapes_raise(model, shape):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_image(torch.zeros(shape))


def test_integer_images_raise_and_point_to_to_float(model, tiny_world):
    with pytest.raises(TypeError, match="to_float"):
        model.encode_image(tiny_world.images[:2])


def test_other_resolutions_work_with_the_cnn(tok):
    model = build_model(tok, seed=0).eval()
    with torch.no_grad():
        assert model.encode_image(torch.zeros(2, 3, 48, 48)).shape == (2, model.cfg.embed_dim)


# --- construction, seeding, temperature options ---------------------------------------------------

def test_build_model_is_seeded(tok):
    a, b, c = build_model(tok, seed=3), build_model(tok, seed=3), build_model(tok, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_build_model_leaves_the_global_rng_alone(tok):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model(tok, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_fixed_temperature_option(tok):
    model = build_model(tok, seed=0, learnable_temperature=False, temperature=0.2)
    assert not any("logit_scale" in n for n, _ in model.named_parameters())
    assert model.temperature().item() == pytest.approx(0.2)
    assert "temperature.logit_scale" in model.state_dict()  # a buffer: saved and moved with the model


def test_build_model_passes_overrides_to_the_config(tok):
    model = build_model(tok, seed=0, embed_dim=32)
    assert model.image_projection.out_features == model.text_projection.out_features == 32
    with pytest.raises(TypeError):
        build_model(tok, seed=0, embedding_size=32)


def test_tinyclip_has_laptop_defaults():
    model = TinyCLIP(CLIPConfig())
    n = sum(p.numel() for p in model.parameters())
    assert 50_000 < n < 2_000_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tok, tiny_world):
    model = build_model(tok, seed=0).cuda().eval()
    images = data.to_float(tiny_world.images[:8]).cuda()
    tokens = tok(tiny_world.captions[:8]).cuda()
    # the same function as on the CPU: compared before training (a train-mode forward moves BatchNorm's
    # running statistics, which once made this test compare two different models), without TF32
    cpu = build_model(tok, seed=0).eval()
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        torch.testing.assert_close(model.encode_text(tokens).cpu(), cpu.encode_text(tokens.cpu()),
                                   rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(model.encode_image(images).cpu(), cpu.encode_image(images.cpu()),
                                   rtol=1e-3, atol=1e-4)
    img, txt, tau = model.train()(images, tokens)
    assert img.is_cuda and txt.is_cuda and tau.is_cuda
    value = loss.clip_loss(img, txt, tau)
    value.backward()
    assert torch.isfinite(value)
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters() if p.requires_grad)


def test_import_clipcourse_is_light():
    code = ("import sys, clipcourse; assert 'torch' not in sys.modules, 'torch imported'; "
            "from clipcourse import paths; assert 'torch' not in sys.modules, 'paths imports torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_submodules_load_on_first_use():
    import clipcourse

    assert clipcourse.text is sys.modules["clipcourse.text"]
    with pytest.raises(AttributeError, match="nonsense"):
        clipcourse.nonsense


# --- token ids are checked at encode_text; build_model leaves the caller's config alone -------------

def test_encode_text_refuses_float_tokens(tok, model):
    tokens = tok(["a red circle"])
    with pytest.raises(TypeError, match=r"tokens must be integer token ids .*got torch.float32"):
        model.encode_text(tokens.float())
    with pytest.raises(TypeError, match=r"tokens must be integer token ids .*got torch.bool"):
        model.encode_text(tokens.bool())


def test_encode_text_refuses_a_row_without_eot(tok, model):
    # without <eot> the pooling would read position 0 (<sot>) of every such row: one feature for all
    tokens = tok(["a red circle", "a blue square", "a green ring"])
    tokens[1][tokens[1] == tok.eot_id] = tok.pad_id
    tokens[2][tokens[2] == tok.eot_id] = tok.pad_id
    with pytest.raises(ValueError, match=r"row 1 of tokens has no <eot> \(id 2\)"):
        model.encode_text(tokens)


@pytest.mark.parametrize("bad", [-1, "vocab"])
def test_encode_text_refuses_ids_outside_the_vocabulary(tok, model, bad):
    tokens = tok(["a red circle", "a blue square"])
    value = len(tok) if bad == "vocab" else bad
    tokens[1, 3] = value
    with pytest.raises(ValueError, match=rf"row 1 of tokens holds id {value}.*vocab_size = {len(tok)}"):
        model.encode_text(tokens)


def test_encode_text_takes_any_integer_dtype(tok, model):
    tokens = tok(["a red circle", "a large blue square left of a small green ring"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens.int()), model.encode_text(tokens))


def test_build_model_leaves_the_callers_config_alone():
    tc = encoders.TextEncoderConfig()
    before = dataclasses.asdict(tc)
    small = Tokenizer.from_captions(["one two three"], context_length=8)
    model = build_model(small, text=tc)
    assert dataclasses.asdict(tc) == before
    assert model.cfg.text.vocab_size == len(small) and model.cfg.text.context_length == 8
    assert model.cfg.text is not tc
