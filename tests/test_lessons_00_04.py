"""Lessons 00-04: every hand-built-vs-package equality the notebooks assert, and the exercise checkers."""

import json
import math
import os
import re
import tempfile

import pytest
import torch
import torch.nn.functional as F

from clipcourse import data, encoders, loss, model, paths, text
from clipcourse.exercises import lesson00, lesson01, lesson02, lesson03, lesson04


def _normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def clip(tok):
    return model.build_model(tok, seed=0).eval()


@pytest.fixture(scope="module")
def batch(tok):
    ds = data.ShapesWorld.generate(8, seed=0)
    return data.to_float(ds.images), tok(ds.captions)


# --- lesson 00 --------------------------------------------------------------------------------

def test_lesson00_course_map_links_point_at_lessons():
    """The course map links every lesson, under its real name, and nothing else."""
    nb = (paths.NOTEBOOKS_DIR / "00_welcome.ipynb").read_text(encoding="utf-8")
    links = sorted(set(re.findall(r"\((\d\d_[a-z0-9_]+\.ipynb)\)", nb)))
    lessons = sorted(p.name for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert links == lessons, f"00's course map links {links}, the lessons are {lessons}"


def test_lesson00_cosine_checker():
    a, b = torch.tensor(lesson00.A), torch.tensor(lesson00.B)
    cos = F.cosine_similarity(a, b, dim=0)
    assert lesson00.check_cosine_similarity(None).passed is None
    assert lesson00.check_cosine_similarity(cos, a, b).passed
    assert lesson00.check_cosine_similarity(round(cos.item(), 3)).passed
    cases = {
        (a * b).sum(): "dot product",
        (a * b).sum() / a.norm(): "length of a only",
        (a * b).sum() / b.norm(): "length of b only",
        1 - cos: "distance",
        torch.acos(cos): "radians",
        math.degrees(math.acos(cos.item())): "degrees",
        (a - b).norm(): "Euclidean",
        a * b: "single number",
        round(cos.item(), 2) - 0.004: "rounded",
    }
    for answer, phrase in cases.items():
        fb = lesson00.check_cosine_similarity(answer, a, b)
        assert fb.passed is False and phrase in fb.message, (answer, fb)
    assert "Not attempted" in str(lesson00.check_cosine_similarity(None))


def test_lesson00_cosine_checker_names_more_slips():
    a, b = torch.tensor(lesson00.A), torch.tensor(lesson00.B)
    cos = F.cosine_similarity(a, b, dim=0)
    assert lesson00.check_cosine_similarity(cos.numpy(), a, b).passed      # a 0-d numpy array is a number too
    cases = {
        (a * b).sum() / a.norm() * b.norm(): "parentheses",            # 20 / 3 * 7: divides by |a|, multiplies by |b|
        (a * b).sum() / b.norm() * a.norm(): "parentheses",
        (a * b).mean() / (a.norm() * b.norm()): "mean",
        (a * b).sum() / (a.norm(p=1) * b.norm(p=1)): "sum of the entries",
    }
    for answer, phrase in cases.items():
        fb = lesson00.check_cosine_similarity(answer, a, b)
        assert fb.passed is False and phrase in fb.message, (answer, str(fb))


def test_lesson00_environment_check_names_every_requirement():
    """The environment check looks for every package of requirements.txt a lesson imports (ipympl: the sliders)."""
    nb = json.loads((paths.NOTEBOOKS_DIR / "00_welcome.ipynb").read_text(encoding="utf-8"))
    check = next("".join(c["source"]) for c in nb["cells"]
                 if c["cell_type"] == "code" and "find_spec" in "".join(c["source"]))
    listed = set(re.search(r"for package in \[([^\]]*)\]", check).group(1).replace('"', "").replace(" ", "").split(","))
    import_name = {"open-clip-torch": "open_clip", "pillow": "PIL"}
    not_checked = {"jupyterlab", "nbval", "numpy"}            # the host, the tests, matplotlib's own
    lines = (paths.ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    required = {re.match(r"[A-Za-z0-9_.-]+", ln).group(0) for ln in lines if ln.strip() and not ln.startswith("#")}
    assert {import_name.get(r, r) for r in required - not_checked} <= listed, listed


# --- lesson 01 --------------------------------------------------------------------------------

def test_lesson01_normalise_and_cosine_by_hand():
    x, y = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(_normalize(x), F.normalize(x, dim=-1))
    assert torch.allclose((_normalize(x) * _normalize(y)).sum(-1), F.cosine_similarity(x, y, dim=-1))
    row = torch.randn(6)
    assert torch.allclose(torch.exp(row) / torch.exp(row).sum(), torch.softmax(row, dim=0))


def test_lesson01_similarity_by_hand_equals_tinyclip(clip, batch):
    images, tokens = batch
    with torch.no_grad():
        raw_image = clip.encode_image(images, normalize=False)
        raw_text = clip.encode_text(tokens, normalize=False)
        by_hand = _normalize(raw_image) @ _normalize(raw_text).T / clip.temperature()
        logits_per_image, logits_per_text = clip.similarity(images, tokens)
    assert torch.allclose(_normalize(raw_image), clip.encode_image(images), atol=1e-6)
    assert torch.allclose(by_hand, logits_per_image, atol=1e-5)
    assert torch.allclose(logits_per_text, logits_per_image.T)


def test_lesson01_similarity_checker():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 4, generator=g) * 3, torch.randn(6, 4, generator=g) * 3
    good = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    check = lesson01.check_similarity_matrix
    assert check(None, img, txt).passed is None
    assert check(good, img, txt).passed
    cases = {
        "not normalised": img @ txt.T,
        "transposed": good.T,
        "only the image": F.normalize(img, dim=-1) @ txt.T,
        "only the text": img @ F.normalize(txt, dim=-1).T,
        "wrong dimension": F.normalize(img, dim=0) @ F.normalize(txt, dim=0).T,
        "(D, D)": F.normalize(img, dim=-1).T @ F.normalize(txt, dim=-1),
        "diagonal only": F.cosine_similarity(img, txt, dim=-1),
        "softmax": good.softmax(dim=-1),
        "wrong shape": good[:3],
    }
    for phrase, answer in cases.items():
        fb = check(answer, img, txt)
        assert fb.passed is False and phrase in fb.message, (phrase, fb)
    assert check(good.tolist(), img, txt).passed is False


def test_lesson01_similarity_checker_names_norm_slips():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 4, generator=g) * 3, torch.randn(6, 4, generator=g) * 3
    good = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    check = lesson01.check_similarity_matrix
    assert check(good.numpy(), img, txt).passed                        # a numpy array of the right numbers
    raw = img @ txt.T
    cases = {
        "column j": raw / (img.norm(dim=-1) * txt.norm(dim=-1)),      # (B,) lengths, not their (B, B) outer product
        "row i": raw / (img.norm(dim=-1) * txt.norm(dim=-1))[:, None],
        "whole matrix": (img / img.norm()) @ (txt / txt.norm()).T,    # .norm() without dim: one length for all
        "squared lengths": (img / (img * img).sum(-1, keepdim=True)) @ (txt / (txt * txt).sum(-1, keepdim=True)).T,
    }
    for phrase, answer in cases.items():
        fb = check(answer, img, txt)
        assert fb.passed is False and phrase in fb.message, (phrase, str(fb))


