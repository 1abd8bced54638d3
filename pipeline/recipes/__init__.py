"""Recipe audit core: the paired design, leave-one-model-out attacks and pooled statistics over K models per recipe."""
