from rlhfctl.cli.app import main

main()
