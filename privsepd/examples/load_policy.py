from privsepd.policy.loader import load_policy

policy = load_policy(["/etc/privsepd/policy.toml", "/etc/privsepd/policy.d"])
