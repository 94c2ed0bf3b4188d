from dnscorrelate.cli import main

main()
