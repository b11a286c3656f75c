"""`diffatr serve`: a local web page and JSON API over one cache (`app.py`), its static page
(`static/`, shipped as package data: no CDN, works offline) and the safe file lookup it serves
clips with (`files.py`). Needs the `serve` extra (FastAPI, uvicorn, python-multipart)."""
