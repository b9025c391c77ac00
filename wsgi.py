"""gunicorn's entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""
from app.factory import create_app

app = create_app()
