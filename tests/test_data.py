"""ShapesWorld: determinism, shapes, the held-out split, rendering, captions, hard negatives and the
Flickr30k caption format."""

import itertools

import pytest
import torch

from clipcourse import data
from clipcourse.data import COLOR, PRESENT, POS, SHAPE, SIZE
from clipcourse.paths import DATA_DIR
from clipcourse.text import split_words

BACKGROUND = 20  # render's background grey level


def scene(color=0, shape=0, size=1, pos=4, second=None):
    """One scene tensor (1, 2, 5); `second` is (color, shape, size, pos) for a second object."""
    s = torch.zeros(1, 2, 5, dtype=torch.long)
    s[0, 0] = torch.tensor([color, shape, size, pos, 1])
    if second is not None:
        s[0, 1] = torch.tensor([*second, 1])
    return s


def object_mask(image, rgb):
    """(H, W) bool: pixels of exactly this colour."""
    return (image == torch.tensor(rgb, dtype=torch.uint8)[:, None, None]).all(dim=0)


def words_of(caption):
    """(colours, shapes, sizes) mentioned in a caption, in order."""
    words = split_words(caption)
    return ([w for w in words if w in data.COLORS], [w for w in words if w in data.SHAPES],
            [w for w in words if w in data.SIZES])


# --- generation: determinism, shapes, dtypes ---------------------------------------------------

def test_same_seed_same_data_different_seed_different_data():
    a = data.ShapesWorld.generate(200, seed=7)
    b = data.ShapesWorld.generate(200, seed=7)
    c = data.ShapesWorld.generate(200, seed=8)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.scenes, b.scenes)
    assert a.captions == b.captions
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.scenes, c.scenes)
    assert a.captions != c.captions


def test_generation_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    data.ShapesWorld.generate(50, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("resolution", [16, 32, 48])
def test_shapes_and_dtypes(resolution):
    ds = data.ShapesWorld.generate(30, seed=0, resolution=resolution)
    assert ds.images.shape == (30, 3, resolution, resolution)
    assert ds.images.dtype == torch.uint8
    assert ds.scenes.shape == (30, 2, 5) and ds.scenes.dtype == torch.long
    assert len(ds) == len(ds.captions) == 30
    assert all(isinstance(c, str) and c for c in ds.captions)
    assert ds.labels.shape == (30,)
    assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < data.NUM_COMBOS
    image, caption = ds[3]
    assert torch.equal(image, ds.images[3]) and caption == ds.captions[3]


def test_labels_are_the_first_objects_combination():
    ds = data.ShapesWorld.generate(100, seed=0, split="all")
    for label, s in zip(ds.labels.tolist(), ds.scenes.tolist()):
        assert data.combo_name(label) == f"{data.COLOR_NAMES[s[0][COLOR]]} {data.SHAPES[s[0][SHAPE]]}"


def test_to_float_maps_0_255_to_minus_1_plus_1():
    x = data.to_float(torch.tensor([0, 255], dtype=torch.uint8))
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([-1.0, 1.0]))


def test_two_object_prob_is_respected():
    one = data.ShapesWorld.generate(300, seed=0, two_object_prob=0.0)
    two = data.ShapesWorld.generate(300, seed=0, two_object_prob=1.0)
    some = data.ShapesWorld.generate(2000, seed=0, two_object_prob=0.3)
    assert int(one.scenes[:, 1, PRESENT].sum()) == 0
    assert bool(two.scenes[:, 1, PRESENT].all())
    assert 0.25 < some.scenes[:, 1, PRESENT].float().mean().item() < 0.35


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="split"):
        data.ShapesWorld.generate(4, split="test")
    with pytest.raises(ValueError, match="n must be"):
        data.sample_scenes(-1)
    with pytest.raises(ValueError, match="two_object_prob"):
        data.sample_scenes(4, two_object_prob=1.5)
    with pytest.raises(ValueError, match=r"\(N, 2, 5\)"):
        data.render(torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="resolution"):
        data.render(scene(), resolution=8)


# --- the held-out split --------------------------------------------------------------------------

