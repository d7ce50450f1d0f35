"""The command line's shape: every command, its subparser and its flags.

The train, cv and import flags that set a config field are generated from the field itself
(config_flags.py); the flags written here are the ones no config field holds. Standard library,
config.py and clusters.py only: `fashion-jax --help` must not pay for importing JAX.
"""

from __future__ import annotations

import argparse
from typing import Any

from fashion_jax.cli.config_flags import CONFIG_CLASSES, add_dataclass_flags, describe_presets
from fashion_jax.config import PREPROCESS_MODES, PRESETS, CVOptions, RunOptions
from fashion_jax.errors import FashionJaxError
from fashion_jax.runtime.clusters import CLUSTER_CHOICES

# inference/explain.METHODS again: --help must not import JAX (test_explain checks they agree)
EXPLAIN_METHODS = ("saliency", "integrated-gradients", "occlusion", "gradcam")


class CliError(FashionJaxError):
    """Raised for bad flags; printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the whole usage block
        raise CliError(f"{self.prog}: {message}")


def add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last stdout line"
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile every program again instead of loading it from the persistent cache "
        "(default: use $XDG_CACHE_HOME/fashion_jax or ~/.cache/fashion_jax; "
        "FASHION_JAX_NO_COMPILE_CACHE=1 also turns it off)",
    )
    if data:
        p.add_argument(
            "--data-dir",
            help="folder with the four IDX files (default: $FASHION_JAX_DATA, "
            "then /usr/share/datasets/fashion-mnist, then the user cache folder, then TFDS; "
            "else the official files are downloaded into the cache folder)",
        )
        p.add_argument(
            "--offline",
            action="store_true",
            help="never download the data; FASHION_JAX_OFFLINE=1 does the same",
        )
        p.add_argument(
            "--no-verify", action="store_true", help="skip the SHA-256 check (custom IDX data)"
        )


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model; the workdir is the resume point")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="start from a named setup; flags override it (default: none: give --model): "
        + describe_presets(),
    )
    for cls in CONFIG_CLASSES:
        add_dataclass_flags(p, cls, presets=tuple(PRESETS))
    add_dataclass_flags(p, RunOptions)
    p.add_argument(
        "--workdir",
        default="runs/default",
        help="run folder: config, checkpoints, history, result (default: runs/default)",
    )
    p.add_argument(
        "--subset", type=int, help="train on the first N training images (default: all 48,000)"
    )
    p.add_argument(
        "--cluster",
        choices=list(CLUSTER_CHOICES),
        default="auto",
        help="auto: join the run when srun, mpirun or a Kubernetes Indexed Job started several "
        "processes; none: train alone (default: auto; --coordinator and $JAX_* win)",
    )
    p.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0, for multi-host (default: $JAX_COORDINATOR_ADDRESS)",
    )
    p.add_argument(
        "--num-processes", type=int, help="number of processes (default: $JAX_NUM_PROCESSES)"
    )
    p.add_argument("--process-id", type=int, help="this process's index (default: $JAX_PROCESS_ID)")
    add_common(p)


def _add_cv(sub: Any) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation, all folds in one vmapped program")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="cv",
        help="start from a named setup (default: cv)",
    )
    for cls in CONFIG_CLASSES:
        add_dataclass_flags(p, cls, presets=("cv",))
    add_dataclass_flags(p, CVOptions)
    p.add_argument(
        "--subset", type=int, help="use the first N of the 60,000 training images (default: all)"
    )
    add_common(p)


def _add_chapter_tools(sub: Any) -> None:
    p = sub.add_parser("shapes", help="walk a shape through conv/pool layers")
    p.add_argument("--input", type=int, default=28, help="input height and width (default: 28)")
    p.add_argument("--channels", type=int, default=1, help="input channels (default: 1)")
    p.add_argument("--kernel", type=int, default=3, help="conv kernel size (default: 3)")
    p.add_argument("--stride", type=int, default=1, help="conv stride (default: 1)")
    p.add_argument("--padding", default="same", help="same, valid, or an integer (default: same)")
    p.add_argument("--filters", type=int, default=32, help="conv filters (default: 32)")
    p.add_argument(
        "--pool", type=int, default=0, help="pooling window after the conv (default: 0, none)"
    )
    p.add_argument(
        "--model", choices=["cnn"], help="walk the whole chapter CNN instead (default: one layer)"
    )
    add_common(p, data=False)

    p = sub.add_parser("xor", help="perceptron vs MLP vs hand-set weights on XOR")
    p.add_argument("--seed", type=int, default=0, help="seed of the MLP's init (default: 0)")
    add_common(p, data=False)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="fashion-jax",
        description="Fashion-MNIST, the chapter done in JAX/Flax. "
        "Every command takes --json; bad input ends with one error line and exit 2.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser(
        "data", help="split sizes, class counts and a PNG of the first 10 training images"
    )
    p.add_argument("--out", default="samples.png", help="where the PNG goes (default: samples.png)")
    p.add_argument(
        "--download",
        action="store_true",
        help="only fetch the four official files, checked by SHA-256, into the user cache folder "
        "(or --data-dir); $FASHION_JAX_MIRROR replaces the mirrors with one base URL",
    )
    add_common(p)

    _add_train(sub)

    p = sub.add_parser("evaluate", help="restore a workdir's model and evaluate it")
    p.add_argument("--workdir", required=True, help="a training workdir or a saved model folder")
    p.add_argument(
        "--split", choices=["val", "test"], default="test", help="which split (default: test)"
    )
    add_common(p)

    p = _add_image_command(
        sub, "predict", "classify photos of clothes, Fashion-MNIST-like images or .npy arrays"
    )
    p.add_argument(
        "--save-inputs",
        metavar="DIR",
        help="write the 28x28 PNG the model saw for each file into DIR (default: none written)",
    )
    add_common(p, data=False)
    _add_explain(sub)

    _add_cv(sub)
    _add_chapter_tools(sub)
    p = sub.add_parser(
        "plot", help="filters, feature maps, confusion matrix and curves of a trained model"
    )
    p.add_argument("--workdir", required=True, help="a training workdir or a saved model folder")
    p.add_argument(
        "--image",
        type=int,
        default=0,
        help="index of the test image for the feature maps (default: 0)",
    )
    p.add_argument("--out-dir", help="where the PNGs go (default: WORKDIR/plots)")
    add_common(p)
    _add_serve(sub)
    _add_keras(sub)
    return parser


def _add_image_command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A command over image files (predict, explain): a model, the files, their preprocessing."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--workdir", required=True, help="a training workdir or a saved model folder")
    p.add_argument("files", nargs="+", help="images (JPEG, PNG, GIF, ...) or .npy arrays")
    p.add_argument(
        "--preprocess",
        choices=list(PREPROCESS_MODES),
        default=PREPROCESS_MODES[0],
        help="fashion-mnist: the dataset's own conversion of a shop photo (trim, resize, "
        "sharpen, centre, negate); none: only grey and 28x28; auto: the conversion unless the "
        "image already looks like Fashion-MNIST (a light garment on black) (default: auto)",
    )
    return p


def _add_explain(sub: Any) -> None:
    p = _add_image_command(
        sub, "explain", "which pixels decided the class: saliency, integrated gradients, ..."
    )
    p.add_argument(
        "--method",
        choices=[*EXPLAIN_METHODS, "all"],
        default="all",
        help="the attribution map to compute; all: every one that applies to the model "
        "(gradcam needs a conv layer) (default: all)",
    )
    p.add_argument(
        "--class",
        dest="target",
        metavar="C",
        help="explain class C, an index 0-9 or a name such as Shirt (default: the predicted class)",
    )
    p.add_argument(
        "--gradcam-layer",
        metavar="LAYER",
        help="the conv layer Grad-CAM reads, e.g. conv0 (default: the last one)",
    )
    p.add_argument(
        "--save",
        metavar="DIR",
        help="write a PNG per file and method into DIR: the input with the map over it "
        "(default: none written)",
    )
    add_common(p, data=False)


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="a local web page to try a trained model on your photos")
    p.add_argument("--workdir", required=True, help="a training workdir or a saved model folder")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    p.add_argument(
        "--port", type=int, default=8000, help="port; 0 picks a free one (default: 8000)"
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        help="larger uploads are refused with HTTP 413 (default: 10)",
    )
    add_common(p, data=False)


def _add_keras(sub: Any) -> None:
    p = sub.add_parser(
        "import", help="a Keras model (.keras, .h5, weights-only .h5) as a fashion_jax workdir"
    )
    p.add_argument("file", help="the Keras file: model.save() or model.save_weights() output")
    p.add_argument("--workdir", required=True, help="the workdir to create")
    for cls in CONFIG_CLASSES:  # the model flags say a weights-only file's architecture
        add_dataclass_flags(p, cls)
    p.add_argument(
        "--subset",
        type=int,
        help="the training rows a later `train --resume` uses (default: all 48,000)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run in --workdir")
    add_common(p, data=False)

    p = sub.add_parser("export", help="a workdir's model as a Keras file the chapter's code loads")
    p.add_argument("workdir", help="a training workdir or a saved model folder")
    p.add_argument("out", help="OUT.keras or OUT.h5 (whole model), OUT.weights.h5 (weights only)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_common(p, data=False)
