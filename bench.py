"""Benchmark (not a test): the project against the exercise skeleton's loop.

    python bench.py                   # the lr question against the skeleton, embedded data, default flags
    python bench.py --threads 2       # both sides on 2 threads
    python bench.py --model-steps     # model-steps per second of the two loops, K = 1 and K = 18
    python bench.py --data-dir PATH/TO/COURSE_CSVS

Default: (a) one run of the skeleton's loop as the exercise runs it (one model, lr 0.001, 50 epochs,
batch 256): a DataLoader over a TensorDataset, torch.optim.SGD, train loss and accuracy accumulated
with .item() per batch, validation and test evaluated through DataLoaders after every epoch; then
(b) `python mlp.py --question lr --force` in a fresh process, everything included (start-up, 18
models, report and figures). The ratio is 18 x (a) / (b): how much faster the lr question runs
than its 18 models through the skeleton, one after the other. (a) is also the unit in which the
README states run_all.sh's time.
--model-steps: optimizer model-steps per second (K models x steps / wall seconds) of (a)'s loop
and common.train_lockstep over --epochs epochs; their batch orders differ, so their numbers do.
Both sides run on --threads CPU threads (default: torch's default for the skeleton, mlp.py's own
default for the lr question, i.e. what a user of each gets).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import common
import mlp
import section6

HERE = os.path.dirname(os.path.abspath(__file__))


def reference_loop(data, n_classes, runs, epochs, batch_size):
    """The skeleton's loop: per epoch, train loss and accuracy summed over batches with .item(), then
    validation and test loss and accuracy through their own DataLoaders, one model after the other."""
    train = DataLoader(TensorDataset(*data["train"]), batch_size=batch_size, shuffle=True)
    evaluation = {split: DataLoader(TensorDataset(*data[split]), batch_size=batch_size) for split in ("val", "test")}
    steps = 0
    for run in runs:
        common.seed_everything(run["seed"])
        model = section6.MLP(2, n_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=run["lr"])
        for _ in range(epochs):
            model.train()
            train_loss = train_correct = 0.0
            for xb, yb in train:
                optimizer.zero_grad()
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                optimizer.step()
                train_loss += loss.item()
                train_correct += (logits.argmax(1) == yb).sum().item()
                steps += 1
            model.eval()
            with torch.no_grad():
                for loader in evaluation.values():
                    loss_sum = correct = 0.0
                    for xb, yb in loader:
                        logits = model(xb)
                        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
                        correct += (logits.argmax(1) == yb).sum().item()
    return steps


def model_steps(data, lrs, epochs, batch_size):
    """Model-steps per second of the two loops, for one model and for the lr question's 18."""
    meta, cpu = data["meta"], torch.device("cpu")
    warm_up = [{"seed": 0, "lr": 1e-3}]  # first calls pay for lazy initialisation; keep that out of the timings
    reference_loop(data, meta["n_classes"], warm_up, 1, batch_size)
    common.train_lockstep(lambda run: section6.MLP(2, meta["n_classes"]), warm_up, data, 1, batch_size, cpu, quiet=True)
    print(f"{'models':>6} | {'reference model-steps/s':>24} | {'lockstep model-steps/s':>23} | ratio")
    for runs in ([{"seed": 42, "lr": 1e-3}], [{"seed": s, "lr": lr} for s in (42, 43, 44) for lr in lrs]):
        start = time.perf_counter()
        steps = reference_loop(data, meta["n_classes"], runs, epochs, batch_size)
        reference = steps / (time.perf_counter() - start)
        start = time.perf_counter()
        results, _ = common.train_lockstep(lambda run: section6.MLP(2, meta["n_classes"]), runs, data, epochs, batch_size,
                                           cpu, quiet=True)
        lockstep = len(runs) * results[0]["steps_per_epoch"] * epochs / (time.perf_counter() - start)
        print(f"{len(runs):>6} | {reference:>24.0f} | {lockstep:>23.0f} | {lockstep / reference:.1f}x")


def lr_question_against_skeleton(data, data_dir, n_models, threads):
    meta = data["meta"]
    start = time.perf_counter()
    reference_loop(data, meta["n_classes"], [{"seed": 42, "lr": 1e-3}], 50, 256)
    skeleton = time.perf_counter() - start
    print(f"(a) one 50-epoch run of the skeleton's loop (batch 256): {skeleton:.1f} s")
    command = [sys.executable, os.path.join(HERE, "mlp.py"), "--question", "lr", "--force", "--quiet",
               "--data-dir", data_dir] + (["--threads", str(threads)] if threads else [])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(command + ["--out", out], check=True, stdout=subprocess.DEVNULL)
        question = time.perf_counter() - start
    print(f"(b) python mlp.py --question lr --force{f' --threads {threads}' if threads else ''} ({n_models} models, "
          f"everything included): {question:.1f} s")
    print(f"ratio {n_models} x (a) / (b): {n_models * skeleton / question:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=section6.DEFAULT_DATA, help="Section 6 CSV folder (default: embedded)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads for both sides (default: each side's own default; see above)")
    parser.add_argument("--model-steps", action="store_true",
                        help="instead, model-steps per second of the two loops, for 1 and 18 models")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per --model-steps measurement (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of --model-steps (default 256)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = section6.read_data(args.data_dir, torch.device("cpu"))
    protocol = next(q for q in mlp.QUESTIONS if q.name == "lr").protocol
    lrs = protocol["lrs"]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {data['meta']['rows']['train']} training rows")
    if args.model_steps:
        print(f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.epochs} epochs")
        model_steps(data, lrs, args.epochs, args.batch_size)
    else:
        print(f"skeleton on {torch.get_num_threads()} threads")
        lr_question_against_skeleton(data, args.data_dir, protocol["seeds"] * len(lrs), args.threads)


if __name__ == "__main__":
    main()
