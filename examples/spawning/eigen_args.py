#!/usr/bin/env python3
"""The eigen application's config_script: its config file (the matrix) is its one argument."""

import json
import sys

print(json.dumps(sys.argv[1:2]))
