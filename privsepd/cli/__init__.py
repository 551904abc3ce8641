"""Command-line front ends: ``privsepd`` (serve, helper, status, demo,
filters) and ``privsepd-rootwrap``. Kept import-light: the shim starts under
sudo for every command a service runs.
"""
