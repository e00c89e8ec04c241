"""Comparison: score both models on the test set (with bootstrap rounds) and pick the better one."""

import argparse
import json
import os

import numpy as np
import pandas as pd

from prefect_aml import Run

parser = argparse.ArgumentParser()
parser.add_argument("--comp_data1", required=True, help="prepared data (test.csv)")
parser.add_argument("--comp_data2", required=True, help="training results (models.json)")
parser.add_argument("--output_data", required=True)
parser.add_argument("--param1", type=int, default=10, help="bootstrap rounds")
args = parser.parse_args()

test = pd.read_csv(os.path.join(args.comp_data1, "test.csv"))
models = json.load(open(os.path.join(args.comp_data2, "models.json")))
labels = models["labels"]
x = test.drop(columns="species").to_numpy()
y = test["species"].map({s: i for i, s in enumerate(labels)}).to_numpy()

centroids = np.array(models["centroid"])
pred_centroid = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
pred_softmax = np.argmax(x @ np.array(models["softmax"]["w"]) + np.array(models["softmax"]["b"]), axis=1)

rng = np.random.default_rng(0)
scores = {"centroid": [], "softmax": []}
for _ in range(max(1, args.param1)):
    idx = rng.integers(0, len(y), len(y))
    scores["centroid"].append(float((pred_centroid[idx] == y[idx]).mean()))
    scores["softmax"].append(float((pred_softmax[idx] == y[idx]).mean()))

run = Run.get_context()
summary = {}
for name, values in scores.items():
    summary[name] = {"accuracy": float(np.mean(values)), "std": float(np.std(values))}
    run.log(f"{name}_accuracy", summary[name]["accuracy"])
    run.log_row("comparison", model=name, accuracy=summary[name]["accuracy"], std=summary[name]["std"])
best = max(summary, key=lambda k: summary[k]["accuracy"])
run.log("best_model", best)
run.tag("best_model", best)
os.makedirs(args.output_data, exist_ok=True)
with open(os.path.join(args.output_data, "comparison.json"), "w") as f:
    json.dump({"best": best, "bootstrap_rounds": args.param1, "models": summary}, f, indent=2)
print(f"best model: {best} ({summary[best]['accuracy']:.3f} over {args.param1} bootstrap rounds)")
