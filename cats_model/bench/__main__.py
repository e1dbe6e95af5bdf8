from cats_model.bench.cli import main

main()
