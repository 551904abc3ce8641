"""A small service written the way neutron, os-vif and os-brick use oslo.privsep.

Its source imports ``oslo_privsep``; tests/compat/test_service_two_ways.py
runs the same checks (svc_checks.py) against oslo.privsep and, through the
import swap, against privsepd.
"""
