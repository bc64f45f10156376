"""The trainer process: a Faust app that learns the clustering model and publishes snapshots."""
