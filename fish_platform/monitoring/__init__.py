"""After deployment: prediction log, feedback, drift and challenger statistics (no Dagster, no BentoML)."""
