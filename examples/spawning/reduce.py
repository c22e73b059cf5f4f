#!/usr/bin/env python3
"""The reduce child: every eigen child's eigen.json (each parent's output is in a folder
named after it), the eigenvalues sorted, written to eigenvalues.json."""

import glob
import json

values = []
for path in glob.glob("*/eigen.json"):
    with open(path) as fh:
        values.append(json.load(fh)["eigenvalue"])
with open("eigenvalues.json", "w") as fh:
    json.dump(sorted(values), fh)
