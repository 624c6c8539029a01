"""interp-operator: Kubernetes operator for interpretability workloads (imported as ``interp_operator``)."""

__version__ = "0.1.0"
