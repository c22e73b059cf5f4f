"""Plug-ins: batch schedulers, data transfers by URL scheme, and command runners.

Each family is a registry (a dict from a name to a class), the way kombu picks a transport from
a URL scheme: adding a scheduler or a transfer is one module and one registry line.
"""
