"""Record keeping: MLflow runs, the model registry, logging and errors. No stage output depends on it, so it is never a DVC dep."""