# --- lesson 02 --------------------------------------------------------------------------------

def test_lesson02_caption_and_class_id_by_hand():
    ds = data.ShapesWorld.generate(200, seed=0)
    labels = ds.scenes[:, 0, data.COLOR] * len(data.SHAPES) + ds.scenes[:, 0, data.SHAPE]
    assert torch.equal(labels, ds.labels)
    singles = (ds.scenes[:, 1, data.PRESENT] == 0).nonzero().flatten().tolist()
    for i in singles[:20]:
        c, s, z, p, _ = ds.scenes[i, 0].tolist()
        by_hand = f"a {data.SIZES[z]} {data.COLOR_NAMES[c]} {data.SHAPES[s]} {data.WHERE[data.POSITIONS[p]]}"
        assert by_hand == data.describe(ds.scenes[i:i + 1], template=5)[0]


def test_lesson02_tokens_by_hand(tok):
    for caption in data.ShapesWorld.generate(20, seed=3).captions:
        ids = [tok.sot_id] + [tok.index[w] for w in text.split_words(caption)] + [tok.eot_id]
        ids += [tok.pad_id] * (tok.context_length - len(ids))
        assert torch.equal(torch.tensor([ids]), tok([caption]))
    with pytest.raises(ValueError, match="cirle"):
        tok(["a red cirle"])


