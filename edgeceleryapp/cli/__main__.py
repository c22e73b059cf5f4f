from edgeceleryapp.cli import main

main()
