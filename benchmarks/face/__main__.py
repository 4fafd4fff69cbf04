from benchmarks.face.run import main

main()
