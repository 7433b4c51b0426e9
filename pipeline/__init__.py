"""One-shot face verification on LFW-a: a Siamese network trained by a DVC pipeline, recorded in MLflow.

The tree states each module's role (tests/test_dvc_yaml.py derives the import rules and every stage's
DVC deps from it; tests/test_stages.py that record keeping writes no stage output):

    stages/   the stages dvc.yaml runs, one module each; they import libraries and record/
    record/   record keeping: MLflow runs, the model registry, logging and errors; never a DVC dep
    serve/    user-facing: the `faceverify` command and the MLflow pyfunc model; never a DVC dep
    lab/      the lab's one entry point (`python -m pipeline.lab`); nothing outside it imports it
    *.py      libraries: they import only libraries
"""
ROLES = ("stages", "record", "serve", "lab")  # the folders above; every other module is a library
VALIDATION = ("params",)  # params.yaml's validation: a library every stage imports, a DVC dep of `check` alone
