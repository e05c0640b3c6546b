"""The web process: the WhatsApp webhook (``/webhooks/whatsapp``) and the health probes.

Production: ``gunicorn -c python:web.gunicorn_conf --bind 0.0.0.0:8000 'web.app:create_app()'``
(threaded workers, see web/gunicorn_conf.py). Development: ``python -m web`` or
``flask --app web.app run``. Meta requires HTTPS with a valid certificate in front of it.
"""
