"""PyTorch workloads bundled with interp-operator (imported as ``interp_workloads``).

Every workload also runs standalone: ``python -m interp_workloads.<name> --config cfg.json``.
"""
