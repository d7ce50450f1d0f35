"""What several commands share: the data they load and the config their flags build."""

from __future__ import annotations

import argparse

from fashion_jax import config as config_lib
from fashion_jax.cli.config_flags import CONFIG_CLASSES, given
from fashion_jax.cli.parser import CliError
from fashion_jax.data.dataset import FashionMNIST, load_dataset


def load_data(args: argparse.Namespace, subset: int | None = None) -> FashionMNIST:
    if subset is not None and subset < 1:
        raise CliError(f"--subset must be positive, got {subset}")
    return load_dataset(args.data_dir, verify=not args.no_verify, subset=subset, **fetching(args))


def fetching(args: argparse.Namespace) -> dict:
    """load_dataset's download arguments from the flags: --offline never downloads; --json and
    --quiet show no progress bar (errors only)."""
    quiet = getattr(args, "json", False) or getattr(args, "quiet", False)
    return {"download": not args.offline, "progress": False if quiet else None}


def train_config(args: argparse.Namespace) -> config_lib.TrainConfig:
    """--preset plus the flags the user typed, exactly as `config.preset(name, **flags)`."""
    return config_lib.validate(config_lib.preset(args.preset, **given(args, *CONFIG_CLASSES)))
