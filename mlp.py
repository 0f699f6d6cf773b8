"""Section 6: MLPs on 2-D coordinates (European cities -> country), one module per question in questions/.

    python mlp.py --question lr            # one question (all: every one); outputs in results/mlp/
    python mlp.py --list                   # the questions (--help: every flag, with its protocol value)
"""
import runner
from common import UserError
from questions import (batch_size, batchnorm, depth_width, epochs, gradients, implicit, lr, regions, residual,
                       sweep)
from runner import Setting, non_negative
from section6 import load_data

QUESTIONS = [module.QUESTION for module in (lr, epochs, batchnorm, batch_size, sweep, depth_width, gradients,
                                            residual, implicit, regions)]


def architecture(text):
    try:
        depth, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--architectures {text}: expected DEPTHxWIDTH, e.g. 6x16") from None
    return [depth, width]


def show_architectures(architectures):
    return " ".join(f"{depth}x{width}" for depth, width in architectures) or "none"


def on_off(text):
    if text not in ("on", "off"):
        raise UserError(f"--batch-norm {text}: expected on or off")
    return text == "on"


SETTINGS = [
    Setting("seeds", "runs per setting, seeds SEED, SEED+1, ... (1: the exercise's one run)", dict(type=int)),
    Setting("lr", "SGD learning rate", dict(type=float)),
    Setting("lrs", "learning rates of the lr sweep", dict(type=float, nargs="+")),
    Setting("epochs", "epochs", dict(type=int)),
    Setting("batch_size", "batch size", dict(type=int)),
    Setting("batch_sizes", "batch sizes compared", dict(type=int, nargs="+")),
    Setting("batch_size_epochs", "epochs for each of --batch-sizes", dict(type=int, nargs="+")),
    Setting("overfit_per_class", "rows per class of the over-fitting control (0: none)", dict(type=int),
            check=non_negative),
    Setting("noise_epochs", "epochs of the gradient-noise-scale run, at --batch-size (0: none)",
            dict(type=int), check=non_negative),
    Setting("larger_lr", "the larger lr of batch norm's controls without batch norm", dict(type=float)),
    Setting("depth", "hidden layers, the input layer included", dict(type=int)),
    Setting("width", "units per hidden layer", dict(type=int)),
    Setting("architectures", "models, each DEPTHxWIDTH", dict(type=architecture, nargs="+", metavar="DxW"),
            show=show_architectures),
    Setting("matched_architectures", "more models, to compare depth and width at about one parameter count",
            dict(type=architecture, nargs="*", metavar="DxW"), show=show_architectures),
    Setting("longer_epochs", "epochs the worst architecture trains on to (0: not)", dict(type=int),
            check=non_negative),
    Setting("batch_norm", "BatchNorm1d before every ReLU", dict(type=on_off, metavar="on|off"), check=None),
    Setting("resolution", "grid cells per side for counting regions", dict(type=int)),
]


def resolve(settings, quick):
    """The --quick budget (2 epochs, 3 for the longer run, 1 per batch size, a 200-cell grid), then checks."""
    if quick:
        caps = {"epochs": 2, "resolution": 200, "overfit_epochs": 2, "longer_epochs": 3, "noise_epochs": 2}
        settings = {key: min(value, caps[key]) if key in caps else value for key, value in settings.items()}
        if "batch_size_epochs" in settings:
            settings["batch_size_epochs"] = [1] * len(settings["batch_size_epochs"])
    if 0 < settings.get("longer_epochs", 0) <= settings["epochs"]:
        raise UserError(f"--longer-epochs {settings['longer_epochs']}: the worst model trains on from epoch "
                        f"{settings['epochs']}, so it must be more than --epochs (or 0: not)")
    if "batch_size_epochs" in settings and len(settings["batch_size_epochs"]) != len(settings["batch_sizes"]):
        raise UserError("--batch-sizes and --batch-size-epochs need the same number of values")
    if settings.get("batch_norm") and min(settings.get("batch_sizes", [settings.get("batch_size", 2)])) < 2:
        raise UserError("batch norm needs a batch size of at least 2 (BatchNorm1d cannot train on one row)")
    return settings


SCRIPT = runner.Script(
    name="mlp", doc=__doc__, questions=QUESTIONS, settings=SETTINGS, load_data=load_data, resolve=resolve,
    data_help="folder with train.csv, validation.csv, test.csv (columns long, lat, country; optional "
              "countries.csv with id,iso,name for legends). Default: the embedded data/europe",
    data_holds="train.csv, validation.csv, test.csv", shared_code=("common.py", "section6.py"))

if __name__ == "__main__":
    runner.main(SCRIPT)
