"""User-facing: the `faceverify` command and the MLflow pyfunc model that `mlflow models serve` answers with. Never a DVC dep."""
