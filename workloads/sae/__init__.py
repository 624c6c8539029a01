"""Sparse autoencoders and transcoders: architectures, fast sparse decoders, export and loading (needs torch)."""
