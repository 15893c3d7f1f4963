"""The landing page after login."""

from flask_appbuilder import IndexView


class DashboardIndexView(IndexView):
    index_template = "headend/index.html"
