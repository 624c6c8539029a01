"""API models (group interp.dev, version v1alpha1): the single source of truth of the CRDs."""

from .activationdump import ActivationDump, ActivationDumpSpec, ActivationDumpStatus
from .base import ApiModel, CelRule, Resource
from .inferenceservice import InterpInferenceService, InterpInferenceServiceSpec, InterpInferenceServiceStatus
from .registry import API_VERSION, GROUP, KINDS, VERSION, KindInfo, kind_info
from .saetrainingjob import SAETrainingJob, SAETrainingJobSpec, SAETrainingJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "ActivationDump",
    "ActivationDumpSpec",
    "ActivationDumpStatus",
    "ApiModel",
    "CelRule",
    "InterpInferenceService",
    "InterpInferenceServiceSpec",
    "InterpInferenceServiceStatus",
    "KindInfo",
    "Resource",
    "SAETrainingJob",
    "SAETrainingJobSpec",
    "SAETrainingJobStatus",
    "kind_info",
]
