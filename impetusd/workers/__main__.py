from impetusd.workers.main import main

main()
