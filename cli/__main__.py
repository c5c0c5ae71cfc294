from mome_edge.cli.main import main

main()
