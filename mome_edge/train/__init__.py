"""The training side (torch): gates, layers, models, MoME's phases, checkpoints, DDP and the loop.

Everything torch-dependent in mome-edge lives here or in `mome_edge.compile`; the artifact,
runtime, data and exporters packages never import torch (tests/test_torch_boundary.py).
"""
