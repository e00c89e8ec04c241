"""Data preparation: clean the raw iris table, scale the features, split into train and test sets."""

import argparse
import os

import numpy as np
import pandas as pd

from prefect_aml import Run

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True, help="the raw iris.csv (downloaded)")
parser.add_argument("--output", required=True, help="folder for train.csv and test.csv")
args = parser.parse_args()

df = pd.read_csv(args.input).dropna()
features = [c for c in df.columns if c != "species"]
df[features] = (df[features] - df[features].mean()) / df[features].std()
rng = np.random.default_rng(42)
test_mask = rng.random(len(df)) < 0.3
os.makedirs(args.output, exist_ok=True)
df[~test_mask].to_csv(os.path.join(args.output, "train.csv"), index=False)
df[test_mask].to_csv(os.path.join(args.output, "test.csv"), index=False)

run = Run.get_context()
run.log("rows", len(df))
run.log("train_rows", int((~test_mask).sum()))
run.log("test_rows", int(test_mask.sum()))
print(f"prepared {len(df)} rows: {int((~test_mask).sum())} train, {int(test_mask.sum())} test")
