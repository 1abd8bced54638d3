"""Datasets: loaders (bundled, Keras, a user's CSV or NPZ), member markers, the seeded split into roles."""
