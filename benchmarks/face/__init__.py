"""Face verification on identities never seen in training: plain softmax against ArcFace.

``python -m benchmarks.face`` (see :mod:`benchmarks.face.run`). Modules: ``data`` (LFW ImageFolder or the embedded
synthetic identities), ``losses`` (the compared losses, by spec), ``models`` (backbones), ``train`` (one run),
``report`` (tables, verdict, CSV), ``plot`` (figures from ``results.json``).
"""
