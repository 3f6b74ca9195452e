"""`python -m blogapi`: apply the migrations, then serve the API (see blogapi.server)."""

from blogapi.server import main

main()
