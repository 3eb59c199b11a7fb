"""Bring your own data (issue 13): every malformed caption folder raises a ValueError naming the file
and line, image names cannot reach outside the folder, the real Flickr formats load, and pixels
that are not uint8 are refused with a hint on how to convert them."""

import os
import struct
import zlib

import pytest
import torch
from PIL import Image

from clipcourse import data, evaluate, train

RED, BLUE = (230, 40, 40), (50, 90, 240)


def save_image(path, rgb=RED, size=(8, 8), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt)


def folder(tmp_path, text, images=("a.png", "b.png"), encoding="utf-8"):
    """A data folder with the given caption-file text and small images; returns it."""
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    for i, name in enumerate(images):
        save_image(root / name, RED if i % 2 == 0 else BLUE)
    (root / "captions.txt").write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return root


def png_header_only(path, width, height):
    """A PNG whose header claims width x height pixels (a decompression bomb's first bytes)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


GOOD = "a.png#0\ta red square\nb.png#0\ta blue square\n"


# --- malformed input: a ValueError naming the file and the line -------------------------------

def test_a_bad_line_names_the_file_and_line(tmp_path):
    root = folder(tmp_path, "a.png#0\ta red square\nb.png a blue square\n")
    with pytest.raises(ValueError, match=r"captions\.txt:2: expected 'image#N<TAB>caption'"):
        data.load_caption_dataset(root)


def test_an_empty_caption_names_the_file_and_line(tmp_path):
    root = folder(tmp_path, "a.png#0\ta red square\nb.png#0\t  \n")
    with pytest.raises(ValueError, match=r"captions\.txt:2: empty caption for 'b.png'"):
        data.load_caption_dataset(root)


def test_a_line_with_nothing_after_the_tab_is_an_empty_caption(tmp_path):
    root = folder(tmp_path, "a.png#0\ta red square\r\nb.png#0\t\r\n")
    with pytest.raises(ValueError, match=r"captions\.txt:2: empty caption"):
        data.read_caption_file(root / "captions.txt")


def test_an_empty_caption_file_names_the_file(tmp_path):
    root = folder(tmp_path, "")
    with pytest.raises(ValueError, match=r"captions\.txt: no captions"):
        data.load_caption_dataset(root)


def test_a_caption_file_of_blank_lines_has_no_captions(tmp_path):
    root = folder(tmp_path, "\n\r\n  \n")
    with pytest.raises(ValueError, match=r"captions\.txt: no captions"):
        data.read_caption_file(root / "captions.txt")


def test_a_missing_image_names_the_file_line_and_image(tmp_path):
    root = folder(tmp_path, GOOD + "c.png#0\ta green square\n")
    with pytest.raises(ValueError, match=r"captions\.txt:3: image 'c.png' not found"):
        data.load_caption_dataset(root)


def test_a_file_that_is_not_an_image_names_the_file_and_line(tmp_path):
    root = folder(tmp_path, GOOD)
    (root / "b.png").write_text("not a picture")
    with pytest.raises(ValueError, match=r"captions\.txt:2: 'b.png' is not an image"):
        data.load_caption_dataset(root)


def test_a_truncated_image_names_the_file_and_line(tmp_path):
    root = folder(tmp_path, GOOD)
    save_image(root / "b.png", size=(64, 64))
    whole = (root / "b.png").read_bytes()
    (root / "b.png").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match=r"captions\.txt:2: image 'b.png' could not be decoded"):
        data.load_caption_dataset(root)


def test_an_image_over_max_pixels_is_refused_before_decoding(tmp_path):
    root = folder(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"captions\.txt:1: image 'a.png' is 8x8 = 64 pixels, "
                                         r"more than max_pixels=63"):
        data.load_caption_dataset(root, max_pixels=63)
    assert len(data.load_caption_dataset(root, max_pixels=64)[0]) == 2


def test_an_image_between_our_limit_and_pils_is_refused(tmp_path):
    root = folder(tmp_path, GOOD)
    png_header_only(root / "b.png", 9000, 9000)          # 81 MP: over 8192², under PIL's warning
    assert 9000 * 9000 > data.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match=r"captions\.txt:2: image 'b.png' is 9000x9000 .* too large"):
        data.load_caption_dataset(root)


@pytest.mark.parametrize("side", [10_000, 100_000])    # PIL's warning (> 89 MP), PIL's error (> 179 MP)
def test_a_decompression_bomb_is_a_value_error_even_with_max_pixels_raised(tmp_path, side, recwarn):
    root = folder(tmp_path, GOOD)
    png_header_only(root / "b.png", side, side)
    with pytest.raises(ValueError, match=r"captions\.txt:2: image 'b.png' is too large to decode safely"):
        data.load_caption_dataset(root, max_pixels=10**12)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
    root = folder(tmp_path, "a.png#0\ta red square\nb.png#0\ta café\n", encoding="latin-1")
    with pytest.raises(ValueError, match=r"captions\.txt:2: not UTF-8 text"):
        data.read_caption_file(root / "captions.txt")


def test_a_utf16_file_says_to_save_it_as_utf8(tmp_path):
    root = folder(tmp_path, GOOD, encoding="utf-16")
    with pytest.raises(ValueError, match=r"captions\.txt: the file is UTF-16 text; save it as UTF-8"):
        data.read_caption_file(root / "captions.txt")


# --- image names must stay inside the data folder ---------------------------------------------

@pytest.fixture
def opened(monkeypatch):
    """The paths PIL is asked to open."""
    seen = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        seen.append(str(fp))
        return real_open(fp, *args, **kwargs)
    monkeypatch.setattr(Image, "open", spy)
    return seen


def test_dot_dot_is_refused_before_any_image_is_opened(tmp_path, opened):
    save_image(tmp_path / "secret.png")                   # a real image just outside the folder
    root = folder(tmp_path, GOOD + "../secret.png#0\ta leak\n")
    with pytest.raises(ValueError, match=r"captions\.txt:3: image name '\.\./secret\.png' points outside"):
        data.load_caption_dataset(root)
    assert opened == []                                   # not even a.png and b.png


def test_dot_dot_inside_a_path_is_refused(tmp_path, opened):
    save_image(tmp_path / "secret.png")
    root = folder(tmp_path, GOOD + "sub/../../secret.png#0\ta leak\n")
    (root / "sub").mkdir()
    with pytest.raises(ValueError, match=r"captions\.txt:3: .* points outside"):
        data.load_caption_dataset(root)
    assert opened == []


def test_a_windows_dot_dot_is_refused(tmp_path, opened):
    root = folder(tmp_path, GOOD + "..\\secret.png#0\ta leak\n")
    with pytest.raises(ValueError, match=r"captions\.txt:3: .* points outside"):
        data.load_caption_dataset(root)
    assert opened == []


@pytest.mark.parametrize("name", ["{outside}", "C:\\secret.png", "\\\\server\\share\\secret.png"])
def test_an_absolute_name_is_refused_before_any_image_is_opened(tmp_path, opened, name):
    save_image(tmp_path / "secret.png")
    name = name.format(outside=tmp_path / "secret.png")
    root = folder(tmp_path, f"{GOOD}{name}#0\ta leak\n")
    with pytest.raises(ValueError, match=r"captions\.txt:3: .* points outside"):
        data.load_caption_dataset(root)
    assert opened == []


def test_a_symlink_out_of_the_folder_is_refused_before_any_image_is_opened(tmp_path, opened):
    save_image(tmp_path / "secret.png")
    root = folder(tmp_path, GOOD + "c.png#0\ta leak\n")
    os.symlink(tmp_path / "secret.png", root / "c.png")
    with pytest.raises(ValueError, match=r"captions\.txt:3: image 'c.png' is a link to .*secret\.png, outside"):
        data.load_caption_dataset(root)
    assert opened == []


def test_a_symlinked_folder_out_of_the_data_folder_is_refused(tmp_path, opened):
    save_image(tmp_path / "elsewhere" / "secret.png")
    root = folder(tmp_path, GOOD + "linked/secret.png#0\ta leak\n")
    os.symlink(tmp_path / "elsewhere", root / "linked")
    with pytest.raises(ValueError, match=r"captions\.txt:3: .* outside the data folder"):
        data.load_caption_dataset(root)
    assert opened == []


def test_a_symlink_that_stays_inside_the_folder_loads(tmp_path):
    root = folder(tmp_path, GOOD + "c.png#0\tthe red square again\n")
    os.symlink(root / "a.png", root / "c.png")
    images, captions = data.load_caption_dataset(root)
    assert torch.equal(images[2], images[0]) and captions[2] == "the red square again"


def test_a_data_folder_reached_through_a_symlink_loads(tmp_path):
    root = folder(tmp_path, GOOD)
    os.symlink(root, tmp_path / "alias")
    images, _ = data.load_caption_dataset(tmp_path / "alias")
    assert torch.equal(images, data.load_caption_dataset(root)[0])


def test_images_in_a_subfolder_load(tmp_path):
    root = folder(tmp_path, "Images/a.png#0\ta red square\n", images=("Images/a.png",))
    images, captions = data.load_caption_dataset(root)
    assert images.shape == (1, 3, 32, 32) and captions == ["a red square"]


# --- ordinary quirks load ----------------------------------------------------------------------

def test_windows_line_endings_load(tmp_path):
    root = folder(tmp_path, GOOD.replace("\n", "\r\n"))
    images, captions = data.load_caption_dataset(root)
    assert captions == ["a red square", "a blue square"]
    assert images[0, :, 0, 0].tolist() == list(RED) and images[1, :, 0, 0].tolist() == list(BLUE)


def test_a_byte_order_mark_loads(tmp_path):
    root = folder(tmp_path, GOOD, encoding="utf-8-sig")
    assert (root / "captions.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(data.read_caption_file(root / "captions.txt")) == ["a.png", "b.png"]
    images, captions = data.load_caption_dataset(root)
    assert len(images) == 2 and captions == ["a red square", "a blue square"]


def test_several_captions_per_image_keep_their_order(tmp_path):
    text = "b.png#0\tblue one\na.png#0\tred one\nb.png#1\tblue two\na.png#1\tred two\na.png#2\tred three\n"
    root = folder(tmp_path, text)
    assert data.read_caption_file(root / "captions.txt") == {
        "b.png": ["blue one", "blue two"], "a.png": ["red one", "red two", "red three"]}
    images, first = data.load_caption_dataset(root)
    assert first == ["red one", "blue one"]               # sorted by name, the first caption of each
    assert images[0, :, 0, 0].tolist() == list(RED)


# The first lines of the files as downloaded (tab-separated, captions end with ' .').
FLICKR8K_TOKEN = (
    "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs in an entry way .\n"
    "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
    "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n")
FLICKR30K_TOKEN = (
    "1000092795.jpg#0\tTwo young guys with shaggy hair look at their hands while hanging out in the yard .\n"
    "1000092795.jpg#1\tTwo young , White males are outside near many bushes .\n"
    "10002456.jpg#0\tSeveral men in hard hats are operating a giant pulley system .\n")


@pytest.mark.parametrize("ann_file,text", [("Flickr8k.token.txt", FLICKR8K_TOKEN),
                                           ("results_20130124.token", FLICKR30K_TOKEN)])
def test_flickr8k_and_flickr30k_token_files_load(tmp_path, ann_file, text):
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    root = tmp_path / "Flicker8k_Dataset"
    names = sorted({line.split("#")[0] for line in text.splitlines()})
    for i, name in enumerate(names):
        save_image(root / name, RED if i == 0 else BLUE, size=(50, 40), fmt="JPEG")
    ann = tmp_path / ann_file                             # kept next to the images, as downloaded
    ann.write_text(text, encoding="utf-8")
    images, first = data.load_caption_dataset(root, os.path.join("..", ann_file))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    captions = data.read_caption_file(ann)
    assert first == [captions[n][0] for n in names] and list(captions) == [text.split("#")[0], names[1]]
    assert len(captions[names[0]]) == 2
    flickr = torchvision_datasets.Flickr30k(str(root), ann_file=str(ann))  # reads the same captions
    assert [flickr[i][1] for i in range(len(flickr))] == [captions[n] for n in names]


KAGGLE_CAPTIONS = (
    "image,caption\n"
    "1000268201_693b08cb0e.jpg,A child in a pink dress is climbing up a set of stairs in an entry way .\n"
    "1000268201_693b08cb0e.jpg,A girl going into a wooden building .\n"
    "1001773457_577c3a7d70.jpg,\"A black dog and a white dog with brown spots are staring at each other , "
    "in the street .\"\n")


def test_the_kaggle_csv_captions_file_loads(tmp_path):
    root = tmp_path / "flickr8k"
    save_image(root / "Images" / "1000268201_693b08cb0e.jpg", fmt="JPEG")
    save_image(root / "Images" / "1001773457_577c3a7d70.jpg", BLUE, fmt="JPEG")
    (root / "captions.txt").write_text(KAGGLE_CAPTIONS.replace("\n", "\r\n"), encoding="utf-8")
    captions = data.read_caption_file(root / "captions.txt")
    assert captions["1001773457_577c3a7d70.jpg"] == [
        "A black dog and a white dog with brown spots are staring at each other , in the street ."]
    assert len(captions["1000268201_693b08cb0e.jpg"]) == 2
    images, first = data.load_caption_dataset(root / "Images", "../captions.txt")
    assert images.shape == (2, 3, 32, 32)
    assert first[0].startswith("A child in a pink dress")


def test_a_kaggle_csv_with_only_its_header_has_no_captions(tmp_path):
    root = folder(tmp_path, "image,caption\n")
    with pytest.raises(ValueError, match=r"captions\.txt: no captions: the file has only the header"):
        data.read_caption_file(root / "captions.txt")


def test_a_kaggle_csv_line_without_a_caption_names_the_line(tmp_path):
    root = folder(tmp_path, "image,caption\na.png,a red square\nb.png\n")
    with pytest.raises(ValueError, match=r"captions\.txt:3: expected 'image,caption'"):
        data.read_caption_file(root / "captions.txt")


# --- pixels: uint8 or a clear refusal -----------------------------------------------------------

def to_tensor_like(images):
    """What torchvision's ToTensor() makes of uint8 pixels: floats in [0, 1]."""
    return images.float() / 255