def present_combos(scenes):
    """Colour x shape ids of every present object."""
    combos = data.combo_index(scenes[..., COLOR], scenes[..., SHAPE])
    return set(combos[scenes[..., PRESENT].bool()].tolist())


def test_heldout_combos_cover_every_colour_once_and_every_shape():
    held = data.heldout_combos()
    assert len(held) == len(set(held)) == len(data.COLORS)
    assert sorted(h // len(data.SHAPES) for h in held) == list(range(len(data.COLORS)))
    assert {h % len(data.SHAPES) for h in held} == set(range(len(data.SHAPES)))


def test_training_scenes_never_contain_a_heldout_combo_yet_see_every_colour_and_shape():
    ds = data.ShapesWorld.generate(3000, seed=0, two_object_prob=0.5)
    combos = present_combos(ds.scenes)
    assert not combos & set(data.heldout_combos())
    assert combos == set(range(data.NUM_COMBOS)) - set(data.heldout_combos())  # all the rest are seen
    # every colour and every shape is seen in training, and in the first slot alone too
    assert set(ds.scenes[:, 0, COLOR].tolist()) == set(range(len(data.COLORS)))
    assert set(ds.scenes[:, 0, SHAPE].tolist()) == set(range(len(data.SHAPES)))
    # no caption names a held-out combination ("green square") anywhere
    held_names = [data.combo_name(h) for h in data.heldout_combos()]
    assert not any(name in caption for caption in ds.captions for name in held_names)


def test_heldout_split_contains_only_heldout_combos():
    ds = data.ShapesWorld.generate(1000, split="heldout", seed=1, two_object_prob=0.5)
    assert present_combos(ds.scenes) == set(data.heldout_combos())
    assert set(ds.labels.tolist()) <= set(data.heldout_combos())


def test_all_split_covers_every_combo():
    ds = data.ShapesWorld.generate(3000, split="all", seed=0)
    assert set(ds.labels.tolist()) == set(range(data.NUM_COMBOS))


def test_class_prompts_and_combo_names():
    prompts = data.class_prompts()
    assert len(prompts) == data.NUM_COMBOS
    assert prompts[0] == "a red square"
    assert "an orange ring" in prompts                      # the article is fixed
    for i, p in enumerate(prompts):
        assert p.endswith(data.combo_name(i))
        assert data.combo_index(*divmod(i, len(data.SHAPES))) == i


# --- rendering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", range(len(data.SHAPES)))
@pytest.mark.parametrize("size", range(len(data.SIZES)))
def test_render_draws_the_colour_at_the_centre_and_background_elsewhere(shape, size):
    color = 2  # blue
    rgb = list(data.COLORS.values())[color]
    img = data.render(scene(color, shape, size, pos=4), generator=torch.Generator().manual_seed(shape))[0]
    mask = object_mask(img, rgb)
    assert mask.any()
    # every pixel is either the object's colour or the background
    assert bool((img[:, ~mask] == BACKGROUND).all())
    # the corners are background; the object sits around the image centre (within the wiggle)
    assert not mask[0, 0] and not mask[-1, -1] and not mask[0, -1] and not mask[-1, 0]
    ys, xs = mask.nonzero(as_tuple=True)
    assert abs(xs.float().mean().item() + 0.5 - 16) < 2.5
    if data.SHAPES[shape] != "triangle":  # a triangle's centroid sits below its centre
        assert abs(ys.float().mean().item() + 0.5 - 16) < 2.5
    # the centre pixel of the object is painted, except the ring's hole
    cy, cx = int(ys.float().mean().round()), int(xs.float().mean().round())
    if data.SHAPES[shape] == "ring":
        assert not mask[cy, cx]
    elif data.SHAPES[shape] != "triangle":
        assert mask[cy, cx]


@pytest.mark.parametrize("pos,expected", [(0, (8.6, 16)), (1, (23.4, 16)), (2, (16, 8.6)),
                                          (3, (16, 23.4)), (4, (16, 16))])
def test_render_puts_the_object_at_its_position(pos, expected):
    rgb = data.COLORS["red"]
    img = data.render(scene(0, 1, 0, pos=pos), generator=torch.Generator().manual_seed(pos))[0]
    ys, xs = object_mask(img, rgb).nonzero(as_tuple=True)
    assert abs(xs.float().mean().item() + 0.5 - expected[0]) < 2.5
    assert abs(ys.float().mean().item() + 0.5 - expected[1]) < 2.5


def shape_masks(size=1, resolution=32):
    """The mask of every shape, all drawn at the same centre (same generator seed, same wiggle)."""
    rgb = data.COLORS["white"]
    return [object_mask(data.render(scene(6, s, size), resolution,
                                    generator=torch.Generator().manual_seed(0))[0], rgb)
            for s in range(len(data.SHAPES))]


def test_each_shape_has_its_own_mask():
    masks = dict(zip(data.SHAPES, shape_masks(resolution=64)))
    for a, b in itertools.combinations(data.SHAPES, 2):
        assert not torch.equal(masks[a], masks[b]), f"{a} and {b} render identically"
    # geometry we can check: a circle is bigger than the square inside it, the ring is the circle
    # with a hole, a diamond fits inside the circle, the triangle points up
    assert masks["circle"].sum() > masks["square"].sum()
    assert bool((masks["ring"] <= masks["circle"]).all()) and masks["ring"].sum() < masks["circle"].sum()
    assert bool((masks["diamond"] <= masks["circle"]).all())
    rows = masks["triangle"].sum(dim=1).nonzero().flatten()
    widths = masks["triangle"].sum(dim=1)[rows]
    assert widths[0] < widths[-1]  # narrow at the top, wide at the bottom


def test_large_objects_are_larger_than_small_ones():
    small, large = shape_masks(size=0), shape_masks(size=1)
    for name, s, big in zip(data.SHAPES, small, large):
        assert big.sum() > 2 * s.sum(), name


def test_two_object_scenes_put_slot_0_left_and_slot_1_right():
    scenes = data.sample_scenes(300, two_object_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert bool((scenes[:, 0, POS] == data.POSITIONS.index("left")).all())
    assert bool((scenes[:, 1, POS] == data.POSITIONS.index("right")).all())
    scenes = scenes[scenes[:, 0, COLOR] != scenes[:, 1, COLOR]][:50]
    images = data.render(scenes, generator=torch.Generator().manual_seed(1))
    palette = list(data.COLORS.values())
    for img, s in zip(images, scenes.tolist()):
        left = object_mask(img, palette[s[0][COLOR]]).nonzero(as_tuple=True)[1].float().mean()
        right = object_mask(img, palette[s[1][COLOR]]).nonzero(as_tuple=True)[1].float().mean()
        assert left < 16 < right


def test_single_object_scene_leaves_slot_1_undrawn():
    # slot 1 holds random attributes but is not present: only slot 0's colour may appear
    s = scene(0, 0, 1, pos=4)
    s[0, 1] = torch.tensor([3, 1, 1, 1, 0])
    img = data.render(s, generator=torch.Generator().manual_seed(0))[0]
    assert not object_mask(img, data.COLORS["yellow"]).any()


def test_jitter_changes_colours_only_a_little():
    s = scene(0, 0, 1, pos=4)
    g = torch.Generator().manual_seed(0)
    plain = data.render(s, generator=torch.Generator().manual_seed(0))[0]
    jittered = data.render(s, jitter=0.03, generator=g)[0]
    mask = object_mask(plain, data.COLORS["red"])
    assert torch.equal(jittered[:, ~mask], plain[:, ~mask])
    diff = (jittered[:, mask].int() - plain[:, mask].int()).abs()
    assert 0 < diff.max() < 40


# --- captions and hard negatives -----------------------------------------------------------------

def test_captions_describe_their_scenes():
    ds = data.ShapesWorld.generate(600, seed=3, split="all", two_object_prob=0.4)
    templates_seen = set()
    for caption, s in zip(ds.captions, ds.scenes.tolist()):
        (c, sh, z, p, _), (c2, sh2, z2, _, two) = s
        colours, shapes, sizes = words_of(caption)
        first = (data.COLOR_NAMES[c], data.SHAPES[sh])
        if not two:
            assert list(zip(colours, shapes)) == [first], caption
            assert sizes in ([], [data.SIZES[z]]), caption
            where = data.WHERE[data.POSITIONS[p]]
            if any(w in caption for w in data.WHERE.values()):
                assert caption.endswith(where), caption
        else:
            second = (data.COLOR_NAMES[c2], data.SHAPES[sh2])
            mentioned = list(zip(colours, shapes))
            # "b right of a" names the right (second) object first
            expected = [second, first] if " right of " in caption else [first, second]
            assert mentioned == expected, caption
            assert sizes in ([], [data.SIZES[z], data.SIZES[z2]]), caption
        templates_seen.add((bool(two), " ".join("{}" if w in data.COLORS or w in data.SHAPES
                                                 else w for w in split_words(caption))))
        # articles agree with the next word
        words = split_words(caption)
        for w, nxt in zip(words, words[1:]):
            if w in ("a", "an"):
                assert (w == "an") == (nxt[0] in "aeiou"), caption
    assert len(templates_seen) > 10  # many templates are in use


@pytest.mark.parametrize("template", range(6))
def test_describe_with_a_fixed_template(template):
    s = scene(data.COLOR_NAMES.index("orange"), data.SHAPES.index("ring"), 0, pos=2)
    caption = data.describe(s, template=template)[0]
    assert "orange ring" in caption
    assert "a orange" not in caption


def test_hard_negatives_differ_in_exactly_one_attribute_of_the_first_object():
    scenes = data.sample_scenes(500, split="all", two_object_prob=0.5,
                                generator=torch.Generator().manual_seed(0))
    neg = data.hard_negative(scenes, generator=torch.Generator().manual_seed(1))
    changed = (neg[:, 0, [COLOR, SHAPE]] != scenes[:, 0, [COLOR, SHAPE]]).sum(dim=1)
    assert bool((changed == 1).all())
    assert torch.equal(neg[:, 0, [SIZE, POS, PRESENT]], scenes[:, 0, [SIZE, POS, PRESENT]])
    assert torch.equal(neg[:, 1], scenes[:, 1])
    # both kinds of change happen
    assert 0 < int((neg[:, 0, COLOR] != scenes[:, 0, COLOR]).sum()) < len(scenes)


def test_hard_negative_captions_change_one_word():
    scenes = data.sample_scenes(300, split="all", two_object_prob=0.5,
                                generator=torch.Generator().manual_seed(2))
    positives = data.describe(scenes, template=0)
    negatives = data.hard_negative_captions(scenes, generator=torch.Generator().manual_seed(3))
    assert negatives == data.hard_negative_captions(scenes, generator=torch.Generator().manual_seed(3))
    for pos, neg in zip(positives, negatives):
        assert pos != neg
        p_words, n_words = words_of(pos), words_of(neg)
        diffs = sum(a != b for a, b in zip(p_words[0] + p_words[1], n_words[0] + n_words[1]))
        assert diffs == 1, (pos, neg)
        # the changed word belongs to the first object
        assert p_words[0][0] != n_words[0][0] or p_words[1][0] != n_words[1][0], (pos, neg)


# --- the Flickr30k caption format ----------------------------------------------------------------

def pil_to_tensor(image):
    import numpy as np
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    ds = data.ShapesWorld.generate(12, seed=5, split="all", two_object_prob=0.5)
    root = tmp_path_factory.mktemp("flickr")
    path = data.write_caption_dataset(ds, root, captions_per_image=3)
    return ds, root, path


def test_caption_file_has_the_flickr30k_line_format(written):
    ds, root, path = written
    lines = open(path, encoding="utf-8").read().splitlines()
    assert len(lines) == 3 * len(ds)
    assert lines[0] == f"shape_00000.png#0\t{ds.captions[0]}"
    for line in lines:
        key, caption = line.split("\t")
        name, number = key.split("#")
        assert (root / name).is_file() and number in "012" and caption


def test_read_caption_file_round_trips(written):
    ds, root, path = written
    captions = data.read_caption_file(path)
    assert list(captions) == [f"shape_{i:05d}.png" for i in range(len(ds))]
    for i, (name, caps) in enumerate(captions.items()):
        assert caps[0] == ds.captions[i]
        assert len(caps) == len(set(caps)) == 3
        truth = ds.scenes[i, 0]
        for c in caps:  # the extra captions describe the same scene
            colours, shapes, _ = words_of(c)
            assert data.COLOR_NAMES[truth[COLOR]] in colours and data.SHAPES[truth[SHAPE]] in shapes


def test_torchvision_flickr30k_loads_what_we_write(written):
    datasets = pytest.importorskip("torchvision.datasets")
    ds, root, path = written
    flickr = datasets.Flickr30k(str(root), ann_file=str(path))
    assert len(flickr) == len(ds)
    ours = data.read_caption_file(path)
    for i in range(len(ds)):
        image, captions = flickr[i]
        assert torch.equal(pil_to_tensor(image), ds.images[i])          # lossless PNG
        assert captions == ours[f"shape_{i:05d}.png"]                   # same captions, same order
        assert captions[0] == ds.captions[i]


def test_load_caption_dataset_returns_the_images_and_first_captions(written):
    ds, root, _ = written
    images, captions = data.load_caption_dataset(root)
    assert torch.equal(images, ds.images)
    assert captions == ds.captions
    small, _ = data.load_caption_dataset(root, resolution=16)
    assert small.shape == (len(ds), 3, 16, 16) and small.dtype == torch.uint8


def test_captions_per_image_is_checked(tmp_path):
    ds = data.ShapesWorld.generate(2, seed=0)
    for bad in (0, 11):
        with pytest.raises(ValueError, match="captions_per_image"):
            data.write_caption_dataset(ds, tmp_path, captions_per_image=bad)


@pytest.mark.parametrize("line,lineno", [
    ("shape_00001.png#0 a red circle\n", 2),            # space instead of a tab
    ("shape_00001.png\ta red circle\n", 2),              # no '#N'
    ("shape_00001.png#x\ta red circle\n", 2),            # N is not a number
    ("\nshape_00001.png#0a red circle\n", 3),            # blank lines are skipped, still counted
])
def test_malformed_caption_lines_raise_with_the_line_number(tmp_path, line, lineno):
    path = tmp_path / "captions.txt"
    path.write_text("shape_00000.png#0\ta red circle\n" + line, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"captions.txt:{lineno}:"):
        data.read_caption_file(path)


def test_the_shipped_sample_loads_with_torchvision():
    datasets = pytest.importorskip("torchvision.datasets")
    root = DATA_DIR / "shapesworld_sample"
    flickr = datasets.Flickr30k(str(root), ann_file=str(root / "captions.txt"))
    assert len(flickr) == 48
    image, captions = flickr[0]
    assert image.size == (32, 32) and len(captions) == 3
    images, first = data.load_caption_dataset(root)
    assert images.shape == (48, 3, 32, 32) and len(first) == 48
    assert torch.equal(pil_to_tensor(image), images[0])
    assert first[0] == captions[0]
    # the sample is what data/make_sample.py makes: ShapesWorld.generate(48, split="all", seed=2024)
    sample = data.ShapesWorld.generate(48, split="all", seed=2024)
    assert torch.equal(images, sample.images)
    assert first == sample.captions


def _scene(*objects):
    """A (1, 2, 5) scene from (colour, shape, size, position) tuples: one or two objects."""
    rows = [list(o) + [1] for o in objects] + [[0, 0, 0, 0, 0]] * (2 - len(objects))
    return torch.tensor([rows])


def test_true_captions_hold_every_caption_the_scene_was_given_and_touch_no_rng():
    world = data.ShapesWorld.generate(3000, seed=4)
    state = torch.get_rng_state()
    sets = data.true_captions(world.scenes)
    assert torch.equal(state, torch.get_rng_state())
    assert all(a <= b for a, b in zip(sets, data.true_captions(world.scenes, parts=True)))
    assert all(caption in true for caption, true in zip(world.captions, sets))
    again = data.describe(world.scenes, generator=torch.Generator().manual_seed(9))   # other template draws
    assert all(caption in true for caption, true in zip(again, sets))


def test_true_captions_of_one_and_of_two_objects():
    red, blue, circle, square, small, large = 0, 1, 1, 0, 0, 1
    colour = data.COLOR_NAMES
    one = data.true_captions(_scene((red, circle, large, 0)))[0]
    where = data.WHERE[data.POSITIONS[0]]
    assert one == {f"a {colour[red]} circle", f"a large {colour[red]} circle", f"a picture of a {colour[red]} circle",
                   f"a {colour[red]} circle {where}", f"there is a large {colour[red]} circle",
                   f"a large {colour[red]} circle {where}"}
    pair = _scene((red, circle, large, 0), (blue, square, small, 0))
    two, with_parts = data.true_captions(pair)[0], data.true_captions(pair, parts=True)[0]
    r, b = colour[red], colour[blue]
    assert {f"a {r} circle left of a {b} square", f"a {b} square right of a {r} circle",
            f"a {b} square and a {r} circle", f"a small {b} square and a large {r} circle"} <= two   # either order
    alone = {f"a {r} circle", f"there is a small {b} square"}                                  # one object alone
    assert not alone & two and alone <= with_parts and two <= with_parts
    assert not {f"a {b} circle left of a {r} square", f"a {r} square", f"a small {r} circle",
                f"a {r} circle {where}"} & with_parts    # swapped, absent, the wrong size, a position in a pair
    with pytest.raises(ValueError, match="shape"):
        data.true_captions(torch.zeros(3, 5, dtype=torch.long))


def _leaves_the_global_rng_alone(fn):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    fn()
    return torch.equal(torch.rand(3), expected)


def test_describe_with_a_template_or_a_generator_leaves_the_global_rng_alone():
    scenes = data.sample_scenes(20, split="all", two_object_prob=0.5, generator=torch.Generator().manual_seed(0))
    assert _leaves_the_global_rng_alone(lambda: data.describe(scenes, template=2))
    assert _leaves_the_global_rng_alone(lambda: data.describe(scenes, generator=torch.Generator().manual_seed(1)))
    # a fixed template draws nothing, so a generator passed along is not advanced either
    g = torch.Generator().manual_seed(5)
    data.describe(scenes, generator=g, template=1)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(5).get_state())


def test_hard_negative_captions_leave_the_global_rng_alone():
    scenes = data.sample_scenes(20, split="all", two_object_prob=0.5, generator=torch.Generator().manual_seed(0))
    assert _leaves_the_global_rng_alone(
        lambda: data.hard_negative_captions(scenes, generator=torch.Generator().manual_seed(3)))


def test_write_caption_dataset_leaves_the_global_rng_alone(tmp_path):
    ds = data.ShapesWorld.generate(4, seed=5, split="all", two_object_prob=0.5)
    assert _leaves_the_global_rng_alone(lambda: data.write_caption_dataset(ds, tmp_path, captions_per_image=3))


def test_swap_family_is_closed_under_the_swaps_and_numbers_every_family_once():
    scenes = data.sample_scenes(4000, split="all", two_object_prob=1.0, generator=torch.Generator().manual_seed(0))
    family = data.swap_family(scenes)
    ok = data.swap_changes_binding(scenes)
    assert torch.equal(family < 0, ~ok)                                           # -1 exactly where no swap binds
    both = data.swap_attribute(data.swap_attribute(scenes, "color"), "shape")      # the picture mirrored
    for twin in (data.swap_attribute(scenes, "color"), data.swap_attribute(scenes, "shape"), both):
        assert torch.equal(data.swap_family(twin), family)
    assert data.NUM_SWAP_FAMILIES == 28 * 15
    every = torch.tensor([[[c1, s1, 0, 0, 1], [c2, s2, 0, 1, 1]] for c1, c2 in itertools.combinations(range(8), 2)
                          for s1, s2 in itertools.combinations(range(6), 2)])     # one pairing per family
    assert sorted(data.swap_family(every).tolist()) == list(range(data.NUM_SWAP_FAMILIES))
    key = lambda s: (frozenset(s[:, COLOR].tolist()), frozenset(s[:, SHAPE].tolist()))
    for s, f in zip(scenes[ok][:300], family[ok][:300]):                          # same family: same colours and shapes
        same = [bool(g == f) for g in family[ok][:300]]
        assert all((key(t) == key(s)) == m for t, m in zip(scenes[ok][:300], same))
    with pytest.raises(ValueError, match="shape"):
        data.swap_family(torch.zeros(3, 5, dtype=torch.long))
