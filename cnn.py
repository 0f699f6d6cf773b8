"""Section 7: a real-vs-fake image classifier built five ways on top of ResNet18.

    python cnn.py --question xgb           # one baseline; outputs in results/cnn/
    python cnn.py --question all           # every baseline, then summary and mistakes
    python cnn.py --list                   # the questions
    python cnn.py --help                   # every flag, with each question's protocol value

Baselines (binary, output 1 = "fake"): xgb (XGBoost on raw pixels), scratch (ResNet18 from random
init), linear_probe (frozen ImageNet ResNet18 + a trained Linear(512, 1)), sklearn_probe (sklearn's
LogisticRegression on the frozen features), finetune (ImageNet ResNet18, all weights trained).
summary ranks every model; mistakes shows test images the best model gets right and the worst wrong.

Data: --data-dir in ImageFolder layout (train/, val/ or validation/, test/, each with a class folder
whose name says real (real, 0_real, ...) and one that says fake (fake, 1_fake, ...)). Without it,
a generated stand-in (data/build_realfake.py) is built into --cache-dir on first use.

Each question writes results/cnn/<question>.png, .md (settings, tables, findings) and .json
(settings, library versions, per-model metrics and test predictions); a rerun with the same
settings, data and code reuses the .json.
"""
import hashlib
import json
import math
import os
import re
import shutil
import sys
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torchvision.models import ResNet18_Weights
from tqdm import tqdm

import common
from common import (Answer, Question, Report, Setting, UserError, file_digest, finite_or_none, markdown_table, plt,
                    save_torch, seed_everything, shown_path)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "data"))
import build_realfake  # noqa: E402

BASELINES = ["xgb", "scratch", "linear_probe", "sklearn_probe", "finetune"]
TORCH_BASELINES = ["scratch", "linear_probe", "finetune"]
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT = ("expected ImageFolder layout: train/, val/ (or validation/) and test/, each with one class folder named "
          "like real (real, 0_real, ...) and one named like fake (fake, 1_fake, ...)")
QUICK_IMAGES = {"train": 16, "val": 8, "test": 8}  # per class
QUICK_IMAGE_SIZE = 32
XGB_CROP = 64
EVAL_BATCH = 256


# ----------------------------------------------------------------------------- data

def class_word(folder_name):
    """'real' or 'fake' from a class folder's name (real, 0_real, Real-faces, fake, 1_fake, ...), else None."""
    found = set(re.split(r"[^a-z]+", folder_name.lower())) & {"real", "fake"}
    return found.pop() if len(found) == 1 else None


def list_images(data_dir, quick=False):
    """Per split: image paths and class words, checked against the layout."""
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: data folder not found ({LAYOUT})")
    splits = {}
    for split, names in SPLIT_FOLDERS.items():
        folder = next((os.path.join(data_dir, n) for n in names if os.path.isdir(os.path.join(data_dir, n))), None)
        if folder is None:
            raise UserError(f"{data_dir}: no {' or '.join(n + '/' for n in names)} folder ({LAYOUT})")
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        if sorted(map(class_word, classes)) != ["fake", "real"]:
            raise UserError(f"{folder}: class folders {', '.join(classes) or '(none)'}; need exactly two, one named "
                            "like real (real, 0_real, ...) and one like fake (fake, 1_fake, ...)")
        paths, words = [], []
        for name in classes:
            class_dir = os.path.join(folder, name)
            files = sorted(f for f in os.listdir(class_dir)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
            if not files:
                raise UserError(f"{class_dir}: no image files ({' '.join(IMAGE_EXTENSIONS)})")
            files = files[:QUICK_IMAGES[split]] if quick else files
            paths += [os.path.join(class_dir, f) for f in files]
            words += [class_word(name)] * len(files)
        splits[split] = (paths, words)
    return splits


def ensure_demo(cache_dir):
    """The generated demo set's folder, built on first use (into a temporary folder, then renamed)."""
    folder = os.path.join(cache_dir, f"realfake-demo-{file_digest([build_realfake.__file__])[:8]}")  # per builder
    if not os.path.isdir(folder):
        print(f"building the demo image set in {folder} (data/build_realfake.py, a few seconds)")
        tmp = f"{folder}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_realfake.build(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished building it first
            shutil.rmtree(tmp)
    return folder


def load_data(args, device):
    """The images of each split (paths, 1 = fake labels), a description, and how to run (device, cache folder,
    progress bars); pixels are decoded on demand, weights loaded on demand, both kept in data['memo']."""
    if args.amp and device.type != "cuda":
        raise UserError("--amp needs a CUDA device (bf16 autocast); drop it or use --device cuda")
    data_dir = os.path.abspath(args.data_dir or ensure_demo(args.cache_dir))
    splits = list_images(data_dir, args.quick)
    all_paths = [p for paths, _ in splits.values() for p in paths]
    names = "\n".join(os.path.relpath(p, data_dir) for p in all_paths)
    digest = hashlib.sha256((file_digest(all_paths) + names).encode()).hexdigest()[:16]
    images = {split: {w: words.count(w) for w in ("real", "fake")} for split, (_, words) in splits.items()}
    kind = "generated demo stand-in, data/build_realfake.py" if args.data_dir is None else "--data-dir"
    summary = (f"{shown_path(data_dir)} ({kind}): " + " / ".join(f"{c['real'] + c['fake']}" for c in images.values())
               + f" train / val / test images, test {images['test']['real']} real + {images['test']['fake']} fake")
    meta = {"dir": shown_path(data_dir), "demo": args.data_dir is None, "digest": digest, "positive_class": "fake",
            "summary": summary, "images": images,
            "rows": {split: sum(counts.values()) for split, counts in images.items()}}
    return {"meta": meta, "dir": data_dir, "memo": {}, "device": device, "quiet": args.quiet, "cache_dir": args.cache_dir,
            "paths": {split: paths for split, (paths, _) in splits.items()},
            "classes": {split: words for split, (_, words) in splits.items()},
            "labels": {split: torch.tensor([w == "fake" for w in words], dtype=torch.float32, device=device)
                       for split, (_, words) in splits.items()}}


def preprocessing(name, image_size):
    """(PIL image -> uint8 tensor, mean, std). 'resize' is the protocol's Resize((S, S)) + ToTensor (scratch and
    XGBoost); 'imagenet' is ResNet18_Weights.IMAGENET1K_V1.transforms() (resize 256, center crop 224, ImageNet
    mean/std), exactly so at S = 224 and scaled by S / 224 otherwise. Scaling to 0..1 and normalizing happen per
    batch."""
    if name == "resize":
        return T.Compose([T.Resize((image_size, image_size)), T.PILToTensor()]), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    resize_size = round(image_size * 256 / 224)
    imagenet = ResNet18_Weights.IMAGENET1K_V1.transforms(crop_size=image_size, resize_size=resize_size)
    return (T.Compose([T.Resize(imagenet.resize_size, imagenet.interpolation), T.CenterCrop(imagenet.crop_size),
                       T.PILToTensor()]), imagenet.mean, imagenet.std)


def decode_one(path, transforms):
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # grayscale, RGBA and palette images become RGB
            return [transform(rgb) for transform in transforms]
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unknown, truncated or corrupt files
        raise UserError(f"{path}: cannot read this image ({e})") from None


def decode(paths, transforms, desc, quiet):
    """Every image read once, in parallel threads (PIL decodes and resizes without holding the GIL), then passed
    through each transform: one uint8 [N, 3, S, S] tensor per transform."""
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        outputs = list(tqdm(pool.map(lambda path: decode_one(path, transforms), paths), total=len(paths), desc=desc,
                            unit="img", disable=quiet, mininterval=1.0, dynamic_ncols=True))
    return [torch.stack(per_transform) for per_transform in zip(*outputs)]


def disk_cached(cache_dir, key, compute):
    """compute(), kept under --cache-dir/tensors/ by a hash of key (which names the data by content) for later runs."""
    path = os.path.join(cache_dir, "tensors", hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20] + ".pt")
    if os.path.exists(path):
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # any unreadable cache file is simply recomputed
            warnings.warn(f"{path}: unreadable cache ({e}); recomputing", stacklevel=2)
    value = compute()
    save_torch(path, value)
    return value


