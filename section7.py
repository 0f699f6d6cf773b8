"""What Section 7 trains with: the ImageFolder, its decoded-tensor cache, the ResNet18, Adam, scoring."""
import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from common import UserError, file_digest, finite_or_none, save_torch, seed_everything, shown_path
from data import build_realfake

BASELINES = ["xgb", "scratch", "linear_probe", "sklearn_probe", "finetune"]
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASS_FOLDERS = "two class folders, one named like real (real, 0_real, ...), one like fake (fake, 1_fake...)"
LAYOUT = f"expected ImageFolder layout: train/, val/ (or validation/) and test/, each with {CLASS_FOLDERS}"
EVAL_BATCH = 256
MEAN_STD = {"resize": ((0.0,) * 3, (1.0,) * 3), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
# ResNet18_Weights.IMAGENET1K_V1.url (a test checks it), written out: `cnn.py --help` imports no torchvision
IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def class_word(folder_name):
    """'real' or 'fake' from a class folder's name (real, 0_real, Real-faces, 1_fake, ...), else None."""
    found = set(re.split(r"[^a-z]+", folder_name.lower())) & {"real", "fake"}
    return found.pop() if len(found) == 1 else None


def list_images(data_dir, quick=False):
    """({split: image paths}, {split: their class words}), checked against the layout."""
    if not os.path.isdir(data_dir):
        raise UserError(f"{data_dir}: data folder not found ({LAYOUT})")
    paths, words = {}, {}
    for split, names in SPLIT_FOLDERS.items():
        folders = [os.path.join(data_dir, n) for n in names if os.path.isdir(os.path.join(data_dir, n))]
        if not folders:
            raise UserError(f"{data_dir}: no {' or '.join(n + '/' for n in names)} folder ({LAYOUT})")
        classes = sorted(e.name for e in os.scandir(folders[0]) if e.is_dir() and not e.name.startswith("."))
        if sorted(map(class_word, classes)) != ["fake", "real"]:
            raise UserError(f"{folders[0]}: class folders {', '.join(classes) or '(none)'}; need exactly "
                            f"{CLASS_FOLDERS}")
        paths[split], words[split] = [], []
        for name in classes:
            class_dir = os.path.join(folders[0], name)
            files = sorted(f for f in os.listdir(class_dir)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
            if not files:
                raise UserError(f"{class_dir}: no image files ({' '.join(IMAGE_EXTENSIONS)})")
            files = files[:{"train": 16, "val": 8, "test": 8}[split]] if quick else files  # --quick
            paths[split] += [os.path.join(class_dir, f) for f in files]
            words[split] += [class_word(name)] * len(files)
    return paths, words


def ensure_demo(cache_dir):
    """The generated demo set's folder (one per version of the builder), built on first use."""
    folder = os.path.join(cache_dir, f"realfake-demo-{file_digest([build_realfake.__file__])[:8]}")
    if not os.path.isdir(folder):
        print(f"building the demo image set in {folder} (data/build_realfake.py, a few seconds)")
        tmp = f"{folder}.{os.getpid()}.tmp"  # renamed when complete: no process sees half a data set
        build_realfake.build(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished building it first
            shutil.rmtree(tmp)
    return folder


def load_data(args, device):
    """Each split's image paths, class words and labels (1 = fake, on the device), and their description."""
    if args.amp and device.type != "cuda":
        raise UserError("--amp needs a CUDA device (bf16 autocast); drop it or use --device cuda")
    data_dir = os.path.abspath(args.data_dir or ensure_demo(args.cache_dir))
    paths, classes = list_images(data_dir, args.quick)
    every_path = [p for split_paths in paths.values() for p in split_paths]
    names = "\n".join(os.path.relpath(p, data_dir) for p in every_path)
    images = {split: {w: words.count(w) for w in ("real", "fake")} for split, words in classes.items()}
    rows = {split: len(words) for split, words in classes.items()}
    kind = "--data-dir" if args.data_dir else "generated demo stand-in, data/build_realfake.py"
    summary = (f"{shown_path(data_dir)} ({kind}): {' / '.join(map(str, rows.values()))} train / val / test "
               f"images, test {images['test']['real']} real + {images['test']['fake']} fake")
    meta = {"dir": shown_path(data_dir), "summary": summary, "images": images, "rows": rows,
            "digest": hashlib.sha256((file_digest(every_path) + names).encode()).hexdigest()[:16]}
    if args.data_dir is None:  # what the study report says the numbers are
        meta["stand_in"] = ("Section 7 on a generated real-vs-fake image set (photographs against the same "
                            "photographs through a simulated generator's upsampling), which makes Section 7 "
                            "a pipeline check: the builder set the fakes' trace so that XGBoost scores "
                            "between 0.6 and 0.9, and real and fake images are crops of the same three "
                            "photographs")
    return {"meta": meta, "dir": data_dir, "paths": paths, "classes": classes,
            "labels": {split: torch.tensor([w == "fake" for w in words], dtype=torch.float32, device=device)
                       for split, words in classes.items()}, "sources": read_sources(data_dir)}


def read_sources(data_dir):
    """{image path relative to data_dir: its source photograph} from an optional sources.csv (the demo's)."""
    path = os.path.join(data_dir, "sources.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"image", "source"} <= set(reader.fieldnames or []):
            raise UserError(f"{path}: expected columns image, source; the header is {reader.fieldnames}")
        return {row["image"]: row["source"] for row in reader}


def preprocessing(name, image_size):
    """PIL -> uint8 [3, S, S]: 'resize' Resize((S, S)); 'imagenet' IMAGENET1K_V1's, S*256/224 cropped to S."""
    import torchvision.transforms as T
    if name == "resize":
        return T.Compose([T.Resize((image_size, image_size)), T.PILToTensor()])
    return T.Compose([T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), T.PILToTensor()])


def decode_one(path, transforms):
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # grayscale, RGBA and palette images become RGB
            return [transform(rgb) for transform in transforms]
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unknown, truncated or corrupt files
        raise UserError(f"{path}: cannot read this image ({e})") from None


def decode(paths, transforms, desc, quiet):
    """One uint8 [N, 3, S, S] tensor per transform; images are read once, in threads (PIL frees the GIL)."""
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        outputs = list(tqdm(pool.map(lambda path: decode_one(path, transforms), paths), total=len(paths),
                            desc=desc, unit="img", disable=quiet, mininterval=1.0, dynamic_ncols=True))
    return [torch.stack(per_transform) for per_transform in zip(*outputs)]


def disk_cached(cache_dir, key, compute):
    """compute(), kept in --cache-dir/tensors/ by a hash of key (which names the data by content)."""
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, "tensors", f"{name}.pt")
    if os.path.exists(path):
        try:
            return torch.load(path, weights_only=True)
        except Exception as e:  # a damaged disk, or a file another torch version wrote: recompute it
            print(f"{path}: unreadable cached tensors ({type(e).__name__}); recomputing them", flush=True)
    value = compute()
    save_torch(path, value)
    return value


def images(data, name, image_size, env):
    """{split: uint8 [N, 3, S, S] on the device}; every split is decoded once into every preprocessing."""
    def decode_splits():
        transforms = [preprocessing(each, image_size) for each in MEAN_STD]
        return {split: dict(zip(MEAN_STD, decode(paths, transforms, f"decode {split}", env.quiet)))
                for split, paths in data["paths"].items()}
    key = {"what": "images", "data": data["meta"]["digest"], "preprocessings": list(MEAN_STD),
           "image_size": image_size}
    decoded = disk_cached(env.cache_dir, key, decode_splits)
    return {split: x[name].to(env.device) for split, x in decoded.items()}


def normalizer(name, image_size, device):
    """uint8 batch -> model input: 0..1, normalized by MEAN_STD (imagenet: IMAGENET1K_V1's), channels_last."""
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in MEAN_STD[name])
    return lambda batch: ((batch.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


def build_resnet(backbone_state=None):
    """ResNet18, fc replaced by Linear(512, 1), backbone from backbone_state if given (else ValueError)."""
    import torchvision
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


def weights_file(weights):
    """The file --weights names: torchvision's cache file for imagenet, the path given, or None for none."""
    if weights == "imagenet":
        return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(IMAGENET_URL))
    return None if weights == "none" else weights


def fit(model, inputs, labels, lr, settings, env, prepare, desc):
    """Adam on BCE, batches seeded: (step losses up to the first non-finite, its step (1-based) or None)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(settings["seed"])
    batch_size = settings["batch_size"]
    model.train()
    losses = []
    with tqdm(total=settings["epochs"] * math.ceil(len(labels) / batch_size), desc=desc, unit="step",
              disable=env.quiet, mininterval=1.0, dynamic_ncols=True) as bar:
        for _ in range(settings["epochs"]):
            batches = torch.randperm(len(labels), generator=generator).to(inputs.device).split(batch_size)
            if len(batches) > 1 and len(batches[-1]) == 1:
                batches = batches[:-1]  # BatchNorm cannot train on a batch of one image
            epoch_losses = torch.empty(len(batches), device=inputs.device)
            for i, idx in enumerate(batches):
                with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=settings["amp"]):
                    logits = model(prepare(inputs[idx])).float().squeeze(1)
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
                epoch_losses[i] = loss.detach()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            finite = torch.isfinite(epoch_losses)  # checked once an epoch: no device sync a step
            if not finite.all():
                losses += epoch_losses[:int((~finite).nonzero()[0]) + 1].tolist()
                return losses, len(losses)
            losses += epoch_losses.tolist()
    return losses, None


def forward_all(model, inputs, prepare, amp):
    model.eval()
    with torch.inference_mode(), torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
        outputs = torch.cat([model(prepare(inputs[i:i + EVAL_BATCH])).float()
                             for i in range(0, len(inputs), EVAL_BATCH)])
    return outputs.clone()  # a normal tensor: inference tensors cannot enter autograd (as probe features)


def model_record(baseline, lr, status, reason=None, **values):
    return {"baseline": baseline, "lr": lr, "status": status, "reason": reason, "test_acc": None,
            "test_auroc": None, "val_acc": None, "test_acc_real": None, "test_acc_fake": None,
            "test_acc_recomputed_bn": None, "train_seconds": None, "test_prob": None, **values}


def scored(baseline, lr, data, val_prob, test_prob, train_seconds, **values):
    """The record from P(fake) on val and test (kept for mistakes); non-finite outputs mean it diverged."""
    values["train_seconds"] = round(train_seconds, 2)
    if not (torch.isfinite(val_prob).all() and torch.isfinite(test_prob).all()):
        return model_record(baseline, lr, "diverged", "non-finite predictions", **values)
    from sklearn.metrics import roc_auc_score
    y_val, y_test = data["labels"]["val"].cpu(), data["labels"]["test"].cpu()
    correct = (test_prob > 0.5).float() == y_test
    return model_record(baseline, lr, "ok", val_acc=float(((val_prob > 0.5).float() == y_val).float().mean()),
                        test_acc=float(correct.float().mean()),
                        test_auroc=float(roc_auc_score(y_test, test_prob)),
                        test_acc_real=float(correct[y_test == 0].float().mean()),
                        test_acc_fake=float(correct[y_test == 1].float().mean()),
                        test_prob=[round(float(p), 6) for p in test_prob], **values)


def fit_and_score(settings, data, env, baseline, lr, model, inputs, prepare, **values):
    start = time.perf_counter()
    losses, diverged_step = fit(model, inputs["train"], data["labels"]["train"], lr, settings, env, prepare,
                                f"{baseline} lr {lr:g}")
    seconds = time.perf_counter() - start
    values["train_loss"] = [finite_or_none(v) for v in losses]
    if diverged_step:
        return model_record(baseline, lr, "diverged", f"training loss not finite at step {diverged_step}",
                            train_seconds=round(seconds, 2), **values)
    val_prob, test_prob = (forward_all(model, inputs[s], prepare, settings["amp"]).squeeze(1).sigmoid().cpu()
                           for s in ("val", "test"))
    return scored(baseline, lr, data, val_prob, test_prob, seconds, **values)


def recomputed_bn_accuracy(model, train_inputs, test_inputs, test_labels, prepare, amp=False):
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # None: a cumulative average, every batch counted alike
    model.train()
    with torch.no_grad(), torch.autocast(train_inputs.device.type, dtype=torch.bfloat16, enabled=amp):
        for start in range(0, len(train_inputs), EVAL_BATCH):
            model(prepare(train_inputs[start:start + EVAL_BATCH]))
    prob = forward_all(model, test_inputs, prepare, amp).squeeze(1).sigmoid().cpu()
    return float(((prob > 0.5).float() == test_labels.cpu()).float().mean())


def train_resnets(settings, data, env, baseline, backbone_state, preprocessing_name):
    """scratch or finetune: a model per lr, all weights trained, scored also with BN statistics recomputed."""
    x = images(data, preprocessing_name, settings["image_size"], env)
    prepare = normalizer(preprocessing_name, settings["image_size"], env.device)
    records = []
    for lr in settings["lrs"]:
        seed_everything(settings["seed"])
        model = build_resnet(backbone_state).to(env.device, memory_format=torch.channels_last)
        record = fit_and_score(settings, data, env, baseline, lr, model, x, prepare)
        if record["status"] == "ok":
            record["test_acc_recomputed_bn"] = recomputed_bn_accuracy(
                model, x["train"], x["test"], data["labels"]["test"], prepare, settings["amp"])
        records.append(record)
    return records


def baseline_result(data, models):
    return {"models": models, "test_paths": [os.path.relpath(p, data["dir"]) for p in data["paths"]["test"]],
            "test_classes": data["classes"]["test"]}


TORCH = dict(seed=42, image_size=224, lrs=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5], batch_size=32, epochs=1, amp=False)
PRETRAINED = dict(TORCH, weights="imagenet")


def inputs(settings, data):
    """A question's cache-key inputs: the images' digest and any weights file's (other weights retrain it)."""
    if "weights" not in settings:
        return data["meta"]["digest"]
    path = weights_file(settings["weights"])
    weights = "none" if path is None else file_digest([path]) if os.path.isfile(path) else "missing"
    return f"{data['meta']['digest']} weights {weights}"
