"""Re-create data/shapesworld_sample/: 48 ShapesWorld images as PNG files and a Flickr30k-style
caption file (three captions per image), so a learner can open the files and see the format.

Run from anywhere: python data/make_sample.py
"""

from pathlib import Path

from clipcourse import data

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "shapesworld_sample"
    sample = data.ShapesWorld.generate(48, split="all", seed=2024)
    path = data.write_caption_dataset(sample, out, captions_per_image=3)
    print(f"wrote {len(sample)} images and {path}")