PREPROCESSINGS = ("resize", "imagenet")


def images(data, name, image_size):
    """{split: uint8 [N, 3, S, S] on the device}: each split decoded once into every preprocessing (cached on disk
    together), the one asked for moved to the device and reused."""
    if ("images", name, image_size) not in data["memo"]:
        def decode_splits():
            transforms = [preprocessing(each, image_size)[0] for each in PREPROCESSINGS]
            return {split: dict(zip(PREPROCESSINGS, decode(paths, transforms, f"decode {split}", data["quiet"])))
                    for split, paths in data["paths"].items()}
        key = {"what": "images", "data": data["meta"]["digest"], "preprocessings": PREPROCESSINGS,
               "image_size": image_size}
        decoded = disk_cached(data["cache_dir"], key, decode_splits)
        data["memo"]["images", name, image_size] = {split: x[name].to(data["device"]) for split, x in decoded.items()}
    return data["memo"]["images", name, image_size]


def normalizer(name, image_size, device):
    """uint8 batch -> float model input: scaled to 0..1, normalized with the preprocessing's mean/std, channels_last."""
    _, mean, std = preprocessing(name, image_size)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))
    return lambda batch: ((batch.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- weights and model

def build_resnet(backbone_state=None):
    """torchvision ResNet18 with fc replaced by Linear(512, 1), the backbone loaded from backbone_state if given.
    Raises ValueError if the state is not a ResNet18 backbone."""
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(512, 1)
    if backbone_state is not None:
        try:
            missing, unexpected = model.load_state_dict(backbone_state, strict=False)
        except RuntimeError as e:
            raise ValueError(str(e).splitlines()[-1].strip()) from None
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{len(missing)} ResNet18 keys missing (e.g. {missing[:2]}), "
                             f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    return model


def load_weights(weights, quiet=False):
    """{'state', 'id', 'reason', 'fix'}: the pretrained backbone (the old fc dropped), or state None, why the
    pretrained baselines are not run and how to fix it. weights: imagenet, none or a state-dict file."""
    if weights == "none":
        return {"state": None, "id": "none", "reason": "--weights none", "fix": None}
    if weights == "imagenet":
        url = ResNet18_Weights.IMAGENET1K_V1.url
        file = os.path.basename(url)
        folder = os.path.join(torch.hub.get_dir(), "checkpoints")
        try:
            state = torch.hub.load_state_dict_from_url(url, progress=not quiet, check_hash=True)
        except (OSError, RuntimeError) as e:  # no network, a proxy, a failed hash check
            return {"state": None, "id": "imagenet unavailable", "folder": folder,
                    "reason": f"ImageNet weights unavailable ({type(e).__name__}: {e})",
                    "fix": f"put {file} (from {url}) in torch's hub cache, TORCH_HOME/hub/checkpoints/ (by default "
                           f"~/.cache/torch/hub/checkpoints/), or pass --weights /path/to/{file}"}
        path = os.path.join(folder, file)
    else:
        path = weights
        if not os.path.isfile(path):
            raise UserError(f"{path}: weights file not found "
                            "(--weights takes imagenet, none or a ResNet18 state-dict file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
            message = str(e).splitlines()[0]
            raise UserError(f"{path}: not a PyTorch state-dict file ({type(e).__name__}: {message})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict (a dict of tensors, as torch.save(model.state_dict()) writes)")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is replaced anyway
    try:
        build_resnet(state)
    except ValueError as e:
        raise UserError(f"{path}: not a torchvision ResNet18 state dict ({e})") from None
    return {"state": state, "id": file_digest([path]), "reason": None, "fix": None}


def backbone(data, weights):
    """load_weights, once per process; says once when the pretrained baselines cannot run."""
    if ("backbone", weights) not in data["memo"]:
        loaded = load_weights(weights, data["quiet"])
        if loaded["state"] is None:  # the console names this machine's folder; the saved results do not
            print(f"note: linear_probe, sklearn_probe and finetune not run: {loaded['reason']}"
                  + (f". Fix: {loaded['fix']}" if loaded["fix"] else "")
                  + (f". Here TORCH_HOME/hub/checkpoints/ is {loaded['folder']}/" if loaded.get("folder") else ""))
        data["memo"]["backbone", weights] = loaded
    return data["memo"]["backbone", weights]


# ----------------------------------------------------------------------------- training and evaluation

def autocast(device, amp):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def fit(model, inputs, labels, lr, settings, data, prepare, desc):
    """The protocol's optimization: Adam on the trainable parameters, BCEWithLogitsLoss, settings['epochs'] epochs
    of settings['batch_size'] in an order drawn from a generator seeded with settings['seed']. Returns the loss of
    every step and the step (1-based) at which it stopped being finite, or None. Nothing waits for the device within
    an epoch: the order moves to it once per epoch, losses stay on it, and finiteness is checked at the epoch's end
    (the curve is cut at its first non-finite loss)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(settings["seed"])
    batch_size = settings["batch_size"]
    model.train()
    losses = []
    bar = tqdm(total=settings["epochs"] * math.ceil(len(labels) / batch_size), desc=desc, unit="step",
               disable=data["quiet"], mininterval=1.0, dynamic_ncols=True)
    for _ in range(settings["epochs"]):
        batches = torch.randperm(len(labels), generator=generator).to(inputs.device).split(batch_size)
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches = batches[:-1]  # BatchNorm cannot train on a batch of one image
        epoch_losses = torch.empty(len(batches), device=inputs.device)
        for i, idx in enumerate(batches):
            with autocast(data["device"], settings["amp"]):
                logits = model(prepare(inputs[idx])).float().squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
            epoch_losses[i] = loss.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
        finite = torch.isfinite(epoch_losses)
        if not finite.all():
            first = int((~finite).nonzero()[0])
            losses += epoch_losses[:first + 1].tolist()
            bar.close()
            return losses, len(losses)
        losses += epoch_losses.tolist()
    bar.close()
    return losses, None


def forward_all(model, inputs, prepare, amp):
    """The model's outputs for every input, in eval mode under inference_mode, in large batches."""
    model.eval()
    with torch.inference_mode(), autocast(inputs.device, amp):
        outputs = torch.cat([model(prepare(inputs[i:i + EVAL_BATCH])).float()
                             for i in range(0, len(inputs), EVAL_BATCH)])
    return outputs.clone()  # a normal tensor (inference tensors cannot enter autograd, e.g. as probe features)


def predict(model, inputs, prepare, amp):
    """P(fake) for every input."""
    return forward_all(model, inputs, prepare, amp).squeeze(1).sigmoid().cpu()


def model_record(baseline, lr, status, reason=None, **values):
    return {"baseline": baseline, "lr": lr, "status": status, "reason": reason, "test_acc": None, "test_auroc": None,
            "val_acc": None, "test_acc_real": None, "test_acc_fake": None, "test_acc_batch_stats": None,
            "test_acc_recomputed_bn": None, "train_seconds": None, "test_prob": None,
            **values}


def scored(baseline, lr, data, val_prob, test_prob, train_seconds, **values):
    """The model's record from its P(fake) on val and test (kept for mistakes); non-finite outputs mean it diverged."""
    train_seconds = round(train_seconds, 2)
    if not (torch.isfinite(val_prob).all() and torch.isfinite(test_prob).all()):
        return model_record(baseline, lr, "diverged", "non-finite predictions", train_seconds=train_seconds, **values)
    y_val, y_test = data["labels"]["val"].cpu(), data["labels"]["test"].cpu()
    correct = (test_prob > 0.5).float() == y_test
    return model_record(baseline, lr, "ok", val_acc=float(((val_prob > 0.5).float() == y_val).float().mean()),
                        test_acc=float(correct.float().mean()), test_auroc=float(roc_auc_score(y_test, test_prob)),
                        test_acc_real=float(correct[y_test == 0].float().mean()),
                        test_acc_fake=float(correct[y_test == 1].float().mean()),
                        train_seconds=train_seconds, test_prob=[round(float(p), 6) for p in test_prob], **values)


def fit_and_score(settings, data, baseline, lr, model, inputs, prepare, **values):
    """Train model on inputs['train'] at lr, then score it on val and test, or record where it diverged."""
    start = time.perf_counter()
    losses, diverged_step = fit(model, inputs["train"], data["labels"]["train"], lr, settings, data, prepare,
                                f"{baseline} lr {lr:g}")
    seconds = time.perf_counter() - start
    values["train_loss"] = [finite_or_none(v) for v in losses]
    if diverged_step:
        return model_record(baseline, lr, "diverged", f"training loss not finite at step {diverged_step}",
                            train_seconds=round(seconds, 2), **values)
    return scored(baseline, lr, data, predict(model, inputs["val"], prepare, settings["amp"]),
                  predict(model, inputs["test"], prepare, settings["amp"]), seconds, **values)


def batch_stats_accuracy(model, inputs, labels, prepare, seed, batch_size, amp=False):
    """Test accuracy with BatchNorm normalizing by each batch's own statistics (train mode, shuffled batches of the
    training batch size) instead of the running statistics eval mode uses. Beyond the protocol: it tells a network
    that learned but whose running statistics do not match its weights from one that did not learn."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(inputs.device)
    model.train()  # the model is discarded afterwards, so updating its running statistics does no harm
    correct = torch.zeros((), device=inputs.device)
    with torch.no_grad(), autocast(inputs.device, amp):
        for idx in order.tensor_split(math.ceil(len(labels) / batch_size)):  # no batch of one image
            logits = model(prepare(inputs[idx])).float().squeeze(1)
            correct += ((logits > 0).float() == labels[idx]).sum()
    return float(correct) / len(labels)


def recomputed_bn_accuracy(model, train_inputs, test_inputs, test_labels, prepare, amp=False):
    """Test accuracy in eval mode after recomputing every BatchNorm's running statistics with the final weights: one
    pass over the training inputs in train mode, a cumulative average over its batches, no gradient ("precise BN").
    Beyond the protocol: the standard, non-transductive check of whether stale running statistics are what fails."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # None: a cumulative average, every batch counted alike
    model.train()
    with torch.no_grad(), autocast(train_inputs.device, amp):
        for start in range(0, len(train_inputs), EVAL_BATCH):
            model(prepare(train_inputs[start:start + EVAL_BATCH]))
    prob = predict(model, test_inputs, prepare, amp)
    return float(((prob > 0.5).float() == test_labels.cpu()).float().mean())


def train_resnet(settings, data, baseline, lr, backbone_state, preprocessing_name):
    """scratch or finetune at one lr: every weight trained on the images."""
    seed_everything(settings["seed"])
    model = build_resnet(backbone_state).to(data["device"], memory_format=torch.channels_last)
    inputs = images(data, preprocessing_name, settings["image_size"])
    prepare = normalizer(preprocessing_name, settings["image_size"], data["device"])
    record = fit_and_score(settings, data, baseline, lr, model, inputs, prepare)
    if record["status"] == "ok":
        record["test_acc_batch_stats"] = batch_stats_accuracy(model, inputs["test"], data["labels"]["test"], prepare,
                                                              settings["seed"], settings["batch_size"],
                                                              settings["amp"])
        record["test_acc_recomputed_bn"] = recomputed_bn_accuracy(model, inputs["train"], inputs["test"],
                                                                  data["labels"]["test"], prepare, settings["amp"])
    return record


def features(settings, data):
    """{split: [N, 512] features of the frozen pretrained backbone (eval mode)}, computed once, and the seconds
    that took."""
    size, pretrained = settings["image_size"], backbone(data, settings["weights"])
    key = {"what": "features", "data": data["meta"]["digest"], "image_size": size, "weights": pretrained["id"],
           "device": data["device"].type, "amp": settings["amp"]}
    memo_key = ("features", json.dumps(key))
    if memo_key not in data["memo"]:
        x, prepare = images(data, "imagenet", size), normalizer("imagenet", size, data["device"])

        def compute():
            model = build_resnet(pretrained["state"]).to(data["device"], memory_format=torch.channels_last)
            model.fc = nn.Identity()
            start = time.perf_counter()
            values = {split: forward_all(model, x[split], prepare, settings["amp"]).cpu() for split in x}
            return {"features": values, "seconds": time.perf_counter() - start}
        cached = disk_cached(data["cache_dir"], key, compute)
        on_device = {split: f.to(data["device"]) for split, f in cached["features"].items()}
        data["memo"][memo_key] = on_device, cached["seconds"]
    return data["memo"][memo_key]


def baseline_result(data, models):
    """A question's result: its models, and the test images they were scored on (for mistakes)."""
    return {"models": models, "test_paths": [os.path.relpath(p, data["dir"]) for p in data["paths"]["test"]],
            "test_classes": data["classes"]["test"]}


def not_run(baseline, lrs, pretrained):
    return [model_record(baseline, lr, "not run", pretrained["reason"], fix=pretrained["fix"]) for lr in lrs]


# ----------------------------------------------------------------------------- baselines: train(settings, data, reads)

def train_xgb(settings, data, reads):
    from xgboost import XGBClassifier
    x = images(data, "resize", settings["image_size"])
    crop = settings["crop"]
    pixels = {split: T.functional.center_crop(v, [crop, crop]).flatten(1).cpu().numpy() for split, v in x.items()}
    start = time.perf_counter()
    # the protocol's defaults; threads as torch's (--threads), so parallel runs share the cores as told (XGBoost's
    # histogram method gives the same trees at any thread count)
    model = XGBClassifier(n_jobs=torch.get_num_threads()).fit(pixels["train"], data["labels"]["train"].cpu().numpy())
    seconds = time.perf_counter() - start
    val_prob, test_prob = (torch.from_numpy(model.predict_proba(pixels[s])[:, 1]) for s in ("val", "test"))
    return baseline_result(data, [scored("xgb", None, data, val_prob, test_prob, seconds)])


def train_scratch(settings, data, reads):
    return baseline_result(data, [train_resnet(settings, data, "scratch", lr, None, "resize")
                                  for lr in settings["lrs"]])


def train_finetune(settings, data, reads):
    pretrained = backbone(data, settings["weights"])
    if pretrained["state"] is None:
        return baseline_result(data, not_run("finetune", settings["lrs"], pretrained))
    return baseline_result(data, [train_resnet(settings, data, "finetune", lr, pretrained["state"], "imagenet")
                                  for lr in settings["lrs"]])


def train_linear_probe(settings, data, reads):
    """A Linear(512, 1) head on cached features: the frozen backbone is in eval mode, so training the head on its
    precomputed features is the same optimization as running it in the loop, in the same batch order."""
    pretrained = backbone(data, settings["weights"])
    if pretrained["state"] is None:
        return baseline_result(data, not_run("linear_probe", settings["lrs"], pretrained))
    feats, feature_seconds = features(settings, data)
    records = []
    for lr in settings["lrs"]:
        seed_everything(settings["seed"])
        head = build_resnet(pretrained["state"]).fc.to(data["device"])  # the same init the full model's fc gets
        records.append(fit_and_score(settings, data, "linear_probe", lr, head, feats, lambda v: v,
                                     feature_seconds=round(feature_seconds, 2)))
    return baseline_result(data, records)


def train_sklearn_probe(settings, data, reads):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    pretrained = backbone(data, settings["weights"])
    if pretrained["state"] is None:
        return baseline_result(data, not_run("sklearn_probe", [None], pretrained))
    feats, feature_seconds = features(settings, data)
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


def train_summary(settings, data, reads):
    """summary (and mistakes): every baseline's models, read from their results."""
    return {**baseline_result(data, [m for name in BASELINES for m in reads[name]["models"]]),
            "baselines": {name: {"settings": reads[name]["settings"], "wall_s": reads[name]["wall_s"]}
                          for name in BASELINES}}


def train_mistakes(settings, data, reads):
    result = train_summary(settings, data, reads)
    result["best"], result["worst"], result["chosen"] = pick_mistakes(result["models"], result["test_classes"])
    return result


# ----------------------------------------------------------------------------- reports

def lr_text(m):
    return "-" if m["lr"] is None else m["lr"] if isinstance(m["lr"], str) else f"{m['lr']:g}"


def model_name(m):
    return m["baseline"] if m["lr"] is None else f"{m['baseline']} lr {lr_text(m)}"


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def status_text(m):
    return m["status"] if m["reason"] is None else f"{m['status']}: {m['reason']}"


def notes(m):
    parts = [f"ConvergenceWarning: {m['convergence_warning']}"] if m.get("convergence_warning") else []
    if m.get("feature_seconds") is not None:
        parts.append(f"+ {m['feature_seconds']:.1f} s feature extraction, shared with the other probe")
    return "; ".join(parts)


def collapse_not_run(models):
    """The models, with one row per baseline for its not-run models (they share the reason)."""
    rows, seen = [], set()
    for m in models:
        if m["status"] != "not run":
            rows.append(m)
        elif m["baseline"] not in seen:
            seen.add(m["baseline"])
            rows.append({**m, "lr": None if m["lr"] is None else "every lr"})
    return rows


def ranking(models):
    """Models with status ok by test accuracy (best first), then the diverged, then the not run."""
    order = {"ok": 0, "diverged": 1, "not run": 2}
    return sorted(models, key=lambda m: (order[m["status"]], -(m["test_acc"] or 0), BASELINES.index(m["baseline"]),
                                         m["lr"] or 0))


def results_table(models, numbered=False):
    header = ["model", "lr", "test acc", "test AUROC", "val acc", "test acc on real", "test acc on fake",
              "test acc, BN recomputed statistics", "test acc, BN test-batch statistics", "train time (s)", "status",
              "notes"]
    rows = [[m["baseline"], lr_text(m), fmt(m["test_acc"]), fmt(m["test_auroc"]),
             fmt(m["val_acc"]), fmt(m["test_acc_real"]), fmt(m["test_acc_fake"]), fmt(m.get("test_acc_recomputed_bn")),
             fmt(m.get("test_acc_batch_stats")), fmt(m["train_seconds"], 1), status_text(m), notes(m)]
            for m in collapse_not_run(models)]
    if numbered:
        header, rows = ["rank"] + header, [[i + 1] + row for i, row in enumerate(rows)]
    return markdown_table(header, rows) + "".join(f"\n**{line}.**\n" for line in not_run_reasons(models))


def not_run_reasons(models):
    """One line per reason: which baselines it stopped, and the fix."""
    reasons = {}
    for m in models:
        if m["status"] == "not run":
            reasons.setdefault((m["reason"], m.get("fix")), {})[m["baseline"]] = None
    return [f"{', '.join(baselines)} not run: {reason}" + (f". Fix: {fix}" if fix else "")
            for (reason, fix), baselines in reasons.items()]


def same_accuracy_margin(n):
    """Two accuracies on n test images closer than this count as the same: two binomial standard errors at 0.5, and
    at least 0.05."""
    return max(0.05, 2 * math.sqrt(0.25 / n))


def one_class_finding(models, threshold=0.05):
    """Which models put (almost) every test image in one class?"""
    one_sided = [model_name(m) for m in models if min(m["test_acc_real"], m["test_acc_fake"]) < threshold]
    return f"{', '.join(one_sided)} put (almost) every test image in one class." if one_sided else None


def running_stats_finding(m):
    """A model whose training loss ended low but whose test accuracy in eval mode is low: does recomputing BatchNorm's
    running statistics with its final weights recover it (so stale running statistics are what fails), or not?"""
    last_loss = np.mean([v for v in m.get("train_loss", [])[-5:] if v is not None] or [np.nan])
    if not (last_loss < 0.3 and m["test_acc"] < 0.6):
        return None
    text = (f"{model_name(m)}: mean training loss of the last 5 steps {last_loss:.3f} (train mode), yet test accuracy "
            f"{m['test_acc']:.3f} in eval mode")
    recomputed, batch_stats = m.get("test_acc_recomputed_bn"), m.get("test_acc_batch_stats")
    if recomputed is None:
        return text + "."
    text += (f"; {recomputed:.3f} once BatchNorm's running statistics are recomputed over the training images"
             + (f" ({batch_stats:.3f} on each test batch's own statistics)" if batch_stats is not None else ""))
    if recomputed > m["test_acc"] + same_accuracy_margin(len(m["test_prob"])):
        return text + ": the weights learned the task, and what fails in eval mode is stale running statistics."
    return text + ": the running statistics do not explain the low accuracy."


def bn_statistics_finding(baseline, runs):
    """Across a baseline's lrs: is its best accuracy with recomputed BatchNorm statistics above, about equal to, or
    below its best accuracy in eval mode with the running statistics training left?"""
    eval_best = max(m["test_acc"] for m in runs)
    top = max(runs, key=lambda m: m["test_acc_recomputed_bn"])
    margin = same_accuracy_margin(len(top["test_prob"]))
    text = (f"{baseline}: best test accuracy {eval_best:.3f} in eval mode with the running statistics training left, "
            f"{top['test_acc_recomputed_bn']:.3f} (lr {lr_text(top)}) with the statistics recomputed over the "
            "training images")
    if top["test_acc_recomputed_bn"] > eval_best + margin:
        return (text + ": the network learned the task, and what fails in eval mode is BatchNorm's running "
                "statistics, which one short epoch leaves behind the weights.")
    if top["test_acc_recomputed_bn"] < eval_best - margin:
        return text + ": recomputed statistics score lower, so the running statistics are not what holds it back."
    return text + f": within {margin:.3f}, so the running statistics are not what holds it back."


def learned(m, majority):
    """Did a model learn the task: is its test accuracy, in eval mode or with recomputed BatchNorm statistics, above
    the one-class rate by more than the noise of the test set?"""
    best_acc = max(m["test_acc"], m.get("test_acc_recomputed_bn") or 0)
    return best_acc > majority + same_accuracy_margin(len(m["test_prob"]))


def baseline_answer(baseline, models, majority):
    """7.4: what a baseline reached and, over its lrs, which learned and which did not."""
    if all(m["status"] == "not run" for m in models):
        return [f"Not run: {models[0]['reason']}" + (f". Fix: {models[0]['fix']}." if models[0].get("fix") else ".")]
    ok = [m for m in models if m["status"] == "ok"]
    diverged = [lr_text(m) for m in models if m["status"] == "diverged"]
    if not ok:
        return [f"Every lr diverged ({', '.join(diverged)})."]
    top = max(ok, key=lambda m: m["test_acc"])
    sentences = [f"Best: {model_name(top)}, test accuracy {top['test_acc']:.3f} (AUROC {top['test_auroc']:.3f}), "
                 f"against {majority:.3f} for calling every image one class."]
    if top["lr"] is None:
        sentences.append("It finds a real-vs-fake signal in its inputs." if learned(top, majority) else
                         "That is chance: it finds no real-vs-fake signal in its inputs.")
        return sentences
    good = [m for m in ok if learned(m, majority)]
    bad = [m for m in ok if not learned(m, majority)]
    if good:
        stale = [m for m in good if m["test_acc"] <= majority + same_accuracy_margin(len(m["test_prob"]))]
        recovered = ", ".join(f"lr {lr_text(m)}: {m['test_acc_recomputed_bn']:.3f} against {m['test_acc']:.3f}"
                              for m in stale)
        sentences.append(f"Learned: lr {', '.join(lr_text(m) for m in good)}" + (
            f"; of them, {len(stale)} only show it once BatchNorm's statistics are recomputed ({recovered} in eval "
            "mode with the running statistics training left)" if stale else "") + ".")
    if bad:
        sentences.append(f"Did not learn: lr {', '.join(lr_text(m) for m in bad)}" + (
            ", all larger than every lr that learned: steps that big wreck the weights in one epoch"
            if good and min(m["lr"] for m in bad) > max(m["lr"] for m in good) else "") + ".")
    if diverged:
        sentences.append(f"Diverged: lr {', '.join(diverged)}.")
    return sentences


def caption(fig, lines):
    if lines:
        fig.text(0, -0.02, "\n".join(textwrap.fill(line, 150) for line in lines), va="top", fontsize=8)


def baseline_figure(result):
    """Training loss per step (torch baselines) and the test ROC curve of every model that ran."""
    name, models = result["question"], result["models"]
    torch_based = name in TORCH_BASELINES
    fig, axes = plt.subplots(1, 1 + torch_based, figsize=(7 + 6 * torch_based, 5), layout="constrained", squeeze=False)
    ax_roc = axes[0, -1]
    y_test = [c == "fake" for c in result["test_classes"]]
    for i, m in enumerate(models):
        if torch_based and m.get("train_loss"):
            axes[0, 0].plot(range(1, len(m["train_loss"]) + 1), m["train_loss"], color=f"C{i}", marker=".",
                            label=f"lr {m['lr']:g} ({m['status']})")
        if m["status"] == "ok":
            fpr, tpr, _ = roc_curve(y_test, m["test_prob"])
            ax_roc.plot(fpr, tpr, color=f"C{i}", label=f"{model_name(m)}: AUROC {m['test_auroc']:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle=":", label="chance")
    ax_roc.set(xlabel="false positive rate (fraction of real test images called fake)",
               ylabel="true positive rate (fraction of fake test images called fake)", title=f"{name}: test ROC")
    if torch_based:
        axes[0, 0].set(xlabel=f"optimizer step (batch of {result['settings']['batch_size']} images)",
                       ylabel="training loss (binary cross-entropy, nats)", title=f"{name}: training loss per step",
                       yscale="log")
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


ITEMS = {"xgb": ("7.4-1", "XGBoost on raw pixels"), "scratch": ("7.4-2", "ResNet18 trained from scratch"),
         "linear_probe": ("7.4-3", "A linear probe on the frozen ImageNet ResNet18"),
         "sklearn_probe": ("7.4-4", "sklearn's LogisticRegression on the frozen ResNet18's features"),
         "finetune": ("7.4-5", "Fine-tuning the whole ImageNet ResNet18")}


def majority_rate(meta):
    return max(meta["images"]["test"].values()) / sum(meta["images"]["test"].values())


def report_baseline(result, data):
    name, models = result["question"], result["models"]
    ran = not all(m["status"] == "not run" for m in models)
    ok = [m for m in models if m["status"] == "ok"]
    findings = [f"{model_name(m)} {status_text(m)}." for m in models if m["status"] == "diverged"]
    findings += [line + "." for line in not_run_reasons(models)]
    if ok:
        top = max(ok, key=lambda m: m["test_acc"])
        findings.append(f"best: {model_name(top)}, test accuracy {top['test_acc']:.3f} (AUROC {top['test_auroc']:.3f}; "
                        f"{top['test_acc_real']:.3f} of real and {top['test_acc_fake']:.3f} of fake test images "
                        "classified correctly).")
        findings += [one_class_finding(ok)] + [running_stats_finding(m) for m in ok]
    findings += [f"sklearn raised a ConvergenceWarning ({m['convergence_warning']}); the protocol keeps "
                 "LogisticRegression's defaults, so this is the model it fitted." for m in models
                 if m.get("convergence_warning")]
    item, asked = ITEMS[name]
    return Report([results_table(models) + "\nAccuracy is at threshold P(fake) > 0.5; the positive class is fake. "
                   "Beyond the protocol (ResNets only): 'BN recomputed statistics' scores the trained network in eval "
                   "mode after one pass over the training images recomputes every BatchNorm's running statistics "
                   "with the final weights; 'BN test-batch statistics' normalizes each shuffled test batch of the "
                   "training batch size by its own statistics."],
                  {f"{name}.png": baseline_figure(result)} if ran else {}, [f for f in findings if f],
                  [Answer(item, f"{asked}: how well does it tell real from fake?",
                          baseline_answer(name, models, majority_rate(result["data"])))])


def report_summary(result, data):
    models = result["models"]
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    for i, baseline in enumerate(TORCH_BASELINES):
        runs = [m for m in models if m["baseline"] == baseline]
        ok = [m for m in runs if m["status"] == "ok"]
        diverged = [m["lr"] for m in runs if m["status"] == "diverged"]
        if not ok and not diverged:
            ax.plot([], [], " ", label=f"{baseline}: not run")
            continue
        ax.plot([m["lr"] for m in ok], [m["test_acc"] for m in ok], marker="o", color=f"C{i}", label=baseline)
        recomputed = [m for m in ok if m.get("test_acc_recomputed_bn") is not None]
        if recomputed:
            ax.plot([m["lr"] for m in recomputed], [m["test_acc_recomputed_bn"] for m in recomputed], marker="o",
                    markerfacecolor="white", linestyle="--", color=f"C{i}",
                    label=f"{baseline}, BatchNorm statistics recomputed (beyond the protocol)")
        if diverged:
            ax.scatter(diverged, [0.03] * len(diverged), marker="x", color=f"C{i}", transform=ax.get_xaxis_transform(),
                       label=f"{baseline}: diverged (no accuracy)")
    for baseline, style, color in (("xgb", "--", "C3"), ("sklearn_probe", "-.", "C4")):
        m = next(m for m in models if m["baseline"] == baseline)
        if m["status"] == "ok":
            ax.axhline(m["test_acc"], linestyle=style, color=color, label=f"{baseline} (no lr): {m['test_acc']:.3f}")
        else:
            ax.plot([], [], " ", label=f"{baseline}: {m['status']}")
    majority = majority_rate(result["data"])
    ax.axhline(majority, color="gray", linewidth=0.8, linestyle=":", label=f"one class for every image: {majority:.3f}")
    ax.set(xscale="log", xlabel="learning rate (Adam, log scale)",
           ylabel="test accuracy (fraction of real and fake test images correct)",
           title=f"Real vs fake: test accuracy by learning rate (image size "
                 f"{result['baselines']['xgb']['settings']['image_size']})")
    lrs = [m["lr"] for m in models if m["lr"] is not None]
    if lrs:
        ax.set_xlim(min(lrs) / 2, max(lrs) * 2)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    caption(fig, not_run_reasons(models))

    ranked = ranking(models)
    ok = [m for m in ranked if m["status"] == "ok"]
    best_rows = []
    for baseline in BASELINES:
        runs = [m for m in ranked if m["baseline"] == baseline]
        best_rows += [[baseline, i + 1, lr_text(m), fmt(m["test_acc"]), status_text(m)]
                      for i, m in enumerate(r for r in runs if r["status"] == "ok")][:2]
        if not any(m["status"] == "ok" for m in runs):
            best_rows.append([baseline, "-", "-", "-", status_text(runs[0])])
    body = ["### The baselines, as each ran\n", markdown_table(["baseline", "settings", "wall time (s)"],
                           [(name, ", ".join(f"{k} {common.show_value(v)}" for k, v in b["settings"].items()),
                             f"{b['wall_s']:.1f}") for name, b in result["baselines"].items()]),
            "### Two best models of each baseline (by test accuracy)\n",
            markdown_table(["baseline", "place", "lr", "test acc", "status"], best_rows),
            f"\n**Worst overall:** {model_name(ok[-1])}, test accuracy {ok[-1]['test_acc']:.3f}.\n" if ok else
            "\n**Worst overall:** no model ran.\n",
            "\n### Full ranking\n", results_table(ranked, numbered=True),
            "\nAccuracy is at threshold P(fake) > 0.5; AUROC is sklearn's roc_auc_score of P(fake) on the test set.\n"]
    findings = []
    if ok:
        findings.append(f"best overall: {model_name(ok[0])}, test accuracy {ok[0]['test_acc']:.3f}; worst: "
                        f"{model_name(ok[-1])}, {ok[-1]['test_acc']:.3f}; a model that calls every image one class "
                        f"scores {majority:.3f}.")
    for baseline in TORCH_BASELINES:
        runs = [m for m in ok if m["baseline"] == baseline and m.get("test_acc_recomputed_bn") is not None]
        if runs:
            findings.append(bn_statistics_finding(baseline, runs))
    return Report(body, {"summary.png": fig}, findings, [Answer("7.6-1", "The two best models of each baseline and "
                                                                         "the worst overall: why these trends?",
                                                                summary_answer(models, majority))])


def summary_answer(models, majority):
    """7.6-1: the best two of each baseline, the worst overall, and each baseline's trend over its lrs."""
    ranked = [m for m in ranking(models) if m["status"] == "ok"]
    if not ranked:
        return ["No model ran."]
    sentences = [f"Best overall: {model_name(ranked[0])} ({ranked[0]['test_acc']:.3f}); worst: "
                 f"{model_name(ranked[-1])} ({ranked[-1]['test_acc']:.3f}), against {majority:.3f} for calling every "
                 "image one class."]
    for baseline in BASELINES:
        runs = [m for m in models if m["baseline"] == baseline]
        best_two = [m for m in ranked if m["baseline"] == baseline][:2]
        if not best_two:
            status = runs[0]["status"]
            sentences.append(f"Baseline {baseline}: {status}" + (f" ({runs[0]['reason']})." if runs[0]["reason"]
                                                                  else "."))
            continue
        sentences.append(f"Baseline {baseline}: best " + ", ".join(f"{model_name(m)} {m['test_acc']:.3f}"
                                                                   for m in best_two) + ". "
                         + " ".join(baseline_answer(baseline, runs, majority)[1:]))
    return sentences


MISTAKES_RULE = ("test images the best model gets right and the worst gets wrong, the worst's most confident "
                 "mistakes first, taking the two true classes in turn while both have some")


def pick_mistakes(models, test_classes, n=5):
    """Best and worst model with status ok, and up to n test images by MISTAKES_RULE, from the predictions saved when
    each was evaluated."""
    ranked = [m for m in ranking(models) if m["status"] == "ok"]
    if len(ranked) < 2:
        return None, None, []
    best, worst = ranked[0], ranked[-1]
    y = np.array([c == "fake" for c in test_classes])
    p_best, p_worst = np.array(best["test_prob"]), np.array(worst["test_prob"])
    candidates = np.flatnonzero(((p_best > 0.5) == y) & ((p_worst > 0.5) != y))
    candidates = candidates[np.argsort(-np.abs(p_worst[candidates] - 0.5), kind="stable")]
    by_class = [list(candidates[y[candidates] == truth]) for truth in (True, False)]
    chosen = []
    while len(chosen) < n and any(by_class):
        for queue in by_class:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return best, worst, chosen


def report_mistakes(result, data, n=5):
    best, worst = result["best"], result["worst"]
    chosen = result["chosen"]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.6), layout="constrained")
    for ax in axes:
        ax.axis("off")

    def said(m, i):
        p = m["test_prob"][i]
        return f"{'fake' if p > 0.5 else 'real'} (p={max(p, 1 - p):.2f})"
    for ax, i in zip(axes, chosen):
        path = os.path.join(data["dir"], result["test_paths"][i])
        try:
            with Image.open(path) as image:
                ax.imshow(image.convert("RGB"))
        except OSError as e:
            raise UserError(f"{path}: cannot show this test image ({e})") from None
        ax.set_title(f"true: {result['test_classes'][i]}\nbest says {said(best, i)}\nworst says {said(worst, i)}",
                     fontsize=9)
    if best is None:
        headline = "fewer than two models with status ok: nothing to compare"
    else:
        headline = (f"Best model {model_name(best)} (test accuracy {best['test_acc']:.3f}), worst {model_name(worst)} "
                    f"({worst['test_acc']:.3f}). Shown: {MISTAKES_RULE}; p = probability of the class said")
        if len(chosen) < n:
            headline += f"\nonly {len(chosen)} such test images exist, not {n}"
    fig.suptitle(textwrap.fill(headline, 130), fontsize=10)

    rows = [[result["test_paths"][i], result["test_classes"][i], said(best, i), said(worst, i)] for i in chosen]
    findings = [headline.replace("\n", "; ") + "."] + [line + "." for line in not_run_reasons(result["models"])]
    return Report([markdown_table(["test image", "true class", "best model says", "worst model says"], rows),
                   "Images are shown from their original files; predictions are the ones saved when each model was "
                   "evaluated."], {"mistakes.png": fig}, findings,
                  [Answer("7.6-2", "Five test images the best model classifies correctly and the worst does not",
                          mistakes_answer(result))])


def mistakes_answer(result):
    """7.6-2: which images, chosen how, and what the worst model does with them."""
    best, worst, chosen = result["best"], result["worst"], result["chosen"]
    if best is None:
        return ["Fewer than two models ran: there is nothing to compare."]
    truth = np.array([c == "fake" for c in result["test_classes"]])
    right = (np.array(best["test_prob"]) > 0.5) == truth
    wrong = (np.array(worst["test_prob"]) > 0.5) != truth
    classes = [result["test_classes"][i] for i in chosen]
    sentences = [f"The best model, {model_name(best)}, gets {int((right & wrong).sum())} test images right that the "
                 f"worst, {model_name(worst)}, gets wrong; the figure shows {len(chosen)} of them "
                 f"({classes.count('real')} real, {classes.count('fake')} fake): {MISTAKES_RULE}."]
    said = [("fake" if worst["test_prob"][i] > 0.5 else "real") for i in chosen]
    if chosen and len(set(said)) == 1:
        sentences.append(f"The worst model calls each of them {said[0]}, as it calls "
                         f"{np.mean((np.array(worst['test_prob']) > 0.5) == (said[0] == 'fake')):.0%} of all test "
                         "images.")
    return sentences


# ----------------------------------------------------------------------------- questions

TORCH = dict(seed=42, image_size=224, lrs=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5], batch_size=32, epochs=1, amp=False)
QUESTIONS = [
    Question("xgb", "7.4-1", "XGBoost on raw pixels", dict(image_size=224, crop=XGB_CROP), train_xgb, report_baseline),
    Question("scratch", "7.4-2", "ResNet18 from scratch", TORCH, train_scratch, report_baseline),
    Question("linear_probe", "7.4-3", "Linear probe on a frozen pretrained ResNet18", dict(TORCH, weights="imagenet"),
             train_linear_probe, report_baseline),
    Question("sklearn_probe", "7.4-4", "sklearn LogisticRegression on frozen pretrained features",
             dict(image_size=224, amp=False, weights="imagenet"), train_sklearn_probe, report_baseline),
    Question("finetune", "7.4-5", "Fine-tuning a pretrained ResNet18", dict(TORCH, weights="imagenet"), train_finetune,
             report_baseline),
    Question("summary", "7.6-1", "Summary: the best and worst models, every model ranked", {}, train_summary,
             report_summary, reads=tuple(BASELINES)),
    Question("mistakes", "7.6-2", "Mistakes: right for the best model, wrong for the worst", {}, train_mistakes,
             report_mistakes, reads=tuple(BASELINES)),
]

SETTINGS = [
    Setting("lrs", "Adam learning rates of the torch baselines", dict(type=float, nargs="+")),
    Setting("batch_size", "training batch size", dict(type=int)),
    Setting("epochs", "training epochs", dict(type=int)),
    Setting("image_size", "side S (at least 32) of the network input: scratch and XGBoost resize to S x S; the "
                          "pretrained baselines resize to S*256/224 and center-crop S; XGBoost then center-crops "
                          f"{XGB_CROP} x {XGB_CROP}", dict(type=int),
            check=lambda size: None if size >= 32 else f"must be at least 32 (ResNet18 downsamples 32x), got {size}"),
    Setting("weights", "pretrained backbone: imagenet (torchvision's ResNet18_Weights.IMAGENET1K_V1 through its cache "
                       "and download; when they cannot be had, the pretrained baselines are reported as not run, with "
                       "the fix), none (not run), or PATH to a ResNet18 state-dict file", dict(metavar="W"),
            check=None),
    Setting("amp", "CUDA only: bf16 autocast for forward passes", dict(action="store_true", default=None), check=None),
]


def resolve(settings, quick):
    """The --quick budget: image size 32, the first 2 lrs. XGBoost's crop fits inside the image."""
    if quick and "image_size" in settings:
        settings["image_size"] = min(settings["image_size"], QUICK_IMAGE_SIZE)
    if quick and "lrs" in settings:
        settings["lrs"] = settings["lrs"][:2]
    if "crop" in settings:
        settings["crop"] = min(settings["crop"], settings["image_size"])
    return settings


def inputs(settings, data):
    """A question's inputs in its cache key: the images, and the pretrained weights where it uses them (their
    digest, or why there are none), so that other weights retrain it."""
    if "weights" not in settings:
        return data["meta"]["digest"]
    return f"{data['meta']['digest']} weights {backbone(data, settings['weights'])['id']}"


def add_flags(parser):
    parser.add_argument("--cache-dir", default=os.path.join(HERE, "cache"),
                        help="generated demo data and decoded image / feature tensors, reused across runs "
                             "(default: cache/ next to cnn.py; safe to delete)")


SCRIPT = common.Script(
    name="cnn", doc=__doc__, questions=QUESTIONS, settings=SETTINGS, load_data=load_data, resolve=resolve,
    inputs=inputs,
    data_help="ImageFolder root: train/, val/ (or validation/), test/, each with a real and a fake class folder (named "
              "real, 0_real, ... / fake, 1_fake, ...). Default: the generated demo set in CACHE_DIR/realfake-demo-*",
    add_flags=add_flags)

if __name__ == "__main__":
    common.main(SCRIPT)
