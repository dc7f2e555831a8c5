from impetusd.main import main

main()
