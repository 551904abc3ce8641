"""Runnable examples: the Python code blocks of README.md and docs/, verbatim.

Each file here is a script (run it as root: ``python -m
privsepd.examples.set_mtu``, or from ``importlib.resources``); importing one
starts nothing. tests/test_examples.py runs every example for real in a
fresh network namespace and checks that each fenced ``python`` block of the
documentation is the exact text of one of these files.
"""
