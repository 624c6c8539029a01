"""Suite-wide fixtures: the local control plane plugin (one plane per test process, shared by every folder)."""

pytest_plugins = ["interp_operator.local.testing"]
