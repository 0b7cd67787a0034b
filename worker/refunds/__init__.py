"""Refunds (issue 14): money taken back from a customer's prepaid balance and returned to
what paid it (card, PayPal) or to a bank account the customer names (bank transfer)."""
