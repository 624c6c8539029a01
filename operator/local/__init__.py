"""interp-local: an in-process Kubernetes control plane that runs pods as local processes.

The API server speaks the Kubernetes REST protocol (discovery, CRUD, watch, patches, server-side apply,
CRDs with schema and CEL validation) so that the unchanged operator, kopf, the ``kubernetes`` client and
kubectl use it like a cluster. See docs/local-control-plane.md for what it emulates and how it differs.
"""
