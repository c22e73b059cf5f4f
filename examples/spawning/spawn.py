#!/usr/bin/env python3
"""The parent's postprocess: one ``eigen`` child per matrix the parent wrote, spread over
SITES, and one ``reduce`` child that waits for all of them. Each eigen child reads the
parent's output (its default input) and takes its matrix as ``config_file``; reduce reads
each eigen's output from a folder named after it.

Runs with edgecelery installed, or with dag.py (edgeceleryapp/dag.py, standard library
only) copied next to this script."""

import glob

try:
    from edgeceleryapp import dag
except ImportError:  # a login node without edgecelery: dag.py sits next to this script
    import dag

SITES = ["theta"]

matrices = sorted(glob.glob("matrix*.json"), key=lambda name: int(name[6:-5]))
eigens = []
for i, matrix in enumerate(matrices):
    name = f"eigen{i}"
    dag.spawn_child(name, SITES[i % len(SITES)], "eigen", config_file=matrix)
    eigens.append(name)
dag.spawn_child("reduce", SITES[0], "reduce", parents=eigens)
