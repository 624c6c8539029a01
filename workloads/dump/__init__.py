"""ActivationDump: run a model over a corpus and store activations at hook points as a sharded, shuffled,
checksummed activation store (docs/activation-store.md). Run ``python -m interp_workloads.dump --config cfg.json``."""
