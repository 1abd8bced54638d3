"""Membership-inference attacks: one module per family; `registry` maps each name in params.yaml to its function."""
