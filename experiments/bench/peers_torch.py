"""The PyTorch peer: the chapter's CNN, one epoch as its fit runs it (train, validate, keep the best
weights on disk), at the default, channels_last or torch.compile setting."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from experiments.bench.peers_common import (
    SEED,
    Result,
    chapter_split,
    peak_rss_mb,
    skipped,
    try_import,
)

CNN_EVAL_BATCH = (
    1000  # evaluation batch size: large, since it is not timed and only has to be quick
)


def torch_cnn(args: argparse.Namespace) -> Result:
    torch = try_import("torch")
    if torch is None:
        return skipped("torch_cnn", "torch")
    nn = torch.nn
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(SEED)
    tx, ty, vx, vy = chapter_split(args.subset)
    x, y = torch.from_numpy(tx[:, None]), torch.from_numpy(ty)  # NCHW, as torch's conv expects
    model = _torch_model(nn)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    epochs = args.epochs or 1
    val_x, val_y = torch.from_numpy(vx[:, None]), torch.from_numpy(vy)
    if args.channels_last:  # NHWC in memory: oneDNN's preferred conv layout on CPU
        model = model.to(memory_format=torch.channels_last)
        x, val_x = (t.contiguous(memory_format=torch.channels_last) for t in (x, val_x))
    if args.torch_compile:  # compiled on the first batch, inside the timed region
        model = torch.compile(model)
    best_acc = -1.0
    with tempfile.TemporaryDirectory(prefix="torch-cnn-") as tmp:
        t0 = time.perf_counter()
        for _ in range(
            epochs
        ):  # each epoch as the chapter's fit: train, validate, keep the best weights on disk
            _torch_epoch(torch, model, opt, loss_fn, x, y, args.batch_size)
            val_acc = _torch_accuracy(torch, model, val_x, val_y)
            if val_acc > best_acc:
                best_acc = val_acc
                torch.save(model.state_dict(), os.path.join(tmp, "best-cnn-model.pt"))
        seconds = (time.perf_counter() - t0) / epochs  # per epoch, like ours
    settings = [
        name
        for name, on in (
            ("channels_last", args.channels_last),
            ("torch.compile", args.torch_compile),
        )
        if on
    ]
    return {
        "workload": "torch_cnn",
        "peer": f"torch {torch.__version__}" + (f" ({', '.join(settings)})" if settings else ""),
        "settings": settings,
        "seconds": seconds,
        "compile_seconds": None,
        "epochs": epochs,
        "threads": torch.get_num_threads(),
        "val_accuracy": val_acc,
        "peak_rss_mb": peak_rss_mb(),
    }


def _torch_epoch(
    torch: Any, model: Any, opt: Any, loss_fn: Callable, x: Any, y: Any, batch_size: int
) -> None:
    # Plain tensor indexing instead of a DataLoader: the data already sits in memory, and a
    # DataLoader's per-batch Python overhead would be charged to torch for nothing.
    model.train()
    perm = torch.randperm(len(x))
    for start in range(0, len(x), batch_size):
        idx = perm[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()


def _torch_accuracy(torch: Any, model: Any, x: Any, y: Any) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(x[i : i + CNN_EVAL_BATCH]).argmax(1) for i in range(0, len(x), CNN_EVAL_BATCH)]
        )
    return float((pred == y).float().mean())


def _torch_model(nn: Any) -> Any:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 100),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(100, 10),
    )
