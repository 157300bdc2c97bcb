"""Read workbench results into pandas (docs/metrics.md, "Reading results with pandas").

    import workbench_results as wr
    points = wr.read_sweep("runs/ablation_alpha")      # one row per point
    series = wr.read_series("runs/ablation_alpha/0123456789ab")  # name -> DataFrame

Needs only numpy, pandas and h5py (Debian: python3-numpy, python3-pandas, python3-h5py) and
Python 3.11's tomllib. The values are the ones `workbench report` tabulates: the same column
names (dotted configuration keys, "<evaluator>/<metric>"), evaluator results of done points
only, scalar results only (array results: read_eval).
"""

import fnmatch
import pathlib
import tomllib

import h5py
import numpy as np
import pandas as pd

__all__ = ["read_sweep", "read_series", "read_eval", "read_config", "point_dirs"]

FORMAT_VERSION = 1  # the metrics.h5 format_version this module reads


def _literal(text):
    """A TOML literal of point.toml as a Python value, shown as `workbench report` shows it:
    numbers, booleans and strings typed; { plugin = "x" } as "x"; anything else as written."""
    if text == "":
        return None
    try:
        value = tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, dict):
        return value["plugin"] if list(value) == ["plugin"] else text
    if isinstance(value, list):
        return text
    return value


def _lookup(config, key):
    """A dotted key in a resolved configuration, as experiment files address it: list elements
    by plugin name (losses.ogar.alpha) or by index (losses.1.weight). None when absent."""
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list):
            if part.isdigit():
                index = int(part)
                node = node[index] if index < len(node) else None
            else:
                hits = [item for item in node if _plugin_of(item) == part]
                node = hits[0] if len(hits) == 1 else None
        elif isinstance(node, str) and part == "plugin" and i + 1 == len(parts):
            return node
        else:
            return None
        if node is None:
            return None
    return node


def _plugin_of(item):
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("plugin")
    return None


def _config_value(value):
    if isinstance(value, dict):
        return value["plugin"] if list(value) == ["plugin"] else str(value)
    if isinstance(value, list):
        return str(value)
    return value


def _read_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def _check_format(f, path):
    version = int(f.attrs.get("format_version", 0))
    if f.attrs.get("format") != "workbench-metrics" or version > FORMAT_VERSION:
        raise ValueError(f"{path}: not a workbench metrics file of format_version <= "
                         f"{FORMAT_VERSION}")


def point_dirs(sweep):
    """The point directories of runs/<experiment> (those with a point.toml), sorted."""
    sweep = pathlib.Path(sweep)
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: not a directory (expected runs/<experiment>)")
    dirs = sorted(d for d in sweep.iterdir() if (d / "point.toml").is_file())
    if not dirs:
        raise FileNotFoundError(f"{sweep}: no points (<id>/point.toml) found")
    return dirs


def read_config(run):
    """The resolved configuration of a run (its config.toml) as a dict."""
    return _read_toml(pathlib.Path(run) / "config.toml")


def read_eval(run):
    """Every evaluator result of a run: {"<evaluator>/<metric>": float or numpy array}."""
    path = pathlib.Path(run) / "metrics.h5"
    out = {}
    if not path.exists():
        return out
    with h5py.File(path, "r") as f:
        _check_format(f, path)
        for evaluator, group in f.get("eval", {}).items():
            for metric, dataset in group.items():
                value = dataset[()]
                out[f"{evaluator}/{metric}"] = float(value) if np.ndim(value) == 0 else value
    return out


def read_sweep(sweep):
    """One row per point of runs/<experiment>, in the order of the point directories.

    Columns: point (its id), label, the keys the experiment assigns (dotted, as in the
    experiment file; a point that does not assign a key shows its configured value), seed,
    state (queued, running, done, failed), error, seconds (wall time), then one column per
    scalar evaluator result, "<evaluator>/<metric>", of the done points (NaN elsewhere).
    df.attrs holds "keys" (the assigned keys), "varied" (those whose values differ between
    points, the key columns of `workbench report`) and "metrics".
    """
    rows, keys, metrics = [], [], []
    for d in point_dirs(sweep):
        point = _read_toml(d / "point.toml")
        status = _read_toml(d / "status.toml") if (d / "status.toml").exists() else {}
        row = {"point": point.get("id", d.name), "label": point.get("label", "")}
        assigned = {}
        for key, literal in point.get("assignments", []):
            if key == "seed":
                continue
            assigned[key] = _literal(literal)
            if key not in keys:
                keys.append(key)
        row["_assigned"] = assigned
        row["_config"] = d / "config.toml"
        row["seed"] = point.get("seed", 0)
        row["state"] = status.get("state", "queued")
        row["error"] = status.get("error", "")
        row["seconds"] = status.get("elapsed_seconds", np.nan)
        if row["state"] == "done":
            for name, value in read_eval(d).items():
                if isinstance(value, float):
                    row[name] = value
                    if name not in metrics:
                        metrics.append(name)
        rows.append(row)

    for row in rows:
        assigned = row.pop("_assigned")
        config_file = row.pop("_config")
        config = None
        for key in keys:
            if key in assigned:
                row[key] = assigned[key]
                continue
            if config is None:
                config = _read_toml(config_file) if config_file.exists() else {}
            row[key] = _config_value(_lookup(config, key))

    metrics.sort()  # the report's default column order
    columns = ["point", "label"] + keys + ["seed", "state", "error", "seconds"] + metrics
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["keys"] = keys
    frame.attrs["varied"] = [k for k in keys if frame[k].astype(str).nunique(dropna=False) > 1]
    frame.attrs["metrics"] = metrics
    return frame


def read_series(run, names=None):
    """The series of a run's metrics.h5 as {name: DataFrame}, each indexed by step, with a
    column "value" (scalar series) or columns 0..m-1 (array series such as
    routing/moe0/expert_load). `names`: glob patterns ("train/*", "routing/*/load_entropy");
    None reads every series."""
    path = pathlib.Path(run) / "metrics.h5"
    out = {}
    with h5py.File(path, "r") as f:
        _check_format(f, path)
        found = []
        if "series" in f:
            f["series"].visititems(
                lambda name, obj: found.append(name)
                if isinstance(obj, h5py.Group) and "step" in obj and "value" in obj else None)
        for name in sorted(found):
            if names is not None and not any(fnmatch.fnmatchcase(name, p) for p in names):
                continue
            group = f["series"][name]
            steps = pd.Index(group["step"][:], name="step")
            values = group["value"][:]
            if values.ndim == 1:
                out[name] = pd.DataFrame({"value": values}, index=steps)
            else:
                out[name] = pd.DataFrame(values, index=steps)
    return out
