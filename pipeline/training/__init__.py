"""Training models: the target, the attacker's shadow and reference models, a user's own model, where shards train."""
