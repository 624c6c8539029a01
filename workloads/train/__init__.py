"""The SAE trainer: many SAEs from one activation stream, distributed, checkpointed, exported."""
