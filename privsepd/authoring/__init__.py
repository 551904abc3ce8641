"""Filter authoring tools behind ``privsepd filters``: check (lint), explain,
convert (INI to TOML) and learn. Used by ``cli`` only; the runtime never
imports them.
"""