def test_lesson02_no_training_image_has_a_heldout_combo():
    train_set = data.ShapesWorld.generate(5000, seed=0)
    held = data.heldout_combos()
    sc = train_set.scenes
    present = sc[..., data.PRESENT].bool()
    combos = data.combo_index(sc[..., data.COLOR], sc[..., data.SHAPE])
    assert not (torch.isin(combos, torch.tensor(held)) & present).any()
    counts = torch.bincount(combos[present], minlength=data.NUM_COMBOS)
    assert set((counts == 0).nonzero().flatten().tolist()) == set(held)
    assert not any(data.combo_name(k) in cap for k in held for cap in train_set.captions)
    heldout = data.ShapesWorld.generate(50, split="heldout", seed=1, two_object_prob=0.0)
    assert set(heldout.labels.tolist()) <= set(held)


def test_lesson02_caption_files_round_trip():
    import torchvision

    small = data.ShapesWorld.generate(4, seed=5)
    with tempfile.TemporaryDirectory() as root:
        ann = data.write_caption_dataset(small, root, captions_per_image=2)
        flickr = torchvision.datasets.Flickr30k(root, ann_file=ann)
        assert len(flickr) == 4
        image, captions = flickr[0]
        assert image.size == (32, 32) and captions[0] == small.captions[0] and len(captions) == 2
        images, first = data.load_caption_dataset(root)
        assert torch.equal(images, small.images)
        assert first == small.captions
        assert sorted(os.listdir(root))[0] == "captions.txt"


def test_lesson02_shipped_sample_loads():
    sample = paths.DATA_DIR / "shapesworld_sample"
    captions = data.read_caption_file(sample / "captions.txt")
    images, first = data.load_caption_dataset(sample)
    assert len(images) == len(captions) == len(first) > 0


