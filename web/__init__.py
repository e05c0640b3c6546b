"""The web process: the WhatsApp webhook on the public listener; probes and operator routes
(``/metrics``, behind OPERATOR_TOKEN) on the internal one (web/listeners.py has the access model).

Production: ``gunicorn -c python:web.gunicorn_conf 'web.app:create_app()'`` (the config file binds
WEB_PUBLIC_HOST:WEB_PUBLIC_PORT and WEB_INTERNAL_HOST:WEB_INTERNAL_PORT; threaded workers).
Development: ``python -m web`` (both listeners on Werkzeug). Meta requires HTTPS with a valid
certificate in front of the public listener.
"""
