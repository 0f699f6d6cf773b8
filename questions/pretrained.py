"""7.4-3 to 5: a linear probe and LogisticRegression on a frozen ImageNet ResNet18, and it fine-tuned."""
import os
import time

import torch
from torch import nn

from common import UserError, file_digest, seed_everything
from questions.baselines import report_baseline
from runner import Question
from section7 import (IMAGENET_URL, PRETRAINED, baseline_result, build_resnet, disk_cached, fit_and_score,
                      forward_all, images, model_record, normalizer, scored, train_resnets, weights_file)


def load_weights(weights, quiet=False):
    """{'state', 'id', 'reason', 'fix'}: the backbone (fc dropped), or state None, why and how to fix it."""
    if weights == "none":
        return {"state": None, "id": "none", "reason": "--weights none", "fix": None}
    path = weights_file(weights)
    if weights == "imagenet":
        try:
            state = torch.hub.load_state_dict_from_url(IMAGENET_URL, progress=not quiet, check_hash=True)
        except (OSError, RuntimeError) as e:  # no network, a proxy, a failed hash check
            file = os.path.basename(path)
            reason = f"ImageNet weights unavailable ({type(e).__name__}: {e})"
            fix = (f"put {file} (from {IMAGENET_URL}) in torch's hub cache, TORCH_HOME/hub/checkpoints/ (by "
                   f"default ~/.cache/torch/hub/checkpoints/), or pass --weights /path/to/{file}")
            print(f"note: {reason}. Fix: {fix}. Here TORCH_HOME/hub/checkpoints/ is {os.path.dirname(path)}/")
            return {"state": None, "id": "imagenet unavailable", "reason": reason, "fix": fix}
    else:
        try:  # torch.load raises many types for a file that is not a checkpoint
            state = torch.load(path, map_location="cpu", weights_only=True)
            build_resnet({k: v for k, v in state.items() if not k.startswith("fc.")})
        except Exception as e:
            raise UserError(f"{path}: cannot load a torchvision ResNet18 state dict from it "
                            f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is replaced anyway
    return {"state": state, "id": file_digest([path]), "reason": None, "fix": None}


def features(settings, data, env, pretrained):
    """{split: the frozen backbone's [N, 512] features on the device}, cached for both probes."""
    def compute():
        x = images(data, "imagenet", settings["image_size"], env)
        prepare = normalizer("imagenet", settings["image_size"], env.device)
        model = build_resnet(pretrained["state"]).to(env.device, memory_format=torch.channels_last)
        model.fc = nn.Identity()
        return {split: forward_all(model, x[split], prepare, settings["amp"]).cpu() for split in x}
    key = {"what": "probe features", "data": data["meta"]["digest"], "image_size": settings["image_size"],
           "weights": pretrained["id"], "device": env.device.type, "amp": settings["amp"]}
    return {split: f.to(env.device) for split, f in disk_cached(env.cache_dir, key, compute).items()}


def with_weights(baseline, fit):
    """A train function: the models fit(settings, data, env, pretrained) trains; without weights, not run."""
    def train(settings, data, reads, env):
        pretrained = load_weights(settings["weights"], env.quiet)
        not_run = [model_record(baseline, lr, "not run", pretrained["reason"], fix=pretrained["fix"])
                   for lr in settings.get("lrs", [None])]
        return baseline_result(data, fit(settings, data, env, pretrained) if pretrained["state"] else not_run)
    return train


def fit_finetune(settings, data, env, pretrained):
    return train_resnets(settings, data, env, "finetune", pretrained["state"], "imagenet")


def fit_linear_probe(settings, data, env, pretrained):
    """Linear(512, 1) on cached features: as with the frozen (eval-mode) backbone in the loop."""
    feats = features(settings, data, env, pretrained)
    records = []
    for lr in settings["lrs"]:
        seed_everything(settings["seed"])
        head = build_resnet(pretrained["state"]).fc.to(env.device)  # the same init the full model's fc gets
        records.append(fit_and_score(settings, data, env, "linear_probe", lr, head, feats, lambda v: v))
    return records


def fit_sklearn_probe(settings, data, env, pretrained):
    from sklearn.linear_model import LogisticRegression
    feats = {split: f.cpu().numpy() for split, f in features(settings, data, env, pretrained).items()}
    start = time.perf_counter()
    model = LogisticRegression().fit(feats["train"], data["labels"]["train"].cpu().numpy())
    seconds = time.perf_counter() - start
    val_prob, test_prob = (torch.from_numpy(model.predict_proba(feats[s])[:, 1]) for s in ("val", "test"))
    return [scored("sklearn_probe", None, data, val_prob, test_prob, seconds,
                   converged=bool(model.n_iter_[0] < model.max_iter), max_iter=model.max_iter)]


LINEAR_PROBE = Question("linear_probe", "7.4-3", "Linear probe on a frozen pretrained ResNet18", PRETRAINED,
                        with_weights("linear_probe", fit_linear_probe), report_baseline)
SKLEARN_PROBE = Question("sklearn_probe", "7.4-4", "sklearn LogisticRegression on frozen pretrained features",
                         dict(image_size=224, amp=False, weights="imagenet"),
                         with_weights("sklearn_probe", fit_sklearn_probe), report_baseline)
FINETUNE = Question("finetune", "7.4-5", "Fine-tuning a pretrained ResNet18", PRETRAINED,
                    with_weights("finetune", fit_finetune), report_baseline)
