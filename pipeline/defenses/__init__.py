"""Defenses: one module per family; `registry` looks them up by type, `base` is the contract."""
