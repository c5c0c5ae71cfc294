"""The `mome-edge` command line (installed as mome_edge.cli)."""
