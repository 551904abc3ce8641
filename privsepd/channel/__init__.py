"""The wire between service and helper.

``protocol`` is the sans-IO core (frames, limits, handshake, message shapes;
no I/O, fuzzable); ``client`` and ``server`` move its bytes over a Unix
socket on the service side and the helper side.
"""
