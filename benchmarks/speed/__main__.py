from benchmarks.speed.run import main

main()
