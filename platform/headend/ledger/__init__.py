"""The double-entry ledger: journal entries, their legs, closed books and the reports on them."""
