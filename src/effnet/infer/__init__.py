"""Inference: the fast path (:func:`effnet.infer.optimize.optimize`) and classifying images with it
(:mod:`effnet.infer.predict`).

The fast path, one concern a module: ``fold`` (BatchNorm folding, activations), ``pool`` (memory
kept between calls), ``conv`` (the folded convolution and its 'same' padding plans), ``fast``
(squeeze-excitation, blocks by kind, the network, the export form), ``chunks`` (early stages in
cache-sized chunks), ``tuner`` (first-call timing of two ways), ``ort`` (the ONNX Runtime runner),
``hardware`` (devices, precisions, the CPU's instruction sets) and ``optimize`` (the backends)."""
