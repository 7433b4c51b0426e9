"""The MLflow model's code file ("models from code"): `pipeline.serve.serving.log_model` logs this file, and
MLflow runs it to build the model when the model is loaded, so the logged model holds no pickled Python
object (MLflow warns on pickled models and will refuse them by default: MLFLOW_ALLOW_PICKLE_DESERIALIZATION).
`pipeline/` travels with the model as its code path; the checkpoint and threshold as its artifacts.
"""
import mlflow

from pipeline.serve.serving import FaceVerifierModel

mlflow.models.set_model(FaceVerifierModel())