def test_to_float_refuses_float_images_and_says_how_to_convert(tiny_world):
    floats = to_tensor_like(tiny_world.images[:4])
    with pytest.raises(TypeError, match=r"images must be uint8 .* got torch\.float32 with values in \[0"
                                        r".*\(x \* 255\)\.round\(\)\.to\(torch\.uint8\)"):
        data.to_float(floats)


def test_the_suggested_conversion_gives_back_the_pixels(tiny_world):
    x = to_tensor_like(tiny_world.images)
    assert torch.equal((x * 255).round().to(torch.uint8), tiny_world.images)


def test_to_float_refuses_other_integer_types_and_non_tensors():
    with pytest.raises(TypeError, match="got torch.int64"):
        data.to_float(torch.zeros(1, 3, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="uint8 torch.Tensor, got list"):
        data.to_float([[0, 255]])


def test_train_refuses_float_images_before_training_starts(tiny_world):
    started = []

    class Spy(train.Callback):
        def on_train_start(self, state):
            started.append(state.step)

    model = torch.nn.Linear(1, 1)
    tokens = torch.zeros(len(tiny_world), 4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"\(x \* 255\)\.round\(\)\.to\(torch\.uint8\)"):
        train.train(model, to_tensor_like(tiny_world.images), tokens,
                    train.TrainConfig(steps=1, batch_size=2, device="cpu"), callbacks=[Spy()], progress=False)
    assert started == []


def test_embed_images_refuses_float_images(tiny_world):
    class Identity(torch.nn.Linear):                     # embed_images needs parameters and encode_image
        def encode_image(self, images):
            return images

    with pytest.raises(TypeError, match=r"images must be uint8"):
        evaluate.embed_images(Identity(1, 1), to_tensor_like(tiny_world.images[:4]))


@pytest.mark.parametrize("kwargs,match", [(dict(resolution=0), "resolution"), (dict(max_pixels=0), "max_pixels")])
def test_load_caption_dataset_checks_its_numbers(tmp_path, kwargs, match):
    root = folder(tmp_path, GOOD)
    with pytest.raises(ValueError, match=match):
        data.load_caption_dataset(root, **kwargs)
