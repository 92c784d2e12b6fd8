from hookctl.cli import main

main()
