"""The Python reader (python/workbench_results.py) on a real sweep, against `workbench report`
(run by ctest). Two points train for a few steps and are evaluated; a third point fails. The
reader's rows, key columns and evaluator values must equal the report's CSV (exactly: it
prints numbers that read back exactly) and Markdown (as formatted there), and its series the
steps that were logged.

usage: test_results.py WORKBENCH_EXE   (with python/ on PYTHONPATH)
"""

import math
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pandas as pd

import workbench_results as wr

EXPERIMENT = """
[experiment]
name = "reader"
seeds = [0]

[base]
threads = 1
workers = 0
[base.data]
dataset = "fashion_mnist"
train_limit = 128
test_limit = 64
[base.views]
recipe = "train"
[base.backbone]
plugin = "vit"
patch = 7
dim = 16
depth = 1
heads = 2
[[base.losses]]
plugin = "classify"
[[base.evaluators]]
plugin = "accuracy"
[[base.evaluators]]
plugin = "knn"
k = 5
[base.train]
steps = 4
batch = 32
warmup_epochs = 0
log_every = 1

[grid]
"train.base_lr" = [5e-4, 2e-3]

[[point]]
"data.path" = "/nonexistent/fashion"
"""


def run(exe, *args, expect=0):
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == expect, (
        f"workbench {' '.join(map(str, args))}: exit {result.returncode}\n"
        f"{result.stdout}\n{result.stderr}")


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def main():
    exe = sys.argv[1]
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="wb_reader_"))
    try:
        (scratch / "reader.toml").write_text(EXPERIMENT)
        runs = scratch / "runs"
        run(exe, "run", scratch / "reader.toml", "--runs-dir", runs, expect=1)  # one point fails
        run(exe, "report", runs / "reader")
        points = wr.read_sweep(runs / "reader")
        report = pd.read_csv(runs / "reader" / "report" / "report.csv", keep_default_na=False)
        markdown = (runs / "reader" / "report" / "report.md").read_text()

        # Rows and keys.
        assert len(points) == 3, points
        assert sorted(points["state"]) == ["done", "done", "failed"], points["state"]
        assert list(points["seed"]) == [0, 0, 0]
        failed = points[points["state"] == "failed"].iloc[0]
        assert "/nonexistent/fashion" in failed["error"], failed["error"]
        assert set(points.attrs["varied"]) == {"train.base_lr", "data.path"}, points.attrs
        keys = [c for c in report.columns if c in points.attrs["keys"]]
        assert set(keys) == set(points.attrs["varied"]), (keys, report.columns)
        metrics = sorted({c[:-len(".mean")] for c in report.columns if c.endswith(".mean")})
        assert metrics == points.attrs["metrics"], (metrics, points.attrs["metrics"])
        assert {"accuracy/top1", "knn/top1"} <= set(metrics), metrics
        for point_dir, point_id in zip(wr.point_dirs(runs / "reader"), points["point"]):
            assert point_dir.name == point_id

        # One seed per configuration: each report row is one point, its mean that point's value.
        assert len(report) == len(points)
        matched = 0
        for _, row in report.iterrows():
            lr = float(row["train.base_lr"]) if row["train.base_lr"] != "" else None
            mine = points[[
                (str(p) == row["data.path"]) and (lr is None or same(l, lr))
                for p, l in zip(points["data.path"], points["train.base_lr"])]]
            assert len(mine) == 1, (row.to_dict(), points[["data.path", "train.base_lr"]])
            mine = mine.iloc[0]
            for m in metrics:
                if row[m + ".n"] == 0:
                    assert math.isnan(mine[m]), (m, mine[m])
                    continue
                assert float(row[m + ".mean"]) == mine[m], (m, row[m + ".mean"], mine[m])
                assert f"{mine[m]:.3f}" in markdown, (m, mine[m])
                matched += 1
        assert matched == 2 * len(metrics), matched

        # A run's series: train/loss logged at every one of the 4 steps.
        done = points[points["state"] == "done"].iloc[0]
        series = wr.read_series(runs / "reader" / done["point"])
        assert list(series["train/loss"].index) == [1, 2, 3, 4], series["train/loss"]
        assert list(series["train/loss"].columns) == ["value"]
        assert series["train/loss"]["value"].notna().all()
        only = wr.read_series(runs / "reader" / done["point"], names=["train/l*"])
        assert sorted(only) == ["train/loss", "train/lr"], sorted(only)
        results = wr.read_eval(runs / "reader" / done["point"])
        assert results["accuracy/top1"] == done["accuracy/top1"]
        assert wr.read_config(runs / "reader" / done["point"])["backbone"]["dim"] == 16
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
