"""The runtime: where jobs actually run, through ONNX Runtime, and leave a manifest behind.

Modules, from the bottom up:

* :mod:`.executor` -- onnxruntime sessions per (model, provider) in a bounded
  LRU; CUDA when present, else CPU; GPU-strict jobs; deterministic settings.
* :mod:`.models` -- small real ONNX models from seeded weights (demo, tests, benchmark).
* :mod:`.store` -- where model bytes come from (``ModelStore``) until the blob store serves them.
* :mod:`.catalog` -- signed model metadata, merged as a CRDT keyed by (name, version).
* :mod:`.router` -- rules-based model choice, with reasons.
* :mod:`.batching` -- dynamic batching decisions (sans-IO); :mod:`.online` drives them under trio.
* :mod:`.runners` -- online, batch, fine-tune and workflow jobs.
* :mod:`.manifest` -- run manifests and bit-for-bit reruns on CPU.

Pre/post-processing kernels (normalisation, top-k, fp16/bf16) live in
:mod:`arcnet.native.kernels`.
"""
