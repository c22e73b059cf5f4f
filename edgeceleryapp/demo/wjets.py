#!/usr/bin/env python3
"""Demo application 2 (the supercomputer of Figure 1): generates events from the grid."""

import argparse
import random

parser = argparse.ArgumentParser()
parser.add_argument("--events", type=int, required=True)
parser.add_argument("--seed", type=int, required=True)
args = parser.parse_args()
with open("grid.dat") as grid:
    weights = [float(line) for line in grid if line.strip() and line[0].isdigit()]
rng = random.Random(args.seed)
with open("events.lhe", "w") as out:
    for i in range(args.events):
        out.write(f"{i} W->enu+jets weight={rng.choice(weights):.6f}\n")
print(f"{args.events} events written")
