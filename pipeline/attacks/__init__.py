"""Membership-inference attacks: one module per family; `registry` maps each name below to its function."""

ATTACK_NAMES: tuple[str, ...] = (
    "shadow_classifier",
    "ml_leaks",
    "loss_threshold",
    "metric_confidence",
    "metric_entropy",
    "metric_modified_entropy",
    "metric_loss",
    "lira_offline",
    "lira_online",
    "rmia_offline",
    "label_only_gap",
    "label_only_augmentation",
)
