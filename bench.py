"""Benchmark (not a test): the project's lockstep loop against the exercise skeleton's loop.

    python bench.py                 # embedded data, batch 256, 2 epochs, K = 1 and K = 18
    python bench.py --epochs 3 --data-dir PATH/TO/COURSE_CSVS

(a) reference: a DataLoader over a TensorDataset, one model at a time, torch.optim.SGD, train loss
    and accuracy accumulated with .item() per batch, validation and test evaluated through
    DataLoaders after every epoch;
(b) common.train_lockstep: all K models at once, whole tensors, randperm batches.
Both record the same quantities per epoch (train, validation and test loss and accuracy); their
batch orders differ, so their numbers do. Prints optimizer model-steps per second (K models x steps
/ wall seconds) and the ratio. Both run on --threads CPU threads (default 1, as mlp.py).
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import common
import mlp


def reference_loop(data, n_classes, runs, epochs, batch_size):
    """The skeleton's loop: per epoch, train loss and accuracy summed over batches with .item(), then
    validation and test loss and accuracy through their own DataLoaders, one model after the other."""
    train = DataLoader(TensorDataset(*data["train"]), batch_size=batch_size, shuffle=True)
    evaluation = {split: DataLoader(TensorDataset(*data[split]), batch_size=batch_size) for split in ("val", "test")}
    steps = 0
    for run in runs:
        common.seed_everything(run["seed"])
        model = mlp.MLP(2, n_classes)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=mlp.DEFAULT_DATA, help="Section 6 CSV folder (default: embedded)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per measurement (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as mlp.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    data = mlp.read_data(args.data_dir, cpu)
    meta = data["meta"]
    lrs = next(q for q in mlp.QUESTIONS if q.name == "lr").protocol["lrs"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {meta['rows']['train']} training rows, "
          f"batch {args.batch_size}, {args.epochs} epochs")
    warm_up = [{"seed": 0, "lr": 1e-3}]  # first calls pay for lazy initialisation; keep that out of the timings
    reference_loop(data, meta["n_classes"], warm_up, 1, args.batch_size)
    common.train_lockstep(lambda: mlp.MLP(2, meta["n_classes"]), warm_up, data, 1, args.batch_size, cpu, quiet=True)
    print(f"{'models':>6} | {'reference model-steps/s':>24} | {'lockstep model-steps/s':>23} | ratio")
    for runs in ([{"seed": 42, "lr": 1e-3}], [{"seed": s, "lr": lr} for s in (42, 43, 44) for lr in lrs]):
        start = time.perf_counter()
        steps = reference_loop(data, meta["n_classes"], runs, args.epochs, args.batch_size)
        reference = steps / (time.perf_counter() - start)
        start = time.perf_counter()
        results, _ = common.train_lockstep(lambda: mlp.MLP(2, meta["n_classes"]), runs, data, args.epochs,
                                           args.batch_size, cpu, quiet=True)
        lockstep = len(runs) * results[0]["steps_per_epoch"] * args.epochs / (time.perf_counter() - start)
        print(f"{len(runs):>6} | {reference:>24.0f} | {lockstep:>23.0f} | {lockstep / reference:.1f}x")


if __name__ == "__main__":
    main()
