"""The admin API (``/admin/*``): governance records, budgets, rate limits and usage, with its OpenAPI document."""

from gomodel_proxy.admin.routes import ADMIN, AdminContext, add_routes

__all__ = ["ADMIN", "AdminContext", "add_routes"]
