"""Build the embedded Section 7 demo: a generated stand-in for a real-vs-fake image set (no download).

The course's data (whichfaceisreal: real faces vs StyleGAN faces) may not be shipped, so the
suite makes its own from photographs that ship inside installed packages: scikit-learn's
china.jpg and flower.jpg (sklearn/datasets/images/) and matplotlib's grace_hopper.jpg
(mpl-data/sample_data/).

- "real": a random square crop of one of the three photographs (side 35-100% of the photo's
  shorter edge, random position), a random horizontal flip, mild colour jitter (brightness,
  contrast and saturation each scaled by a factor in 0.9..1.1), resized to SIZE x SIZE. A crop
  with almost no texture (mean absolute difference of neighbouring grayscale pixels below
  MIN_TEXTURE at 48 px: hazy sky and water, about 7% of draws) is drawn again, for both classes
  alike, so that what a figure shows has content.
- "fake": the same kind of crop, resized to SIZE/2 x SIZE/2, then a simulated generator's
  upsampling stage: a stride-2 transposed convolution with a 4x4 kernel (zero insertion, then
  convolution). The kernel is the bilinear-interpolation kernel plus a small random
  perturbation drawn once from the seed (one "generator" makes every fake). The perturbation
  gives the two output phases along each axis unequal gains, so every fake carries a
  periodic, checkerboard pattern with a peak at the Nyquist frequency of its spectrum, the
  trace that transposed-convolution upsampling leaves in GAN images (Odena et al. 2016,
  "Deconvolution and Checkerboard Artifacts"; Zhang et al. 2019, "Detecting and Simulating
  Artifacts in GAN Fake Images"). The fakes also lack the top octave of the reals' detail.
- ARTIFACT, the perturbation's size (standard deviation relative to the bilinear kernel's taps),
  was calibrated so that the study's XGBoost baseline (cnn.py --question xgb: default
  XGBClassifier on 64x64 center crops of the resized images) scores between 0.6 and 0.9 test
  accuracy. At ARTIFACT = 0.01 the four phase gains are 1.005, 0.998, 0.982 and 1.014 (a
  checkerboard of about +-1.6 %), and XGBoost scores 0.765 test accuracy (AUROC 0.843) at
  cnn.py --image-size 96 (`python cnn.py --question xgb --image-size 96`). Measured before
  textureless crops were rejected, for scale: 0.812 at 96 and 0.743 at the protocol's 224; other
  ARTIFACT values at 96 px: 0 (the missing detail alone) 0.66, 0.007 0.76, 0.02 0.88, 0.05 0.97,
  0.15 1.00.
- SIZE = 96 so that cnn.py --image-size 96, the size run on a CPU, sees the pixels unresampled;
  an antialiased resize below 96 filters out most of the Nyquist-frequency trace.

Every split and class draws from the same three photographs, so the content of an image says
nothing about its class, and crops of the same photograph appear in train, val and test: it
is a stand-in to exercise the pipeline, not a benchmark. Point cnn.py --data-dir at real data
in the same layout for the study's numbers.

Layout (torchvision ImageFolder): OUT/{train,val,test}/{real,fake}/NNNN.png, 600 / 200 / 200
images per class (1,200 / 400 / 400 per split), SIZE x SIZE RGB PNG, and OUT/sources.csv, which names
each image's source photograph (columns image, source). Deterministic: the same seed and library
versions give the same pixels. Takes a few seconds.

    python data/build_realfake.py cache/realfake-demo      # cnn.py does this on first use
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SIZE = 96
COUNTS = {"train": 600, "val": 200, "test": 200}  # per class
ARTIFACT = 0.01
MIN_TEXTURE = 0.04  # at 48 px; plain sky measures about 0.01 to 0.03
SEED = 0
PHOTOS = ("china.jpg", "flower.jpg", "grace_hopper.jpg")


def source_photos():
    """The three photographs as RGB PIL images (all ship inside installed packages)."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_image
    photos = [Image.fromarray(load_sample_image(name)) for name in PHOTOS[:2]]
    with Image.open(matplotlib.cbook.get_sample_data(PHOTOS[2], asfileobj=False)) as photo:
        photos.append(photo.convert("RGB"))
    return photos


