#!/usr/bin/env python3
"""One eigen child: the largest eigenvalue of the matrix in the file named by the first
argument, by power iteration (standard library only), written to eigen.json."""

import json
import os
import sys

with open(sys.argv[1]) as fh:
    matrix = json.load(fh)
vector = [1.0] * len(matrix)
value = 0.0
for _ in range(1000):
    product = [sum(a * x for a, x in zip(row, vector, strict=True)) for row in matrix]
    norm = max(abs(p) for p in product) or 1.0
    vector = [p / norm for p in product]
    # The Rayleigh quotient of the new vector: the eigenvalue it points to.
    applied = [sum(a * x for a, x in zip(row, vector, strict=True)) for row in matrix]
    updated = sum(p * x for p, x in zip(applied, vector, strict=True)) / sum(x * x for x in vector)
    if abs(updated - value) < 1e-13:
        value = updated
        break
    value = updated
with open("eigen.json", "w") as fh:
    json.dump({"matrix": os.path.basename(sys.argv[1]), "eigenvalue": value}, fh)
