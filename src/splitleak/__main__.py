from splitleak.cli import main

main()
