"""Stand-ins for svc's third-party dependencies (pyroute2, oslo.concurrency).

They raise errors shaped like the real ones: ``NetlinkError(code, msg)``
with ``.code``, and ``ProcessExecutionError(stdout, stderr, exit_code, cmd,
description)`` with those attributes. svc catches them by type.
"""
