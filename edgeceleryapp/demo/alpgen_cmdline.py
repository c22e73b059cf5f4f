#!/usr/bin/env python3
"""Demo config_script: reads the job's INI config_file, prints the argument list as JSON.

The job's text never reaches a command line: only values this script checks come out.
"""

import configparser
import json
import sys

config = configparser.ConfigParser()
config.read(sys.argv[1])
events = config.getint("generation", "events", fallback=1000)
seed = config.getint("generation", "seed", fallback=1)
if not 0 < events <= 10_000_000:
    sys.exit("events out of range")
print(json.dumps(["--events", str(events), "--seed", str(seed)]))
