"""Training: fit two classifiers (nearest centroid, softmax regression) on the prepared data."""

import argparse
import json
import os

import numpy as np
import pandas as pd

from prefect_aml import Run

parser = argparse.ArgumentParser()
parser.add_argument("--prepped_data", required=True)
parser.add_argument("--training_results", required=True)
args = parser.parse_args()

train = pd.read_csv(os.path.join(args.prepped_data, "train.csv"))
x = train.drop(columns="species").to_numpy()
labels = sorted(train["species"].unique())
y = train["species"].map({s: i for i, s in enumerate(labels)}).to_numpy()

# Model 1: nearest centroid
centroids = np.stack([x[y == k].mean(axis=0) for k in range(len(labels))])

# Model 2: softmax regression, plain gradient descent
w = np.zeros((x.shape[1], len(labels)))
b = np.zeros(len(labels))
onehot = np.eye(len(labels))[y]
run = Run.get_context()
for epoch in range(200):
    z = x @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    w -= 0.5 * x.T @ (p - onehot) / len(x)
    b -= 0.5 * (p - onehot).mean(axis=0)
    if epoch % 50 == 0:
        run.log("softmax_loss", float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean()))

os.makedirs(args.training_results, exist_ok=True)
with open(os.path.join(args.training_results, "models.json"), "w") as f:
    json.dump({"labels": labels, "centroid": centroids.tolist(), "softmax": {"w": w.tolist(), "b": b.tolist()}}, f)
print(f"trained 2 models on {len(x)} rows")
