#!/usr/bin/env python3
"""Demo application 1 (the small HTCondor cluster of Figure 1): computes an integration grid."""

import argparse
import random

parser = argparse.ArgumentParser()
parser.add_argument("--events", type=int, required=True)
parser.add_argument("--seed", type=int, required=True)
args = parser.parse_args()
rng = random.Random(args.seed)
with open("grid.dat", "w") as out:
    out.write(f"events {args.events}\nseed {args.seed}\n")
    for _ in range(16):
        out.write(f"{rng.random():.6f}\n")
print("warm-up grid written")
