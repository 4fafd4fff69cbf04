"""Speed and memory of ArcFace implementations against plain softmax: ``python -m benchmarks.speed``
(see :mod:`benchmarks.speed.run`); figure: ``python -m benchmarks.speed.plot``."""
