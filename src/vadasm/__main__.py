from vadasm.cli import main

main()
