"""7.4-3 to 5: a linear probe and LogisticRegression on a frozen ImageNet ResNet18, and it fine-tuned."""
import os
import time
import warnings

import torch
from torch import nn

from common import UserError, file_digest, seed_everything
from questions.baselines import report_baseline
from runner import Question
from section7 import (IMAGENET_URL, PRETRAINED, baseline_result, build_resnet, disk_cached, fit_and_score,
                      forward_all, images, model_record, normalizer, scored, train_resnets, weights_file)


def load_weights(weights, quiet=False):
    """{'state', 'id', 'reason', 'fix'}: the pretrained backbone (old fc dropped), or state None with why the
    pretrained baselines are not run and how to fix it. weights: imagenet, none or a state-dict file."""
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
            # the console names this machine's folder; the saved results do not
            print(f"note: {reason}. Fix: {fix}. Here TORCH_HOME/hub/checkpoints/ is {os.path.dirname(path)}/")
            return {"state": None, "id": "imagenet unavailable", "reason": reason, "fix": fix}
    elif not os.path.isfile(path):
        raise UserError(f"{path}: weights file not found (--weights takes imagenet, none or a ResNet18 "
                        "state-dict file)")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
            message = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            raise UserError(f"{path}: not a PyTorch state-dict file ({message})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (a dict of tensors, as torch.save(model.state_dict()) "
                        "writes)")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is replaced anyway
    try:
        build_resnet(state)
    except ValueError as e:
        raise UserError(f"{path}: not a torchvision ResNet18 state dict ({e})") from None
    return {"state": state, "id": file_digest([path]), "reason": None, "fix": None}


def features(settings, data, env, pretrained):
    """({split: frozen backbone's [N, 512] features on the device}, seconds), cached for both probes."""
    size = settings["image_size"]

    def compute():
        x, prepare = images(data, "imagenet", size, env), normalizer("imagenet", size, env.device)
        model = build_resnet(pretrained["state"]).to(env.device, memory_format=torch.channels_last)
        model.fc = nn.Identity()
        start = time.perf_counter()
        values = {split: forward_all(model, x[split], prepare, settings["amp"]).cpu() for split in x}
        return {"features": values, "seconds": time.perf_counter() - start}
    key = {"what": "features", "data": data["meta"]["digest"], "image_size": size,
           "weights": pretrained["id"], "device": env.device.type, "amp": settings["amp"]}
    cached = disk_cached(env.cache_dir, key, compute)
    return {split: f.to(env.device) for split, f in cached["features"].items()}, cached["seconds"]


def not_run(settings, data, baseline, pretrained):
    """The result of a pretrained baseline without weights: each model (one per lr, if any) not run."""
    return baseline_result(data, [model_record(baseline, lr, "not run", pretrained["reason"],
                                               fix=pretrained["fix"]) for lr in settings.get("lrs", [None])])


def train_finetune(settings, data, reads, env):
    pretrained = load_weights(settings["weights"], env.quiet)
    if pretrained["state"] is None:
        return not_run(settings, data, "finetune", pretrained)
    records = train_resnets(settings, data, env, "finetune", pretrained["state"], "imagenet")
    return baseline_result(data, records)


def train_linear_probe(settings, data, reads, env):
    """Linear(512, 1) on cached features: as with the frozen (eval-mode) backbone in the loop."""
    pretrained = load_weights(settings["weights"], env.quiet)
    if pretrained["state"] is None:
        return not_run(settings, data, "linear_probe", pretrained)
    feats, feature_seconds = features(settings, data, env, pretrained)
    records = []
    for lr in settings["lrs"]:
        seed_everything(settings["seed"])
        head = build_resnet(pretrained["state"]).fc.to(env.device)  # the same init the full model's fc gets
        records.append(fit_and_score(settings, data, env, "linear_probe", lr, head, feats, lambda v: v,
                                     feature_seconds=round(feature_seconds, 2)))
    return baseline_result(data, records)


def train_sklearn_probe(settings, data, reads, env):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    pretrained = load_weights(settings["weights"], env.quiet)
    if pretrained["state"] is None:
        return not_run(settings, data, "sklearn_probe", pretrained)
    feats, feature_seconds = features(settings, data, env, pretrained)
    feats = {split: f.cpu().numpy() for split, f in feats.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        model = LogisticRegression().fit(feats["train"], data["labels"]["train"].cpu().numpy())
        seconds = time.perf_counter() - start
    for w in caught:  # recorded for the table, and still shown
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    convergence = [str(w.message).splitlines()[0].rstrip(":") for w in caught
                   if issubclass(w.category, ConvergenceWarning)]
    val_prob, test_prob = (torch.from_numpy(model.predict_proba(feats[s])[:, 1]) for s in ("val", "test"))
    return baseline_result(data, [scored("sklearn_probe", None, data, val_prob, test_prob, seconds,
                                         feature_seconds=round(feature_seconds, 2),
                                         convergence_warning=convergence[0] if convergence else None)])


LINEAR_PROBE = Question("linear_probe", "7.4-3", "Linear probe on a frozen pretrained ResNet18", PRETRAINED,
                        train_linear_probe, report_baseline)
SKLEARN_PROBE = Question("sklearn_probe", "7.4-4", "sklearn LogisticRegression on frozen pretrained features",
                         dict(image_size=224, amp=False, weights="imagenet"), train_sklearn_probe,
                         report_baseline)
FINETUNE = Question("finetune", "7.4-5", "Fine-tuning a pretrained ResNet18", PRETRAINED, train_finetune,
                    report_baseline)
