"""Exporters from compiled artifacts to deployment formats (installed as mome_edge.exporters)."""
