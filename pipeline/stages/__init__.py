"""One thin module per DVC stage; each is run as `python -m pipeline.stages.<name>`."""