def texture(photo, box):
    """How much a crop varies: the mean absolute difference between neighbouring pixels of its grayscale, rendered at
    48 px whatever size the crop is made at, so that the same crops pass for the real and the fake class."""
    gray = np.asarray(photo.convert("L").resize((48, 48), Image.BILINEAR, box=box), dtype=np.float32) / 255
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def random_crop(photos, rng, out_size):
    """A random square crop of a random photo that has some texture (a crop of almost plain sky is drawn again),
    flipped at random, colour-jittered: (float [3, out, out] in 0..1, the photo's index)."""
    while True:
        index = rng.integers(len(photos))
        photo = photos[index]
        width, height = photo.size
        side = rng.uniform(0.35, 1.0) * min(width, height)
        left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
        box = (left, top, left + side, top + side)
        if texture(photo, box) >= MIN_TEXTURE:
            break
    crop = photo.resize((out_size, out_size), Image.BILINEAR, box=box)
    x = np.asarray(crop, dtype=np.float32) / 255
    if rng.random() < 0.5:
        x = x[:, ::-1]
    brightness, contrast, saturation = rng.uniform(0.9, 1.1, size=3)
    x = x * brightness
    x = (x - x.mean()) * contrast + x.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * saturation + gray[..., None]
    return torch.from_numpy(np.clip(x, 0, 1).transpose(2, 0, 1).astype(np.float32)), int(index)


def generator_kernel(rng, artifact):
    """4x4 transposed-convolution kernel: bilinear upsampling plus a random perturbation, total gain kept at 4
    (each output pixel sums 4 taps of its phase, so equal phase gains would each be 1)."""
    bilinear = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])
    kernel = bilinear + artifact * rng.standard_normal((4, 4))
    kernel *= 4 / kernel.sum()
    return torch.tensor(kernel, dtype=torch.float32).expand(3, 1, 4, 4)


def upsample(x, kernel):
    """The generator's upsampling stage: stride-2 transposed convolution, [N, 3, s, s] -> [N, 3, 2s, 2s]."""
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=3)


def build(out_dir, counts=COUNTS, size=SIZE, artifact=ARTIFACT, seed=SEED, class_names=("real", "fake")):
    """Write the ImageFolder tree under out_dir (counts: images per class per split) and sources.csv, which
    names each image's source photograph, and return out_dir."""
    if size % 2:
        raise ValueError(f"size must be even, got {size}")
    rng = np.random.default_rng(seed)
    photos = source_photos()
    kernel = generator_kernel(rng, artifact)
    sources = ["image,source"]
    for split, n in counts.items():
        real, real_sources = zip(*[random_crop(photos, rng, size) for _ in range(n)])
        fake, fake_sources = zip(*[random_crop(photos, rng, size // 2) for _ in range(n)])
        for name, images, indices in zip(class_names, (torch.stack(real), upsample(torch.stack(fake), kernel)),
                                         (real_sources, fake_sources)):
            folder = os.path.join(out_dir, split, name)
            os.makedirs(folder, exist_ok=True)
            pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for i, (image, index) in enumerate(zip(pixels, indices)):
                Image.fromarray(image).save(os.path.join(folder, f"{i:04d}.png"), compress_level=1)
                sources.append(f"{split}/{name}/{i:04d}.png,{PHOTOS[index]}")
    with open(os.path.join(out_dir, "sources.csv"), "w") as f:
        f.write("\n".join(sources) + "\n")
    return out_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="cache/realfake-demo",
                        help="output folder (default cache/realfake-demo)")
    parser.add_argument("--artifact", type=float, default=ARTIFACT,
                        help=f"kernel perturbation size (default {ARTIFACT})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image side in pixels (default {SIZE})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    args = parser.parse_args()
    print(build(args.out, size=args.size, artifact=args.artifact, seed=args.seed))
