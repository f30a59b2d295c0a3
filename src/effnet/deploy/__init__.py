"""Deployment: running a model for users, above the fast path (:mod:`effnet.infer`) and the exported
files (:mod:`effnet.export`). :func:`~effnet.deploy.optimize.optimize` picks a backend (eager, compile,
ONNX Runtime); :class:`~effnet.deploy.predict.Predictor` classifies image files with it."""
