"""Job sources besides the intake queue: plug-ins that find new work elsewhere (rows of an
experiment's database, files dropped in a directory) and hand it to the same intake path."""
