from bulkflow.cli import main

main()
