"""`python -m jaxmlp.train`: train one configuration (several seeds at once), evaluate, predict."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.config import SEED_KEY, ConfigError, RunConfig, load_config, seed_list, set_dotted
from jaxmlp.data.errors import DataError
from jaxmlp.runtime import COMPILE_CACHE_HELP, JSON_HELP, compile_cache_dir, enable_compilation_cache, json_line

#: Command-line shortcuts for the most used configuration keys.
FLAGS = {
    "dataset": ("data.name", "dataset name: digits, diabetes, mnist, fashion_mnist, kmnist, synthetic"),
    "data_dir": ("data.data_dir", "folder with the dataset's original download files (MNIST family)"),
    "hidden": ("model.hidden", "hidden widths, comma separated, e.g. 128,128"),
    "activation": ("model.activation", "sigmoid, tanh, relu, leaky_relu, noisy_relu, elu, selu, gelu, ..."),
    "dropout": ("model.dropout", "dropout rate on hidden units, in [0, 1)"),
    "optimizer": ("optimizer.name", "sgd, adam, adamw or rmsprop"),
    "lr": ("optimizer.learning_rate", "base learning rate"),
    "epochs": ("training.epochs", "epoch budget"),
    "batch_size": ("training.batch_size", "minibatch size"),
    "loss": ("training.loss", "auto, cross_entropy or mse"),
    "patience": ("training.early_stopping.patience", "early-stopping patience in epochs"),
}

#: Top-level keys of a sweep file that a configuration file does not have.
SWEEP_KEYS = ("base", "grid", "zip", "random", "search", "execution")


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it; 'a,b' becomes a list, YAML flow syntax
    ('[a, b]', '{k: v}') and quoted values are read whole."""
    try:
        if "," in text and not text.lstrip().startswith(("[", "{", "'", '"')):
            return [yaml.safe_load(part) for part in text.split(",") if part]
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark else ""
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid YAML ({getattr(err, 'problem', None) or 'unreadable'}{where}); "
            "give a YAML value such as 0.5, relu, [128, 128], or a comma list such as 128,128") from None


def unreadable(option: str, path: Path, err: Exception, wanted: str) -> ConfigError:
    """A file that cannot be read, as bad input naming the option, the file and the reason."""
    reason = ("no such file" if isinstance(err, FileNotFoundError)
              else err.strerror.lower() if getattr(err, "strerror", None) else str(err))
    return ConfigError(f"{option} {path}: {reason}; give {wanted}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxmlp.train",
        description="Train one MLP configuration (several seeds at once, vmapped) with early stopping "
                    "on the validation split, then report test metrics of the selected parameters.",
        epilog="Examples:\n  python -m jaxmlp.train --hidden 128,128 --activation relu --seeds 0 1 2\n"
               "  python -m jaxmlp.train --config run.yaml --set optimizer.learning_rate=3e-4 --save best/\n"
               "  python -m jaxmlp.train --predict best/ --inputs x.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML file with data/model/optimizer/training sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration key by its dotted path, e.g. model.dropout=0.2")
    for flag, (key, text) in FLAGS.items():
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=parse_value, help=f"{text} [{key}]")
    p.add_argument("--seeds", type=int, nargs="+", help="train one variant per seed, all at once")
    p.add_argument("--json", action="store_true", help=JSON_HELP.format("the summary (the predictions)"))
    p.add_argument("--save", type=Path, metavar="DIR", help="save each variant's selected parameters")
    p.add_argument("--evaluate", type=Path, metavar="DIR", help="evaluate a saved checkpoint on its test split")
    p.add_argument("--predict", type=Path, metavar="DIR", help="predict with a saved checkpoint")
    p.add_argument("--inputs", type=Path, help="with --predict: .npy or .csv file of inputs, preprocessed for a "
                   "built-in dataset, in their own units for your own data (standardised as in training; a "
                   "table's .csv with a header row naming its columns)")
    p.add_argument("--compile-cache", default=None, metavar="DIR", help=COMPILE_CACHE_HELP)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> list[RunConfig]:
    """The configurations to train: file, then flags, then --set, one per seed."""
    raw: dict[str, Any] = {}
    source, hint = "command line", ""
    seeds = seed_list(args.seeds, "--seeds", counts=False) if args.seeds else None
    if args.config:
        source = str(args.config)
        try:
            raw = load_bounded_yaml(args.config) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise unreadable("--config", args.config, err,
                             "a YAML file with data/model/optimizer/training sections") from None
        except YamlError as err:  # YAML's messages take several lines ('  in "FILE", line L, ...')
            first, *rest = str(err).splitlines()
            raise ConfigError(first + "".join((" " if line.startswith(" ") else "; ") + line.strip()
                                              for line in rest)) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections (data, model, optimizer, training)")
        if sweep_keys := [k for k in SWEEP_KEYS if k in raw]:
            hint = (f"\n{source} looks like a sweep file (top-level {', '.join(sweep_keys)}): "
                    f"run `python -m jaxmlp.sweep {source}` instead")
    for flag, (key, _) in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            raw = set_dotted(raw, key, [value] if key == "model.hidden" and not isinstance(value, list) else value)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.dropout=0.2")
        try:
            raw = set_dotted(raw, key.strip(), parse_value(value))
        except argparse.ArgumentTypeError as err:
            raise ConfigError(f"--set {item!r}: {err}") from None
    try:
        seeds = seeds or [load_config(raw, source=source).training.seed]
        return [load_config(set_dotted(raw, SEED_KEY, s), source=source) for s in seeds]
    except ConfigError as err:
        raise ConfigError(f"{err}{hint}") from None


