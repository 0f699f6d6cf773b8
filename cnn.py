"""Section 7: a real-vs-fake image classifier (output 1 = fake) built five ways, then every model ranked and
test images the best gets right and the worst wrong; one module per question in questions/.

    python cnn.py --question xgb           # one question; outputs in results/cnn/
    python cnn.py --list                   # the questions (--help: every flag, with its protocol value)
"""
import os

import runner
from questions import mistakes, pretrained, scratch, summary, xgb
from questions.xgb import XGB_CROP
from runner import Setting
from section7 import CLASS_FOLDERS, inputs, load_data

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_IMAGE_SIZE = 96  # the generated demo set is made at 96 px: resized larger, it would only be upsampled
QUESTIONS = [xgb.QUESTION, scratch.QUESTION, pretrained.LINEAR_PROBE, pretrained.SKLEARN_PROBE,
             pretrained.FINETUNE, summary.QUESTION, mistakes.QUESTION]
SETTINGS = [
    Setting("lrs", "Adam learning rates of the torch baselines", dict(type=float, nargs="+")),
    Setting("batch_size", "training batch size", dict(type=int)),
    Setting("epochs", "training epochs", dict(type=int)),
    Setting("image_size", "side S (at least 32) of the network input: scratch and XGBoost resize to S x S "
                          f"(XGBoost then center-crops {XGB_CROP} x {XGB_CROP}), the pretrained baselines to "
                          f"S*256/224, center-cropped to S; {DEMO_IMAGE_SIZE} without --data-dir",
            dict(type=int), check=lambda size: None if size >= 32 else
            f"must be at least 32 (ResNet18 downsamples 32x), got {size}"),
    Setting("weights", "pretrained backbone: imagenet (torchvision's ResNet18_Weights.IMAGENET1K_V1, cached "
                       "or downloaded; else the pretrained baselines are not run, with the fix), none, or "
                       "PATH to a ResNet18 state-dict file", dict(metavar="W"), check=None),
    Setting("amp", "CUDA only: bf16 autocast for forward passes", dict(action="store_true", default=None),
            check=None),
]


def resolve(settings, quick):
    """The --quick budget: image size 32, the first 2 lrs. XGBoost's crop fits inside the image."""
    if quick and "image_size" in settings:
        settings["image_size"] = min(settings["image_size"], 32)
    if quick and "lrs" in settings:
        settings["lrs"] = settings["lrs"][:2]
    if "crop" in settings:
        settings["crop"] = min(settings["crop"], settings["image_size"])
    return settings


def add_flags(parser):
    parser.add_argument("--cache-dir", default=os.path.join(HERE, "cache"),
                        help="generated demo data and decoded image / feature tensors, reused across runs "
                             "(default: cache/ next to cnn.py; safe to delete)")


SCRIPT = runner.Script(
    name="cnn", doc=__doc__, questions=QUESTIONS, settings=SETTINGS, load_data=load_data, resolve=resolve,
    inputs=inputs, add_flags=add_flags, shared_code=("common.py", "section7.py"),
    demo_settings={"image_size": DEMO_IMAGE_SIZE},
    data_help=f"ImageFolder root: train/, val/ (or validation/), test/, each with {CLASS_FOLDERS}. Default: "
              "the generated demo set in CACHE_DIR/realfake-demo-*",
    data_holds="train/, val/ (or validation/) and test/")

if __name__ == "__main__":
    runner.main(SCRIPT)
