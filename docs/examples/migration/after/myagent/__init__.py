"""myagent: a neutron-style agent (the docs/migration.md example)."""
