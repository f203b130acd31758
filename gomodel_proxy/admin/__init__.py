"""The admin API (``/admin/*``): governance records, budgets, rate limits and usage, with its OpenAPI document."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gomodel_proxy.admin.routes import ADMIN, AdminContext, add_routes

__all__ = ["ADMIN", "AdminContext", "add_routes"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``admin.routes`` compiles its schemas and loads SQLAlchemy, which a gateway
    # without the admin API (but with ``admin.reload_routes``) should not pay for at start-up.
    if name in __all__:
        from gomodel_proxy.admin import routes  # noqa: PLC0415

        return getattr(routes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
