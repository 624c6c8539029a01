"""The inference server: a batched model server whose requests edit activations mid-forward-pass."""