def test_lesson02_heldout_checker():
    held = data.heldout_combos()
    check = lesson02.check_heldout_combos
    assert check(None).passed is None
    assert check(held).passed
    assert check([data.combo_name(k) for k in held]).passed
    assert check(torch.tensor(held)).passed
    assert check([f"a {data.combo_name(k)}" for k in held]).passed
    seen = [k for k in range(data.NUM_COMBOS) if k not in held]
    swapped = [(k % 6) * 8 + k // 6 for k in held]
    cases = {
        "DO appear": seen,
        "shape * 8 + colour": swapped,
        "also": held + seen[:2],
        "missing": held[:5],
        "not a colour x shape name": ["green triangel"],
        "not a combination id": [99],
    }
    for phrase, answer in cases.items():
        fb = check(answer)
        assert fb.passed is False and phrase in fb.message + fb.hint, (phrase, fb)


def test_lesson02_caption_checker():
    scene = torch.tensor([[4, 2, 0, 2, 1], [0, 0, 0, 0, 0]])   # small purple triangle at the top
    check = lesson02.check_caption
    assert check(None, scene).passed is None
    for good in ["a small purple triangle at the top", "a purple triangle", "there is a small purple triangle",
                 "A purple triangle at the top"]:
        assert check(good, scene).passed, good
    cases = {
        "a small blue triangle": "colour index",          # wrong colour, and blue = COLOR_NAMES[2] (shape index)
        "a purple cross": "shape index",                  # cross = SHAPES[4] (colour index)
        "a large purple triangle": "size",
        "a purple triangle on the left": "position",
        "a triangle purple": "before the shape",
        "a purple triangel": "tokenizer",
        "a small triangle": "no colour",
        "a purple and red triangle": "several colours",
    }
    for answer, phrase in cases.items():
        fb = check(answer, scene)
        assert fb.passed is False and phrase in fb.message, (answer, fb)
    assert "with the shape index" in check("a small blue triangle", scene).message
    assert check(42, scene).passed is False


def test_lesson02_caption_checker_wants_the_size_before_the_colour():
    scene = torch.tensor([[4, 2, 0, 2, 1], [0, 0, 0, 0, 0]])   # small purple triangle at the top
    fb = lesson02.check_caption("a purple small triangle", scene)   # no template writes the size there
    assert fb.passed is False and "size before the colour" in fb.message, str(fb)


def test_lesson02_heldout_checker_names_the_zero_counts():
    """per_combo[per_combo == 0] keeps the counts of the held-out combinations (all 0), not their ids."""
    train_set = data.ShapesWorld.generate(2000, seed=0)
    per_combo = torch.bincount(train_set.labels, minlength=data.NUM_COMBOS)
    for answer in (per_combo[per_combo == 0], per_combo[per_combo == 0].tolist()):
        fb = lesson02.check_heldout_combos(answer)
        assert fb.passed is False and "counts" in fb.message and "nonzero" in fb.message, str(fb)


# --- lesson 03 --------------------------------------------------------------------------------

def test_lesson03_image_path_by_hand(clip, batch):
    images, _ = batch
    with torch.no_grad():
        h = images
        for layer in clip.visual.net:
            h = layer(h)
        pooled = h.mean(dim=(2, 3))
        features = clip.visual(images)
        by_hand = _normalize(clip.image_projection(features))
        assert torch.allclose(pooled, features, atol=1e-6)
        assert torch.allclose(by_hand, clip.encode_image(images), atol=1e-6)


def test_lesson03_text_path_by_hand(clip, batch, tok):
    _, tokens = batch
    enc = clip.text
    L = tok.context_length
    mask = torch.triu(torch.full((L, L), float("-inf")), diagonal=1)
    assert torch.equal(mask, enc.attn_mask)
    with torch.no_grad():
        x = enc.token_embedding(tokens) + enc.positional_embedding
        hidden = enc.ln_final(enc.transformer(x, mask=mask, is_causal=True))
        eot = (tokens == tok.eot_id).int().argmax(dim=1)
        pooled = hidden[torch.arange(len(tokens)), eot]
        assert torch.allclose(pooled, enc(tokens), atol=1e-5)
        assert torch.allclose(F.normalize(clip.text_projection(pooled), dim=-1), clip.encode_text(tokens), atol=1e-5)


def test_lesson03_causal_mask_hides_the_future(clip, tok):
    enc = clip.text
    pair = tok(["a red circle on the left", "a red square on the left"])
    with torch.no_grad():
        out = enc.ln_final(enc.transformer(enc.token_embedding(pair) + enc.positional_embedding,
                                           mask=enc.attn_mask, is_causal=True))
    change = (out[0] - out[1]).abs().max(dim=-1).values
    assert (change[:3] <= 1e-6).all() and (change[3:9] > 1e-6).all()


def test_lesson03_vit_option(tok, batch):
    images, _ = batch
    vit = model.build_model(tok, seed=0, image=encoders.ImageEncoderConfig(kind="vit")).eval()
    with torch.no_grad():
        assert vit.encode_image(images).shape == (8, vit.cfg.embed_dim)


def test_lesson03_eot_checker(tok):
    tokens = tok(["a red circle", "there is a large blue ring", "a cyan cross left of a white square",
                  "a small green diamond at the bottom"])
    eot = (tokens == tok.eot_id).int().argmax(dim=1)
    check = lesson03.check_eot_positions
    assert check(None, tokens).passed is None
    assert check(eot, tokens).passed
    assert check(eot.tolist(), tokens).passed
    cases = {
        "largest id": tokens.argmax(dim=1),
        "first <pad>": (tokens == tok.pad_id).int().argmax(dim=1),
        "one place before": eot - 1,
        "mask": tokens == tok.eot_id,
        "wrong shape": eot[:2],
        "last position": torch.full_like(eot, tok.context_length - 1),
    }
    for phrase, answer in cases.items():
        fb = check(answer, tokens)
        assert fb.passed is False and phrase in fb.message, (phrase, fb)


def test_lesson03_eot_checker_names_realistic_mistakes(tok):
    """Review fix: these answers got a misleading diagnosis ("first <pad>" for a length, "reduce over dim=1"
    for another batch's positions or nonzero's pairs, "not one list of numbers" for torch.where's pair)."""
    tokens = tok(["a red circle", "there is a large blue ring", "a cyan cross left of a white square",
                  "a small green diamond at the bottom"])
    eight = tok(["a red circle"] * 8)                  # the lesson's own batch has 8 captions
    check = lesson03.check_eot_positions
    cases = {
        "length": (tokens != tok.pad_id).sum(dim=1),                      # caption lengths, one too many
        "another batch": (eight == tok.eot_id).int().argmax(dim=1),       # (8,) from the wrong tokens
        "dim=0": (tokens == tok.eot_id).int().argmax(dim=0),              # (16,) reduced over the batch
        "nonzero()": (tokens == tok.eot_id).nonzero(),                    # (4, 2) (row, position) pairs
        "torch.where": torch.where(tokens == tok.eot_id),                 # a (rows, positions) tuple
    }
    for phrase, answer in cases.items():
        fb = check(answer, tokens)
        assert fb.passed is False and phrase in fb.message + fb.hint, (phrase, fb)
    assert check((tokens == tok.eot_id).nonzero()[:, 1], tokens).passed


def test_lesson03_without_positions_one_layer_reads_a_set(clip, tok):
    """The lesson's claim: with no position embeddings, the one-layer encoder's <eot> output cannot tell
    captions with the same words in another order apart; with them it can."""
    enc = clip.text
    assert enc.cfg.layers == 1
    pair = tok(["a red circle left of a blue square", "a blue circle left of a red square"])
    with torch.no_grad():
        def at_eot(pos):
            x = enc.ln_final(enc.transformer(enc.token_embedding(pair) + pos, mask=enc.attn_mask, is_causal=True))
            eot = (pair == tok.eot_id).int().argmax(dim=1)
            return x[torch.arange(2), eot]
        without = at_eot(torch.zeros_like(enc.positional_embedding))
        with_positions = at_eot(enc.positional_embedding)
    assert (without[0] - without[1]).abs().max() < 1e-5                 # the same up to float rounding
    assert (with_positions[0] - with_positions[1]).abs().max() > 1e-4   # untrained positions are small (0.01)


# --- lesson 04 --------------------------------------------------------------------------------

def _features(b=8, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    txt = F.normalize(img + 0.5 * torch.randn(b, d, generator=g), dim=-1)
    return img, txt


def _hand_loss(img, txt, tau):
    logits = img @ txt.T / tau
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("tau", [0.01, 0.07, 1.0])
def test_lesson04_hand_loss_equals_clip_loss_and_open_clip(tau):
    open_clip = pytest.importorskip("open_clip")
    img, txt = _features()
    by_hand = _hand_loss(img, txt, tau)
    logits = img @ txt.T / tau
    assert torch.allclose(-logits.log_softmax(dim=1).diagonal().mean(),
                          F.cross_entropy(logits, torch.arange(len(logits))))
    assert torch.allclose(by_hand, loss.clip_loss(img, txt, tau))
    reference = open_clip.loss.ClipLoss()(img, txt, logit_scale=torch.tensor(1 / tau))
    assert torch.allclose(by_hand, reference, atol=1e-6, rtol=1e-6)


def test_lesson04_gradient_is_softmax_minus_one_hot_over_tau():
    img, txt = _features()
    tau, b = 0.07, len(img)
    sims = (img @ txt.T).requires_grad_(True)
    lg = sims / tau
    labels = torch.arange(b)
    ((F.cross_entropy(lg, labels) + F.cross_entropy(lg.T, labels)) / 2).backward()
    G = sims.grad
    logits = sims.detach() / tau
    eye = torch.eye(b)
    formula = ((logits.softmax(dim=1) - eye) + (logits.softmax(dim=0) - eye)) / (2 * b * tau)
    assert torch.allclose(G, formula, atol=1e-6)
    mask = torch.eye(b, dtype=torch.bool)
    assert (G[mask] < 0).all() and (G[~mask] > 0).all()          # positives pulled, negatives pushed
    leaf = img.clone().requires_grad_(True)
    loss.clip_loss(leaf, txt, tau).backward()
    assert torch.allclose(leaf.grad, G @ txt, atol=1e-6)


def test_lesson04_batch_of_one_and_equal_similarities():
    img, txt = _features()
    leaf = img[:1].clone().requires_grad_(True)
    single = loss.clip_loss(leaf, txt[:1], 0.07)
    single.backward()
    assert single.item() == 0.0 and (leaf.grad == 0).all()
    same = F.normalize(torch.ones(8, 32), dim=-1)
    for tau in (0.01, 0.07, 1.0):
        assert math.isclose(loss.clip_loss(same, same, tau).item(), math.log(8), rel_tol=1e-6)


def test_lesson04_one_step_pulls_positives_and_pushes_negatives():
    img, txt = _features()
    fi, ft = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    before = loss.clip_loss(fi, ft, 0.07)
    before.backward()
    ni, nt = F.normalize(fi - 0.05 * fi.grad, dim=-1), F.normalize(ft - 0.05 * ft.grad, dim=-1)
    eye = torch.eye(8, dtype=torch.bool)
    old, new = img @ txt.T, (ni @ nt.T).detach()
    assert new[eye].mean() > old[eye].mean() and new[~eye].mean() < old[~eye].mean()
    assert loss.clip_loss(ni, nt, 0.07) < before


def test_lesson04_the_same_step_moves_the_loss_far_more_at_a_low_tau():
    """The lesson's claim: one step of the same lr lowers the loss many times more at τ = 0.07 than at τ = 1,
    but not by (1/τ)²: the probabilities change with τ and the step is not small."""
    img, txt = _features()

    def drop(tau, lr=0.05):
        fi, ft = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
        before = loss.clip_loss(fi, ft, tau)
        before.backward()
        after = loss.clip_loss(F.normalize(fi - lr * fi.grad, dim=-1), F.normalize(ft - lr * ft.grad, dim=-1), tau)
        return (before - after).item()

    ratio = drop(0.07) / drop(1.0)
    assert 10 < ratio < (1 / 0.07) ** 2


def test_lesson04_loss_checker():
    ce = F.cross_entropy
    check = lesson04.check_clip_loss

    def good(i, t, tau):
        lg = i @ t.T / tau
        lb = torch.arange(len(lg))
        return (ce(lg, lb) + ce(lg.T, lb)) / 2

    def stub(i, t, tau):
        return None

    assert check(None).passed is None
    assert check(stub).passed is None
    assert check(good).passed
    assert check(loss.clip_loss).passed

    def variant(make):
        def fn(i, t, tau):
            lg = i @ t.T / tau
            return make(lg, torch.arange(len(lg)), i @ t.T, tau)
        return fn

    cases = {
        "forgot to divide": variant(lambda lg, lb, s, tau: (ce(s, lb) + ce(s.T, lb)) / 2),
        "multiplied by τ": variant(lambda lg, lb, s, tau: (ce(s * tau, lb) + ce(s.T * tau, lb)) / 2),
        "image→text": variant(lambda lg, lb, s, tau: ce(lg, lb)),
        "text→image": variant(lambda lg, lb, s, tau: ce(lg.T, lb)),
        "without averaging": variant(lambda lg, lb, s, tau: ce(lg, lb) + ce(lg.T, lb)),
        "summed over the batch": variant(lambda lg, lb, s, tau: (ce(lg, lb, reduction="sum")
                                                                   + ce(lg.T, lb, reduction="sum")) / 2),
        "all zeros": variant(lambda lg, lb, s, tau: (ce(lg, 0 * lb) + ce(lg.T, 0 * lb)) / 2),
        "run backwards": variant(lambda lg, lb, s, tau: (ce(lg, lb.flip(0)) + ce(lg.T, lb.flip(0))) / 2),
        "softmax before": variant(lambda lg, lb, s, tau: (ce(lg.softmax(-1), lb) + ce(lg.T.softmax(-1), lb)) / 2),
        "shape": variant(lambda lg, lb, s, tau: (ce(lg, lb, reduction="none") + ce(lg.T, lb, reduction="none")) / 2),
        "not a tensor": variant(lambda lg, lb, s, tau: ((ce(lg, lb) + ce(lg.T, lb)) / 2).item()),
        "no gradient": variant(lambda lg, lb, s, tau: ((ce(lg, lb) + ce(lg.T, lb)) / 2).detach()),
        "raised": variant(lambda lg, lb, s, tau: ce(lg, lb[:2])),
        "sign": variant(lambda lg, lb, s, tau: (ce(-lg, lb) + ce(-lg.T, lb)) / 2),
    }
    for phrase, fn in cases.items():
        fb = check(fn)
        assert fb.passed is False and phrase in fb.message, (phrase, fb)
    assert check(42).passed is False


def test_lesson04_loss_checker_names_a_function_that_reads_the_lessons_tensors():
    """Review fix: a my_clip_loss copied from the lesson's cells reads its img / txt / sims / labels instead of its
    arguments; it was told it "uses only the diagonal" or that a product of (B, D) with (B, D) needs a transpose."""
    ce, check = F.cross_entropy, lesson04.check_clip_loss
    img, txt = _features()                             # the lesson's (8, 32) features
    labels = torch.arange(8)

    def lessons_features(i, t, tau):
        lg = img @ txt.T / tau
        return (ce(lg, labels) + ce(lg.T, labels)) / 2

    def lessons_images(i, t, tau):
        lg = img @ t.T / tau
        return (ce(lg, labels) + ce(lg.T, labels)) / 2

    def lessons_labels(i, t, tau):
        lg = i @ t.T / tau
        return (ce(lg, labels) + ce(lg.T, labels)) / 2

    fb = check(lessons_features)
    assert fb.passed is False and "does not read its arguments" in fb.message, fb
    fb = check(lessons_images)
    assert fb.passed is False and "not one of its arguments" in fb.message and "transpose" not in fb.message, fb
    fb = check(lessons_labels)
    assert fb.passed is False and "outside the function" in fb.hint, fb
