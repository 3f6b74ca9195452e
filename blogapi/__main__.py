"""`python -m blogapi`: see blogapi.cli."""

from blogapi.cli import main

main()