def train_command(args: argparse.Namespace) -> dict[str, Any]:
    """Train the configurations (`jaxmlp.fit`, one program) and summarise them; --save writes
    each variant's checkpoint."""
    from jaxmlp.api.fit import fit

    configs = config_from_args(args)
    enable_compilation_cache(compile_cache_dir(args.compile_cache))
    result = fit(configs, devices="one", progress=False if args.no_progress else None)
    summary = {**result.data, "compile_seconds": round(result.compile_seconds, 3),
               "train_seconds": round(result.train_seconds, 3), "variants": []}
    for model in result.models:
        record = model.record
        row = {"seed": record.seed, "best_epoch": record.best_epoch, "stopped_epoch": record.stopped_epoch,
               "diverged": record.diverged, **{k: record.metric(k) for k in ("best_val_loss", "best_val_accuracy")},
               **{k: val for k, val in record.metrics.items() if k.startswith("test_")}}
        if args.save:
            folder = args.save if len(configs) == 1 else args.save / f"seed_{record.seed}"
            row["checkpoint"] = str(model.save(folder))
        summary["variants"].append(row)
    return summary


def evaluate_command(folder: Path) -> dict[str, Any]:
    """Test metrics of a saved checkpoint on the test split of the dataset it was trained on."""
    from jax.tree_util import tree_leaves

    from jaxmlp.checkpoint import load_checkpoint, predict
    from jaxmlp.data import load_dataset

    ckpt = load_checkpoint(folder)
    leaves = [np.asarray(leaf) for leaf in tree_leaves(ckpt.params)]
    broken = sum(int((~np.isfinite(leaf)).sum()) for leaf in leaves)
    if broken:
        print(f"warning: {folder}: {broken:,} of {sum(leaf.size for leaf in leaves):,} parameters are NaN or "
              "infinite (a diverged variant's?); its metrics below mean nothing", file=sys.stderr)
    data = load_dataset(ckpt.config.data)
    out = predict(ckpt, data.test.x)
    if data.task == "classification":
        y = np.asarray(data.test.y)
        nll = -np.mean(np.log(np.clip(out[np.arange(len(y)), y], 1e-12, None)))
        return {"checkpoint": str(folder), "test_accuracy": float(np.mean(out.argmax(1) == y)), "test_loss": float(nll)}
    std = ckpt.meta["target_std"]
    mse = float(np.mean((out - (np.asarray(data.test.y) * std + ckpt.meta["target_mean"])) ** 2))
    # test_mse in the targets' units; test_loss the same error on standardised targets, as sweeps log and report it
    return {"checkpoint": str(folder), "test_loss": mse / std**2, "test_mse": mse}


def read_inputs(path: Path, columns: list[str] | None = None) -> Any:
    """The --inputs file: a .npy array, or a .csv of numbers (with a header row naming the
    training columns where the net was trained on a table)."""
    try:
        if path.suffix == ".npy":
            return np.load(path)
        if columns:
            import pandas as pd

            return pd.read_csv(path)
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except OSError as err:
        raise unreadable("--inputs", path, err, "a .npy or .csv file of preprocessed inputs") from None


def print_summary(summary: dict[str, Any]) -> None:
    print(f"{summary['dataset']} ({summary['task']}): {summary['n_train']} train / {summary['n_val']} val / "
          f"{summary['n_test']} test; compile {summary['compile_seconds']:.2f} s, "
          f"train {summary['train_seconds']:.2f} s")
    rows = summary["variants"]
    columns = [c for c in rows[0] if c != "checkpoint"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = [columns] + [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(columns))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    for r in rows:
        if "checkpoint" in r:
            print(f"saved seed {r['seed']} -> {r['checkpoint']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.predict:
            if not args.inputs:
                raise ConfigError("--predict needs --inputs FILE (.npy or .csv of preprocessed inputs)")
            from jaxmlp.checkpoint import load_checkpoint, predict, prepared_inputs

            checkpoint = load_checkpoint(args.predict)
            inputs = read_inputs(args.inputs, checkpoint.meta.get("columns"))
            out = predict(checkpoint, prepared_inputs(checkpoint.meta, inputs))
            print(json_line({"predictions": out.tolist()}) if args.json else np.array2string(out, precision=4))
            return 0
        summary = evaluate_command(args.evaluate) if args.evaluate else train_command(args)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json or args.evaluate:
        print(json_line(summary))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
