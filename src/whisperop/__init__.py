"""whisper-operator: Kubernetes-native transcription with whisper.cpp.

Everything installs under this one namespace: ``whisperop.core`` (the shared
contract), ``whisperop.inference`` (engine and worker, folder ``inference/``),
``whisperop.operator`` (kopf operator, folder ``operator/``) and
``whisperop.api`` (REST facade, folder ``api/``).
"""

__version__ = "0.1.0"
