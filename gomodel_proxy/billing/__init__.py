"""Billing: the price table and the cost of a call (``pricing``)."""

from gomodel_proxy.billing.pricing import ModelPrice, PriceTable, cost_of, install, price_table

__all__ = ["ModelPrice", "PriceTable", "cost_of", "install", "price_table"]
