"""One-shot face verification on LFW-a: a Siamese network trained by a DVC pipeline, recorded in MLflow."""
