"""7.4-1 XGBoost, default parameters, on the raw pixels of each image's center crop."""
import time

import torch

from questions.baselines import report_baseline
from runner import Question
from section7 import baseline_result, images, scored

XGB_CROP = 64


def train_xgb(settings, data, reads, env):
    import torchvision.transforms.functional as TF
    from xgboost import XGBClassifier
    x = images(data, "resize", settings["image_size"], env)
    pixels = {s: TF.center_crop(v, [settings["crop"]] * 2).flatten(1).cpu().numpy() for s, v in x.items()}
    y_train = data["labels"]["train"].cpu().numpy()
    start = time.perf_counter()
    # protocol defaults; --threads, so parallel runs share the cores (hist: same trees at any thread count)
    model = XGBClassifier(n_jobs=torch.get_num_threads()).fit(pixels["train"], y_train)
    seconds = time.perf_counter() - start
    val_prob, test_prob = (torch.from_numpy(model.predict_proba(pixels[s])[:, 1]) for s in ("val", "test"))
    return baseline_result(data, [scored("xgb", None, data, val_prob, test_prob, seconds)])


QUESTION = Question("xgb", "7.4-1", "XGBoost on raw pixels", dict(image_size=224, crop=XGB_CROP), train_xgb,
                    report_baseline)
