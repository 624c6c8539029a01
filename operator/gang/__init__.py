"""The gang engine shared by the three kinds: pure builders, placement and lifecycle decisions (no API calls here)."""
