"""Files shipped inside the package, read with :mod:`importlib.resources`.

``quickstart.toml`` is the policy ``privsepd demo`` runs on, so the demo works
from any install (wheel, sdist, editable). ``filters/quickstart.toml`` in the
source tree is the operator-facing copy; tests/test_samples.py keeps the two
byte-identical.
"""
