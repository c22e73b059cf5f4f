#!/usr/bin/env python3
"""The parent of the eigenvalue example (after Balsam's parent / eigen / reduce): writes N
small symmetric matrices, matrix0.json ... matrix<N-1>.json, as JSON lists of rows, into its
work directory, which becomes its output. N is the first argument (default 4).
Standard library only."""

import json
import random
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
for i in range(count):
    rng = random.Random(i)  # noqa: S311 - test data, not secrets
    a, b, c = (rng.randint(1, 9) for _ in range(3))
    with open(f"matrix{i}.json", "w") as fh:
        json.dump([[a, b], [b, c]], fh)
