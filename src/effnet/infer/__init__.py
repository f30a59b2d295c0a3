"""Inference: the fast path (:func:`effnet.infer.optimize.optimize`) and classifying images with it
(:mod:`effnet.infer.predict`)."""
