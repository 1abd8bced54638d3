"""Infrastructure every layer uses: errors, typed records, atomic io, seeding, processes, the MLflow seam, TensorFlow's import."""
