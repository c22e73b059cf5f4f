"""Plug-ins: batch schedulers, data transfers by URL scheme, and command runners.

Each family is a table in ``backends/registry.py`` (a name to a ``"module:Class"`` string), the
way kombu picks a transport from a URL scheme: adding a scheduler or a transfer is one module
and one line there.
"""
