"""The admin UI under /admin: server-rendered pages (Jinja2) over the same service functions as
the REST API, a session cookie after a login with an API key, CSRF tokens on every form.

See routes.py for the pages, session.py for the cookie, forms.py for the submit forms made
from each kind's params JSON schema, charts.py for the inline SVG charts."""
from api.admin.routes import mount

__all__ = ["mount"]
