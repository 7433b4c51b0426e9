"""One-shot face verification on LFW-a: a Siamese network trained by a DVC pipeline, recorded in MLflow.

The role of each module of pipeline/, stated once (tests/test_dvc_yaml.py derives the layer rules and
every stage's DVC deps from it; tests/test_stages.py which modules may write no output):
"""
STAGES = ("check", "download", "pairs", "prepare", "train", "calibrate", "export", "evaluate")  # dvc.yaml runs each
RECORD_KEEPING = ("tracking", "registry", "runner", "serving", "pyfunc_model")  # MLflow, logging, serving: never a DVC dep
USER_FACING = ("cli",)  # the `faceverify` command
VALIDATION = ("params",)  # params.yaml's validation: a dep of `check` alone
# every other module is a library: it imports only libraries; pipeline/lab/ is the lab, which nothing here imports
