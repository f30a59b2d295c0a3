"""The CPU and GPU inference fast path that :func:`effnet.deploy.optimize.optimize` builds.

One concern a module: ``fold`` (BatchNorm folding, activations), ``conv`` (the folded convolution,
its 'same' padding plans and the one call of PyTorch's private oneDNN ops), ``fast`` (squeeze-excitation,
blocks by kind, the network, the export form), ``allocator`` (glibc's malloc set up for inference) and
``hardware`` (devices, precisions, the CPU's instruction sets)."""
