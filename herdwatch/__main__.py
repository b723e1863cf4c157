from herdwatch.cli import main

main()
